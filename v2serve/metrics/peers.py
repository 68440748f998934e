"""Exact totals over the worker processes of one server (``--workers N``).

Each worker answers a snapshot of its own metrics and Triton statistics on a Unix socket in a folder they
share; the worker that takes a scrape (``/metrics``, ``/v2/models/stats``) asks every other one at that
moment and adds their snapshots to its own, so a scraper sees one target with exact totals. Nothing is
written per request: the cost is paid at scrape time only. A socket left by a dead worker is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from v2serve.protocol.jsonio import dumps, loads

logger = logging.getLogger("v2serve.metrics")

Snapshot = dict[str, Any]
"""``{"samples": [...], "statistics": {"model_stats": [...]}}`` of one worker."""

_ASK_TIMEOUT_S = 5.0


class WorkerPeers:
    """This worker's socket in ``folder``, and the asking of the others."""

    def __init__(self, folder: str | Path, snapshot: Callable[[], Snapshot]) -> None:
        self._folder = Path(folder)
        self._snapshot = snapshot
        self._path = self._folder / f"{os.getpid()}.sock"
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        self._server = await asyncio.start_unix_server(self._answer, path=str(self._path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    async def snapshots(self) -> list[Snapshot]:
        """This worker's snapshot and every live peer's, taken now."""
        others = [path for path in self._folder.glob("*.sock") if path != self._path]
        answers = await asyncio.gather(*(self._ask(path) for path in others))
        return [self._snapshot(), *(answer for answer in answers if answer is not None)]

    async def _ask(self, path: Path) -> Snapshot | None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), _ASK_TIMEOUT_S)
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # its worker is gone
            return None
        except (OSError, TimeoutError) as exc:
            logger.warning("worker metrics at %s did not answer: %s", path, exc)
            return None
        try:
            data = await asyncio.wait_for(reader.read(), _ASK_TIMEOUT_S)
            answer: Snapshot = loads(data)
            return answer
        except (OSError, TimeoutError, ValueError) as exc:
            logger.warning("worker metrics at %s did not answer: %s", path, exc)
            return None
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(dumps(self._snapshot()))
            await writer.drain()
        finally:
            writer.close()


def merge_statistics(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Triton statistics of several workers as one: counts and times added per (model, version), the latest
    ``last_inference``, batch statistics added per batch size."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for body in bodies:
        for stats in body.get("model_stats", []):
            key = (stats["name"], stats.get("version", ""))
            if key not in merged:
                merged[key] = _copy(stats)
            else:
                _add(merged[key], stats)
    return {"model_stats": list(merged.values())}


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _add(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if key == "last_inference":
            into[key] = max(into.get(key, 0), value)
        elif key == "batch_stats":
            by_size = {b["batch_size"]: b for b in into.get(key, [])}
            for batch in value:
                if batch["batch_size"] in by_size:
                    _add(by_size[batch["batch_size"]], {k: v for k, v in batch.items() if k != "batch_size"})
                else:
                    by_size[batch["batch_size"]] = _copy(batch)
            into[key] = sorted(by_size.values(), key=lambda b: b["batch_size"])
        elif isinstance(value, dict):
            _add(into.setdefault(key, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            into[key] = into.get(key, 0) + value
