"""Text embeddings from a sentence-transformers folder, run by ONNX Runtime (CUDA when available).

The folder's tokenizer (``tokenizer.json``, read by ``tokenizers``) turns texts into token ids; one ONNX graph
runs the transformer and the folder's pooling (``onnx_export.py``). The graph is ``onnx_path`` when given,
else exported once at load into ``export_dir`` (keyed by the folder and its weights) and reused after.
``quantize="int8"`` serves the int8 copy instead (made once, beside the float graph): about 1.6 times the
float graph's speed on an AVX2 CPU, its vectors close to the float ones (all-MiniLM-L6-v2: cosine
similarity above 0.98 on the tests' sentences, 0.99 on the benchmark's probe), not equal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from v2serve.models.embeddings import EmbeddingModel
from v2serve.models.runtimes import require

logger = logging.getLogger("v2serve.models")


class OnnxTextEmbeddingModel(EmbeddingModel):
    """A sentence-transformers folder (``model_path``) served by ONNX Runtime."""

    platform = "onnxruntime_onnx"
    library: ClassVar[str] = "sentence_transformers"

    def __init__(
        self,
        *args: Any,
        onnx_path: str | None = None,
        quantize: str | None = None,
        export_dir: str = "~/.cache/v2serve/onnx",
        device: str = "auto",
        intra_op_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be 'int8' or none, not {quantize!r}")
        self.onnx_path = onnx_path
        self.quantize = quantize
        self.export_dir = export_dir
        self.device = device
        self.intra_op_threads = intra_op_threads

    def load(self) -> None:
        ort = require("onnxruntime", "onnx")
        tokenizers = require("tokenizers", "embeddings")
        if not self.model_path:
            raise ValueError(f"model {self.name!r} needs model_path: a sentence-transformers folder")
        folder = Path(self.model_path)
        tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(_max_length(folder))
        tokenizer.enable_padding()
        self.tokenizer = tokenizer
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.intra_op_threads:
            options.intra_op_num_threads = self.intra_op_threads
        available = ort.get_available_providers()
        wants_cuda = self.device.startswith("cuda") or self.device == "auto"
        providers = ["CUDAExecutionProvider"] if wants_cuda and "CUDAExecutionProvider" in available else []
        self.session = ort.InferenceSession(
            str(self._graph(folder)), options, providers=[*providers, "CPUExecutionProvider"]
        )
        self.input_names = [node.name for node in self.session.get_inputs()]
        width = self.session.get_outputs()[0].shape[-1]
        self.set_dimensions(width if isinstance(width, int) else len(self.embed(["x"])[0]))

    def _graph(self, folder: Path) -> Path:
        from v2serve.models.runtimes import onnx_export

        target = Path(self.onnx_path) if self.onnx_path else self._exported(folder, onnx_export.export)
        if self.quantize is None:
            return target
        quantized = target.with_name(f"{target.stem}-int8.onnx")  # made once, beside the float graph
        return quantized if quantized.is_file() else onnx_export.quantized(target)

    def _exported(self, folder: Path, export: Callable[[Path, Path], Path]) -> Path:
        """The folder's graph in ``export_dir``, keyed by the folder and its weights; exported if absent."""
        weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        stamp = "|".join(f"{w.resolve()}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights)
        key = hashlib.sha256(f"{folder.resolve()}|{stamp}".encode()).hexdigest()[:24]
        target = Path(self.export_dir).expanduser() / key / "model.onnx"
        if not target.is_file():
            logger.info("exporting %s to ONNX, once: the graph is kept at %s (this takes a while)", folder, target)
            started = time.monotonic()
            export(folder, target)
            logger.info("exported %s to ONNX in %.1f s", folder, time.monotonic() - started)
        return target

    def embed(self, items: list[Any]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(items)
        ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        vectors: np.ndarray = self.session.run(None, feeds)[0]
        return vectors


def _max_length(folder: Path) -> int:
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length", 512))
    return 512
