"""Image embedding models: encoded images (PNG, JPEG, WebP...) decoded and prepared for a CNN or a ViT.

Decoding runs in predict, in the model's thread, with Pillow (the ``embeddings`` extra). Every image is
bounded before it is decoded: its header gives its size, and one of more than ``max_image_pixels`` pixels is
refused (a small compressed file can claim a huge canvas); its centre (the square, or a bounded aspect ratio
for a library's own transform) is cut out before it is resized, so that what the resize makes is bounded by
the model's size whatever the aspect ratio. An image
that does not decode is a 400 naming its position in the request; when requests were batched together,
the batch is run again one request at a time, so that only the request that sent it fails.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np

from v2serve.errors import InvalidRequest, NotImplementedOperation
from v2serve.models.embeddings import IMAGE, EmbeddingModel
from v2serve.models.runtimes import require


class ImageEmbeddingModel(EmbeddingModel):
    """Decodes, crops (the centre square), resizes (to ``image_size``) and normalises images into a
    float32 ``[n, 3, image_size, image_size]`` array for ``embed_pixels``, which subclasses implement."""

    modality: ClassVar[str] = IMAGE
    max_batch_size = 16
    max_items = 64
    image_size = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_image_pixels = 40_000_000
    max_aspect_ratio = 1.0
    """How much longer than wide (or wide than long) a decoded image may stay: its centre is cut to this
    before anything else. 1: the centre square, all that the default ``prepare`` uses. A library transform
    that resizes the shorter side and then crops the centre (timm's, open_clip's) looks only at the centre
    square too, so a looser bound changes nothing it computes for images within it."""
    transform: Any = None
    """A library's own preprocessing (timm's, open_clip's: a callable from a Pillow image to a ``[3, H, W]``
    tensor), which ``prepare`` applies instead of its own when a runtime sets it."""

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
        """Encoded images as the model's float32 ``[n, 3, H, W]`` batch (``prepare`` of each)."""
        image_module = require("PIL.Image", "embeddings")
        if not items:
            return np.empty((0, 3, self.image_size, self.image_size), np.float32)
        return np.stack([self._prepared(image_module, item, index) for index, item in enumerate(items)])

    def prepare(self, image: Any) -> np.ndarray:
        """One decoded RGB Pillow image, already cut to ``max_aspect_ratio``, as the model's normalised
        float32 ``[3, H, W]`` input: ``transform``'s, or resized to ``image_size`` (bilinear) and scaled by
        ``mean`` and ``std``."""
        if self.transform is not None:
            prepared: np.ndarray = self.transform(image).numpy()
            return prepared
        image_module = require("PIL.Image", "embeddings")
        resized = image.resize((self.image_size, self.image_size), image_module.Resampling.BILINEAR)
        scaled = np.asarray(resized, np.float32).transpose(2, 0, 1) / np.float32(255)
        mean = np.asarray(self.mean, np.float32).reshape(3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(3, 1, 1)
        result: np.ndarray = (scaled - mean) / std
        return result

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
                centre = image.crop(centre_region(width, height, self.max_aspect_ratio))
            rgb = centre.convert("RGB")
        except InvalidRequest:
            raise
        except Exception as exc:
            raise InvalidRequest(f"image {index} of the request could not be decoded: {exc}") from None
        return np.asarray(self.prepare(rgb), np.float32)


def centre_region(width: int, height: int, max_aspect_ratio: float = 1.0) -> tuple[int, int, int, int]:
    """The centred part of a ``width`` x ``height`` image whose longer side is at most ``max_aspect_ratio``
    times its shorter one (1: the largest centred square), as Pillow's (left, top, right, bottom).

    Cropping before resizing, not after, is what bounds the work by the decoded image: scaling the shorter
    side of a 10 x 4,000,000 image up to 224 first would make a 224 x 89,600,000 canvas (60 GB) to keep
    its centre. The result is the same centre, scaled to the model's size.
    """
    side = min(width, height)
    longest = max(side, int(side * max_aspect_ratio))
    kept_width, kept_height = min(width, longest), min(height, longest)
    left, top = (width - kept_width) // 2, (height - kept_height) // 2
    return left, top, left + kept_width, top + kept_height
