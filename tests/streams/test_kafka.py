"""The Kafka consumer against a real Kafka-protocol broker (Tansu): nothing lost, nothing only logged."""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CLIProcess, CLIServer, free_port, make_settings
from tests.fixtures import SumModel
from tests.streams.conftest import start_broker
from tests.streams.kafka_tools import (
    TopicReader,
    Topics,
    add_one_request,
    committed_offsets,
    ids_of,
    produce,
    sum_request,
)
from v2serve.server import ModelServer
from v2serve.settings import KafkaSettings
from v2serve.streams.kafka import KafkaWorker

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
MODEL = "tests.streams.models:AddOne"


def has_ids(ids: set[str]):
    return lambda records: ids <= set(ids_of(records))


async def test_10000_requests_with_1_percent_bad_get_exactly_one_record_each(kafka_broker):
    topics = await Topics().create(kafka_broker)
    messages = []
    for i in range(10_000):
        if i % 100 == 7:
            value = b'{"model": "sum_model", "inputs": [' + str(i).encode()  # malformed JSON
        elif i % 100 == 57:
            value = orjson.dumps({"model": "no_such_model", "inputs": []})
        else:
            value = sum_request(i)
        messages.append((f"k{i}".encode(), value))
    async with kafka_worker(kafka_broker, topics, "g-10k", [SumModel()], max_in_flight=128) as worker:
        await produce(kafka_broker, topics.input, messages)
        async with TopicReader(kafka_broker, [topics.output, topics.errors]) as reader:
            await reader.until(lambda records: len(records) >= 10_000)
    records = await read_all(kafka_broker, topics)

    per_id = collections.Counter(ids_of(records))
    assert set(per_id) == {f"k{i}" for i in range(10_000)}
    assert set(per_id.values()) == {1}, "every id gets exactly one record"
    errors = {r.key.decode(): orjson.loads(r.value) for r in records if r.topic == topics.errors}
    assert set(errors) == {f"k{i}" for i in range(10_000) if i % 100 in (7, 57)}
    assert errors["k7"]["status"] == 400 and "JSON" in errors["k7"]["error"]
    assert errors["k57"] == {
        "id": "k57",
        "model": "no_such_model",
        "version": None,
        "operation": "infer",
        "status": 404,
        "error": errors["k57"]["error"],
    }
    assert "no_such_model" in errors["k57"]["error"]
    for record in records:
        if record.topic == topics.output:
            i = int(record.key.decode()[1:])
            body = orjson.loads(record.value)
            assert body["id"] == f"k{i}"
            assert body["outputs"][0]["data"] == [i + 1]
            assert dict(record.headers)["v2-status"] == b"200"
    assert worker.stats.consumed == {topics.input: 10_000}
    assert (worker.stats.results, worker.stats.errors) == (9_800, 200)
    assert await committed_offsets(kafka_broker, "g-10k", topics.input) == await input_ends(kafka_broker, topics)


@asynccontextmanager
async def kafka_worker(
    bootstrap: str, topics: Topics, group: str, models, drain_timeout_s: float = 30, **settings
) -> AsyncIterator[KafkaWorker]:
    """A KafkaWorker serving ``models`` in this event loop; stopped (drained and committed) on exit."""
    server = ModelServer(models, make_settings())
    await server.start()
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        input_topics=[topics.input],
        output_topic=topics.output,
        error_topic=topics.errors,
        group_id=group,
        **settings,
    )
    worker = KafkaWorker(server.handle, kafka, drain_timeout_s)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await running
        await server.stop()


async def read_all(bootstrap: str, topics: Topics) -> list:
    async with TopicReader(bootstrap, [topics.output, topics.errors]) as reader:
        return await reader.to_end()


async def input_ends(bootstrap: str, topics: Topics) -> dict[int, int]:
    async with TopicReader(bootstrap, [topics.input]) as reader:
        records = await reader.to_end()
    counts = collections.Counter(r.partition for r in records)
    return {p: counts[p] for p in range(topics.partitions)}


