"""Embedding models: texts or images in, one vector per item out, shaped per request.

An embedding model's predict returns the model's raw vectors, full width, for a whole batch (many
one-sentence requests become one forward pass); ``finalize`` then shapes each request's own rows by its
parameters, which is where they may differ:

- ``n_dims`` (or ``nDims``): keep the first ``n_dims`` dimensions (Matryoshka representation learning);
- ``normalize`` (default: the model's ``normalize``, true unless configured otherwise): L2-normalise, after
  truncating. A Matryoshka vector is trained so that its prefix is a good embedding, but a prefix of a unit
  vector is not a unit vector: normalising first and truncating after (as Ingrain does) returns vectors
  shorter than unit length, whose dot products are no longer cosine similarities.

The input is ``text`` (BYTES, UTF-8) for text models and ``image`` (BYTES, an encoded image: PNG, JPEG...)
for image models; the output is ``embedding`` (FP32, ``[rows, dimensions]``). A model of both (CLIP) takes
either input, or both: one answers ``embedding``, both answer ``text_embedding`` and ``image_embedding``
(one vector space, so a text's and an image's vectors compare directly). The runtimes that build on this
are ``sentence_transformers`` and ``wordllama`` (text), ``onnx_text`` (a sentence-transformers model run by
ONNX Runtime), ``efficientnet_lite`` and ``timm`` (images) and ``open_clip`` (both); a subclass for another
library implements ``load`` (set ``dimensions``) and ``embed`` (``embed_items`` for several modalities).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from v2serve.errors import InvalidRequest
from v2serve.models.base import Model, RequestContext, Tensors
from v2serve.protocol.types import TensorSpec

EMBEDDING = "embedding"
"""The output every embedding model answers for a request of one modality."""
TEXT = "text"
IMAGE = "image"


def embedding_of(modality: str) -> str:
    """The output of ``modality``'s vectors when a request gives a multi-modal model several inputs."""
    return f"{modality}_{EMBEDDING}"


EMBEDDING_OUTPUTS = frozenset({EMBEDDING, embedding_of(TEXT), embedding_of(IMAGE)})


def shape_embeddings(vectors: np.ndarray, n_dims: int | None, normalize: bool) -> np.ndarray:
    """``vectors`` cut to their first ``n_dims`` dimensions, then (``normalize``) scaled to unit length."""
    if n_dims is not None:
        vectors = vectors[:, :n_dims]
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, np.float32(1e-12))  # an all-zero vector stays zero
    # C order: orjson writes a C-contiguous float32 array straight to JSON (a sliced view goes through tolist).
    return np.ascontiguousarray(vectors, dtype=np.float32)


