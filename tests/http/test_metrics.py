"""Prometheus metrics at /metrics: counters move by exactly what was sent, per model."""

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import serve_in_process
from tests.fixtures import CountingDouble, ErrorModel, FailingLoadModel, SumModel

pytestmark = pytest.mark.anyio

GOOD = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
BAD = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2]}]}


async def scrape(client) -> dict[tuple[str, frozenset], float]:
    reply = await client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_request_and_failure_counters_move_by_exactly_what_was_sent():
    async with serve_in_process(SumModel(name="sum", version="1"), ErrorModel(name="broken")) as client:
        before = await scrape(client)
        for _ in range(7):
            await client.post("/v2/models/sum/infer", json=GOOD)
        for _ in range(3):
            await client.post("/v2/models/sum/infer", json=BAD)
        for _ in range(2):
            await client.post("/v2/models/broken/infer", json=GOOD)
        after = await scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    sum_ok = {"model": "sum", "version": "1", "operation": "infer", "status": "200"}
    sum_bad = {**sum_ok, "status": "400"}
    broken = {"model": "broken", "version": "", "operation": "infer", "status": "500"}
    assert moved("v2serve_requests_total", **sum_ok) == 7
    assert moved("v2serve_requests_total", **sum_bad) == 3
    assert moved("v2serve_request_failures_total", **sum_bad) == 3
    assert moved("v2serve_request_failures_total", **sum_ok) == 0
    assert moved("v2serve_requests_total", **broken) == 2
    assert moved("v2serve_request_failures_total", **broken) == 2

    latency = {"model": "sum", "version": "1", "operation": "infer"}
    assert moved("v2serve_request_duration_seconds_count", **latency) == 10
    assert moved("v2serve_request_duration_seconds_bucket", **latency, le="+Inf") == 10
    buckets = [
        key for key in after if key[0] == "v2serve_request_duration_seconds_bucket" and ("model", "sum") in key[1]
    ]
    assert len(buckets) > 10, "the latency histogram has buckets"
    model = {"model": "sum", "version": "1"}
    # Only the 7 valid requests got as far as the model; the 3 with a wrong shape failed decoding.
    assert moved("v2serve_predict_seconds_count", **model) == 7
    assert moved("v2serve_queue_wait_seconds_count", **model) == 7
    assert moved("v2serve_encode_seconds_count", **model) == 7
    assert moved("v2serve_decode_seconds_count", **model) == 7
    assert value(after, "v2serve_model_state", **model, state="READY") == 1
    assert value(after, "v2serve_model_load_seconds", **model) >= 0
    assert value(after, "v2serve_queue_depth", **model) == 0
    assert value(after, "v2serve_in_flight", **model) == 0


async def test_batch_sizes_and_failed_loads_are_visible():
    batching = CountingDouble(max_batch_size=16, max_batch_delay_ms=50, instances=1)
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1]}]}
    async with serve_in_process(batching, FailingLoadModel(name="fails")) as client:
        await asyncio.gather(*(client.post("/v2/models/counting/infer", json=request) for _ in range(16)))
        samples = await scrape(client)
    model = {"model": "counting", "version": ""}
    assert value(samples, "v2serve_batch_size_count", **model) == len(batching.calls)
    assert value(samples, "v2serve_batch_size_sum", **model) == 16
    assert len(batching.calls) < 16
    assert value(samples, "v2serve_batch_size_bucket", **model, le="1.0") == batching.calls.count(1)
    assert value(samples, "v2serve_model_state", model="fails", version="", state="FAILED") == 1
    assert value(samples, "v2serve_model_state", model="fails", version="", state="READY") == 0
