"""An in-process server that answers exactly as the HTTP server would, for tests and notebooks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from v2serve.event import Event, Reply
from v2serve.protocol.binary import HEADER_LENGTH
from v2serve.protocol.body import Body
from v2serve.protocol.jsonio import JSON_CONTENT_TYPE, dumps, loads
from v2serve.threaded import SyncServer


@dataclass
class MockResponse:
    status_code: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return loads(self.body)


class MockServer(SyncServer):
    """Runs a ModelServer on a private event loop; ``test`` sends one request through the same core as HTTP.

    Use as a context manager, or call ``close()`` when done, to unload the models.
    """

    def test(
        self,
        path: str = "/",
        body: Any = None,
        method: str = "",
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
        silent: bool = False,
        get_body: bool = True,
        event_id: str | None = None,
    ) -> Any:
        """Send a request. ``body`` may be bytes, str or a JSON-able value (sent as its JSON encoding).

        Returns the decoded JSON body (raw bytes for binary replies), or the whole MockResponse when
        ``get_body`` is false. A status of 300 or more raises ``RuntimeError("failed (<status>): <body>")``
        unless ``silent``.
        """
        reply = self.request(path, body, method, headers, content_type, event_id)
        if reply.status >= 300 and not silent:
            raise RuntimeError(f"failed ({reply.status}): {reply.body.decode(errors='replace')}")
        if not get_body:
            return MockResponse(reply.status, reply.body, reply.content_type, reply.headers)
        return loads(reply.body) if reply.content_type == JSON_CONTENT_TYPE else reply.body

    def request(
        self,
        path: str = "/",
        body: Any = None,
        method: str = "",
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
        event_id: str | None = None,
    ) -> Reply:
        """Send a request and return the transport-free Reply."""
        raw = (
            body
            if isinstance(body, bytes)
            else body.encode()
            if isinstance(body, str)
            else (b"" if body is None else dumps(body))
        )
        path, _, query = path.partition("?")
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        event = Event(
            body=Body(raw, lowered.get("content-type", content_type), lowered.get(HEADER_LENGTH)),
            path=path,
            query=query,
            method=(method or ("POST" if body is not None else "GET")).upper(),
            headers=lowered,
            id=event_id,
            trigger="mock",
        )
        return self.handle(event)

    def __enter__(self) -> MockServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
