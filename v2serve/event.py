"""The one request object every transport builds, and the one reply it renders back.

HTTP, the mock server, Nuclio and the stream workers all turn their native message into an ``Event`` and
render a ``Reply``; nothing between those two ends knows which transport it serves.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

from v2serve.errors import V2ServeError
from v2serve.protocol.body import Body
from v2serve.protocol.jsonio import JSON_CONTENT_TYPE, dumps
from v2serve.protocol.media import BINARY_CONTENT_TYPE, TEXT_CONTENT_TYPE
from v2serve.protocol.schemas import ErrorBody


@dataclass(slots=True)
class Event:
    """A request, transport-free.

    ``body`` is built once by the transport: the bytes as received, or a JSON value the transport already
    decoded (a Nuclio trigger), with what the headers say about it. ``headers`` have lower-case names.
    """

    body: Body = field(default_factory=Body)
    path: str = "/"
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    id: str | None = None
    trigger: str = "http"
    query: str = ""
    """The query string, undecoded, without its ``?``."""
    listener: str | None = None
    """Which of a transport's listeners the request came in on, when it has several (``ingrain`` for
    Ingrain's inference port, ``ingrain-models`` for its model port); None: the main one."""


@dataclass(frozen=True, slots=True)
class Addressed:
    """What a request was resolved to: the model, version and operation it named, and its id when its body
    gave one (body-routed requests: streams, serverless)."""

    model: str | None
    version: str | None = None
    operation: str | None = None
    request_id: str | None = None


@dataclass(slots=True)
class Reply:
    """A response, transport-free: status, body bytes, content type and extra headers.

    ``error`` is the typed error a failed reply renders, and ``addressed`` what the request was resolved to,
    so that a transport (a stream's error record, a retry) needs to parse neither the request nor the reply.

    ``stream``, when set, is the body in parts to send as they come (HTTP chunked transfer, server-sent
    events), after ``body``; a transport that cannot stream sends them joined (``collect``). Whoever
    consumes it must close it (``aclose``) if it stops early, which stops the model producing it.
    """

    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    error: V2ServeError | None = None
    addressed: Addressed | None = None
    stream: AsyncGenerator[bytes, None] | None = None

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, dumps(value), JSON_CONTENT_TYPE, headers or {})

    async def collect(self) -> Reply:
        """The reply with its stream, if any, read to the end into ``body``."""
        if self.stream is not None:
            parts = [self.body]
            try:
                async for part in self.stream:
                    parts.append(part)
            finally:
                self.stream = None
            self.body = b"".join(parts)
        return self


def error_reply(exc: V2ServeError) -> Reply:
    """The v2 rendering of an error: ``{"error": message}`` with its status; the reply keeps the error."""
    reply = Reply.json(ErrorBody(error=exc.message), exc.status_code, dict(exc.headers))
    reply.error = exc
    return reply


def value_reply(value: Any) -> Reply:
    """A value as MLRun answers it: a str as text/plain, bytes as they are, anything else as JSON."""
    if isinstance(value, str):
        return Reply(200, value.encode(), TEXT_CONTENT_TYPE)
    if isinstance(value, bytes | bytearray | memoryview):
        return Reply(200, bytes(value), BINARY_CONTENT_TYPE)
    return Reply.json(value)
