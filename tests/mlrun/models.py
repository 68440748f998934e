"""Model classes written as for MLRun serving; only the import differs."""

from __future__ import annotations

import json

import numpy as np

from v2serve.models.base import Model
from v2serve.models.mlrun import V2ModelServer  # MLRun: from mlrun.serving import V2ModelServer
from v2serve.protocol.types import TensorSpec


class ClassifierModel(V2ModelServer):
    """Thresholds each data point's sum with weights read from its model file; records the calls it gets."""

    def load(self):
        model_file, _extra_data = self.get_model(".json")
        with open(model_file) as handle:
            self.weights = json.load(handle)["weights"]
        self.calls = []
        self.context.logger.info(f"loaded {model_file}")

    def preprocess(self, request, operation):
        self.calls.append(("preprocess", operation))
        return request

    def validate(self, request, operation):
        self.calls.append(("validate", operation))
        return super().validate(request, operation)

    def predict(self, body: dict) -> list:
        threshold = self.get_param("threshold", 10)
        return [
            int(sum(w * x for w, x in zip(self.weights, point, strict=True)) > threshold) for point in body["inputs"]
        ]

    def explain(self, body: dict) -> dict:
        return {"weights": self.weights}

    def postprocess(self, response: dict) -> dict:
        self.calls.append(("postprocess", None))
        return response

    def op_weights(self, event):
        # MLRun calls op_<name> with the event: its body, and the path it came on.
        return {"weights": self.weights, "asked": event.body, "path": event.path}


class EchoInputs(V2ModelServer):
    """Answers with the type of its inputs and the inputs themselves, as MLRun passed them."""

    def load(self):
        pass

    def predict(self, body: dict) -> list:
        inputs = body["inputs"]
        return [type(inputs).__name__, inputs if isinstance(inputs, list | str) else len(inputs)]


class Greeter(V2ModelServer):
    """A model that answers a string, and bytes from its op_image (what MLRun sends as text and bytes)."""

    def load(self):
        pass

    def postprocess(self, response: dict) -> str:
        return f"hello {response['outputs'][0]}"

    def predict(self, body: dict) -> list:
        return [body["inputs"][0]]

    def op_image(self, event):
        return b"\x89PNG\r\n"


def shout(body):
    """A flow step that answers a string."""
    return str(body["text"]).upper()


def raw_bytes(body):
    """A flow step that answers bytes."""
    return bytes(body["values"])


class Above(Model):
    """Class 1 where x is above the threshold, else 0 (integers: an ensemble of these votes by class)."""

    inputs = [TensorSpec("x", "FP32", [-1])]
    outputs = [TensorSpec("label", "INT64", [-1])]

    def __init__(self, name=None, version=None, threshold=0.0):
        super().__init__(name=name, version=version)
        self.threshold = threshold

    def predict(self, inputs):
        return (inputs["x"] > self.threshold).astype(np.int64)


class Scale(Model):
    """x times a factor (floats: an ensemble of these takes the weighted mean)."""

    inputs = [TensorSpec("x", "FP32", [-1])]
    outputs = [TensorSpec("label", "FP32", [-1])]

    def __init__(self, name=None, version=None, factor=1.0):
        super().__init__(name=name, version=version)
        self.factor = factor

    def predict(self, inputs):
        return inputs["x"] * np.float32(self.factor)


def kind_of_body(body):
    """A flow step that answers what it received: its type, and the value (bytes as their length)."""
    return {"type": type(body).__name__, "value": len(body) if isinstance(body, bytes) else body}


class ReadsFiles(V2ModelServer):
    """Reads the file objects MLRun's router gives it for a data_url: each one's size and first bytes."""

    def load(self):
        pass

    def predict(self, body: dict) -> list:
        return [{"size": len(data), "head": data[:4].hex()} for data in (sample.read() for sample in body["inputs"])]
