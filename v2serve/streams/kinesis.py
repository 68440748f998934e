"""The Kinesis consumer: every shard of the input stream in (or, with a lease table, the shards this process
holds leases of: see ``leases.py``), result and error streams out, checkpointed.

Each shard is read batch by batch. A batch's records are served concurrently; their result and error
records are written, and only once Kinesis has accepted all of them is the batch's last sequence number
checkpointed. A restart resumes after the checkpoint, so nothing is lost (a batch cut short by a crash is
served again).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from v2serve.errors import InferenceError
from v2serve.metrics.streams import StreamStats
from v2serve.protocol.ids import new_request_id
from v2serve.settings import KinesisSettings
from v2serve.streams.checkpoints import ShardCheckpoints
from v2serve.streams.leases import LeaseLost, ShardLeases
from v2serve.streams.messages import OutgoingRecord, error_record, event_from_message, record_for_reply
from v2serve.streams.retry import Backoff, Handle, serve_event, wait_or_stop

logger = logging.getLogger("v2serve.streams.kinesis")

# Kinesis limits: a record's data plus partition key, and records per PutRecords call.
_MAX_RECORD_BYTES = 1024 * 1024
_MAX_PUT_RECORDS = 500
_SHARD_REFRESH_S = 30.0


class KinesisWorker:
    """Serves every shard of ``settings.input_stream`` with ``handle`` until ``run``'s stop event is set."""

    trigger = "kinesis"

    @property
    def outputs(self) -> tuple[str, str]:
        return self.settings.output_stream, self.settings.error_stream

    def __init__(self, handle: Handle, settings: KinesisSettings, drain_timeout_s: float = 30.0) -> None:
        if not settings.input_stream:
            raise ValueError("the Kinesis worker needs input_stream")
        self.settings = settings
        self.stats = StreamStats()
        self._handle = handle
        self._drain_timeout_s = drain_timeout_s
        self._client: Any = boto3.client(
            "kinesis", region_name=settings.region_name, endpoint_url=settings.endpoint_url
        )
        checkpoint_dir = Path(settings.checkpoint_dir).expanduser()
        self.checkpoints = ShardCheckpoints(checkpoint_dir / f"{settings.input_stream}.json")
        self.leases: ShardLeases | None = None
        if settings.lease_table:
            dynamodb = boto3.client("dynamodb", region_name=settings.region_name, endpoint_url=settings.endpoint_url)
            worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
            self.leases = ShardLeases(dynamodb, settings.lease_table, worker_id, settings.lease_duration_s)
        self._slots = asyncio.Semaphore(settings.max_in_flight)

    async def run(self, stop: asyncio.Event) -> None:
        if self.leases is not None:
            await self._run_leased(self.leases, stop)
            return
        readers: dict[str, asyncio.Task[None]] = {}
        while not stop.is_set():
            for shard_id in await self._shard_ids(stop):
                if shard_id not in readers:
                    readers[shard_id] = asyncio.create_task(self._read_shard(shard_id, stop))
            await wait_or_stop(stop, _SHARD_REFRESH_S)
        if readers:
            await asyncio.gather(*readers.values())

    async def _run_leased(self, leases: ShardLeases, stop: asyncio.Event) -> None:
        """Read the shards this worker holds a lease of; renew and rebalance every third of a lease."""
        await asyncio.to_thread(leases.ensure_table)
        readers: dict[str, asyncio.Task[None]] = {}
        try:
            while not stop.is_set():
                shards = await self._shard_ids(stop)
                try:
                    await asyncio.to_thread(leases.renew)
                    await asyncio.to_thread(leases.balance, shards)
                except (ClientError, BotoCoreError) as exc:
                    logger.warning("the lease table could not be read or written (%s); retrying", exc)
                for shard_id in list(leases.held):
                    if shard_id not in readers or readers[shard_id].done():
                        readers[shard_id] = asyncio.create_task(self._read_shard(shard_id, stop))
                        readers[shard_id].add_done_callback(_log_failure)
                await wait_or_stop(stop, self.settings.lease_duration_s / 3)
        finally:
            if readers:
                await asyncio.gather(*readers.values(), return_exceptions=True)
            # A clean stop hands the leases back, so that the other workers take them without waiting.
            await asyncio.to_thread(leases.release_all)

    async def _shard_ids(self, stop: asyncio.Event) -> list[str]:
        shards: list[str] = []
        token: str | None = None
        while True:
            args = {"NextToken": token} if token else {"StreamName": self.settings.input_stream}
            response = await self._call(self._client.list_shards, stop, **args)
            if response is None:
                return shards
            shards += [shard["ShardId"] for shard in response["Shards"]]
            token = response.get("NextToken")
            if not token:
                return shards

    async def _read_shard(self, shard_id: str, stop: asyncio.Event) -> None:
        iterator = await self._iterator(shard_id, stop)
        while iterator is not None and not stop.is_set():
            if self.leases is not None and shard_id not in self.leases.held:
                logger.info("stopped reading shard %s: its lease is held elsewhere now", shard_id)
                return
            try:
                response = await asyncio.to_thread(
                    self._client.get_records, ShardIterator=iterator, Limit=self.settings.batch_size
                )
            except (ClientError, BotoCoreError) as exc:
                if isinstance(exc, ClientError) and exc.response["Error"]["Code"] == "ExpiredIteratorException":
                    iterator = await self._iterator(shard_id, stop)
                else:
                    logger.warning("reading shard %s failed (%s); retrying", shard_id, exc)
                    await wait_or_stop(stop, self.settings.poll_interval_s)
                continue
            records = response["Records"]
            self.stats.behind_ms[(str(self.settings.input_stream), shard_id)] = response.get("MillisBehindLatest", 0)
            if records:
                await self._serve_batch(records, stop)
                if not await self._checkpoint(shard_id, records[-1]["SequenceNumber"]):
                    return
            iterator = response.get("NextShardIterator")
            if not records:
                await wait_or_stop(stop, self.settings.poll_interval_s)
        if iterator is None:
            logger.info("shard %s is closed and fully served", shard_id)

    async def _checkpoint(self, shard_id: str, sequence_number: str) -> bool:
        """Save the shard's position; False when the lease was lost (the batch will be served again)."""
        if self.leases is None:
            self.checkpoints.save(shard_id, sequence_number)
            return True
        try:
            await asyncio.to_thread(self.leases.checkpoint, shard_id, sequence_number)
        except LeaseLost:
            logger.info("shard %s: lease lost before its checkpoint; its new owner serves the batch again", shard_id)
            return False
        return True

    async def _iterator(self, shard_id: str, stop: asyncio.Event) -> str | None:
        if self.leases is None:
            position = self.checkpoints.get(shard_id)
        else:
            position = await asyncio.to_thread(self.leases.checkpoint_of, shard_id)
        args: dict[str, str] = {"StreamName": str(self.settings.input_stream), "ShardId": shard_id}
        if position is None:
            args["ShardIteratorType"] = self.settings.initial_position
        else:
            args.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=position)
        response = await self._call(self._client.get_shard_iterator, stop, **args)
        return None if response is None else response.get("ShardIterator")

    async def _serve_batch(self, records: list[dict[str, Any]], stop: asyncio.Event) -> None:
        self.stats.consumed[str(self.settings.input_stream)] += len(records)
        outgoing = await asyncio.gather(*(self._serve(record) for record in records))
        await self._put(self.settings.output_stream, [r for r in outgoing if not r.is_error], stop)
        await self._put(self.settings.error_stream, [r for r in outgoing if r.is_error], stop)

    async def _serve(self, record: dict[str, Any]) -> OutgoingRecord:
        key = record["PartitionKey"].encode()
        event = event_from_message(record["Data"], key, (), self.trigger)
        async with self._slots:
            reply = await serve_event(self._handle, event, f"record {record['SequenceNumber']}", self.settings.retry)
        outgoing = record_for_reply(event, key, reply)
        if len(outgoing.value) + len(key) > _MAX_RECORD_BYTES:
            limit = f"{_MAX_RECORD_BYTES} bytes"
            too_large = InferenceError(f"the result is larger than a Kinesis record ({limit})")
            outgoing = error_record(event, key, too_large, reply.addressed)
        return outgoing

    async def _put(self, stream: str, records: list[OutgoingRecord], stop: asyncio.Event) -> None:
        """Write ``records`` to ``stream``, retrying the ones Kinesis refuses until every one is accepted."""
        entries = [{"Data": r.value, "PartitionKey": _partition_key(r)} for r in records]
        backoff = Backoff()
        while entries:
            chunk, rest = entries[:_MAX_PUT_RECORDS], entries[_MAX_PUT_RECORDS:]
            try:
                response = await asyncio.to_thread(self._client.put_records, StreamName=stream, Records=chunk)
            except (ClientError, BotoCoreError) as exc:
                failed = chunk
                reason = str(exc)
            else:
                failed = [
                    entry for entry, result in zip(chunk, response["Records"], strict=True) if "ErrorCode" in result
                ]
                reason = f"{len(failed)} record(s) refused"
            accepted = len(chunk) - len(failed)
            if stream == self.settings.error_stream:
                self.stats.errors += accepted
            else:
                self.stats.results += accepted
            entries = failed + rest
            if failed:
                delay = backoff.next()
                logger.warning("writing to %s failed (%s); retrying in %.1f s", stream, reason, delay)
                await asyncio.sleep(delay)

    async def _call(self, method: Callable[..., Any], stop: asyncio.Event, **args: Any) -> Any:
        """A control-plane call, retried with back-off while it fails; None once stopped."""
        backoff = Backoff(0.25)
        while not stop.is_set():
            try:
                return await asyncio.to_thread(method, **args)
            except (ClientError, BotoCoreError) as exc:
                delay = backoff.next()
                logger.warning("Kinesis %s failed (%s); retrying in %.1f s", method.__name__, exc, delay)
                await wait_or_stop(stop, delay)
        return None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("a shard reader failed; it starts again while the lease is held", exc_info=task.exception())


def _partition_key(record: OutgoingRecord) -> str:
    return record.key.decode("utf-8", "replace")[:256] if record.key else new_request_id()
