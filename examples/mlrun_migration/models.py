"""An MLRun serving project moved to v2serve: the classes are MLRun's, only the import line changed."""

from __future__ import annotations

import json

from v2serve.models.mlrun import V2ModelServer  # MLRun: from mlrun.serving import V2ModelServer


class ClassifierModel(V2ModelServer):
    """Class 1 when a point's weighted sum exceeds the threshold (a class argument or a graph parameter)."""

    def load(self):
        model_file, _extra_data = self.get_model(".json")
        with open(model_file) as handle:
            self.weights = json.load(handle)["weights"]

    def predict(self, body: dict) -> list:
        threshold = float(self.get_param("threshold", 5))
        return [
            int(sum(w * x for w, x in zip(self.weights, point, strict=True)) > threshold) for point in body["inputs"]
        ]


class Clean:
    """A flow step class: MLRun passes it its name and the serving context."""

    def __init__(self, name=None, context=None, scale=1.0):
        self.name = name
        self.context = context
        self.scale = scale

    def do(self, event):
        if "points" not in event:
            raise ValueError("the request has no 'points'")
        return {"inputs": [[x * self.scale for x in point] for point in event["points"]]}


def count(event):
    return {"count": len(event["inputs"])}


def largest(event):
    return {"largest": max(max(point) for point in event["inputs"])}


def summary(branches):
    """After the parallel branches: their outputs in branch order (MLRun's merge), then the model's answer."""
    model_answer, stats = branches
    return {"classes": model_answer["outputs"], **stats}


def handle_error(event):
    """The error handler: it answers instead of the failed flow, with the request's body and the step."""
    return {"error": event["error"], "failed_step": event["origin_state"], "request": event["body"]}
