"""Models for the stream tests that run the consumer in its own process (`v2serve consume`)."""

from __future__ import annotations

import os
import time

import numpy as np

from v2serve.models.base import Model, TensorSpec


class AddOne(Model):
    """y = x + 1, and the pid of the process that served it, so that tests can tell two consumers apart.

    Each predict takes V2SERVE_TEST_DELAY_S seconds more (simulated work), so that a test can stop a consumer
    while messages are in flight.
    """

    inputs = [TensorSpec("x", "INT64", [-1, -1])]
    outputs = [TensorSpec("y", "INT64", [-1, -1]), TensorSpec("pid", "INT64", [-1])]

    def __init__(self, name: str = "add_one"):
        super().__init__(name=name)
        self.delay_s = float(os.environ.get("V2SERVE_TEST_DELAY_S", "0"))

    def predict(self, inputs):
        if self.delay_s:
            time.sleep(self.delay_s)
        x = inputs["x"]
        return {"y": x + 1, "pid": np.full(x.shape[0], os.getpid(), dtype=np.int64)}
