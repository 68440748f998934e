"""The benchmark workloads: request bodies and how to check an answer, the same for every server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

MLP_SIZES = (784, 512, 512, 10)


@dataclass
class Workload:
    name: str
    model: str
    """The model name every server serves this workload under."""
    body: bytes
    check: Callable[[dict], bool]
    """True when a decoded JSON response carries the right outputs."""
    header_length: int | None = None
    """Inference-Header-Content-Length for binary bodies."""
    content_type: str = "application/json"


def _outputs(response: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in response["outputs"]}


def add_sub() -> Workload:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 7, dtype=np.int32)
    body = orjson.dumps(
        {
            "id": "bench",
            "inputs": [
                {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a.ravel().tolist()},
                {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b.ravel().tolist()},
            ],
        }
    )

    def check(response: dict) -> bool:
        out = _outputs(response)
        return bool(np.array_equal(out["OUTPUT0"], a + b) and np.array_equal(out["OUTPUT1"], a - b))

    return Workload("add_sub", "add_sub", body, check)


def mlp(onnx_path: Path, model: str = "mlp") -> Workload:
    import onnxruntime

    x = np.random.default_rng(7).standard_normal((1, MLP_SIZES[0])).astype(np.float32)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    expected = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]
    body = orjson.dumps(
        {
            "id": "bench",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": x.ravel().tolist()}],
        }
    )

    def check(response: dict) -> bool:
        return bool(np.allclose(_outputs(response)["probabilities"], expected, rtol=1e-4, atol=1e-6))

    return Workload(f"onnx_mlp[{model}]", model, body, check)


def _large_tensor() -> np.ndarray:
    return np.random.default_rng(11).random((1, 3, 224, 224), dtype=np.float32)


def _check_mean(x: np.ndarray) -> Callable[[dict], bool]:
    expected = x.mean(axis=(2, 3))

    def check(response: dict) -> bool:
        return bool(np.allclose(_outputs(response)["mean"], expected, rtol=1e-5))

    return check


def large_tensor_json() -> Workload:
    x = _large_tensor()
    body = orjson.dumps(
        {"id": "bench", "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel()}]},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    return Workload("large_tensor_json", "channel_mean", body, _check_mean(x))


def large_tensor_binary() -> Workload:
    x = _large_tensor()
    header = orjson.dumps(
        {
            "id": "bench",
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": list(x.shape), "parameters": {"binary_data_size": x.nbytes}}
            ],
        }
    )
    return Workload(
        "large_tensor_binary",
        "channel_mean",
        header + x.tobytes(),
        _check_mean(x),
        len(header),
        "application/octet-stream",
    )
