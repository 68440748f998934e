"""Test-side Kinesis on moto's server: fresh streams, records to put, what the consumer answered, and
`v2serve consume` processes on them."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from pathlib import Path

import boto3

from tests.conftest import CLIProcess
from v2serve.settings import KinesisSettings

ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


class Streams:
    """Fresh input, output and error streams on moto, and the test's side of them."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.client = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1")
        suffix = uuid.uuid4().hex[:8]
        self.input, self.output, self.errors = (f"{kind}-{suffix}" for kind in ("in", "out", "err"))
        for name, shards in ((self.input, 2), (self.output, 1), (self.errors, 1)):
            self.client.create_stream(StreamName=name, ShardCount=shards)

    def settings(self, checkpoint_dir: Path) -> KinesisSettings:
        return KinesisSettings(
            input_stream=self.input,
            output_stream=self.output,
            error_stream=self.errors,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            checkpoint_dir=str(checkpoint_dir),
            poll_interval_s=0.05,
        )

    def put(self, records: list[tuple[str, bytes]]) -> None:
        for start in range(0, len(records), 500):
            chunk = records[start : start + 500]
            entries = [{"PartitionKey": key, "Data": data} for key, data in chunk]
            response = self.client.put_records(StreamName=self.input, Records=entries)
            assert response["FailedRecordCount"] == 0

    def read(self, stream: str) -> list[dict]:
        """Every record of every shard of ``stream``, from the start."""
        records = []
        for shard in self.client.list_shards(StreamName=stream)["Shards"]:
            iterator = self.client.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                response = self.client.get_records(ShardIterator=iterator, Limit=10_000)
                records += response["Records"]
                if not response["Records"]:
                    break
                iterator = response.get("NextShardIterator")
        return records

    def answered(self) -> collections.Counter:
        keys = [r["PartitionKey"] for stream in (self.output, self.errors) for r in self.read(stream)]
        return collections.Counter(keys)

    async def until_answered(self, count: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while sum(self.answered().values()) < count:
            assert time.monotonic() < deadline, f"only {sum(self.answered().values())} of {count} answered"
            await asyncio.sleep(0.05)


def consume_process(streams: Streams, checkpoint_dir: Path, model: str, **env: str) -> CLIProcess:
    """``v2serve consume`` on the Kinesis streams of ``streams``."""
    return CLIProcess(
        "consume",
        model,
        "--kinesis-input-stream",
        streams.input,
        "--kinesis-output-stream",
        streams.output,
        "--kinesis-error-stream",
        streams.errors,
        "--kinesis-endpoint-url",
        streams.endpoint,
        "--kinesis-checkpoint-dir",
        str(checkpoint_dir),
        cwd=str(ROOT),
        env={**CREDENTIALS, **env},
    )
