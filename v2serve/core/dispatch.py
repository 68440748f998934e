"""Dispatch: one Event in, one Reply out, through the routes of every front-end that is on.

The dispatcher gathers each front-end's routes into one table, resolves a request to its route, and turns
whatever escapes a handler into a reply: a V2ServeError with its status (``{"error": ...}``, v2's shape,
unless the front-end rendered it in its own), anything else a logged 500. It never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from v2serve.core.routes import Route, RouteTable
from v2serve.core.server_core import FrontEnd, ServerCore
from v2serve.errors import V2ServeError
from v2serve.event import Event, Reply, error_reply

logger = logging.getLogger("v2serve.dispatch")


class Dispatcher:
    """Serves every route of ``frontends`` (in order; a later route may replace an earlier one) and
    ``extra_routes`` over ``core``."""

    def __init__(self, core: ServerCore, frontends: Sequence[FrontEnd], extra_routes: Sequence[Route] = ()) -> None:
        self.core = core
        routes = [*(route for frontend in frontends for route in frontend(core)), *extra_routes]
        self.table = RouteTable(route for route in routes if route.listener is None)
        core.routes = self.table
        by_listener: dict[str, list[Route]] = {}
        for route in routes:
            if route.listener is not None:
                by_listener.setdefault(route.listener, []).append(route)
        self._listener_tables = {listener: RouteTable(found) for listener, found in by_listener.items()}
        """The listeners that answer their own routes only (TorchServe's management port)."""

    def _table(self, event: Event) -> RouteTable:
        return self._listener_tables.get(event.listener, self.table) if event.listener is not None else self.table

    async def handle(self, event: Event) -> Reply:
        try:
            try:  # the main port's events (no listener) skip the call: this runs for every request
                table = self.table if event.listener is None else self._table(event)
                route, params = table.resolve(event.method, event.path)
            except V2ServeError as exc:
                self.core.count_unrouted(exc)
                raise
            return await route.handler(event, params)
        except V2ServeError as exc:
            return error_reply(exc)
        except Exception:
            logger.exception("unexpected error serving %s %s", event.method, event.path)
            return error_reply(V2ServeError("internal server error"))

    def is_server_request(self, event: Event) -> bool:
        """Whether a request is about the server itself (health, metadata, metrics, statistics, the
        repository, the API description) rather than about what it serves: a flow leaves these to the routes."""
        try:
            route, _ = self._table(event).resolve(event.method, event.path)
        except V2ServeError:
            return False
        return route.server_level