class EmbeddingModel(Model):
    """The base of text and image embedding models: batching on, per-request shaping in ``finalize``.

    Subclasses set ``modality`` (``"text"`` or ``"image"``) and implement ``embed(items)`` (a list of str
    for text, of bytes for images) returning a float array ``[len(items), dimensions]``, and ``load``, which
    must set ``dimensions``. A model of several modalities sets ``modalities`` instead and implements
    ``embed_items(modality, items)``.
    """

    modality: ClassVar[str] = TEXT
    modalities: ClassVar[tuple[str, ...] | None] = None
    """Every modality the model embeds, when it is more than ``modality``; each input is then optional."""
    library: ClassVar[str] = "v2serve"
    """The library the model comes from, as Ingrain's model routes name it (``sentence_transformers``,
    ``timm``, ``open_clip``)."""
    max_batch_size = 64
    max_batch_delay_ms = 5.0
    instances = 1
    """One forward pass at a time: on a CPU, torch already spreads one pass over every core it may use."""
    max_items = 1024
    """Items in one request at most; a longer list is a 400 before anything is computed."""

    def __init__(self, *args: Any, normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.normalize = normalize
        self.dimensions = 0
        self.weights_file: str | None = None
        """A safetensors file of weights to load over the architecture's own (Ingrain's custom models)."""
        self.checkpoint: str | None = None
        """The name of those weights (Ingrain's ``pretrained``): a request naming another is not for it."""
        several = len(self.served_modalities()) > 1
        self.inputs = [TensorSpec(modality, "BYTES", [-1], optional=several) for modality in self.served_modalities()]
        self.outputs = self._output_specs(-1)

    def served_modalities(self) -> tuple[str, ...]:
        """What the model embeds: ``modalities``, or its one ``modality``."""
        return self.modalities or (self.modality,)

    def embeds(self, modality: str) -> bool:
        return modality in self.served_modalities()

    def item_limit(self, modality: str) -> int:
        """How many items of ``modality`` one request may hold (``max_items`` unless a model says more)."""
        return self.max_items

    def set_dimensions(self, dimensions: int) -> None:
        """Record the width of the model's vectors (call it from ``load``)."""
        self.dimensions = int(dimensions)
        self.outputs = self._output_specs(self.dimensions)

    def _output_specs(self, width: int) -> list[TensorSpec]:
        names = [EMBEDDING]
        if len(self.served_modalities()) > 1:
            names += [embedding_of(modality) for modality in self.served_modalities()]
        return [TensorSpec(name, "FP32", [-1, width]) for name in names]

    def embed(self, items: list[Any]) -> np.ndarray:
        """The raw vectors of ``items``, one row each, full width, not normalised."""
        raise NotImplementedError

    def embed_items(self, modality: str, items: list[Any]) -> np.ndarray:
        """The raw vectors of ``items`` of ``modality`` (a model of several modalities implements this)."""
        return self.embed(items)

    def predict(self, inputs: Tensors) -> dict[str, np.ndarray]:
        given = [modality for modality in self.served_modalities() if modality in inputs]
        if len(given) == 1:
            return {EMBEDDING: self._vectors(given[0], inputs[given[0]])}
        if not given:
            raise InvalidRequest(f"model {self.name!r} embeds {' or '.join(self.served_modalities())}: give one")
        return {embedding_of(modality): self._vectors(modality, inputs[modality]) for modality in given}

    def _vectors(self, modality: str, items: np.ndarray) -> np.ndarray:
        limit = self.item_limit(modality)
        if items.size > limit:
            raise InvalidRequest(f"a request embeds at most {limit} {modality} items, not {items.size}")
        # The libraries take Python lists (a tokenizer takes str); this loop is over items, not tensor data.
        values = [_as_text(item) for item in items.ravel()] if modality == TEXT else list(items.ravel())
        if not values:
            return np.empty((0, self.dimensions), np.float32)
        return np.asarray(self.embed_items(modality, values), dtype=np.float32)

    def finalize(self, outputs: Tensors, context: RequestContext) -> Tensors:
        if not EMBEDDING_OUTPUTS.intersection(outputs):
            return outputs
        n_dims, normalize = embedding_options(context.parameters, self.dimensions, self.normalize)
        return {
            name: shape_embeddings(value, n_dims, normalize) if name in EMBEDDING_OUTPUTS else value
            for name, value in outputs.items()
        }


def load_safetensors(module: Any, path: str) -> None:
    """Load a safetensors state dict into a torch module, every key matching (no pickled code can run)."""
    from safetensors.torch import load_file

    module.load_state_dict(load_file(path), strict=True)


def embedding_options(
    parameters: Mapping[str, Any], dimensions: int, default_normalize: bool
) -> tuple[int | None, bool]:
    """``n_dims`` (checked against ``dimensions``) and ``normalize`` from request parameters."""
    n_dims = parameters.get("n_dims", parameters.get("nDims"))
    normalize = parameters.get("normalize", default_normalize)
    if normalize is None:
        normalize = default_normalize
    if not isinstance(normalize, bool):
        raise InvalidRequest(f"normalize must be true or false, not {normalize!r}")
    if n_dims is None:
        return None, normalize
    if isinstance(n_dims, bool) or not isinstance(n_dims, int):
        raise InvalidRequest(f"n_dims must be an integer, not {n_dims!r}")
    if not 1 <= n_dims <= dimensions:
        raise InvalidRequest(f"n_dims must be between 1 and the model's {dimensions} dimensions, not {n_dims}")
    return n_dims, normalize


def _as_text(item: Any) -> str:
    if isinstance(item, bytes):
        try:
            return item.decode()
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"a text to embed is not UTF-8: {exc}") from None
    if isinstance(item, str):
        return item
    raise InvalidRequest(f"a text to embed must be a string, not {type(item).__name__}")
