"""Stream messages in and result or error records out, the same for every stream transport.

A message's value is a v2 request that names its ``model``, ``version`` and ``operation`` in the body; the
``v2-model``, ``v2-version`` and ``v2-operation`` headers stand in where the body says nothing. The router
resolves them (one route table for every transport), so here a message only becomes an Event, and a Reply
one outgoing record: the result, keyed like the request, or an error record that says what failed and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from v2serve.event import Event, Reply
from v2serve.protocol import binary
from v2serve.protocol.jsonio import dumps

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
        body=value or b"",
        path="/",
        method="POST",
        headers=text_headers,
        content_type=text_headers.get("content-type"),
        id=None if key is None else key.decode("utf-8", "replace"),
        trigger=trigger,
    )


def record_for_reply(event: Event, key: bytes | None, reply: Reply) -> OutgoingRecord:
    """The result record for a successful reply, or the error record for a failed one."""
    headers = [(STATUS_HEADER, str(reply.status).encode()), ("content-type", reply.content_type.encode())]
    headers += [(name, value.encode()) for name, value in reply.headers.items()]
    if reply.status < 400:
        return OutgoingRecord(False, key, reply.body, headers)
    fields = _request_fields(event)
    request_id = fields.get("id", event.id)
    error = {
        "id": request_id,
        "model": fields.get("model"),
        "version": fields.get("version"),
        "operation": fields.get("operation") or "infer",
        "status": reply.status,
        "error": _error_text(reply),
    }
    record_key = key if key is not None else (None if request_id is None else str(request_id).encode())
    return OutgoingRecord(True, record_key, dumps(error), headers)


def error_record(event: Event, key: bytes | None, status: int, message: str) -> OutgoingRecord:
    """An error record for a failure outside the graph (the graph itself renders its own errors)."""
    return record_for_reply(event, key, Reply.json({"error": message}, status))


def _request_fields(event: Event) -> dict[str, Any]:
    """id, model, version and operation as the request gave them: body fields first, then headers.

    Only error records need these, so a failed request's body is parsed a second time rather than every
    request paying for it.
    """
    fields: dict[str, Any] = {}
    body = event.body
    if isinstance(body, bytes | bytearray | memoryview) and binary.HEADER_LENGTH not in event.headers:
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            body = None
    if isinstance(body, dict):
        fields = {name: body[name] for name in ("id", "model", "version", "operation") if body.get(name) is not None}
    for name in ("model", "version", "operation"):
        if name not in fields and f"v2-{name}" in event.headers:
            fields[name] = event.headers[f"v2-{name}"]
    return {name: value if isinstance(value, str) else str(value) for name, value in fields.items()}


def _error_text(reply: Reply) -> str:
    try:
        body = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        return reply.body.decode("utf-8", "replace")
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return reply.body.decode("utf-8", "replace")
