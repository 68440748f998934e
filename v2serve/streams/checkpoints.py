"""Where a stream consumer keeps the last sequence number it served of each shard."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import orjson


class ShardCheckpoints:
    """A JSON file of ``{shard_id: sequence_number}``, rewritten atomically on every save.

    A save follows the acknowledgement of every result of the records up to that sequence number, so a
    restart that resumes after it loses nothing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._positions: dict[str, str] = orjson.loads(path.read_bytes()) if path.exists() else {}

    def get(self, shard_id: str) -> str | None:
        return self._positions.get(shard_id)

    def save(self, shard_id: str, sequence_number: str) -> None:
        self._positions[shard_id] = sequence_number
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(orjson.dumps(self._positions))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
