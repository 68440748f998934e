"""Image embedding models: encoded images (PNG, JPEG, WebP...) decoded and prepared for a CNN or a ViT.

Decoding runs in predict, in the model's thread, with Pillow (the ``embeddings`` extra). Every image is
bounded before it is decoded: its header gives its size, and one of more than ``max_image_pixels`` pixels is
refused (a small compressed file can claim a huge canvas). An image that does not decode is a 400 naming its
position in the request; when requests were batched together, the batch is run again one request at a time,
so that only the request that sent it fails.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np

from v2serve.errors import InvalidRequest, NotImplementedOperation
from v2serve.models.embeddings import IMAGE, EmbeddingModel
from v2serve.models.runtimes import require


class ImageEmbeddingModel(EmbeddingModel):
    """Decodes, resizes (shorter side to ``image_size``, then a centre crop) and normalises images into a
    float32 ``[n, 3, image_size, image_size]`` array for ``embed_pixels``, which subclasses implement."""

    modality: ClassVar[str] = IMAGE
    max_batch_size = 16
    max_items = 64
    image_size = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_image_pixels = 40_000_000

    def embed(self, items: list[Any]) -> np.ndarray:
        return self.embed_pixels(self.pixels(items))

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """The raw vectors of a float32 ``[n, 3, H, W]`` batch of normalised images."""
        raise NotImplementedError

    labels: list[str] | None = None
    """The class names of a model that also classifies (``classify_pixels``), in output order."""

    def classify_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n, classes]`` of a batch of images, for a model that classifies."""
        raise NotImplementedOperation(f"model {self.name!r} does not classify images")

    def op_classify(self, body: Any) -> np.ndarray:
        """The custom operation behind Ingrain's ``/classify_image``: ``{"images": [bytes, ...]}``."""
        images = body.get("images") if isinstance(body, dict) else None
        if not isinstance(images, list):
            raise InvalidRequest("classify takes {'images': [...]}")
        return self.classify_pixels(self.pixels(images))

    def pixels(self, items: list[Any]) -> np.ndarray:
        image_module = require("PIL.Image", "embeddings")
        size = self.image_size
        batch = np.empty((len(items), 3, size, size), np.float32)
        for index, item in enumerate(items):
            batch[index] = self._prepared(image_module, item, index)
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
        return (batch - mean) / std

    def _prepared(self, image_module: Any, item: Any, index: int) -> np.ndarray:
        if not isinstance(item, bytes | bytearray | memoryview):
            raise InvalidRequest(f"image {index} of the request is not bytes but {type(item).__name__}")
        try:
            with image_module.open(io.BytesIO(item)) as image:
                width, height = image.size
                if width * height > self.max_image_pixels:
                    raise InvalidRequest(
                        f"image {index} of the request has {width}x{height} pixels; at most "
                        f"{self.max_image_pixels} are accepted"
                    )
                rgb = image.convert("RGB")
        except InvalidRequest:
            raise
        except Exception as exc:
            raise InvalidRequest(f"image {index} of the request could not be decoded: {exc}") from None
        return _resized_chw(rgb, self.image_size, image_module)


def _resized_chw(image: Any, size: int, image_module: Any) -> np.ndarray:
    """The shorter side scaled to ``size``, the centre ``size`` x ``size`` cut out, as [3, size, size] in 0..1."""
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), image_module.Resampling.BILINEAR
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    cropped = resized.crop((left, top, left + size, top + size))
    return np.asarray(cropped, np.float32).transpose(2, 0, 1) / np.float32(255)
