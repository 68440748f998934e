"""Several `v2serve consume` processes on one Kinesis stream, with shard leases in DynamoDB (moto's server):
they split the shards, a SIGKILLed one's shards are taken over, every record is answered, and duplicates
stay within one batch per shard."""

from __future__ import annotations

import asyncio
import time
import uuid

import boto3
import orjson
import pytest

from tests.streams.kafka_tools import add_one_request
from tests.streams.kinesis_tools import consume_process

pytestmark = pytest.mark.anyio

SHARDS, RECORDS, BATCH = 6, 1_200, 20


async def test_three_consumers_split_the_shards_and_take_over_a_killed_ones(kinesis, tmp_path):
    kinesis.input = f"leased-{uuid.uuid4().hex[:8]}"
    kinesis.client.create_stream(StreamName=kinesis.input, ShardCount=SHARDS)
    table = f"leases-{uuid.uuid4().hex[:8]}"
    env = {
        "V2SERVE_KINESIS__LEASE_TABLE": table,
        "V2SERVE_KINESIS__LEASE_DURATION_S": "1.5",
        "V2SERVE_KINESIS__BATCH_SIZE": str(BATCH),
        "V2SERVE_KINESIS__POLL_INTERVAL_S": "0.05",
        "V2SERVE_TEST_DELAY_S": "0.005",
    }
    workers = [consume_process(kinesis, tmp_path / str(i), "tests.streams.models:AddOne", **env) for i in range(3)]
    try:
        for worker in workers:  # each holds a lease before there is anything to read
            assert worker.wait_for_line("took the lease", 60), worker.output
        kinesis.put([(f"r{i}", add_one_request(i)) for i in range(RECORDS)])
        await kinesis.until_answered(RECORDS // 5)
        killed = workers[0]
        killed.kill()
        deadline = time.monotonic() + 90
        while len(kinesis.answered()) < RECORDS:
            assert time.monotonic() < deadline, lease_report(kinesis, table) + "".join(w.output for w in workers)
            await asyncio.sleep(0.1)
    finally:
        codes = [worker.stop(60) for worker in workers[1:]]
        workers[0].stop()
    assert codes == [0, 0], "".join(w.output for w in workers[1:])
    answered = kinesis.answered()
    assert set(answered) == {f"r{i}" for i in range(RECORDS)}
    outputs = kinesis.read(kinesis.output)
    served_by = {orjson.loads(r["Data"])["outputs"][-1]["data"][0] for r in outputs}
    assert {w.process.pid for w in workers} <= served_by, "the three consumers did not split the shards"
    duplicates = sum(count - 1 for count in answered.values())
    print(f"duplicates: {duplicates}")
    assert duplicates <= SHARDS * BATCH
    # A clean stop gave the survivors' leases back; the table holds every shard's checkpoint.
    dynamodb = boto3.client("dynamodb", endpoint_url=kinesis.endpoint, region_name="us-east-1")
    items = dynamodb.scan(TableName=table)["Items"]
    assert len(items) == SHARDS and all("checkpoint" in item for item in items)


def lease_report(kinesis, table: str) -> str:
    """Each shard's lease and checkpoint beside its last record, for a failure message."""
    dynamodb = boto3.client("dynamodb", endpoint_url=kinesis.endpoint, region_name="us-east-1")
    lines = [f"answered {len(kinesis.answered())} of {RECORDS}"]
    for item in sorted(dynamodb.scan(TableName=table)["Items"], key=lambda i: i["leaseKey"]["S"]):
        lines.append(str({k: next(iter(v.values())) for k, v in item.items()}))
    for shard in kinesis.client.list_shards(StreamName=kinesis.input)["Shards"]:
        lines.append(f"{shard['ShardId']}: {shard['SequenceNumberRange']}")
    return "\n".join(lines) + "\n"
