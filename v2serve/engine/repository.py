"""The model repository extension: list, load and unload models while the server runs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from v2serve.engine.loader import SETTINGS_FILE, model_from_directory
from v2serve.engine.registry import ModelRegistry
from v2serve.errors import InvalidRequest, ModelLoadFailed, ModelNotFound
from v2serve.models.base import Model
from v2serve.protocol.schemas import RepositoryIndexEntry


class ModelRepository:
    """Loads models from a repository directory into a running registry, and unloads them.

    A model lives in ``<root>/<name>/model-settings.json``, or in one subdirectory per version
    (``<root>/<name>/<version>/model-settings.json``). Loading swaps each version in once it is ready, so the
    version serving before answers until then; a failed load leaves it serving and is reported, with its
    reason, by the index and by the model's readiness until a later load succeeds.
    """

    def __init__(self, registry: ModelRegistry, root: str | None, packages: Sequence[str] = ()) -> None:
        self.registry = registry
        self.root = None if root is None else Path(root).expanduser().resolve()
        self.packages = tuple(packages)
        self.failures: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def index(self, ready_only: bool = False) -> list[RepositoryIndexEntry]:
        rows: list[RepositoryIndexEntry] = []
        for entry in self.registry:
            row = RepositoryIndexEntry(name=entry.name, version=entry.version or "", state=entry.state.value)
            reason = self.failures.get(entry.name) or entry.reason
            if reason:
                row["reason"] = reason
            rows.append(row)
        registered = set(self.registry.names())
        for name in self._names_in_repository():
            if name not in registered:
                reason = self.failures.get(name, "not loaded")
                rows.append(RepositoryIndexEntry(name=name, state="UNAVAILABLE", reason=reason))
        if ready_only:
            rows = [row for row in rows if row["state"] == "READY"]
        return sorted(rows, key=lambda row: (row["name"], row.get("version", "")))

    async def load(self, name: str) -> None:
        """Load (or reload) every version of ``name`` found in the repository."""
        self._directory(name)  # before a lock is kept for the name: names come from requests
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            try:
                models = self._models_in_repository(name)
                for model in models:
                    await self.registry.load_and_swap(model)
            except ModelLoadFailed as exc:
                self.failures[name] = exc.message
                raise
            self.failures.pop(name, None)

    async def unload(self, name: str, version: str | None = None) -> None:
        """Unload one version of ``name``, or every version; the others keep serving."""
        entries = [self.registry.resolve(name, version)] if version is not None else self.registry.entries_of(name)
        if not entries:
            raise ModelNotFound(f"model {name!r} is not loaded")
        for entry in entries:
            await self.registry.remove(entry)

    def _names_in_repository(self) -> list[str]:
        """The directories that hold a model (its settings, or one subdirectory per version): a folder of
        anything else (graph files, data) is no model and not listed."""
        if self.root is None or not self.root.is_dir():
            return []
        return sorted(
            child.name
            for child in self.root.iterdir()
            if child.is_dir() and not child.name.startswith(".") and _holds_model(child)
        )

    def _directory(self, name: str) -> Path:
        if self.root is None:
            raise ModelNotFound("this server has no model repository to load from (set repository.root)")
        check_model_name(name)
        directory = self.root / name
        if not directory.is_dir() or not _holds_model(directory):
            present = ", ".join(self._names_in_repository()) or "nothing"
            raise ModelNotFound(f"model {name!r} is not in the repository; it has: {present}")
        return directory

    def _models_in_repository(self, name: str) -> list[Model]:
        directory = self._directory(name)
        try:
            load = partial(model_from_directory, name=name, packages=self.packages, require_name=True)
            if (directory / SETTINGS_FILE).is_file():
                return [load(directory)]
            versions = sorted(d for d in directory.iterdir() if (d / SETTINGS_FILE).is_file())
            if not versions:
                raise ValueError(f"{directory} holds no {SETTINGS_FILE}, neither itself nor per version")
            return [load(d, version=d.name) for d in versions]
        except Exception as exc:
            raise ModelLoadFailed(f"model {name!r} failed to load: {type(exc).__name__}: {exc}") from exc


def _holds_model(directory: Path) -> bool:
    if (directory / SETTINGS_FILE).is_file():
        return True
    return any((version / SETTINGS_FILE).is_file() for version in directory.iterdir() if version.is_dir())


MAX_NAME_LENGTH = 255
"""The longest model name in UTF-8 bytes: a directory name, on every common filesystem."""


def check_model_name(name: str) -> None:
    """A model name from a request must name a directory directly inside the repository."""
    size = len(name.encode())
    if not 0 < size <= MAX_NAME_LENGTH:
        raise InvalidRequest(f"a model name takes 1 to {MAX_NAME_LENGTH} bytes, not {size}")
    if name.startswith(".") or any(c in name for c in "/\\\0"):
        raise InvalidRequest(f"{name!r} is not a model name")
