"""Model runtimes, looked up by name with lazy imports, so ``import v2serve`` never imports torch or ORT.

A model directory's ``model-settings.json`` may name a runtime instead of a class:
``{"name": "mlp", "implementation": "onnx", "model_path": "mlp.onnx"}``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from v2serve.errors import install_hint

RUNTIMES: dict[str, dict[str, str]] = {
    "onnx": {"class": "v2serve.models.runtimes.onnx:OnnxModel", "module": "onnxruntime", "extra": "onnx"},
    "torch": {"class": "v2serve.models.runtimes.torch:TorchModel", "module": "torch", "extra": "torch"},
    "sentence_transformers": {
        "class": "v2serve.models.runtimes.sentence_transformers:SentenceTransformerModel",
        "module": "sentence_transformers",
        "extra": "embeddings",
    },
    "onnx_text": {
        "class": "v2serve.models.runtimes.onnx_text:OnnxTextEmbeddingModel",
        "module": "onnxruntime",
        "extra": "embeddings",
    },
    "wordllama": {
        "class": "v2serve.models.runtimes.wordllama:WordLlamaModel",
        "module": "wordllama",
        "extra": "wordllama",
    },
    "open_clip": {
        "class": "v2serve.models.runtimes.open_clip:OpenClipModel",
        "module": "open_clip",
        "extra": "vision",
    },
    "timm": {"class": "v2serve.models.runtimes.timm:TimmModel", "module": "timm", "extra": "vision"},
    "efficientnet_lite": {
        "class": "v2serve.models.runtimes.efficientnet_lite:EfficientNetLiteModel",
        "module": "efficientnet_lite_pytorch",
        "extra": "embeddings",
    },
}


def runtime_class(name: str) -> Any:
    """The Model class of a runtime by name (``onnx``, ``torch``)."""
    entry = RUNTIMES[name]
    module_name, _, attr = entry["class"].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def torch_for(device: str, threads: int | None = None) -> tuple[ModuleType, str]:
    """torch, imported now (in the loading thread, never at import), and the device a setting names:
    ``auto`` is CUDA when torch sees a GPU, the CPU otherwise. ``threads`` caps torch's CPU threads."""
    torch = require("torch", "torch")
    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch, device


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or fail with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is needed here: {install_hint(extra)}") from exc
