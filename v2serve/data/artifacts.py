"""Model artifacts named by URL (s3://, https://, gs://, memory://...), downloaded once into a local cache.

An entry is keyed by the URL and records the store's version tag (ETag, else modification time, else size).
A restart uses a complete entry without contacting the store, unless ``revalidate_artifacts`` asks to
compare tags. A download goes to a temporary file that is renamed into place only when complete, and the
entry's record is written after it, so a failed or partial download never leaves a corrupt entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from v2serve.data.hub import HUB_PROTOCOL, HubDownloads
from v2serve.data.policy import split_url
from v2serve.errors import Forbidden
from v2serve.settings import DataSettings

_RECORD = "artifact.json"
logger = logging.getLogger("v2serve.artifacts")


class ArtifactCache:
    def __init__(self, settings: DataSettings, hub: HubDownloads | None = None) -> None:
        self.settings = settings
        self.root = Path(settings.model_cache_dir).expanduser()
        self.hub = hub
        """Fetches ``hf://org/repo`` (a whole repository, under the hub rules); None: such URLs are refused."""

    def local_path(self, url: str) -> str:
        """A local path holding the artifact at ``url``; local paths are returned as they are; ``hf://org/repo``
        is the folder of a hub repository, fetched under the operator's hub rules."""
        protocol, path = split_url(url)
        if protocol == "file":
            return path
        if protocol == HUB_PROTOCOL:
            if self.hub is None:
                raise Forbidden(f"{url!r}: this server fetches nothing from the hub")
            return self.hub.download(path.split("://", 1)[1].strip("/"))
        folder = self.root / hashlib.sha256(url.encode()).hexdigest()[:32]
        target = folder / (Path(path.rstrip("/")).name or "artifact")
        record = _read_record(folder / _RECORD)
        if record is not None and target.is_file() and not self.settings.revalidate_artifacts:
            return str(target)
        fs = self._filesystem(protocol)
        tag = _version_tag(fs.info(path))
        if record is not None and target.is_file() and record.get("tag") == tag:
            return str(target)
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{target.name}.{uuid.uuid4().hex}.part"
        started = time.monotonic()
        logger.info("downloading %s into the model cache (%s)", url, _megabytes(fs.info(path).get("size")))
        try:
            fs.get_file(path, str(partial), callback=_progress(url))
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        _write_record(folder / _RECORD, {"url": url, "tag": tag, "file": target.name})
        logger.info("downloaded %s in %.1f s", url, time.monotonic() - started)
        return str(target)

    def store(self, url: str, data: bytes) -> str:
        """Keep ``data`` (read from ``url`` by the caller, under its own checks) in the cache; its path."""
        _, path = split_url(url)
        folder = self.root / hashlib.sha256(url.encode()).hexdigest()[:32]
        target = folder / (Path(path.split("?", 1)[0].rstrip("/")).name or "artifact")
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{target.name}.{uuid.uuid4().hex}.part"
        try:
            partial.write_bytes(data)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        _write_record(folder / _RECORD, {"url": url, "tag": hashlib.sha256(data).hexdigest(), "file": target.name})
        return str(target)

    def _filesystem(self, protocol: str) -> Any:
        import fsspec

        return fsspec.filesystem(protocol, **self.settings.storage_options.get(protocol, {}))


def _progress(url: str) -> Any:
    """An fsspec progress callback that logs every ``PROGRESS_EVERY_S`` while a download runs (fsspec is
    imported here, when a download happens, not with the package)."""
    from fsspec.callbacks import Callback

    class Progress(Callback):  # type: ignore[misc]  # fsspec is untyped
        def __init__(self) -> None:
            super().__init__()
            self.last = time.monotonic()

        def call(self, *args: Any, **kwargs: Any) -> None:
            now = time.monotonic()
            if now - self.last >= PROGRESS_EVERY_S:
                self.last = now
                logger.info("downloading %s: %s of %s", url, _megabytes(self.value), _megabytes(self.size))

    return Progress()


PROGRESS_EVERY_S = 10.0


def _megabytes(size: Any) -> str:
    return f"{size / 1e6:.1f} MB" if isinstance(size, int | float) else "size unknown"


def _version_tag(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            return f"{key}:{info[key]}"
    return f"size:{info.get('size')}"


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record


def _write_record(path: Path, record: dict[str, Any]) -> None:
    partial = path.with_suffix(f".{uuid.uuid4().hex}.part")
    partial.write_text(json.dumps(record))
    os.replace(partial, path)
