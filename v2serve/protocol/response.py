"""Encoding of v2 inference responses, as JSON or with binary tensor data appended."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from v2serve.protocol.binary import HEADER_LENGTH
from v2serve.protocol.codec import binary_data, json_data, to_wire_array
from v2serve.protocol.jsonio import JSON_CONTENT_TYPE, dumps
from v2serve.protocol.media import BINARY_CONTENT_TYPE

R = TypeVar("R")


@dataclass(slots=True)
class OutputTensor:
    """One output as the model produced it, with the datatype and encoding it travels in."""

    name: str
    array: np.ndarray
    datatype: str
    binary: bool = False


@dataclass(slots=True)
class InferenceResult:
    """A v2 inference response before it is encoded: what the data plane returns, outputs in numpy. A
    front-end renders it in its own wire format through ``encode``, which times the rendering as the
    request's encode step (Triton's ``compute_output``), whichever front-end it is."""

    model_name: str
    model_version: str | None
    id: str
    outputs: list[OutputTensor]
    lone: bool = False
    """The request was one data point rather than a batch (see DecodedRequest.lone)."""
    on_encoded: Callable[[int], None] | None = None
    """Told how long the rendering took, in nanoseconds (the model's recorder)."""

    def encode(self, render: Callable[[InferenceResult], R]) -> R:
        """``render(self)``, timed as the request's encode step."""
        started = time.perf_counter_ns()
        rendered = render(self)
        if self.on_encoded is not None:
            self.on_encoded(time.perf_counter_ns() - started)
        return rendered

    def as_value(self) -> dict[str, Any]:
        """The response as the Python value its JSON would decode to, except that numeric ``data`` stays a
        (flat) numpy array: what the next step of a flow receives, with no JSON in between."""
        value: dict[str, Any] = {"model_name": self.model_name}
        if self.model_version is not None:
            value["model_version"] = self.model_version
        value["id"] = self.id
        outputs = []
        for output in self.outputs:
            array = to_wire_array(output.array, output.datatype)
            data = json_data(output.name, array, output.datatype)
            outputs.append({"name": output.name, "datatype": output.datatype, "shape": list(array.shape), "data": data})
        value["outputs"] = outputs
        return value


EncodedBody = tuple[bytes, str, dict[str, str]]
"""A response's body, its content type and its extra headers (a fresh dict: the caller may add to it). A tuple
rather than an object of its own: one allocation less on every response."""


def encode_inference_response(
    *,
    model_name: str,
    model_version: str | None,
    request_id: str,
    outputs: list[OutputTensor],
    parameters: dict[str, Any] | None = None,
) -> EncodedBody:
    header: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        header["model_version"] = model_version
    header["id"] = request_id
    if parameters:
        header["parameters"] = parameters
    entries: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    for output in outputs:
        array = to_wire_array(output.array, output.datatype)
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(array.shape)}
        if output.binary:
            raw = binary_data(array, output.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            entry["data"] = json_data(output.name, array, output.datatype)
        entries.append(entry)
    header["outputs"] = entries
    json_header = dumps(header)
    if not buffers:
        return json_header, JSON_CONTENT_TYPE, {}
    return b"".join([json_header, *buffers]), BINARY_CONTENT_TYPE, {HEADER_LENGTH: str(len(json_header))}
