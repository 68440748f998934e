"""A large ModelInferRequest's raw tensor contents, taken from the wire bytes without copying them.

upb copies every bytes field when it parses a message, and again each time Python reads one
(``request.raw_input_contents[i]`` is a new bytes object). For an image tensor that is two copies of
hundreds of kilobytes per request. ``split_raw_contents`` walks the message's top-level fields instead: the
``raw_input_contents`` entries become views into the bytes grpcio handed over, and every other field is
left, in its order, for upb to parse as usual (a few hundred bytes).

Anything it does not recognise as a well-formed top-level field ends the walk with None, and the caller
parses the whole message as before, so upb still decides what is valid and what the error says.
"""

from __future__ import annotations

RAW_INPUT_CONTENTS = 7
"""The field number of ``ModelInferRequest.raw_input_contents`` (``repeated bytes``)."""

SPLIT_FROM_BYTES = 64 * 1024
"""Smaller messages are parsed whole: below this, walking the fields in Python costs more than the copies."""

MAX_FIELDS = 512
"""A message of more top-level fields is parsed whole: a request has a few per input and parameter, and the
walk, a Python step per field, must not let a message of many tiny fields cost more than upb's parse."""

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def split_raw_contents(message: bytes) -> tuple[bytes, list[memoryview]] | None:
    """``message`` without its raw_input_contents fields, and those fields' contents as views into it;
    None when the message holds none, has more than MAX_FIELDS fields, or is not a sequence of well-formed
    fields (parse it whole then)."""
    view = memoryview(message)
    end = len(message)
    kept: list[memoryview] = []
    raw: list[memoryview] = []
    position = 0
    for _ in range(MAX_FIELDS):
        if position >= end:
            break
        start = position
        tag, position = _varint(message, position, end)
        if tag < 0:
            return None
        wire_type = tag & 7
        if wire_type == _LENGTH_DELIMITED:
            length, position = _varint(message, position, end)
            if length < 0 or position + length > end:
                return None
            if tag >> 3 == RAW_INPUT_CONTENTS:
                raw.append(view[position : position + length])
            else:
                kept.append(view[start : position + length])
            position += length
        elif wire_type == _VARINT:
            _, position = _varint(message, position, end)
            if position < 0:
                return None
            kept.append(view[start:position])
        elif wire_type in (_FIXED64, _FIXED32):
            position += 8 if wire_type == _FIXED64 else 4
            if position > end:
                return None
            kept.append(view[start:position])
        else:  # groups (deprecated, never in this proto) and invalid wire types
            return None
    if position < end or not raw:
        return None
    return b"".join(kept), raw


def _varint(data: bytes, position: int, end: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it; (-1, -1) when it is cut off or over 10 bytes."""
    value = shift = 0
    while position < end and shift < 70:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    return -1, -1
