"""A request body as one value, built once per request by the transport that received it.

A transport hands over either the bytes it received (HTTP, Kafka, Kinesis, the mock server) or a value it
already decoded (a Nuclio trigger's JSON, gRPC's repository calls). ``Body`` carries either, with what the
request's headers say about it (its content type, whether it uses the binary tensor extension), and parses
it at most once for each reading: ``json()`` (plain JSON values) and ``inference_json()`` (numeric tensor
data read straight into numpy, for decoding tensors). Nothing downstream asks "bytes or already parsed?".
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from v2serve.errors import InvalidRequest
from v2serve.protocol.binary import HEADER_LENGTH
from v2serve.protocol.jsonio import loads
from v2serve.protocol.request_json import loads_inference_request


@dataclass(frozen=True, slots=True)
class RawBody:
    """A request body that is not JSON, by its content type (MLRun's rule): the bytes of an ``image/*`` or
    ``application/octet-stream`` body (without the binary extension's header), or the text of a
    ``text/plain`` one. It reaches a model as its ``inputs``."""

    data: bytes | str


def raw_body(content_type: str, body: bytes | bytearray | memoryview) -> RawBody | None:
    """The body as bytes or text when its content type is binary or plain text; None: it is JSON."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media.startswith("image/") or media == "application/octet-stream":
        return RawBody(bytes(body))
    if media == "text/plain":
        try:
            return RawBody(bytes(body).decode())
        except UnicodeDecodeError:
            raise InvalidRequest("a text/plain body must be UTF-8") from None
    return None


_UNPARSED: Any = object()
_NO_HEADERS: Mapping[str, str] = {}


class Body:
    """A request body: ``raw`` bytes (empty when a transport gave a decoded value), ``content_type`` (as the
    request named it, or None) and ``header_length`` (the binary tensor extension's JSON header length, as
    the request's header gave it)."""

    __slots__ = (
        "_inference",
        "_json",
        "binary_extension",
        "content_type",
        "header_length",
        "is_decoded",
        "parse_ns",
        "raw",
    )

    def __init__(
        self,
        raw: bytes | bytearray | memoryview = b"",
        content_type: str | None = None,
        header_length: str | None = None,
    ) -> None:
        self.raw = raw
        self.content_type = content_type
        self.header_length = header_length
        self._json: Any = _UNPARSED
        self._inference: Any = _UNPARSED
        self.is_decoded = False
        """Whether the body came as a value rather than as bytes."""
        self.binary_extension = header_length is not None
        """Whether the body is the binary tensor extension's (a JSON header, then tensor data)."""
        self.parse_ns = 0
        """How long parsing the body took, all readings together: part of the request's decode time."""

    @classmethod
    def of(cls, raw: bytes | bytearray | memoryview, headers: Mapping[str, str] = _NO_HEADERS) -> Body:
        """The body of a request with these (lower-case) headers."""
        return cls(raw, headers.get("content-type"), headers.get(HEADER_LENGTH))

    @classmethod
    def decoded(cls, value: Any, content_type: str | None = None) -> Body:
        """A body a transport (or a graph step) already has as a JSON value."""
        body = cls(b"", content_type)
        body._json = body._inference = value
        body.is_decoded = True
        return body

    def raw_body(self) -> RawBody | None:
        """The body as bytes or text when its content type says it is not JSON (MLRun's rule); None otherwise."""
        content_type = self.content_type
        if content_type is None or self.is_decoded or content_type.startswith("application/json"):
            return None
        return raw_body(content_type, self.raw)

    def names_data_url(self) -> bool:
        """Whether the request is a v2 JSON request that names a ``data_url`` (parsed once to know: the
        decoding reuses the parse)."""
        if self.binary_extension:
            return False
        content_type = self.content_type
        if content_type is not None and not content_type.startswith("application/json") and self.raw_body():
            return False
        document = self.inference_json()
        return type(document) is dict and "data_url" in document

    def json(self) -> Any:
        """The body as plain JSON values (an empty body is None), parsed once."""
        if self._json is _UNPARSED:
            if self.header_length is not None:
                raise InvalidRequest("this operation takes JSON, not the binary tensor extension")
            started = time.perf_counter_ns()
            self._json = loads(self.raw) if len(self.raw) else None
            self.parse_ns += time.perf_counter_ns() - started
        return self._json

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object (an empty body is ``{}``); anything else raises InvalidRequest."""
        value = self.json()
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InvalidRequest("the request body must be a JSON object")
        return value

    def inference_json(self) -> Any:
        """The body as an inference request's JSON, numeric tensor data read straight into numpy, parsed once."""
        if self._inference is _UNPARSED:
            if self.header_length is not None:
                raise InvalidRequest("this operation takes JSON, not the binary tensor extension")
            started = time.perf_counter_ns()
            self._inference = loads_inference_request(self.raw)
            self.parse_ns += time.perf_counter_ns() - started
        return self._inference

    def __len__(self) -> int:
        return len(self.raw)

    def __bytes__(self) -> bytes:
        return bytes(self.raw)
