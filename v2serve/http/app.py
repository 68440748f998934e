"""The HTTP transport: an ASGI app that turns requests into Events for a ModelServer.

Routing, validation and error rendering all live in the transport-free core, so this adapter only reads the
body (refusing oversized ones before reading them in full), builds the Event and writes the Reply. The
endpoint speaks ASGI directly rather than through starlette's Request/Response objects: on the request hot
path those cost more than everything else the adapter does. Starlette still hosts it for the lifespan (model
loading and unloading) and for any middleware an operator adds.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from v2serve.errors import InvalidRequest, PayloadTooLarge, Unavailable, V2ServeError
from v2serve.event import Event, Reply, error_reply
from v2serve.protocol.binary import HEADER_LENGTH, parse_decimal
from v2serve.protocol.body import Body
from v2serve.server import ModelServer
from v2serve.settings import Settings

logger = logging.getLogger("v2serve.http")


class V2Endpoint:
    """The ASGI endpoint for every v2serve path."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server
        self.max_body = server.settings.http.max_body_bytes
        self.listeners = listeners_of(server.settings)
        """The names of the extra ports this app is served on, by port (Ingrain's two)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ASGI servers give header names in lower case; a repeated header keeps its last value.
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            body = await read_body(receive, headers, self.max_body)
        except V2ServeError as exc:
            self.server.metrics.unrouted(exc.status_code)
            await _send(send, error_reply(exc))
            return
        except ClientDisconnected:
            return
        path, root = scope["path"], scope.get("root_path", "")
        server, query = scope.get("server"), scope.get("query_string")
        event = Event(
            body=Body(body, headers.get("content-type"), headers.get(HEADER_LENGTH)),
            path=path[len(root) :] if root and path.startswith(root) else path,
            method=scope["method"],
            headers=headers,
            trigger="http",
            query=query.decode("latin-1") if query else "",
            listener=self.listeners.get(server[1]) if self.listeners and server else None,
        )
        try:
            reply = await self.server.handle(event)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when the graceful shutdown's time is up: they are
            # answered as a JSON 503 (retriable elsewhere) rather than with uvicorn's plain-text 500.
            _uncancel()
            reply = error_reply(Unavailable("the server is shutting down; retry the request", retry_after_s=1))
            reply.headers["connection"] = "close"
        if reply.stream is None:
            await _send(send, reply)
        else:
            await _send_stream(send, receive, reply, reply.stream)


def listeners_of(settings: Settings) -> dict[int, str]:
    """The ports besides the main one that the app listens on, and what each is called in ``Event.listener``."""
    ingrain, torchserve = settings.ingrain, settings.torchserve
    named = {
        ingrain.inference_port: "ingrain",
        ingrain.model_port: "ingrain-models",
        torchserve.management_port: "torchserve-management",
        torchserve.metrics_port: "torchserve-metrics",
    }
    return {port: name for port, name in named.items() if port is not None}


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):  # Python 3.11+
        task.uncancel()


class Service(Protocol):
    """Something that runs beside the HTTP server for its lifetime (a stream consumer, say)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def create_app(server: ModelServer, services: Sequence[Service] = ()) -> Starlette:
    """An ASGI app serving ``server``; models load in its lifespan and unload at shutdown.

    ``services`` start once the models are loaded and stop (draining their own work) before they unload.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.start()
        started: list[Service] = []
        try:
            for service in services:
                await service.start()
                started.append(service)
            yield
        finally:
            for service in reversed(started):
                await service.stop()
            await server.stop()

    app = V2App(V2Endpoint(server), lifespan)
    app.state.server = server
    return app


class V2App(Starlette):
    """Starlette hosting the v2 endpoint for every path (the core route table routes, not a Mount's regex).

    Until an operator adds middleware or exception handlers, HTTP requests go straight from ``__call__`` to
    the endpoint: starlette's own ``__call__``, and its error and exception layers, would add three more
    coroutines and two closures around every ``send`` (about a tenth of a small request's cost) to catch
    errors the endpoint already renders itself. Everything else (the lifespan) goes through starlette as usual.
    """

    def __init__(self, endpoint: V2Endpoint, lifespan: Any) -> None:
        super().__init__(lifespan=lifespan)
        self.endpoint = endpoint
        self.router.default = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Whether anything was added that starlette's layers would have to run, asked inline (no call).
        added = self.user_middleware or self.exception_handlers or self.max_body_size is not None
        if scope["type"] == "http" and not added:
            await self.endpoint(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


async def _send(send: Send, reply: Reply) -> None:
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", reply.content_type.encode("latin-1")),
        (b"content-length", str(len(reply.body)).encode("latin-1")),
    ]
    if reply.headers:  # most replies have none: no comprehension to run
        headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items()]
    await send({"type": "http.response.start", "status": int(reply.status), "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def _send_stream(send: Send, receive: Receive, reply: Reply, stream: AsyncGenerator[bytes, None]) -> None:
    """Each part as it comes (chunked transfer: no Content-Length); when the client goes away, the stream is
    closed, which stops the model producing it."""
    headers: list[tuple[bytes, bytes]] = [(b"content-type", reply.content_type.encode("latin-1"))]
    headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items()]
    await send({"type": "http.response.start", "status": int(reply.status), "headers": headers})

    async def pump() -> None:
        async with aclosing(stream):
            if reply.body:
                await send({"type": "http.response.body", "body": reply.body, "more_body": True})
            async for part in stream:
                await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    pumping = asyncio.ensure_future(pump())
    watching = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((pumping, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not pumping.done():
            pumping.cancel()  # the client left: closing the stream stops the model at its next item
        try:
            await pumping
        except asyncio.CancelledError:
            if not watching.done() or watching.cancelled():
                raise  # cancelled from outside (shutdown), not by the client leaving
        except Exception:
            # The model failed mid-stream: the status has gone, so the response ends unterminated (the
            # client sees a broken chunked body, not a clean end).
            logger.exception("streamed response ended by an error")
            raise


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ClientDisconnected(Exception):
    """The client went away (or was cut off for stalling) before its body was read: nothing to answer."""


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` (before reading it all).

    Raises ClientDisconnected when the connection ends before the body does: a partial body is never served.
    """
    declared = headers.get("content-length")
    if declared is not None:
        length = parse_decimal(declared)
        if length is None:
            raise InvalidRequest(f"invalid Content-Length {declared!r}")
        if length > limit:
            raise PayloadTooLarge(f"the body of {declared} bytes exceeds the limit of {limit} bytes")
    message: Any = await receive()
    if message["type"] != "http.request":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    if message.get("more_body", False):
        chunks, size = [body], len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
    elif len(body) > limit:
        raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding in ("gzip", "deflate"):
        return decompress(body, encoding, limit)
    if encoding != "identity":
        raise InvalidRequest(f"unsupported Content-Encoding {encoding!r}; use gzip or deflate")
    return body


_GZIP_MAGIC = b"\x1f\x8b"
_MAX_GZIP_MEMBERS = 16
"""Concatenated gzip members are valid gzip, but thousands of empty ones would be a loop per 20 bytes."""


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body, decompressed to at most ``limit`` bytes; a truncated stream, or bytes after its
    end (other than further gzip members), is a 400."""
    parts: list[bytes] = []
    size, rest = 0, body
    for _ in range(_MAX_GZIP_MEMBERS):
        decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            data = decompressor.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            raise InvalidRequest(f"the body is not valid {encoding} data: {exc}") from None
        size += len(data)
        if size > limit or decompressor.unconsumed_tail:
            raise PayloadTooLarge(f"the decompressed body exceeds the limit of {limit} bytes")
        parts.append(data)
        if not decompressor.eof:
            raise InvalidRequest(f"the body is not valid {encoding} data: the stream is truncated")
        rest = decompressor.unused_data
        if not rest:
            return b"".join(parts)
        if encoding != "gzip" or not rest.startswith(_GZIP_MAGIC):
            raise InvalidRequest(f"the body has {len(rest)} bytes after the end of its {encoding} data")
    raise InvalidRequest(f"the body has more than {_MAX_GZIP_MEMBERS} gzip members")
