"""Normalising what a model's predict returned into named output arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from v2serve.errors import InferenceError
from v2serve.models.base import Model


def as_output_dict(model: Model, result: Any) -> dict[str, np.ndarray]:
    """A dict of arrays by output name from a dict, or from one array when the model has one output."""
    if isinstance(result, dict):
        return {
            str(name): value if isinstance(value, np.ndarray) else np.asarray(value) for name, value in result.items()
        }
    if len(model.outputs) > 1:
        raise InferenceError(
            f"model {model.name!r} declares {len(model.outputs)} outputs but predict returned one value; "
            "return a dict of arrays by output name"
        )
    name = model.outputs[0].name if model.outputs else "output0"
    return {name: np.asarray(result)}