async def test_headers_route_when_the_body_names_nothing(kafka_broker):
    topics = await Topics().create(kafka_broker)
    body = orjson.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})
    async with kafka_worker(kafka_broker, topics, "g-headers", [SumModel(), SumModel(name="other")]):
        await produce(kafka_broker, topics.input, [(b"by-header", body)], headers=[("v2-model", b"other")])
        await produce(kafka_broker, topics.input, [(b"ambiguous", body)])
        async with TopicReader(kafka_broker, [topics.output, topics.errors]) as reader:
            await reader.until(has_ids({"by-header", "ambiguous"}))
    by_id = {r.key.decode(): r for r in reader.records}
    assert by_id["by-header"].topic == topics.output
    assert orjson.loads(by_id["by-header"].value)["model_name"] == "other"
    # With two models and none named, the message is an error, never silently the first model's.
    assert by_id["ambiguous"].topic == topics.errors
    assert orjson.loads(by_id["ambiguous"].value)["status"] == 400


def consumer(*args: str, delay_s: float = 0.0) -> CLIProcess:
    # A short session lets the group notice a killed member in seconds rather than aiokafka's default 10.
    options = orjson.dumps({"session_timeout_ms": 3000, "heartbeat_interval_ms": 500}).decode()
    env = {"V2SERVE_TEST_DELAY_S": str(delay_s), "V2SERVE_KAFKA__CONSUMER_OPTIONS": options}
    return CLIProcess("consume", MODEL, *args, cwd=str(ROOT), env=env)


async def test_a_consumer_killed_mid_stream_loses_nothing_after_restart(kafka_broker):
    topics = await Topics().create(kafka_broker)
    ids = {f"r{i}" for i in range(3_000)}
    args = [*topics.cli_args(kafka_broker, "g-kill"), "--kafka-max-in-flight", "8"]
    first = consumer(*args, delay_s=0.002)
    try:
        assert first.wait_for_line("partitions assigned"), first.output
        await produce(kafka_broker, topics.input, [(f"r{i}".encode(), add_one_request(i)) for i in range(3_000)])
        async with TopicReader(kafka_broker, [topics.output, topics.errors]) as reader:
            await reader.until(lambda records: len(records) >= 300)
            first.kill()
            answered_before_kill = len(set(ids_of(await reader.to_end())))
            assert answered_before_kill < len(ids), "the kill came too late to be mid-stream"
            second = consumer(*args)
            try:
                await reader.until(has_ids(ids))
            finally:
                assert second.stop() == 0, second.output
    finally:
        first.stop()
    per_id = collections.Counter(ids_of(reader.records))
    assert set(per_id) == ids
    duplicates = sum(count - 1 for count in per_id.values())
    print(f"answered before the kill: {answered_before_kill}, duplicates after the restart: {duplicates}")
    # At-least-once: what was served but not yet committed at the kill is served again, nothing more.
    assert duplicates <= answered_before_kill
    assert all(r.topic == topics.output for r in reader.records)


async def test_two_consumers_in_one_group_split_the_partitions(kafka_broker):
    topics = await Topics().create(kafka_broker)
    args = topics.cli_args(kafka_broker, "g-pair")
    first = consumer(*args)
    second = consumer(*args)
    try:
        for process in (first, second):
            assert process.wait_for_line("partitions assigned"), process.output
        ids = {f"r{i}" for i in range(3_000)}
        await produce(kafka_broker, topics.input, [(f"r{i}".encode(), add_one_request(i)) for i in range(3_000)])
        async with TopicReader(kafka_broker, [topics.output, topics.errors]) as reader:
            await reader.until(has_ids(ids))
    finally:
        codes = (first.stop(), second.stop())
    assert codes == (0, 0), first.output + second.output
    served_by = collections.Counter()
    for record in reader.records:
        body = orjson.loads(record.value)
        i = int(body["id"][1:])
        outputs = {o["name"]: o["data"] for o in body["outputs"]}
        assert outputs["y"] == [i + 1, 2 * i + 1]
        served_by[outputs["pid"][0]] += 1
    assert set(served_by) == {first.process.pid, second.process.pid}, served_by


