"""Triton's statistics extension: counters move by exactly what was sent."""

import asyncio
import time

import pytest

from tests.conftest import serve_in_process
from tests.fixtures import CountingDouble, ErrorModel, SumModel

pytestmark = pytest.mark.anyio

GOOD = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
BAD = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2]}]}


async def stats_of(client, path):
    return {(s["name"], s["version"]): s for s in (await client.get(path)).json()["model_stats"]}


async def test_counts_per_model_move_by_the_requests_sent():
    async with serve_in_process(
        SumModel(name="sum", version="1"), SumModel(name="sum", version="2"), ErrorModel(name="broken")
    ) as client:
        assert "statistics" in (await client.get("/v2")).json()["extensions"]
        before = await stats_of(client, "/v2/models/stats")
        started_ms = time.time_ns() // 1_000_000
        for _ in range(5):
            await client.post("/v2/models/sum/infer", json=GOOD)  # default version "2"
        for _ in range(2):
            await client.post("/v2/models/sum/infer", json=BAD)
        await client.post("/v2/models/sum/versions/1/infer", json=GOOD)
        await client.post("/v2/models/broken/infer", json=GOOD)
        after = await stats_of(client, "/v2/models/stats")
        only_v1 = await stats_of(client, "/v2/models/sum/versions/1/stats")
        both = await stats_of(client, "/v2/models/sum/stats")
        keyed = await stats_of(client, "/v2/models/sum:1/stats")

    v2, v1, broken = after[("sum", "2")], after[("sum", "1")], after[("broken", "")]
    assert before[("sum", "2")]["inference_count"] == 0
    assert (v2["inference_count"], v2["execution_count"]) == (5, 5)
    assert v2["inference_stats"]["success"]["count"] == 5 and v2["inference_stats"]["fail"]["count"] == 2
    assert v2["inference_stats"]["compute_infer"]["count"] == 5 and v2["inference_stats"]["compute_infer"]["ns"] > 0
    assert v2["inference_stats"]["queue"]["count"] == 5
    assert v1["inference_count"] == 1 and broken["inference_stats"]["fail"]["count"] == 1
    assert list(only_v1) == [("sum", "1")] and set(both) == {("sum", "1"), ("sum", "2")}
    assert list(keyed) == [("sum", "1")]
    # Milliseconds since the epoch, as Triton's: within the test's own run, and never before a first inference.
    assert started_ms - 5 <= v2["last_inference"] <= time.time() * 1000  # 5 ms: two clocks read apart
    assert before[("sum", "2")]["last_inference"] == 0


async def test_a_batch_is_one_execution_of_several_inferences():
    model = CountingDouble(max_batch_size=16, max_batch_delay_ms=50, instances=1)
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1]}]}
    async with serve_in_process(model) as client:
        await asyncio.gather(*(client.post("/v2/models/counting/infer", json=request) for _ in range(16)))
        stats = (await client.get("/v2/models/counting/stats")).json()["model_stats"][0]
    assert stats["inference_count"] == 16
    assert stats["execution_count"] == len(model.calls) < 16
