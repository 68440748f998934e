"""Which offsets are safe to commit when messages of one partition finish out of order."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

Partition = TypeVar("Partition", bound=Hashable)


class OffsetTracker(Generic[Partition]):
    """Tracks started and finished offsets per partition.

    Messages of a partition are served concurrently and may finish in any order, but a committed offset
    says "everything before this is done". So the offset to commit is the oldest unfinished one, or one past
    the newest when none is unfinished. Offsets must be started in increasing order per partition, as a
    consumer delivers them.
    """

    def __init__(self) -> None:
        # Per partition, the unfinished offsets in the order they started: the first is the oldest.
        self._pending: dict[Partition, dict[int, None]] = {}
        self._next: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}

    def start(self, partition: Partition, offset: int) -> None:
        self._pending.setdefault(partition, {})[offset] = None
        self._next[partition] = offset + 1

    def finish(self, partition: Partition, offset: int) -> None:
        # A partition forgotten meanwhile (taken away in a rebalance) has nothing left to track.
        self._pending.get(partition, {}).pop(offset, None)

    def in_flight(self, partition: Partition) -> int:
        return len(self._pending.get(partition, ()))

    def committable(self) -> dict[Partition, int]:
        """The offsets to commit now: per partition, only where it moved since ``mark_committed``."""
        ready = {}
        for partition, next_offset in self._next.items():
            pending = self._pending[partition]
            offset = next(iter(pending)) if pending else next_offset
            if self._committed.get(partition) != offset:
                ready[partition] = offset
        return ready

    def mark_committed(self, offsets: dict[Partition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, partitions: list[Partition]) -> None:
        """Drop partitions this consumer no longer owns (after a rebalance took them away)."""
        for partition in partitions:
            self._pending.pop(partition, None)
            self._next.pop(partition, None)
            self._committed.pop(partition, None)
