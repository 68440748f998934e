"""Any timm architecture as an image model: embeddings from its pooled features, class probabilities from its
head, with the preprocessing timm's data config gives for that model.

The weights come from ``model_path`` (a folder in timm's hub layout: ``config.json`` naming the architecture
and its ``pretrained_cfg``, with ``model.safetensors``; what ``hf_hub:timm/...`` names download to; or a
weights file over ``architecture``), from Ingrain's downloaded weights (``weights_file``, laid over either,
every key matching), or nowhere with ``pretrained: false`` (the architecture's random initialisation, as timm
gives it; Ingrain allows it). timm would download a registry name's pretrained weights itself; here nothing
is fetched outside the hub rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from v2serve.errors import ModelLoadFailed
from v2serve.models.embeddings import load_safetensors
from v2serve.models.images import ImageEmbeddingModel
from v2serve.models.runtimes import require, torch_for

LOCAL_DIR = "local-dir:"
CONFIG_FILE = "config.json"
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
HUB_PREFIXES = ("hf_hub:", "hf-hub:")
"""How Ingrain's and timm's users name a hub repository (``hf_hub:timm/resnet18.a1_in1k``)."""


def hub_repository(name: str) -> str | None:
    """The hub repository of a timm name: ``hf_hub:org/repo``, or a registry name's pretrained weights
    (``resnet18.a1_in1k``, or ``resnet18``'s default tag); None when timm knows neither."""
    for prefix in HUB_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :] or None
    config = require("timm", "vision").models.get_pretrained_cfg(name)
    return None if config is None or not config.hf_hub_id else str(config.hf_hub_id)


def hub_files(filenames: list[str]) -> list[str]:
    """What to fetch of a timm hub repository: its config and one weights file."""
    weights = next((name for name in WEIGHTS_FILES if name in filenames), None)
    return [name for name in (CONFIG_FILE, weights) if name is not None and name in filenames]


def is_registry_name(name: str) -> bool:
    """Whether timm builds ``name`` (``resnet18``, ``resnet18.a1_in1k``) from its own registry."""
    timm = require("timm", "vision")
    return bool(timm.is_model(name.split(".", 1)[0]))


class TimmModel(ImageEmbeddingModel):
    """A timm model: ``embedding`` is the head's input (pooled features, pre-logits), ``classify`` its
    softmax. ``architecture`` defaults to the model's name; ``device`` and ``torch_threads`` as for the torch
    runtime."""

    platform = "pytorch_libtorch"
    library: ClassVar[str] = "timm"
    max_aspect_ratio = 2.0

    def __init__(
        self,
        *args: Any,
        architecture: str | None = None,
        pretrained: bool = True,
        device: str = "auto",
        torch_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.architecture = architecture
        self.pretrained = pretrained
        self.device_setting = device
        self.torch_threads = torch_threads

    def load(self) -> None:
        torch, setting = torch_for(self.device_setting, self.torch_threads)
        timm = require("timm", "vision")
        source, options = self._source()
        try:
            network = timm.create_model(source, **options)
        except (RuntimeError, ValueError, FileNotFoundError) as exc:
            raise ModelLoadFailed(f"timm could not build {source!r}: {exc}") from exc
        if self.weights_file is not None:
            load_safetensors(network, self.weights_file)
        self.torch = torch
        self.device = torch.device(setting)
        self.network = network.eval().to(self.device)
        data_config = timm.data.resolve_model_data_config(network)
        self.transform = timm.data.create_transform(**data_config, is_training=False)
        self.image_size = int(data_config["input_size"][-1])
        self.set_dimensions(int(getattr(network, "head_hidden_size", None) or network.num_features))
        self.labels = _labels(timm, network)

    def _source(self) -> tuple[str, dict[str, Any]]:
        architecture = self.architecture or self.name
        if self.model_path is not None:
            path = Path(self.model_path)
            if path.is_dir():
                if not (path / CONFIG_FILE).is_file():
                    raise ModelLoadFailed(f"{path} holds no {CONFIG_FILE}: it is not a timm model folder")
                return f"{LOCAL_DIR}{path}", {"pretrained": True}
            return architecture, {"pretrained": False, "checkpoint_path": str(path)}
        if self.pretrained and self.weights_file is None:
            raise ModelLoadFailed(
                f"timm model {self.name!r} names no weights: give model_path (a weights file, or a folder with "
                f"{CONFIG_FILE}), load a hub name the server may fetch (hub.allow), or pretrained: false"
            )
        return architecture, {"pretrained": False}

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        torch, network = self.torch, self.network
        with torch.inference_mode():
            features = network.forward_features(torch.from_numpy(pixels).to(self.device))
            vectors: np.ndarray = network.forward_head(features, pre_logits=True).float().cpu().numpy()
            return vectors

    def classify_pixels(self, pixels: np.ndarray) -> np.ndarray:
        if self.labels is None:
            return super().classify_pixels(pixels)
        torch = self.torch
        with torch.inference_mode():
            logits = self.network(torch.from_numpy(pixels).to(self.device))
            probabilities: np.ndarray = torch.softmax(logits, dim=1).float().cpu().numpy()
            return probabilities


def _labels(timm: Any, network: Any) -> list[str] | None:
    """The class names of the model's head: its config's, ImageNet's when timm recognises the head, or
    ``class-<index>``; None for a model without a head."""
    classes = int(getattr(network, "num_classes", 0) or 0)
    if classes == 0:
        return None
    config = getattr(network, "pretrained_cfg", None) or {}
    names = config.get("label_descriptions") or config.get("label_names")
    if names is not None and len(names) == classes:
        return [str(name) for name in (names.values() if isinstance(names, dict) else names)]
    subset = timm.data.infer_imagenet_subset(network)
    if subset is not None:
        descriptions = timm.data.ImageNetInfo(subset).label_descriptions()
        if len(descriptions) == classes:
            return [str(name) for name in descriptions]
    return [f"class-{index}" for index in range(classes)]
