"""Returns its BYTES input unchanged: a round-trip check for string tensors."""

import numpy as np

from v2serve import Model, TensorSpec


class EchoBytes(Model):
    inputs = [TensorSpec("INPUT0", "BYTES", [-1])]
    outputs = [TensorSpec("OUTPUT0", "BYTES", [-1])]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"OUTPUT0": inputs["INPUT0"]}
