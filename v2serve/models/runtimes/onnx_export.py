"""Exporting a sentence-transformers folder to ONNX: the transformer and its pooling in one graph.

The graph takes ``input_ids``, ``attention_mask`` and (when the model has them) ``token_type_ids``, and
answers ``sentence_embedding``: the pooled, un-normalised vector. It is exported with ``torch.export``
(``dynamo=True``): tracing (the older exporter) records transformers' attention-mask code wrongly, and the
graph then answers vectors far from the model's. ``quantize="int8"`` adds a copy whose weight matrices are
int8, per output channel (ONNX Runtime's dynamic quantization, weights only): about 1.6 times the float
graph's speed on an AVX2 CPU, and close to, not equal to, the float vectors.

Run ahead of serving with ``python -m v2serve.models.runtimes.onnx_export FOLDER OUT.onnx [--int8]``;
otherwise the ``onnx_text`` runtime exports at load, once, into its cache folder.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

from v2serve.models.runtimes import require

POOLING_MODES = ("mean", "cls", "max")


def pooling_of(folder: Path) -> str:
    """The pooling a sentence-transformers folder declares (``1_Pooling/config.json``), mean by default."""
    modules_file = folder / "modules.json"
    modules = json.loads(modules_file.read_text()) if modules_file.is_file() else []
    for module in modules:
        if module.get("type", "").endswith("Pooling"):
            config = json.loads((folder / module["path"] / "config.json").read_text())
            if config.get("pooling_mode_cls_token"):
                return "cls"
            if config.get("pooling_mode_max_tokens"):
                return "max"
            if config.get("pooling_mode_mean_tokens", True):
                return "mean"
            raise ValueError(f"{folder}: pooling {config} is not one of {POOLING_MODES}")
    return "mean"


def export(folder: Path, target: Path, quantize: str | None = None) -> Path:
    """Export ``folder`` to ``target`` (and, with ``quantize="int8"``, return the int8 copy's path)."""
    torch = require("torch", "torch")
    transformers = require("transformers", "embeddings")
    pooling = pooling_of(folder)
    model = transformers.AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    names = ["input_ids", "attention_mask"]
    if getattr(model.config, "type_vocab_size", 0):
        names.append("token_type_ids")
    wrapper = _pooled_module(torch, model, pooling, names)
    sample = {name: torch.ones((2, 8), dtype=torch.int64) for name in names}
    sample["attention_mask"][1, 5:] = 0
    if "token_type_ids" in sample:
        sample["token_type_ids"].zero_()
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        # The exporter warns about its own internals (deprecations in torch.export, transformers' mask code).
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                tuple(sample[name] for name in names),
                str(partial),
                input_names=names,
                output_names=["sentence_embedding"],
                dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
                dynamo=True,
                external_data=False,
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    if quantize is None:
        return target
    if quantize != "int8":
        raise ValueError(f"quantize must be 'int8' or none, not {quantize!r}")
    return quantized(target)


def quantized(source: Path) -> Path:
    """An int8 copy of ``source`` beside it (weight matrices only, per output channel)."""
    quantization = require("onnxruntime.quantization", "onnx")
    target = source.with_name(f"{source.stem}-int8.onnx")
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        quantization.quantize_dynamic(
            str(source),
            str(partial),
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
            extra_options={"MatMulConstBOnly": True},
        )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _pooled_module(torch: Any, model: Any, pooling: str, names: list[str]) -> Any:
    """The transformer and its pooling as one module (defined here: torch is imported only to export)."""

    class Pooled(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            named = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                named["token_type_ids"] = token_type_ids
            tokens = self.model(**named).last_hidden_state
            if pooling == "cls":
                return tokens[:, 0]
            mask = named["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            if pooling == "max":
                return (tokens - (1 - mask) * 1e9).max(dim=1).values
            return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    return Pooled().eval()


def main() -> None:
    parser = argparse.ArgumentParser(description="Export a sentence-transformers folder to ONNX for onnx_text.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--int8", action="store_true", help="also write an int8 copy (TARGET-int8.onnx)")
    args = parser.parse_args()
    print(export(args.folder, args.target, "int8" if args.int8 else None))


if __name__ == "__main__":
    main()
