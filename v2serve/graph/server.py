"""A model server, transport-free: the models, their thread pool, the v2 router and their lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from v2serve.event import Event, Reply
from v2serve.graph.router import V2Router
from v2serve.models.base import Model
from v2serve.models.registry import ModelRegistry
from v2serve.settings import Settings

logger = logging.getLogger("v2serve.server")


class ModelServer:
    """Owns the models and serves Events. Transports call ``start``, then ``handle`` per request, then ``stop``.

    With ``settings.load_in_background`` the models load after ``start`` returns, answering 503 (with
    Retry-After) until each is ready; otherwise ``start`` returns once every model loaded or failed.
    """

    def __init__(self, models: Iterable[Model], settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.executor = ThreadPoolExecutor(self.settings.predict_threads, thread_name_prefix="v2serve-model")
        self.registry = ModelRegistry(self.executor)
        for model in models:
            self.registry.add(model)
        self.router = V2Router(self.registry, server_name=self.settings.server_name, debug=self.settings.debug)
        self._loading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.settings.load_in_background:
            self._loading = asyncio.create_task(self.registry.load_all())
        else:
            await self.registry.load_all()

    async def stop(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        await self.registry.unload_all()
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def handle(self, event: Event) -> Reply:
        return await self.router.handle(event)
