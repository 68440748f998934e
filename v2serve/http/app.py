"""The HTTP transport: a Starlette app that turns requests into Events for a ModelServer.

Routing, validation and error rendering all live in the transport-free core, so this adapter only reads the
body (refusing oversized ones before reading them in full), builds the Event and writes the Reply.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from v2serve.errors import InvalidRequest, PayloadTooLarge, V2ServeError
from v2serve.event import Event, Reply
from v2serve.graph.router import error_reply
from v2serve.graph.server import ModelServer
from v2serve.settings import Settings

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_app(server: ModelServer) -> Starlette:
    """An ASGI app serving ``server``; models load in its lifespan and unload at shutdown."""
    max_body = server.settings.http.max_body_bytes

    async def endpoint(request: Request) -> Response:
        try:
            body = await _read_body(request, max_body)
        except V2ServeError as exc:
            return _render(error_reply(exc))
        event = Event(
            body=body,
            path=request.url.path,
            method=request.method,
            headers=request.headers,
            content_type=request.headers.get("content-type"),
            trigger="http",
        )
        return _render(await server.handle(event))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=_METHODS)], lifespan=lifespan)
    app.state.server = server
    return app


def create_app_from_settings(settings: Settings | None = None) -> Starlette:
    """The app for ``ModelServer.from_settings``: what each worker process runs."""
    return create_app(ModelServer.from_settings(settings))


def _render(reply: Reply) -> Response:
    return Response(reply.body, reply.status, reply.headers, media_type=reply.content_type)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequest(f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise PayloadTooLarge(f"the body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding in ("gzip", "deflate"):
        body = _decompress(body, encoding, limit)
    elif encoding != "identity":
        raise InvalidRequest(f"unsupported Content-Encoding {encoding!r}; use gzip or deflate")
    return body


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    # Bounded decompression: a small compressed body must not expand past the body limit.
    decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidRequest(f"the body is not valid {encoding} data: {exc}") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed body exceeds the limit of {limit} bytes")
    return data
