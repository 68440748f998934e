"""A ModelServer on a private event loop in a daemon thread, for synchronous callers (mock server, Nuclio)."""

from __future__ import annotations

import asyncio
import threading

from v2serve.event import Event, Reply
from v2serve.server import ModelServer


class SyncServer:
    """Starts ``server`` on its own loop; ``handle`` is safe to call from any thread, even one running a loop."""

    def __init__(self, server: ModelServer, thread_name: str = "v2serve-loop") -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=thread_name, daemon=True)
        self._thread.start()
        self._closed = False
        asyncio.run_coroutine_threadsafe(server.start(), self._loop).result()

    def handle(self, event: Event) -> Reply:
        return asyncio.run_coroutine_threadsafe(self._handle(event), self._loop).result()

    async def _handle(self, event: Event) -> Reply:
        # A synchronous caller gets a streamed reply whole.
        return await (await self.server.handle(event)).collect()

    def close(self) -> None:
        """Unload the models and stop the loop; idempotent."""
        if self._closed:
            return
        self._closed = True
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
