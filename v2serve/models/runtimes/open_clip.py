"""CLIP from open_clip: one model with a text tower and an image tower, whose vectors share one space.

A request gives ``text``, ``image`` or both (BYTES); texts go through the model's own tokenizer, images
through its own preprocessing transform (open_clip's: the shorter side resized, the centre cropped,
normalised), so the vectors are those of ``encode_text`` and ``encode_image``. The weights come from

- ``model_path`` naming a folder in open_clip's hub layout (``open_clip_config.json`` with ``model_cfg`` and
  ``preprocess_cfg``, and ``open_clip_model.safetensors``): the architecture is the folder's; this is what
  ``hf-hub:org/repo`` names download to;
- ``model_path`` naming a weights file (``.safetensors``, or a ``.bin``/``.pt`` that torch reads with
  ``weights_only``), over a built-in ``architecture`` (``ViT-B-32``, ``MobileCLIP-S2``, ...; by default
  the model's name);
- Ingrain's downloaded weights (``weights_file``: a safetensors state dict, every key matching), laid over
  either.

open_clip itself would download a ``pretrained`` tag's weights; here a tag is only a name for weights the
server already holds (``checkpoint``): fetching goes through the hub rules (``data.hub``), or nothing is
fetched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from v2serve.errors import ModelLoadFailed
from v2serve.models.embeddings import IMAGE, TEXT, load_safetensors
from v2serve.models.images import ImageEmbeddingModel
from v2serve.models.runtimes import require, torch_for

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
"""The weights files of open_clip's hub repositories, the preferred first (a repository often holds both)."""
LOCAL_DIR = "local-dir:"
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


def is_open_clip_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder in open_clip's hub layout (its config beside its weights)."""
    return (Path(path) / CONFIG_FILE).is_file()


def tag_repository(architecture: str, tag: str) -> str | None:
    """The hub repository of a built-in architecture's ``pretrained`` tag (``MobileCLIP-S2``,
    ``datacompdr``), or None when open_clip knows no such pair."""
    config = require("open_clip", "vision").get_pretrained_cfg(architecture, tag)
    repository = str(config.get("hf_hub") or "").strip("/")
    return repository or None


def is_architecture(name: str) -> bool:
    """Whether open_clip builds ``name`` from its own configs (``ViT-B-32``), with no file of the model's."""
    return name in require("open_clip", "vision").list_models()


def hub_files(filenames: list[str]) -> list[str]:
    """What to fetch of an open_clip hub repository: its config, if any, and one weights file."""
    weights = next((name for name in WEIGHTS_FILES if name in filenames), None)
    return [name for name in (CONFIG_FILE, weights) if name is not None and name in filenames]


class OpenClipModel(ImageEmbeddingModel):
    """A CLIP model (see the module's docstring): ``embedding`` for one modality, ``text_embedding`` and
    ``image_embedding`` for both. ``device`` and ``torch_threads`` as for the torch runtime."""

    platform = "pytorch_libtorch"
    library: ClassVar[str] = "open_clip"
    modalities: ClassVar[tuple[str, ...] | None] = (TEXT, IMAGE)
    max_texts = 1024
    max_aspect_ratio = 2.0

    def __init__(
        self,
        *args: Any,
        architecture: str | None = None,
        pretrained: str | None = None,
        device: str = "auto",
        torch_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.architecture = architecture
        self.checkpoint = pretrained
        self.device_setting = device
        self.torch_threads = torch_threads

    def item_limit(self, modality: str) -> int:
        return self.max_texts if modality == TEXT else self.max_items

    def load(self) -> None:
        torch, setting = torch_for(self.device_setting, self.torch_threads)
        open_clip = require("open_clip", "vision")
        source, weights = self._weights()
        options = {} if source.startswith(LOCAL_DIR) else self._tag_options(open_clip, source)
        try:
            network, _, transform = open_clip.create_model_and_transforms(
                source, pretrained=weights, device=setting, **options
            )
            tokenizer = open_clip.get_tokenizer(source)
        except (RuntimeError, ValueError, FileNotFoundError) as exc:
            raise ModelLoadFailed(f"open_clip could not build {source!r}: {exc}") from exc
        if self.weights_file is not None:
            load_safetensors(network, self.weights_file)
        self.torch = torch
        self.device = torch.device(setting)
        self.network = network.eval()
        self.transform = transform
        self.tokenizer = tokenizer
        size = network.visual.image_size
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.set_dimensions(int(open_clip.get_model_config(source)["embed_dim"]))

    def _weights(self) -> tuple[str, str | None]:
        """What open_clip builds (a built-in architecture, or ``local-dir:`` a hub-layout folder) and the
        weights file laid over it (None: the folder's own)."""
        architecture = self.architecture or self.name
        if self.model_path is None:
            if self.weights_file is not None:
                return architecture, None  # built, then the downloaded weights laid over it
            raise ModelLoadFailed(
                f"CLIP model {self.name!r} names no weights: give model_path (a weights file, or a folder with "
                f"{CONFIG_FILE}), or load a hub name the server may fetch (hub.allow)"
            )
        path = Path(self.model_path)
        if path.is_dir():
            if not is_open_clip_folder(path):
                raise ModelLoadFailed(f"{path} holds no {CONFIG_FILE}: it is not an open_clip model folder")
            return f"{LOCAL_DIR}{path}", None
        return architecture, str(path)

    def _tag_options(self, open_clip: Any, architecture: str) -> dict[str, Any]:
        """The preprocessing a ``pretrained`` tag was trained with (MobileCLIP's mean, std and resampling
        differ from its architecture's defaults): open_clip applies them only when it downloads the tag."""
        config = open_clip.get_pretrained_cfg(architecture, self.checkpoint) if self.checkpoint else {}
        options = {f"image_{key}": config[key] for key in PREPROCESS_KEYS if key in config}
        if config.get("quick_gelu"):
            options["force_quick_gelu"] = True
        return options

    def embed_items(self, modality: str, items: list[Any]) -> np.ndarray:
        if modality == TEXT:
            return self._encode(self.network.encode_text, self.tokenizer(items))
        return self._encode(self.network.encode_image, self.torch.from_numpy(self.pixels(items)))

    def _encode(self, encode: Any, batch: Any) -> np.ndarray:
        with self.torch.inference_mode():
            vectors: np.ndarray = encode(batch.to(self.device)).float().cpu().numpy()
            return vectors
