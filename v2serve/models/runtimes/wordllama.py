"""Text embeddings with WordLlama: small Matryoshka-trained token embeddings, no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from v2serve.models.embeddings import EmbeddingModel
from v2serve.models.runtimes import require


class WordLlamaModel(EmbeddingModel):
    """WordLlama's weights at ``dim`` dimensions (64 to 1024; its wheel ships 256), read from ``model_path``
    (a folder holding ``weights/`` and ``tokenizers/``), by default the installed package's own folder.
    Nothing is downloaded."""

    platform = "wordllama"
    library: ClassVar[str] = "wordllama"
    max_batch_delay_ms = 1.0  # a forward pass is a table lookup: waiting long for batch-mates costs more

    def __init__(self, *args: Any, dim: int = 256, config: str = "l2_supercat", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dim = dim
        self.config = config

    def load(self) -> None:
        wordllama = require("wordllama", "wordllama")
        folder = Path(self.model_path) if self.model_path else Path(str(wordllama.__file__)).parent
        self.model = wordllama.WordLlama.load(config=self.config, dim=self.dim, cache_dir=folder, disable_download=True)
        self.set_dimensions(self.dim)

    def embed(self, items: list[Any]) -> np.ndarray:
        vectors: np.ndarray = self.model.embed(items, norm=False)
        return vectors
