"""The stream consumers the settings turn on, run beside the HTTP server or on their own."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from v2serve.metrics.streams import StreamStats
from v2serve.models.runtimes import require
from v2serve.settings import Settings
from v2serve.streams.retry import Handle

logger = logging.getLogger("v2serve.streams")


class StreamWorker(Protocol):
    """One stream transport's consumer loop. ``run`` serves until ``stop`` is set, then finishes what it has
    in flight, records its progress (commit, checkpoint) and returns."""

    trigger: str
    stats: StreamStats

    @property
    def outputs(self) -> tuple[str, str]:
        """The names of the output and error topics or streams."""
        ...

    async def run(self, stop: asyncio.Event) -> None: ...


def workers_from_settings(handle: Handle, settings: Settings) -> list[StreamWorker]:
    """A worker per configured stream; aiokafka and boto3 are imported only when their stream is on."""
    workers: list[StreamWorker] = []
    drain_s = settings.http.graceful_timeout_s
    if settings.kafka.bootstrap_servers:
        require("aiokafka", "kafka")
        from v2serve.streams.kafka import KafkaWorker

        workers.append(KafkaWorker(handle, settings.kafka, drain_s))
    if settings.kinesis.input_stream:
        require("boto3", "kinesis")
        from v2serve.streams.kinesis import KinesisWorker

        workers.append(KinesisWorker(handle, settings.kinesis, drain_s))
    return workers


class StreamConsumers:
    """Runs stream workers as tasks: ``start``, then ``stop`` (which drains them), or ``wait`` for one to end."""

    def __init__(self, workers: list[StreamWorker]) -> None:
        self.workers = workers
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def __bool__(self) -> bool:
        return bool(self.workers)

    async def start(self) -> None:
        self._stop.clear()
        self._tasks = [asyncio.create_task(w.run(self._stop), name=f"v2serve-{w.trigger}") for w in self.workers]
        for worker in self.workers:
            logger.info("consuming %s", worker.trigger)

    async def wait(self) -> None:
        """Return when any worker has ended (after ``stop``, or because it failed: then raise its error)."""
        if not self._tasks:
            return
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()

    async def stop(self) -> None:
        """Tell every worker to stop, and return once each has drained (or failed: logged here)."""
        self._stop.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker, result in zip(self.workers, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                logger.error("the %s consumer failed", worker.trigger, exc_info=result)
