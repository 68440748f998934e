"""What a connection may cost: uvicorn's HTTP protocols with read deadlines and a cap on connections.

uvicorn closes a keep-alive connection that stays idle between requests, but nothing else: a client that
sends half a header, or stops halfway through a body, holds its socket (and what it sent) forever, and
every idle socket takes a file descriptor until none is left for real clients. Here:

- a request's headers must be complete within ``header_timeout_s`` of the connection (or of the request's
  first byte on a kept-alive one), however slowly they trickle in;
- a body may not stall for longer than ``body_timeout_s`` between two chunks (time during which the server
  itself stopped reading, for flow control, does not count);
- beyond ``max_connections`` open connections, a new one is answered 503 and closed at once.

Each of these is answered with a JSON error and the connection closed. The checks run on one timer per
connection that is armed only while the server waits for the client's bytes; the request path adds an
attribute read or two per received chunk.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from v2serve.settings import HTTPSettings


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int


def _error_response(status: str, message: str, extra: str = "") -> bytes:
    body = b'{"error":"' + message.encode() + b'"}'
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _CoalescingTransport:
    """A transport that sends fewer, fuller segments than uvicorn's writes would.

    uvicorn writes a response's head and its body separately: two ``send`` calls, and (with TCP_NODELAY)
    two segments for the client, for a response that fits in one. Here:

    - alone (no other request in flight), a response's head is held until the next write and goes out
      joined to it, at once; a response with nothing after its head (HEAD, 204, 304) sends it when it
      completes (``send_lone_head``, from the protocol's ``on_response_complete``);
    - while other requests are in flight, writes are held until the loop has run what is ready
      (``call_soon``), so that the server answers a burst of requests before it sends, as it read them.

    Measured with ``benchmarks/run.py`` on add_sub at 32 connections, server CPU per request: 109 µs with
    uvicorn's two sends, 93 µs joining the head alone, 67-69 µs deferring as well. Deferring a lone response
    too cost it a loop turn of latency (0.73 x the floor at one connection), hence the two rules.

    Writes held for the loop's turn go at once past ``FLUSH_AT``, so a streamed body still goes out as it is
    produced; a close sends whatever is held first. Everything else is the transport's own.
    """

    FLUSH_AT = 64 * 1024

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, in_flight: set[Any]) -> None:
        self._transport = transport
        self._loop = loop
        self._in_flight = in_flight
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._until_turn = False
        """Whether the held writes wait for the loop's turn (True) or only for the body after a head."""

    def write(self, data: bytes) -> None:
        held = self._held
        if held:
            held.append(data)
            self._held_bytes += len(data)
            if not self._until_turn or self._held_bytes >= self.FLUSH_AT:
                self._send_held()
        elif len(self._in_flight) > 1:
            self._hold(data, until_turn=True)
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):
            self._hold(data, until_turn=False)
        else:
            self._transport.write(data)

    def _hold(self, data: bytes, *, until_turn: bool) -> None:
        self._held.append(data)
        self._held_bytes = len(data)
        self._until_turn = until_turn
        if until_turn:
            self._loop.call_soon(self._send_held)

    def send_lone_head(self) -> None:
        """A response has completed: a head held for a body that never came goes now (writes held for the
        loop's turn wait for it)."""
        if self._held and not self._until_turn:
            self._send_held()

    def _send_held(self) -> None:
        held = self._held
        if held:
            data = held[0] if len(held) == 1 else b"".join(held)
            held.clear()
            self._held_bytes = 0
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._held_bytes

    def close(self) -> None:
        self._send_held()  # what was written before the close still goes, as the transport's own close promises
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Guarded:
    """Mixed into a uvicorn HTTP protocol class (it relies on their ``cycle``, ``flow``, ``loop``,
    ``transport`` and ``connections`` attributes, which both implementations share)."""

    cycle: Any
    flow: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: set[Any]
    tasks: set[Any]
    _coalescing: _CoalescingTransport

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._timer: asyncio.TimerHandle | None = None
        self._header_deadline: float | None = None
        self._last_data = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._coalescing = _CoalescingTransport(self.transport, self.loop, self.tasks)
        self.transport = self._coalescing  # type: ignore[assignment]
        if len(self.connections) > self._limits.max_connections:
            message = f"the server holds its limit of {self._limits.max_connections} connections; try again"
            self._close_with(_error_response("503 Service Unavailable", message, "retry-after: 1\r\n"))
            return
        self._header_deadline = self.loop.time() + self._limits.header_timeout_s
        self._arm(self._header_deadline)

    def on_response_complete(self) -> None:
        self._coalescing.send_lone_head()
        super().on_response_complete()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        now = self._last_data = self.loop.time()
        if self._awaiting_headers():
            if self._header_deadline is None:  # the first byte of a request on a kept-alive connection
                self._header_deadline = now + self._limits.header_timeout_s
                self._arm(self._header_deadline)
        else:
            if self._header_deadline is not None:  # the headers just completed: their deadline is off
                self._header_deadline = None
                self._disarm()
            if self._timer is None and self._awaiting_body():
                self._arm(now + self._limits.body_timeout_s)

    def _awaiting_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _awaiting_body(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_complete

    def _arm(self, when: float) -> None:
        self._disarm()
        self._timer = self.loop.call_at(when, self._check)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._awaiting_headers():
            if self._header_deadline is None:
                return  # idle between requests: uvicorn's keep-alive timeout closes it
            if now < self._header_deadline:
                self._arm(self._header_deadline)
                return
            seconds = self._limits.header_timeout_s
            self._close_with(_error_response("408 Request Timeout", f"the request's headers took over {seconds:g} s"))
        elif self._awaiting_body():
            if self.flow.read_paused:  # the server stopped reading: the client is not the one stalling
                self._last_data = now
            idle_until = self._last_data + self._limits.body_timeout_s
            if now < idle_until:
                self._arm(idle_until)
                return
            seconds = self._limits.body_timeout_s
            self._close_with(_error_response("408 Request Timeout", f"the body stalled for over {seconds:g} s"))

    def _close_with(self, response: bytes) -> None:
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(response)
        self.transport.close()


class GuardedH11Protocol(_Guarded, H11Protocol):
    pass


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed (the `fast` extra)
    GuardedHttpToolsProtocol: type[_Guarded] | None = None
else:
    # At module level, not built on demand: worker processes unpickle it by name.
    class GuardedHttpToolsProtocol(_Guarded, HttpToolsProtocol):  # type: ignore[no-redef]
        pass


def protocol_class() -> type[_Guarded]:
    """httptools where it is installed (as uvicorn's "auto" chooses), h11 otherwise."""
    return GuardedHttpToolsProtocol or GuardedH11Protocol


def uvicorn_options(settings: HTTPSettings) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.Config`` that enforce ``settings``' limits."""
    limits = ConnectionLimits(settings.header_timeout_s, settings.body_timeout_s, settings.max_connections)
    return {
        "http": functools.partial(protocol_class(), limits=limits),
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "timeout_graceful_shutdown": settings.graceful_timeout_s,
        "access_log": settings.access_log,
    }
