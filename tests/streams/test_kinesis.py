"""The Kinesis consumer against moto's server: every record answered once, and restarts resume."""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import make_settings
from tests.fixtures import SumModel
from tests.streams.kafka_tools import add_one_request, sum_request
from tests.streams.kinesis_tools import Streams, consume_process
from v2serve.server import ModelServer
from v2serve.streams.kinesis import KinesisWorker

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


async def serve_until_answered(streams: Streams, checkpoint_dir: Path, count: int) -> KinesisWorker:
    server = ModelServer([SumModel()], make_settings())
    await server.start()
    worker = KinesisWorker(server.handle, streams.settings(checkpoint_dir))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await streams.until_answered(count)
    finally:
        stop.set()
        await running
        await server.stop()
    return worker


def requests(first: int, last: int) -> list[tuple[str, bytes]]:
    bad = b'{"model": "sum_model", "inputs": ['
    return [(f"k{i}", bad if i % 100 == 7 else sum_request(i)) for i in range(first, last)]


async def test_every_record_of_every_shard_gets_one_answer(kinesis, tmp_path):
    kinesis.put(requests(0, 400))
    worker = await serve_until_answered(kinesis, tmp_path, 400)

    assert kinesis.answered() == collections.Counter({f"k{i}": 1 for i in range(400)})
    for record in kinesis.read(kinesis.output):
        i = int(record["PartitionKey"][1:])
        body = orjson.loads(record["Data"])
        assert body["id"] == f"k{i}" and body["outputs"][0]["data"] == [i + 1]
    errors = {r["PartitionKey"]: orjson.loads(r["Data"]) for r in kinesis.read(kinesis.errors)}
    assert set(errors) == {"k7", "k107", "k207", "k307"}
    assert errors["k7"]["status"] == 400 and errors["k7"]["id"] == "k7"
    assert worker.stats.consumed == {kinesis.input: 400}
    assert (worker.stats.results, worker.stats.errors) == (396, 4)
    assert len(worker.checkpoints.path.read_bytes()) > 0


async def test_a_restart_resumes_after_the_checkpoint(kinesis, tmp_path):
    kinesis.put(requests(0, 150))
    await serve_until_answered(kinesis, tmp_path, 150)
    kinesis.put(requests(150, 300))
    second = await serve_until_answered(kinesis, tmp_path, 300)

    # Served from the checkpoint on: the first 150 are not served a second time.
    assert second.stats.consumed == {kinesis.input: 150}
    assert kinesis.answered() == collections.Counter({f"k{i}": 1 for i in range(300)})


async def test_consume_serves_kinesis_and_exits_cleanly_on_sigterm(kinesis, tmp_path):
    kinesis.put(requests(0, 50))
    process = consume_process(kinesis, tmp_path, "tests.fixtures:SumModel")
    try:
        await kinesis.until_answered(50)
        process.process.send_signal(signal.SIGTERM)
        assert process.stop(30) == 0, process.output
    finally:
        process.stop()
    assert kinesis.answered() == collections.Counter({f"k{i}": 1 for i in range(50)})
    assert set(orjson.loads((tmp_path / f"{kinesis.input}.json").read_bytes())) == {
        shard["ShardId"] for shard in kinesis.client.list_shards(StreamName=kinesis.input)["Shards"]
    }


async def test_a_consumer_killed_mid_stream_resumes_from_its_checkpoint_and_loses_nothing(kinesis, tmp_path):
    kinesis.put([(f"r{i}", add_one_request(i)) for i in range(600)])
    slow = {
        "V2SERVE_TEST_DELAY_S": "0.005",
        "V2SERVE_KINESIS__BATCH_SIZE": "20",
        "V2SERVE_KINESIS__POLL_INTERVAL_S": "0.05",
    }
    first = consume_process(kinesis, tmp_path, "tests.streams.models:AddOne", **slow)
    try:
        await kinesis.until_answered(100)
        first.kill()
    finally:
        first.stop()
    answered_before_kill = len(kinesis.answered())
    assert answered_before_kill < 600, "the kill came too late to be mid-stream"
    second = consume_process(kinesis, tmp_path, "tests.streams.models:AddOne", V2SERVE_KINESIS__POLL_INTERVAL_S="0.05")
    try:
        deadline = time.monotonic() + 60
        while len(kinesis.answered()) < 600:
            assert time.monotonic() < deadline, second.output
            await asyncio.sleep(0.05)
        second.process.send_signal(signal.SIGTERM)
        assert second.stop(30) == 0, second.output
    finally:
        second.stop()
    answered = kinesis.answered()
    assert set(answered) == {f"r{i}" for i in range(600)}
    duplicates = sum(count - 1 for count in answered.values())
    print(f"answered before the kill: {answered_before_kill}, duplicates after the restart: {duplicates}")
    # Only batches served but not yet checkpointed at the kill come again: at most one batch per shard.
    assert duplicates <= 2 * 20, duplicates
