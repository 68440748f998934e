"""The model repository routes: index, load and unload, optionally behind a bearer token."""

from __future__ import annotations

import hmac
from typing import Any

from v2serve.engine.repository import ModelRepository
from v2serve.errors import Conflict, Forbidden, InvalidRequest, OperationNotFound, Unauthorized
from v2serve.event import Event
from v2serve.protocol.schemas import RepositoryIndexEntry
from v2serve.settings import RepositorySettings


class RepositoryEndpoints:
    """Serves ``/v2/repository/...`` for a ModelRepository, as its settings allow.

    Loading runs code from the repository, so without a token the load and unload routes answer only a
    server bound to loopback (``reachable_beyond_loopback`` False); the index is always readable.
    """

    def __init__(
        self,
        repository: ModelRepository,
        settings: RepositorySettings,
        *,
        reachable_beyond_loopback: bool = False,
        processes: int = 1,
    ) -> None:
        """``processes``: the worker processes serving the port. A load or unload changes the process that
        takes it, so with several they are refused (409) rather than leave the workers disagreeing."""
        self.repository = repository
        self.enabled = settings.enabled
        self._token = None if settings.token is None else settings.token.encode()
        self._changes_refused = self._token is None and reachable_beyond_loopback
        self._processes = processes

    async def index(self, event: Event) -> list[RepositoryIndexEntry]:
        body = self._checked(event)
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidRequest("'ready' must be true or false")
        return self.repository.index(ready_only=ready)

    async def load(self, event: Event, model: str) -> dict[str, Any]:
        self._checked(event, changes=True)
        await self.repository.load(model)
        return {}

    async def unload(self, event: Event, model: str, version: str | None) -> dict[str, Any]:
        parameters = self._checked(event, changes=True).get("parameters") or {}
        await self.repository.unload(model, version or _optional_str(parameters.get("version")))
        return {}

    def authorize_change(self, event: Event) -> None:
        """Refuse a request that would load or unload models (through these routes or another front-end's,
        such as Ingrain's) unless the repository API is on, the caller has the token when one is set, the
        server listens on loopback only or has a token, and one process serves the port."""
        if not self.enabled:
            raise OperationNotFound(f"no route for {event.method} {event.path} (the repository API is disabled)")
        self._authorize(event)
        if self._processes > 1:
            raise Conflict(
                f"loading and unloading would change one of the {self._processes} worker processes only: run one "
                "worker per container and scale out with replicas (README: Scaling out), or use --workers 1"
            )
        if self._changes_refused:
            raise Forbidden(
                "loading and unloading models needs a token when the server listens beyond loopback: "
                "set V2SERVE_REPOSITORY__TOKEN"
            )

    def _checked(self, event: Event, changes: bool = False) -> dict[str, Any]:
        """The request's JSON object, once the route is known to be on and the caller allowed."""
        if changes:
            self.authorize_change(event)
        else:
            if not self.enabled:
                raise OperationNotFound(f"no route for {event.method} {event.path} (the repository API is disabled)")
            self._authorize(event)
        body = event.body.json_object()
        parameters = body.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest("'parameters' must be an object")
        return body

    def _authorize(self, event: Event) -> None:
        if self._token is None:
            return
        scheme, _, given = event.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            raise Unauthorized("the repository API needs 'Authorization: Bearer <token>'")


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
