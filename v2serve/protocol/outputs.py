"""Which outputs a request asked for, and in which form (JSON or binary)."""

from __future__ import annotations

import numpy as np

from v2serve.errors import InferenceError, InvalidRequest
from v2serve.protocol.datatypes import datatype_of
from v2serve.protocol.response import OutputTensor
from v2serve.protocol.schema import ModelSchema
from v2serve.protocol.types import InferenceRequest


def requested_outputs(schema: ModelSchema, request: InferenceRequest, all_binary: bool) -> dict[str, bool] | None:
    """Requested output names mapped to whether each goes binary; None means every output."""
    default_binary = all_binary or bool(request.parameters.get("binary_data_output", False))
    if request.outputs is None:
        return None if not default_binary else {"*": True}
    declared = schema.output_datatypes
    wanted: dict[str, bool] = {}
    for output in request.outputs:
        if declared and output.name not in declared:
            raise InvalidRequest(
                f"model {schema.name!r} has no output {output.name!r}; its outputs are {sorted(declared)}"
            )
        wanted[output.name] = all_binary or bool(output.parameters.get("binary_data", default_binary))
    return wanted


def select_outputs(
    schema: ModelSchema, produced: dict[str, np.ndarray], wanted: dict[str, bool] | None
) -> list[OutputTensor]:
    """The outputs to send, each with its datatype (the declared one, else the array's) and whether it goes
    binary; ``wanted`` as ``requested_outputs`` gives it."""
    datatypes = schema.output_datatypes
    outputs = []
    if wanted is None or "*" in wanted:  # every output (most requests)
        binary_all = wanted is not None
        for name, array in produced.items():
            datatype = datatypes.get(name) or _datatype_of(schema, name, array)
            outputs.append(OutputTensor(name, array, datatype, binary_all))
        return outputs
    absent = [name for name in wanted if name not in produced]
    if absent:
        raise InvalidRequest(f"model {schema.name!r} produced no output {absent}; it produced {list(produced)}")
    for name, is_binary in wanted.items():
        array = produced[name]
        datatype = datatypes.get(name) or _datatype_of(schema, name, array)
        outputs.append(OutputTensor(name, array, datatype, is_binary))
    return outputs


def _datatype_of(schema: ModelSchema, name: str, array: np.ndarray) -> str:
    """The datatype of an output the model does not declare."""
    try:
        return datatype_of(array)
    except TypeError as exc:
        raise InferenceError(f"model {schema.name!r} output {name!r}: {exc}") from None
