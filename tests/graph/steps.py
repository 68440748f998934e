"""Task steps and models used by the graph tests (importable, so graphs using them serialise)."""

from __future__ import annotations

import numpy as np

from v2serve import Model, TensorSpec


def to_request(body):
    return {
        "id": body.get("id", "fixed"),
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [len(body["values"])], "data": body["values"]}],
    }


def double(body):
    return [v * 2 for v in body["values"]]


def negate(body):
    return [-v for v in body["values"]]


def merge(body):
    """After double and negate: their outputs as a list in branch order (MLRun's merge)."""
    doubled, negated = body
    return {"sum": [a + b for a, b in zip(doubled, negated, strict=True)]}


def merge_by_step(body):
    return {"sum": [a + b for a, b in zip(body["double"], body["negate"], strict=True)]}


def explode(body):
    raise ZeroDivisionError("exploded on purpose")


def recover(error):
    return {
        "recovered_from": error["origin_state"],
        "status": error["status"],
        "error": error["error"],
        "body": error["body"],
    }


def first_output(response):
    return {"id": response["id"], "y": response["outputs"][0]["data"]}


class Scale:
    def __init__(self, factor: float):
        self.factor = factor

    def do(self, body):
        return {**body, "values": [v * self.factor for v in body["values"]]}


class Affine(Model):
    """y = a*x + b, as a model."""

    inputs = [TensorSpec("x", "FP32", [-1])]
    outputs = [TensorSpec("y", "FP32", [-1])]

    def __init__(self, a: float = 1.0, b: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.a, self.b = np.float32(a), np.float32(b)

    def predict(self, inputs):
        return {"y": self.a * inputs["x"] + self.b}


class Label(Model):
    """Labels each x as 'big' when x > threshold, else 'small'."""

    inputs = [TensorSpec("x", "FP32", [-1])]
    outputs = [TensorSpec("label", "BYTES", [-1])]

    def __init__(self, threshold: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold

    def predict(self, inputs):
        return {"label": np.where(inputs["x"] > self.threshold, "big", "small").astype(object)}


def total(body):
    return {"total": sum(body["values"])}


def count(body):
    return {"count": len(body["values"])}


class Named:
    """A step class that takes MLRun's ``name`` and ``context`` arguments."""

    def __init__(self, name=None, context=None):
        self.name = name
        self.context = context

    def do(self, body):
        return {"step": self.name, "greeting": self.context.parameters["greeting"]}


def mlrun_catcher(event):
    """An error handler as MLRun's documents write one (full_event): it reads the event's attributes."""
    return {"failed": event.origin_state, "errors": event.error, "values": event.body["values"], "path": event.path}


def fallback_values(event):
    """An error handler that hands the flow a replacement for what the failed step would have produced."""
    return {"values": [0 for _ in event.body["values"]], "recovered": event.origin_state}


def tally(body):
    return {"sum": sum(body["values"]), "recovered": body.get("recovered")}
