"""Test-side Kafka: topics, requests to produce, and a reader of everything the consumer wrote."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord


@dataclass
class Topics:
    """Fresh topic names for one test: input (3 partitions), output, errors."""

    input: str = field(default_factory=lambda: f"in-{uuid.uuid4().hex[:8]}")
    output: str = field(default_factory=lambda: f"out-{uuid.uuid4().hex[:8]}")
    errors: str = field(default_factory=lambda: f"err-{uuid.uuid4().hex[:8]}")
    partitions: int = 3

    async def create(self, bootstrap: str) -> Topics:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(name, self.partitions, 1) for name in (self.input, self.output, self.errors)]
            )
        finally:
            await admin.close()
        return self

    def cli_args(self, bootstrap: str, group: str) -> list[str]:
        return [
            "--kafka-servers",
            bootstrap,
            "--kafka-input-topic",
            self.input,
            "--kafka-output-topic",
            self.output,
            "--kafka-error-topic",
            self.errors,
            "--kafka-group",
            group,
        ]


def add_one_request(i: int) -> bytes:
    return orjson.dumps({"model": "add_one", "id": f"r{i}", "inputs": [_tensor("x", [i, 2 * i])]})


def sum_request(i: int) -> bytes:
    return orjson.dumps({"model": "sum_model", "inputs": [_tensor("INPUT0", [i, 1], "FP32")]})


def _tensor(name: str, data: list[int], datatype: str = "INT64") -> dict:
    return {"name": name, "shape": [1, len(data)], "datatype": datatype, "data": data}


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], headers=None) -> None:
    """Send (key, value) pairs and wait until the broker has acknowledged every one."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        deliveries = [await producer.send(topic, value, key=key, headers=headers) for key, value in messages]
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


class TopicReader:
    """Reads every partition of some topics from the beginning, without a consumer group."""

    def __init__(self, bootstrap: str, topics: list[str], partitions: int = 3) -> None:
        self.records: list[ConsumerRecord] = []
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._partitions = [TopicPartition(t, p) for t in topics for p in range(partitions)]

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._consumer.stop()

    async def until(self, done: Callable[[list[ConsumerRecord]], bool], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(self.records):
            assert time.monotonic() < deadline, f"timed out with {len(self.records)} records read"
            await self._read(200)

    async def to_end(self) -> list[ConsumerRecord]:
        """Everything written so far: reads until every partition's end offset."""
        ends = await self._consumer.end_offsets(self._partitions)
        for partition, end in ends.items():
            while await self._consumer.position(partition) < end:
                await self._read(200)
        return self.records

    async def _read(self, timeout_ms: int) -> None:
        for records in (await self._consumer.getmany(timeout_ms=timeout_ms)).values():
            self.records.extend(records)


def ids_of(records: list[ConsumerRecord]) -> list[str]:
    return [record.key.decode() for record in records]


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int = 3) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (0 where none was committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)}
    finally:
        await consumer.stop()
