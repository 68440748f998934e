"""ONNX Runtime models: metadata from the model file, CUDA when available, CPU otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from v2serve.models.base import Model, Tensors
from v2serve.models.runtimes import require
from v2serve.protocol.types import TensorSpec

_ONNX_TO_V2 = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


class OnnxModel(Model):
    """Serves a ``.onnx`` file with ONNX Runtime.

    ``device``: ``auto`` (CUDA when onnxruntime-gpu sees a GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    Input and output names, datatypes and shapes (-1 for dynamic axes) come from the model file at load.
    One session serves every instance: ONNX Runtime sessions are safe to run from several threads.
    """

    platform = "onnxruntime_onnx"
    instances = 2

    def __init__(
        self,
        *args: Any,
        device: str = "auto",
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        provider_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.device = device
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.provider_options = dict(provider_options or {})
        self.providers: list[str] = []

    def load(self) -> None:
        ort = require("onnxruntime", "onnx")
        if not self.model_path:
            raise ValueError(f"model {self.name!r} needs a model_path to a .onnx file")
        options = ort.SessionOptions()
        if self.intra_op_threads is not None:
            options.intra_op_num_threads = self.intra_op_threads
        if self.inter_op_threads is not None:
            options.inter_op_num_threads = self.inter_op_threads
        providers = self._providers(ort.get_available_providers())
        self.session = ort.InferenceSession(self.model_path, options, providers=providers)
        self.providers = self.session.get_providers()
        self.inputs = [_spec(node) for node in self.session.get_inputs()]
        self.outputs = [_spec(node) for node in self.session.get_outputs()]
        self._output_names = [spec.name for spec in self.outputs]

    def _providers(self, available: list[str]) -> list[Any]:
        wants_cuda = self.device.startswith("cuda")
        has_cuda = "CUDAExecutionProvider" in available
        if wants_cuda and not has_cuda:
            raise RuntimeError(
                f"device {self.device!r} asked for, but ONNX Runtime offers only {available}; "
                "install onnxruntime-gpu (v2serve[gpu]) on a machine with a GPU"
            )
        if has_cuda and self.device != "cpu":
            options = dict(self.provider_options)
            if ":" in self.device:
                options.setdefault("device_id", int(self.device.split(":", 1)[1]))
            return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def predict(self, inputs: Tensors) -> dict[str, np.ndarray]:
        results = self.session.run(self._output_names, dict(inputs))
        return dict(zip(self._output_names, results, strict=True))


def _spec(node: Any) -> TensorSpec:
    datatype = _ONNX_TO_V2.get(node.type)
    if datatype is None:
        raise TypeError(f"ONNX tensor {node.name!r} has type {node.type}, which the v2 protocol cannot carry")
    return TensorSpec(node.name, datatype, [d if isinstance(d, int) and d >= 0 else -1 for d in node.shape])
