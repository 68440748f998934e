"""Models the front-end tests serve: typed ones, and streaming ones whose progress a test can gate."""

from __future__ import annotations

import threading

import numpy as np

from v2serve.models.base import Model
from v2serve.protocol.types import TensorSpec


class RowSum(Model):
    """Sums each row of three features; explains with the features' share of the sum."""

    inputs = [TensorSpec("x", "FP32", [-1, 3])]
    outputs = [TensorSpec("total", "FP32", [-1])]

    def predict(self, inputs):
        return inputs["x"].sum(axis=1)

    def explain(self, inputs):
        x = inputs["x"]
        return x / x.sum(axis=1, keepdims=True)


class ByteLength(Model):
    """Raw bytes in (an image, a file), their length and first byte out."""

    inputs = [TensorSpec("data", "BYTES", [-1])]
    outputs = [TensorSpec("length", "INT64", [-1]), TensorSpec("first", "INT64", [-1])]

    def predict(self, inputs):
        blobs = inputs["data"].reshape(-1)
        return {
            "length": np.array([len(b) for b in blobs], dtype=np.int64),
            "first": np.array([b[0] if b else -1 for b in blobs], dtype=np.int64),
        }


class Reverse(Model):
    """Bytes in, the same bytes reversed out, as PNG (a model that answers with a file)."""

    inputs = [TensorSpec("data", "BYTES", [-1])]
    outputs = [TensorSpec("image", "BYTES", [-1])]
    bytes_content_type = "image/png"

    def predict(self, inputs):
        out = np.empty(1, dtype=object)
        out[0] = bytes(inputs["data"].reshape(-1)[0])[::-1]
        return out


class EchoStream(Model):
    """TorchServe's echo_stream written the v2serve way: three intermediate responses, then the last one."""

    inputs = [TensorSpec("data", "BYTES", [-1])]
    outputs = [TensorSpec("text", "BYTES", [-1])]

    def predict(self, inputs):
        for _ in range(3):
            yield "hello"
        yield "hello world "


class GatedStream(Model):
    """Yields ``token-<i>`` forever, each only once the test releases it; records when it was closed."""

    inputs = [TensorSpec("data", "BYTES", [-1])]
    outputs = [TensorSpec("text", "BYTES", [-1])]
    instances = 1

    def __init__(self, name: str = "gated_stream") -> None:
        super().__init__(name)
        self.released = threading.Semaphore(0)
        self.produced = 0
        self.closed = threading.Event()

    def predict(self, inputs):
        try:
            while True:
                if not self.released.acquire(timeout=30):
                    return
                self.produced += 1
                yield f"token-{self.produced}"
        finally:
            self.closed.set()


class AsyncCountdown(Model):
    """An async generator: counts down from the number sent, then fails if asked to."""

    inputs = [TensorSpec("start", "INT64", [1])]
    outputs = [TensorSpec("count", "INT64", [1])]

    async def predict(self, inputs):
        start = int(inputs["start"][0])
        for value in range(start, 0, -1):
            yield np.array([value], dtype=np.int64)
        if start == 2:
            raise RuntimeError("countdown broke after two")
