"""The model code every benchmarked server runs: the same numpy and onnxruntime calls, one intra-op thread."""

from __future__ import annotations

import numpy as np


def add_sub(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return a + b, a - b


def channel_mean(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=(2, 3), dtype=np.float32)


class MLP:
    def __init__(self, path: str) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input": x})[0]
