"""Triton's "simple" model: element-wise sum and difference of two INT32 tensors."""

import numpy as np

from v2serve import Model, TensorSpec


class AddSub(Model):
    inputs = [TensorSpec("INPUT0", "INT32", [-1, 16]), TensorSpec("INPUT1", "INT32", [-1, 16])]
    outputs = [TensorSpec("OUTPUT0", "INT32", [-1, 16]), TensorSpec("OUTPUT1", "INT32", [-1, 16])]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        a, b = inputs["INPUT0"], inputs["INPUT1"]
        if a.shape != b.shape:
            raise ValueError(f"INPUT0 {a.shape} and INPUT1 {b.shape} must have the same shape")
        return {"OUTPUT0": a + b, "OUTPUT1": a - b}
