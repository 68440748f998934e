"""A Nuclio-style entry point: ``init_context`` builds the server once, ``handler`` serves each event.

Configure with the same ``V2SERVE_*`` variables as the CLI; ``V2SERVE_MODELS`` names the graph spec file
and/or model targets, e.g. ``V2SERVE_MODELS='["/opt/graph.yaml"]'``. Use as the function's handler:
``v2serve.nuclio:handler``.
"""

from __future__ import annotations

from typing import Any

from v2serve.event import Event
from v2serve.protocol.binary import HEADER_LENGTH
from v2serve.protocol.body import Body
from v2serve.server import ModelServer
from v2serve.threaded import SyncServer

_USER_DATA_KEY = "v2serve"


def init_context(context: Any) -> None:
    """Build and start the server once per worker; models load here, before the first event."""
    setattr(context.user_data, _USER_DATA_KEY, SyncServer(ModelServer.from_settings(), "v2serve-nuclio"))


def handler(context: Any, event: Any) -> Any:
    server: SyncServer = getattr(context.user_data, _USER_DATA_KEY)
    reply = server.handle(to_event(event))
    return context.Response(
        body=reply.body, headers=dict(reply.headers), content_type=reply.content_type, status_code=reply.status
    )


def to_event(event: Any) -> Event:
    """A Nuclio event as a v2serve Event (the body may arrive already decoded from JSON)."""
    value = event.body
    headers = {str(k).lower(): str(v) for k, v in (event.headers or {}).items()}
    content_type = headers.get("content-type", event.content_type)
    if value is None:
        body = Body(b"", content_type)
    elif isinstance(value, str):
        body = Body(value.encode(), content_type, headers.get(HEADER_LENGTH))
    elif isinstance(value, bytes | bytearray | memoryview):
        body = Body(value, content_type, headers.get(HEADER_LENGTH))
    else:
        body = Body.decoded(value, content_type)  # the trigger decoded its JSON already
    trigger = getattr(event, "trigger", None)
    return Event(
        body=body,
        path=event.path or "/",
        method=(event.method or ("POST" if value else "GET")).upper(),
        headers=headers,
        id=None if event.id is None else str(event.id),
        trigger=getattr(trigger, "kind", None) or "http",
    )