async def test_sigterm_finishes_and_commits_what_is_in_flight(kafka_broker):
    topics = await Topics().create(kafka_broker)
    process = consumer(*topics.cli_args(kafka_broker, "g-term"), "--kafka-max-in-flight", "16", delay_s=0.05)
    try:
        assert process.wait_for_line("partitions assigned"), process.output
        await produce(kafka_broker, topics.input, [(f"r{i}".encode(), add_one_request(i)) for i in range(300)])
        async with TopicReader(kafka_broker, [topics.output, topics.errors]) as reader:
            await reader.until(lambda records: len(records) >= 20)
            process.process.send_signal(signal.SIGTERM)
            assert process.stop(30) == 0, process.output
            records = await reader.to_end()
    finally:
        process.stop()
    assert "finishing" in process.output and "in flight" in process.output, process.output
    committed = await committed_offsets(kafka_broker, "g-term", topics.input)
    async with TopicReader(kafka_broker, [topics.input]) as inputs:
        consumed = [r for r in await inputs.to_end() if r.offset < committed[r.partition]]
    answered = collections.Counter(ids_of(records))
    # Every message below the committed offsets has its record, and no message was answered uncommitted.
    assert {r.key.decode() for r in consumed} == set(answered)
    assert set(answered.values()) == {1}
    assert 20 <= len(answered) < 300


async def test_serve_runs_http_and_kafka_from_one_process(kafka_broker):
    topics = await Topics().create(kafka_broker)
    server = CLIServer(MODEL, *topics.cli_args(kafka_broker, "g-both"), cwd=str(ROOT))
    try:
        server.wait_started()
        assert server.wait_for_line("partitions assigned"), server.output
        await produce(kafka_broker, topics.input, [(b"r5", add_one_request(5))])
        async with TopicReader(kafka_broker, [topics.output]) as reader:
            await reader.until(has_ids({"r5"}))
        import httpx

        async with httpx.AsyncClient() as client:
            reply = await client.post(f"{server.url}/v2/models/add_one/infer", content=add_one_request(6))
            metrics = (await client.get(f"{server.url}/metrics")).text
        assert reply.status_code == 200
        assert reply.json()["outputs"][0]["data"] == [7, 13]
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
        }
        kafka = (("topic", topics.input), ("transport", "kafka"))
        assert samples[("v2serve_stream_records_in_total", kafka)] == 1
        assert samples[("v2serve_stream_results_out_total", (("topic", topics.output), ("transport", "kafka")))] == 1
        # One partition had a message, and the consumer has caught up with it.
        assert [value for (name, _), value in samples.items() if name == "v2serve_stream_lag"] == [0]
        # The Kafka message and the HTTP request both went through the same model.
        served = (("model", "add_one"), ("operation", "infer"), ("status", "200"), ("version", ""))
        assert samples[("v2serve_requests_total", served)] == 2
    finally:
        assert server.stop() == 0, server.output
    assert orjson.loads(reader.records[0].value)["outputs"][0]["data"] == [6, 11]


async def test_a_broker_that_comes_up_late_is_retried_and_then_served(caplog):
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    topics = Topics()
    broker = None
    try:
        with caplog.at_level(logging.WARNING, logger="v2serve.streams.kafka"):
            async with kafka_worker(bootstrap, topics, "g-late", [SumModel()]):
                while "cannot reach Kafka" not in caplog.text:
                    await asyncio.sleep(0.05)
                broker = start_broker(port)
                await topics.create(bootstrap)
                await produce(bootstrap, topics.input, [(b"late", sum_request(41))])
                async with TopicReader(bootstrap, [topics.output]) as reader:
                    await reader.until(has_ids({"late"}))
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    assert orjson.loads(reader.records[0].value)["outputs"][0]["data"] == [42]


async def test_a_stop_does_not_hang_when_the_broker_is_gone(kafka_broker):
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    topics = Topics()
    broker = start_broker(port)
    try:
        await topics.create(bootstrap)
        async with kafka_worker(bootstrap, topics, "g-gone", [SumModel()], drain_timeout_s=1) as worker:
            await produce(bootstrap, topics.input, [(b"first", sum_request(1))])
            async with TopicReader(bootstrap, [topics.output]) as reader:
                await reader.until(has_ids({"first"}))
            broker.terminate()
            broker.wait(10)
    finally:
        broker.kill()
        broker.wait(10)
    assert worker.stats.results == 1
