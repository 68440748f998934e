"""CLIP and timm models whose weights a test creates (real architectures, random weights, a fixed seed), saved
in the layout their hubs use, and the vectors open_clip's and timm's own code compute from the same folders."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    },
}
TIMM_ARCHITECTURE = "test_efficientnet"
"""A small architecture of timm's registry (356k parameters, 1,000 classes, 160-pixel input)."""


def make_clip_folder(folder: Path, seed: int = 0) -> Path:
    """A CLIP model in open_clip's hub layout: ``open_clip_config.json`` and ``open_clip_model.safetensors``."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(CLIP_CONFIG))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}")
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    return folder


def make_timm_folder(folder: Path, seed: int = 0, extra_weights: bool = False) -> Path:
    """A timm model in timm's hub layout (``config.json``, ``model.safetensors``); ``extra_weights`` adds the
    same weights pickled, as many hub repositories hold both formats."""
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model(TIMM_ARCHITECTURE, pretrained=False)
    save_for_hf(model, str(folder), safe_serialization="both" if extra_weights else True)
    return folder


def clip_vectors(folder: Path, texts: list[str], images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """open_clip's own ``encode_text`` and ``encode_image`` of the folder's model, L2-normalised."""
    import open_clip
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    pixels = torch.stack([preprocess(Image.open(io.BytesIO(image)).convert("RGB")) for image in images])
    with torch.inference_mode():
        model.eval()
        text = model.encode_text(tokenizer(texts), normalize=True).numpy() if texts else np.empty((0, 0))
        image = model.encode_image(pixels, normalize=True).numpy()
    return text, image


def timm_outputs(folder: Path, images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """timm's own pooled features (L2-normalised) and class probabilities of the folder's model, with the
    preprocessing its data config gives."""
    import timm
    import torch
    from PIL import Image

    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model), is_training=False)
    pixels = torch.stack([transform(Image.open(io.BytesIO(image)).convert("RGB")) for image in images])
    with torch.inference_mode():
        features = model.forward_head(model.forward_features(pixels), pre_logits=True)
        probabilities = torch.softmax(model(pixels), dim=1).numpy()
    vectors = torch.nn.functional.normalize(features, dim=1).numpy()
    return vectors, probabilities


def photo(seed: int, size: tuple[int, int] = (96, 72)) -> bytes:
    """A PNG of random pixels (not a flat colour: every pixel of the crop counts)."""
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
