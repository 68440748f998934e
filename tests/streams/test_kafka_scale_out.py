"""Kafka scale-out against a real broker: three consumer processes in one group over a 6-partition topic,
one SIGKILLed and another added mid-stream; every id answered, duplicates counted and bounded."""

from __future__ import annotations

import collections

import orjson
import pytest

from tests.streams.kafka_tools import TopicReader, Topics, add_one_request, ids_of, produce
from tests.streams.test_kafka import consumer, has_ids

pytestmark = pytest.mark.anyio

MESSAGES = 6_000


async def test_three_consumers_one_killed_one_added_answer_every_id(kafka_broker):
    topics = await Topics(partitions=6).create(kafka_broker)
    args = [*topics.cli_args(kafka_broker, "g-scale"), "--kafka-max-in-flight", "8"]
    group = [consumer(*args, delay_s=0.002) for _ in range(3)]
    added = None
    ids = {f"r{i}" for i in range(MESSAGES)}
    try:
        for process in group:
            assert process.wait_for_line("partitions assigned"), process.output
        await produce(kafka_broker, topics.input, [(f"r{i}".encode(), add_one_request(i)) for i in range(MESSAGES)])
        async with TopicReader(kafka_broker, [topics.output, topics.errors], partitions=6) as reader:
            await reader.until(lambda records: len(records) >= MESSAGES // 10)
            killed = group[0]
            killed.kill()
            added = consumer(*args, delay_s=0.002)
            answered_at_kill = len(set(ids_of(await reader.to_end())))
            assert answered_at_kill < MESSAGES, "the kill came too late to be mid-stream"
            # It must be up (and so answer SIGTERM) before the end: it joins the group and takes partitions.
            assert added.wait_for_line("partitions assigned", 60), added.output
            await reader.until(has_ids(ids), timeout_s=120)
    finally:
        survivors = [p for p in (*group[1:], added) if p is not None]
        for process in survivors:  # all at once: members leaving one by one would rebalance each time
            process.process.terminate()
        # A member's shutdown is bounded (drain, commit, leave: 30 s each at most) but a loaded group can
        # take a while to let it go.
        codes = [p.process.wait(150) for p in survivors]  # one SIGTERM each: a second one means "now"
        for process in survivors:
            process.stop()
        group[0].stop()
    assert codes == [0] * len(survivors), "".join(p.output for p in survivors)
    per_id = collections.Counter(ids_of(reader.records))
    assert set(per_id) == ids and all(r.topic == topics.output for r in reader.records)
    served_by = collections.Counter(orjson.loads(r.value)["outputs"][-1]["data"][0] for r in reader.records)
    duplicates = sum(count - 1 for count in per_id.values())
    print(f"served by pid: {dict(served_by)}; duplicates: {duplicates}")
    # At-least-once: only what the killed consumer served and had not committed is served again; clean
    # rebalances (the added consumer joining, the dead one's partitions moving) commit before they hand over.
    assert duplicates <= served_by[killed.process.pid]
    assert added.process.pid in served_by, "the consumer added mid-stream took no partitions"
    for process in group[1:]:  # every rebalance is logged with the partitions each member now holds
        assert process.output.count("partitions assigned") >= 2, process.output
    assert "partitions assigned" in added.output
