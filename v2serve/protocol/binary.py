"""Framing of the binary tensor data extension.

A binary body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the raw data of every
tensor whose ``parameters.binary_data_size`` is set, in the order of the tensors in the header.
"""

from __future__ import annotations

from v2serve.errors import InvalidRequest
from v2serve.protocol.types import InferenceRequest

HEADER_LENGTH = "inference-header-content-length"


def parse_header_length(value: str, body_length: int) -> int:
    """The JSON header's length from the ``Inference-Header-Content-Length`` header, checked."""
    length = parse_decimal(value)
    if length is None:
        raise InvalidRequest(f"{HEADER_LENGTH} must be an integer (decimal digits only), got {value!r}")
    if length < 0 or length > body_length:
        raise InvalidRequest(f"{HEADER_LENGTH} is {length} but the body has {body_length} bytes")
    return length


def parse_decimal(value: str) -> int | None:
    """A header's non-negative decimal integer: ASCII digits only (``int()`` would also take ``+1``,
    ``1_0``, surrounding spaces and non-ASCII digits); None for anything else."""
    if not value.isdigit() or not value.isascii():
        return None
    return int(value)


def slice_binary_inputs(request: InferenceRequest, data: memoryview) -> dict[str, memoryview]:
    """Each binary input's slice of the data that follows the JSON header."""
    slices: dict[str, memoryview] = {}
    offset = 0
    for tensor in request.inputs:
        size = tensor.parameters.get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidRequest(f"input {tensor.name!r} binary_data_size must be a non-negative integer")
        if tensor.data is not None:
            raise InvalidRequest(f"input {tensor.name!r} has both 'data' and binary_data_size")
        if offset + size > len(data):
            raise InvalidRequest(
                f"input {tensor.name!r} needs {size} bytes of binary data but only "
                f"{len(data) - offset} remain in the body"
            )
        slices[tensor.name] = data[offset : offset + size]
        offset += size
    if offset != len(data):
        raise InvalidRequest(
            f"the body has {len(data) - offset} bytes of binary data that no input's binary_data_size claims"
        )
    return slices
