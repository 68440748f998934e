"""Stream messages in and result or error records out, the same for every stream transport.

A message's value is a v2 request that names its ``model``, ``version`` and ``operation`` in the body; the
``v2-model``, ``v2-version`` and ``v2-operation`` headers stand in where the body says nothing. The router
resolves them (one route table for every transport), so here a message only becomes an Event, and a Reply
one outgoing record: the result, keyed like the request, or an error record that says what failed and why,
from the reply's typed error and what the router resolved the message to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from v2serve.errors import V2ServeError
from v2serve.event import Addressed, Event, Reply
from v2serve.protocol.body import Body
from v2serve.protocol.jsonio import JSON_CONTENT_TYPE, dumps

STATUS_HEADER = "v2-status"


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One record to write: to the output stream when ``is_error`` is false, else to the error stream."""

    is_error: bool
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def event_from_message(
    value: bytes | None, key: bytes | None, headers: Iterable[tuple[str, bytes]], trigger: str
) -> Event:
    """The Event for one stream message; the key, when there is one, is the request id."""
    text_headers = {name.lower(): raw.decode("utf-8", "replace") for name, raw in headers}
    return Event(
        body=Body.of(value or b"", text_headers),
        path="/",
        method="POST",
        headers=text_headers,
        id=None if key is None else key.decode("utf-8", "replace"),
        trigger=trigger,
    )


def record_for_reply(event: Event, key: bytes | None, reply: Reply) -> OutgoingRecord:
    """The result record for a successful reply, or the error record for a failed one (built from the
    reply's typed error and what the router resolved the message to: nothing is parsed again)."""
    headers = [(STATUS_HEADER, str(reply.status).encode()), ("content-type", reply.content_type.encode())]
    headers += [(name, value.encode()) for name, value in reply.headers.items()]
    if reply.status < 400:
        return OutgoingRecord(False, key, reply.body, headers)
    message = reply.error.message if reply.error is not None else reply.body.decode("utf-8", "replace")
    return _error_record(event, key, reply.addressed, reply.status, message, headers)


def error_record(event: Event, key: bytes | None, error: V2ServeError, addressed: Addressed | None) -> OutgoingRecord:
    """An error record for a failure outside the graph (a result that could not be written, say)."""
    headers = [(STATUS_HEADER, str(error.status_code).encode()), ("content-type", JSON_CONTENT_TYPE.encode())]
    return _error_record(event, key, addressed, error.status_code, error.message, headers)


def _error_record(
    event: Event,
    key: bytes | None,
    addressed: Addressed | None,
    status: int,
    message: str,
    headers: list[tuple[str, bytes]],
) -> OutgoingRecord:
    named = addressed or Addressed(None)
    request_id = named.request_id if named.request_id is not None else event.id
    error = {
        "id": request_id,
        "model": named.model,
        "version": named.version,
        "operation": named.operation or "infer",
        "status": status,
        "error": message,
    }
    record_key = key if key is not None else (None if request_id is None else request_id.encode())
    return OutgoingRecord(True, record_key, dumps(error), headers)
