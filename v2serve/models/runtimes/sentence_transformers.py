"""Text embeddings with sentence-transformers (all-MiniLM-L6-v2, e5, bge...), from a local folder."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from v2serve.models.embeddings import EmbeddingModel, load_safetensors
from v2serve.models.runtimes import require, torch_for


class SentenceTransformerModel(EmbeddingModel):
    """A sentence-transformers model: ``model_path`` is its folder (or a name in the local Hugging Face
    cache; nothing is downloaded: ``local_files_only``).

    A folder whose last module is ``Normalize`` is loaded without it, so that ``normalize=false`` answers the
    raw vectors; normalisation then happens per request, after any ``n_dims`` truncation. ``device``:
    ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; ``torch_threads`` caps torch's threads.
    """

    platform = "sentence_transformers"
    library: ClassVar[str] = "sentence_transformers"

    def __init__(
        self, *args: Any, device: str = "auto", torch_threads: int | None = None, half: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.device_setting = device
        self.torch_threads = torch_threads
        self.half = half

    def load(self) -> None:
        _, device = torch_for(self.device_setting, self.torch_threads)
        library = require("sentence_transformers", "embeddings")
        model = library.SentenceTransformer(str(self.model_path or self.name), device=device, local_files_only=True)
        if self.weights_file is not None:
            load_safetensors(model[0].auto_model, self.weights_file)
        modules = list(model)
        kept = [module for module in modules if not isinstance(module, library.models.Normalize)]
        if len(kept) < len(modules):
            model = library.SentenceTransformer(modules=kept, device=device)
        if self.half and device != "cpu":
            model = model.half()
        model.eval()
        self.model = model
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.set_dimensions(dimension())

    def embed(self, items: list[Any]) -> np.ndarray:
        vectors: np.ndarray = self.model.encode(
            items, batch_size=len(items), convert_to_numpy=True, normalize_embeddings=False, show_progress_bar=False
        )
        return vectors
