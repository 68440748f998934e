"""Outputs as plain values, for the front-ends whose responses are not v2 tensors (KServe v1's
``predictions``, TorchServe's body, Triton's ``generate`` fields)."""

from __future__ import annotations

from typing import Any

import numpy as np

from v2serve.protocol.codec import json_data, to_wire_array
from v2serve.protocol.response import InferenceResult, OutputTensor


def output_value(output: OutputTensor) -> Any:
    """An output in its shape: a numeric array (serialised by orjson as nested lists, with no Python loop),
    or nested lists of str for BYTES; a scalar when it has no dimensions."""
    array = to_wire_array(output.array, output.datatype)
    if output.datatype == "BYTES":
        flat = np.empty(array.size, dtype=object)
        flat[:] = json_data(output.name, array, "BYTES")
        return flat.reshape(array.shape).tolist()
    if array.ndim == 0:
        return array.item()
    return np.ascontiguousarray(array)


def rows(result: InferenceResult) -> list[Any] | Any:
    """One value per row (the first axis): a single output's rows, or, for several outputs, a dict of every
    output's row by name, row by row."""
    if len(result.outputs) == 1:
        return output_value(result.outputs[0])
    values = {output.name: output_value(output) for output in result.outputs}
    count = min((len(v) for v in values.values() if isinstance(v, list | np.ndarray)), default=0)
    return [
        {name: value[i] if isinstance(value, list | np.ndarray) else value for name, value in values.items()}
        for i in range(count)
    ]


def scalar_or_list(output: OutputTensor) -> Any:
    """An output of one element as that element, otherwise as its nested value (Triton's ``generate``)."""
    value = output_value(output)
    if output.array.size == 1 and not isinstance(value, str | int | float | bool):
        while isinstance(value, list | np.ndarray) and len(value) == 1:
            value = value[0]
        if isinstance(value, np.generic):
            value = value.item()
    return value
