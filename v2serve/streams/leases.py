"""Shard leases in DynamoDB, as the Kinesis Client Library keeps them, so that several consumer processes
split one stream's shards and take over those of a worker that died.

One item per shard: ``leaseKey`` (the shard), ``leaseOwner``, ``leaseCounter`` and ``checkpoint``. An owner
raises its leases' counters every ``lease_duration_s / 3`` (the heartbeat); a lease whose counter has not
moved for ``lease_duration_s``, as this process observed it (no clocks compared), has expired and may be
taken. Each worker aims at its fair share (shards over live owners): it takes unowned and expired leases
first, then steals one lease at a time from the busiest owner. Every write is conditional on the item
being as last seen, so two workers never both own a shard; a worker whose heartbeat or checkpoint finds
the lease gone stops reading that shard after its current batch (that batch is served again by the new
owner: at most one batch per shard is duplicated).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

logger = logging.getLogger("v2serve.streams.leases")


@dataclass
class _Seen:
    owner: str | None
    counter: int
    since: float
    """When (monotonic, this process) the counter was last seen to change."""


class LeaseLost(Exception):
    """The lease was taken by another worker (or expired under this one)."""


class ShardLeases:
    """This worker's view of a lease table: what it holds, and the renewing, taking and checkpointing.

    The methods are blocking (boto3); the Kinesis worker runs them in a thread.
    """

    def __init__(self, client: Any, table: str, worker_id: str, lease_duration_s: float) -> None:
        self._client = client
        self._table = table
        self.worker_id = worker_id
        self._duration = lease_duration_s
        self._seen: dict[str, _Seen] = {}
        self.held: dict[str, int] = {}
        """The shards this worker holds, with the counter it last wrote."""

    def ensure_table(self) -> None:
        try:
            self._client.create_table(
                TableName=self._table,
                KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
        self._client.get_waiter("table_exists").wait(TableName=self._table)

    # ------------------------------------------------------------ the heartbeat and the balancing

    def renew(self) -> set[str]:
        """Raise the counter of every held lease; the shards whose lease was lost."""
        lost = set()
        for shard, counter in list(self.held.items()):
            try:
                self._update(shard, counter, counter + 1, self.worker_id)
                if shard in self.held:
                    self.held[shard] = counter + 1
            except LeaseLost:
                # pop: a checkpoint in another thread may have found the lease gone first.
                self.held.pop(shard, None)
                lost.add(shard)
                logger.warning("lease of shard %s was lost to another worker", shard)
        return lost

    def balance(self, shards: list[str]) -> set[str]:
        """Take unowned, expired and, up to a fair share, stolen leases of ``shards``; the shards taken."""
        items = self._scan()
        now = time.monotonic()
        for shard in shards:
            if shard not in items:
                self._create(shard)
        items = self._scan() if any(shard not in items for shard in shards) else items
        live: dict[str, list[str]] = {}
        free: list[tuple[str, int]] = []
        for shard in shards:
            item = items.get(shard)
            if item is None:
                continue
            owner, counter = item.get("leaseOwner", {}).get("S"), int(item["leaseCounter"]["N"])
            seen = self._seen.get(shard)
            if seen is None or seen.counter != counter or seen.owner != owner:
                self._seen[shard] = seen = _Seen(owner, counter, now)
            if owner == self.worker_id:
                self.held.setdefault(shard, counter)
            elif owner is None or now - seen.since > self._duration:
                free.append((shard, counter))
            else:
                live.setdefault(owner, []).append(shard)
        owners = len(live) + 1
        target = math.ceil(len(shards) / owners)
        taken = set()
        for shard, counter in free:
            if len(self.held) >= target:
                break
            if self._take(shard, counter):
                taken.add(shard)
        if len(self.held) < target and live:
            busiest, theirs = max(live.items(), key=lambda pair: len(pair[1]))
            if len(theirs) > target or (len(theirs) > len(self.held) + 1):
                shard = sorted(theirs)[0]
                if self._take(shard, int(items[shard]["leaseCounter"]["N"])):
                    logger.info("took shard %s from worker %s to balance the load", shard, busiest)
                    taken.add(shard)
        return taken

    # ------------------------------------------------------------ checkpoints

    def checkpoint_of(self, shard: str) -> str | None:
        item = self._client.get_item(TableName=self._table, Key={"leaseKey": {"S": shard}}, ConsistentRead=True)
        value = item.get("Item", {}).get("checkpoint", {}).get("S")
        return None if value is None else str(value)

    def checkpoint(self, shard: str, sequence_number: str) -> None:
        """Save the shard's position, if this worker still holds its lease (LeaseLost otherwise)."""
        counter = self.held.get(shard)
        if counter is None:
            raise LeaseLost(shard)
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"leaseKey": {"S": shard}},
                UpdateExpression="SET checkpoint = :position",
                ConditionExpression="leaseOwner = :me",
                ExpressionAttributeValues={":position": {"S": sequence_number}, ":me": {"S": self.worker_id}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                self.held.pop(shard, None)
                raise LeaseLost(shard) from None
            raise

    def release_all(self) -> None:
        """Give the held leases back (a clean stop), so that another worker takes them at once."""
        for shard, counter in list(self.held.items()):
            with contextlib.suppress(LeaseLost):  # taken already: nothing to give back
                self._update(shard, counter, counter + 1, None)
        self.held.clear()

    # ------------------------------------------------------------ the conditional writes

    def _take(self, shard: str, counter: int) -> bool:
        try:
            self._update(shard, counter, counter + 1, self.worker_id)
        except LeaseLost:
            return False
        self.held[shard] = counter + 1
        logger.info("took the lease of shard %s", shard)
        return True

    def _update(self, shard: str, counter: int, new_counter: int, owner: str | None) -> None:
        values: dict[str, Any] = {":seen": {"N": str(counter)}, ":next": {"N": str(new_counter)}}
        if owner is None:
            expression = "SET leaseCounter = :next REMOVE leaseOwner"
        else:
            expression = "SET leaseCounter = :next, leaseOwner = :owner"
            values[":owner"] = {"S": owner}
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"leaseKey": {"S": shard}},
                UpdateExpression=expression,
                ConditionExpression="leaseCounter = :seen",
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise LeaseLost(shard) from None
            raise

    def _create(self, shard: str) -> None:
        try:
            self._client.put_item(
                TableName=self._table,
                Item={"leaseKey": {"S": shard}, "leaseCounter": {"N": "0"}},
                ConditionExpression="attribute_not_exists(leaseKey)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def _scan(self) -> dict[str, dict[str, Any]]:
        items: dict[str, dict[str, Any]] = {}
        arguments: dict[str, Any] = {"TableName": self._table, "ConsistentRead": True}
        while True:
            page = self._client.scan(**arguments)
            items.update({item["leaseKey"]["S"]: item for item in page.get("Items", [])})
            if "LastEvaluatedKey" not in page:
                return items
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
