"""Wire types of the Open Inference Protocol (v2), one per concept.

Requests are parsed from already-decoded JSON by hand rather than by a validating model: the structure is
checked field by field with messages that name the field, and tensor ``data`` is passed through untouched
so that numpy converts it in one pass (see ``codec``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from v2serve.errors import InvalidRequest
from v2serve.protocol.datatypes import DATATYPE_TO_NUMPY, normalize_datatype

Parameters = dict[str, Any]


@dataclass(slots=True)
class TensorSpec:
    """Name, datatype and shape of a model input or output; -1 marks a variable dimension. An ``optional``
    input may be left out of a request (Triton's ``optional``; metadata does not show it)."""

    name: str
    datatype: str
    shape: list[int]
    optional: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(slots=True)
class RequestInput:
    name: str
    shape: list[int]
    datatype: str
    data: Any = None
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferenceRequest:
    inputs: list[RequestInput]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None


def _expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InvalidRequest(f"{what} must be {_article(names)}, got {type(value).__name__}")
    return value


def _article(name: str) -> str:
    return {"dict": "an object", "list": "an array", "str": "a string", "int": "an integer"}.get(name, name)


def _parameters(obj: dict[str, Any], what: str) -> Parameters:
    params = obj.get("parameters")
    if params is None:
        return {}
    checked: Parameters = _expect(params, dict, f"{what}.parameters")
    return checked


def parse_request_input(obj: Any, index: int) -> RequestInput:
    # The happy path formats no message and calls nothing but the constructor: this runs for every input of
    # every request.
    if type(obj) is not dict:
        _expect(obj, dict, f"inputs[{index}]")
    try:
        name, shape, datatype = obj["name"], obj["shape"], obj["datatype"]
    except KeyError as missing:
        raise InvalidRequest(f"inputs[{index}] is missing {missing.args[0]!r}") from None
    if type(name) is not str:
        _expect(name, str, f"inputs[{index}].name")
    if type(shape) is not list:
        _expect(shape, list, f"input {name!r} shape")
    for dim in shape:
        # type() rather than isinstance(): bool is an int subclass but no dimension.
        if type(dim) is not int or dim < 0:
            raise InvalidRequest(f"input {name!r} shape must hold non-negative integers, got {shape!r}")
    if type(datatype) is not str or datatype not in DATATYPE_TO_NUMPY:
        datatype = normalize_datatype(datatype)  # an alias, lower case, or an error
    parameters = obj.get("parameters")
    if parameters is None:
        parameters = {}
    elif type(parameters) is not dict:
        _expect(parameters, dict, f"input {name!r}.parameters")
    return RequestInput(name, shape, datatype, obj.get("data"), parameters)


def parse_inference_request(obj: Any) -> InferenceRequest:
    """Check the structure of a decoded v2 inference request and wrap it; raises InvalidRequest."""
    if type(obj) is not dict:
        _expect(obj, dict, "the request body")
    raw_inputs = obj.get("inputs")
    if type(raw_inputs) is not list:
        if "inputs" not in obj:
            raise InvalidRequest("the request body is missing 'inputs'")
        _expect(raw_inputs, list, "'inputs'")
    inputs = [parse_request_input(item, i) for i, item in enumerate(raw_inputs)]
    if len(inputs) > 1 and len(set(map(_NAME, inputs))) != len(inputs):
        raise InvalidRequest(f"input names must be unique, got {[item.name for item in inputs]}")
    request_id = obj.get("id")
    if request_id is not None and type(request_id) is not str:
        _expect(request_id, str, "'id'")
    requested = obj.get("outputs")
    outputs = None if requested is None else parse_requested_outputs(requested)  # most ask for every output
    return InferenceRequest(inputs, request_id, _parameters(obj, "the request"), outputs)


_NAME = attrgetter("name")


def parse_requested_outputs(value: Any, *, names: bool = False) -> list[RequestedOutput] | None:
    """A request's ``outputs``: v2's ``[{"name", "parameters"}]`` (with ``names``, plain names too, as data-point
    requests may write them); None when the request asks for none in particular."""
    if value is None:
        return None
    outputs = []
    for i, item in enumerate(_expect(value, list, "'outputs'")):
        if names and type(item) is str:
            outputs.append(RequestedOutput(item, {}))
            continue
        _expect(item, dict, f"outputs[{i}]")
        out_name = _expect(item.get("name"), str, f"outputs[{i}].name")
        outputs.append(RequestedOutput(out_name, _parameters(item, f"output {out_name!r}")))
    return outputs
