"""What a request asks of a model, decided in one place for every way in: the v2 routes, a body-routed
request (streams, serverless) and a graph's model steps.

An operation is ``infer``, ``infer_dict`` or ``explain`` on tensors (a model that takes documents, MLRun's
classes, answers them with its document methods), or a custom operation (``op_<name>``).
"""

from __future__ import annotations

import re
from enum import Enum

from v2serve.engine.registry import ModelEntry

TENSOR_OPERATIONS = ("infer", "infer_dict", "explain")
"""Operations on tensors, counted in the model's statistics; the others are custom operations."""

BODY_OPERATIONS = {
    "infer": "infer",
    "predict": "infer",
    "infer_dict": "infer_dict",
    "predict_dict": "infer_dict",
    "explain": "explain",
}
"""Operations on a model that take a request body, by the names a path or body may give them (MLRun's
``predict`` names included); anything else after the model is a custom operation."""


class Kind(Enum):
    """How the data plane runs an operation."""

    TENSORS = "tensors"
    """decoded tensors in, an InferenceResult out (``DataPlane.infer``)"""
    DOCUMENT = "document"
    """the body as sent in, the model's answer out (an MLRun-style model's infer or explain)"""
    CUSTOM = "custom"
    """a model's ``op_<name>``: a value in, a value out"""


def canonical(operation: str) -> str:
    """The operation a name stands for (``predict`` is ``infer``); custom names are their own."""
    return BODY_OPERATIONS.get(operation, operation)


def kind_of(entry: ModelEntry, operation: str) -> Kind:
    """How ``operation`` (a canonical name) runs on ``entry``'s model."""
    if operation not in TENSOR_OPERATIONS:
        return Kind.CUSTOM
    return Kind.DOCUMENT if entry.model.takes_documents else Kind.TENSORS


_MODEL_IN_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/[^/]+)?/?$")


def model_in_path(path: str) -> str | None:
    """The ``name`` or ``name:version`` a v2 model path names (a graph's router step routes by it)."""
    match = _MODEL_IN_PATH.match(path)
    if match is None or match["model"] == "stats":
        return None
    return f"{match['model']}:{match['version']}" if match["version"] else match["model"]
