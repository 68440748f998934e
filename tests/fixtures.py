"""Fake models shared by the tests."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from v2serve import Model, RequestContext, TensorSpec


class SumModel(Model):
    """OUTPUT0 = sum of INPUT0 along its last axis; declares its tensors."""

    inputs = [TensorSpec("INPUT0", "FP32", [-1, -1])]
    outputs = [TensorSpec("OUTPUT0", "FP32", [-1])]

    def predict(self, inputs):
        return {"OUTPUT0": inputs["INPUT0"].sum(axis=-1)}


class EchoModel(Model):
    """Echoes every input under its own name; declares nothing, so any tensors are accepted."""

    def predict(self, inputs, context: RequestContext):
        return dict(inputs)


class ContextModel(Model):
    """Reports what reached it from the request besides the tensors."""

    seen: list[RequestContext]

    def load(self):
        self.seen = []

    def predict(self, inputs, context: RequestContext):
        self.seen.append(context)
        return {"n": np.array([len(inputs)], dtype=np.int64)}


class AsyncDouble(Model):
    inputs = [TensorSpec("x", "INT64", [-1])]
    outputs = [TensorSpec("y", "INT64", [-1])]

    async def predict(self, inputs):
        await asyncio.sleep(0)
        return inputs["x"] * 2


class ErrorModel(Model):
    def predict(self, inputs):
        raise ValueError("boom: the model is broken")


class FailingLoadModel(Model):
    def load(self):
        raise RuntimeError("weights file is corrupt")

    def predict(self, inputs):  # pragma: no cover - never ready
        return inputs


class GatedModel(Model):
    """predict blocks until ``release`` is set; ``started`` is set when a predict begins."""

    def __init__(self, name: str = "gated", timeout_s: float = 10.0):
        super().__init__(name=name)
        self.started = threading.Event()
        self.release = threading.Event()
        self.timeout_s = timeout_s

    def predict(self, inputs):
        self.started.set()
        if not self.release.wait(self.timeout_s):
            raise TimeoutError("GatedModel was never released")
        return dict(inputs)


class GatedLoadModel(Model):
    """load blocks until ``release`` is set, so the model stays LOADING meanwhile."""

    def __init__(self, name: str = "slow_loader"):
        super().__init__(name=name)
        self.release = threading.Event()

    def load(self):
        if not self.release.wait(10):
            raise TimeoutError("never released")

    def predict(self, inputs):
        return dict(inputs)


class SlowModel(Model):
    """Takes ``seconds`` per predict (simulated work); counts predictions in flight for the tests to watch."""

    def __init__(self, name: str = "slow", seconds: float = 1.0):
        super().__init__(name=name)
        self.seconds = float(seconds)
        self.in_flight = 0
        self._lock = threading.Lock()

    def predict(self, inputs):
        with self._lock:
            self.in_flight += 1
        try:
            time.sleep(self.seconds)
            return dict(inputs)
        finally:
            with self._lock:
                self.in_flight -= 1

    def op_in_flight(self, body):
        return {"in_flight": self.in_flight}


class ExplainingModel(SumModel):
    def explain(self, inputs, context):
        x = inputs["INPUT0"]
        return {"OUTPUT0": x.sum(axis=-1), "attributions": x / x.sum(axis=-1, keepdims=True)}

    def op_describe(self, body, context):
        return {"model": self.name, "got": body, "id": context.id}


class CountingDouble(Model):
    """y = 2x for FP32 rows of any width; counts predict calls and the rows each call saw. Batchable."""

    inputs = [TensorSpec("x", "FP32", [-1, -1])]
    outputs = [TensorSpec("y", "FP32", [-1, -1])]

    def __init__(self, name: str = "counting", **kwargs):
        super().__init__(name=name, **kwargs)
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def predict(self, inputs, context):
        with self._lock:
            self.calls.append(inputs["x"].shape[0])
        return {"y": inputs["x"] * 2}


class NpyWeights(Model):
    """y = x @ W with W loaded from the .npy file at model_path (local or a URL fetched into the cache)."""

    inputs = [TensorSpec("x", "FP32", [-1, -1])]
    outputs = [TensorSpec("y", "FP32", [-1, -1])]

    def load(self):
        self.weights = np.load(self.model_path, allow_pickle=False)

    def predict(self, inputs):
        return {"y": inputs["x"] @ self.weights}
