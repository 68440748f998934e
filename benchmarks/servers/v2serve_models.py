"""The benchmark models as v2serve Model classes (the ONNX MLP uses v2serve's own onnx runtime).

Like the MLServer and KServe runtimes (and the floor), these run their few microseconds of numpy on the
event loop: an ``async def predict`` is v2serve's way to say a model does not block.
"""

from __future__ import annotations

import model_code
import numpy as np

from v2serve import Model, TensorSpec


class AddSub(Model):
    inputs = [TensorSpec("INPUT0", "INT32", [-1, 16]), TensorSpec("INPUT1", "INT32", [-1, 16])]
    outputs = [TensorSpec("OUTPUT0", "INT32", [-1, 16]), TensorSpec("OUTPUT1", "INT32", [-1, 16])]
    instances = 1

    async def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        total, difference = model_code.add_sub(inputs["INPUT0"], inputs["INPUT1"])
        return {"OUTPUT0": total, "OUTPUT1": difference}


class ChannelMean(Model):
    inputs = [TensorSpec("x", "FP32", [-1, 3, 224, 224])]
    outputs = [TensorSpec("mean", "FP32", [-1, 3])]
    instances = 1

    async def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"mean": model_code.channel_mean(inputs["x"])}
