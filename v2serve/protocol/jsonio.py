"""JSON through orjson, with numpy arrays serialised natively and decode errors made client errors."""

from __future__ import annotations

from typing import Any

import orjson

from v2serve.errors import InvalidRequest
from v2serve.protocol.media import JSON_CONTENT_TYPE

__all__ = ["JSON_CONTENT_TYPE", "dumps", "loads"]

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def loads(body: bytes | bytearray | memoryview | str) -> Any:
    """Decode a JSON document; malformed or non-UTF-8 input raises InvalidRequest."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}") from None


def dumps(obj: Any) -> bytes:
    """Encode to JSON bytes; NaN and Inf become null (never invalid JSON)."""
    return orjson.dumps(obj, option=_DUMP_OPTIONS, default=_fallback)


def _fallback(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.decode(errors="replace")
    if hasattr(obj, "tolist"):  # numpy scalars and arrays orjson cannot take as they are
        return obj.tolist()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
