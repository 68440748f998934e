"""Dynamic batching, bounded queues and deadlines, through the HTTP app."""

import asyncio
import threading

import numpy as np
import pytest

from tests.conftest import serve_in_process
from tests.fixtures import CountingDouble, ErrorModel, GatedModel
from v2serve.engine.invoker import ModelInvoker
from v2serve.engine.scheduler import (
    BatchScheduler,
    ConcurrencyScheduler,
    Scheduler,
    ThreadedConcurrencyScheduler,
    make_scheduler,
)
from v2serve.errors import DeadlineExceeded, InferenceError
from v2serve.metrics.model import ModelRecorder
from v2serve.models.base import Model, RequestContext

pytestmark = pytest.mark.anyio


def row_request(i: int, width: int = 3, **extra) -> dict:
    return {
        "id": f"r{i}",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, width], "data": [float(i)] * width}],
        **extra,
    }


async def test_concurrent_single_rows_are_batched_and_each_caller_gets_its_own_row():
    model = CountingDouble(max_batch_size=64, max_batch_delay_ms=50, instances=1)
    async with serve_in_process(model) as client:
        responses = await asyncio.gather(
            *(client.post("/v2/models/counting/infer", json=row_request(i)) for i in range(64))
        )
    for i, response in enumerate(responses):
        body = response.json()
        assert body["id"] == f"r{i}"
        assert body["outputs"][0] == {"name": "y", "datatype": "FP32", "shape": [1, 3], "data": [2.0 * i] * 3}
    assert sum(model.calls) == 64
    assert len(model.calls) <= 8, f"64 requests took {len(model.calls)} predict calls"


async def test_a_batch_smaller_than_the_last_waits_for_the_rest_and_a_lone_request_lowers_the_bar():
    # Spacing requests in time is what this behaviour is about; the assertions count predict calls only.
    model = CountingDouble(max_batch_size=64, max_batch_delay_ms=400, instances=1)
    async with serve_in_process(model) as client:

        async def post(i: int, after_s: float = 0.0) -> None:
            await asyncio.sleep(after_s)
            response = await client.post("/v2/models/counting/infer", json=row_request(i))
            assert response.json()["outputs"][0]["data"] == [2.0 * i] * 3

        await asyncio.gather(*(post(i) for i in range(4)))
        last = model.calls[-1]
        del model.calls[:]
        # Half of the last batch's clients come back 150 ms late (longer than a quarter of the delay, the quiet
        # gap that used to close a batch): the batch still waits for them, and runs once.
        await asyncio.gather(*(post(10 + i, after_s=0.0 if i < last // 2 else 0.15) for i in range(last)))
        assert model.calls == [last]
        del model.calls[:]
        await post(20)  # alone: it waits out the delay, and the next batch expects one row
        await asyncio.gather(post(21), post(22, after_s=0.15))
        assert model.calls == [1, 1, 1]


async def test_a_malformed_request_fails_alone_and_incompatible_shapes_do_not_mix():
    model = CountingDouble(max_batch_size=64, max_batch_delay_ms=50, instances=1)
    bad = {"id": "bad", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2]}]}
    async with serve_in_process(model) as client:
        requests = [row_request(i) for i in range(20)] + [bad] + [row_request(i, width=5) for i in range(20, 30)]
        responses = await asyncio.gather(*(client.post("/v2/models/counting/infer", json=r) for r in requests))
    statuses = [r.status_code for r in responses]
    assert statuses[20] == 400 and statuses.count(200) == 30
    for request, response in zip(requests, responses, strict=True):
        if request is not bad:
            value, width = request["inputs"][0]["data"][0], request["inputs"][0]["shape"][1]
            assert response.json()["outputs"][0]["data"] == [2.0 * value] * width
    assert sum(model.calls) == 30


async def test_requested_outputs_and_ids_survive_batching():
    model = CountingDouble(max_batch_size=8, max_batch_delay_ms=50, instances=1)
    async with serve_in_process(model) as client:
        binary = row_request(1, outputs=[{"name": "y", "parameters": {"binary_data": True}}])
        plain = row_request(2)
        first, second = await asyncio.gather(
            client.post("/v2/models/counting/infer", json=binary), client.post("/v2/models/counting/infer", json=plain)
        )
    assert first.headers["content-type"] == "application/octet-stream"
    assert second.json()["outputs"][0]["data"] == [4.0, 4.0, 4.0]


class GatedExplainer(GatedModel):
    def explain(self, inputs, context):
        return self.predict(inputs)

    def op_wait(self, body):
        """A custom operation that blocks as predict does."""
        self.predict({})
        return {"waited": True}


@pytest.mark.parametrize("operation", ["infer", "explain", "wait"])
@pytest.mark.parametrize("batching", [0, 8], ids=["unbatched", "batched"])
async def test_a_queue_flood_gets_fast_503s_then_serving_resumes(batching, operation):
    gated = GatedExplainer(name="gated")
    gated.instances, gated.max_queue_size, gated.max_batch_size = 1, 4, batching
    path = f"/v2/models/gated/{operation}"
    async with serve_in_process(gated) as client:
        request = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [3]}]}
        busy = asyncio.create_task(client.post(path, json=request))
        await asyncio.to_thread(gated.started.wait, 5)
        queued = [asyncio.create_task(client.post(path, json=request)) for _ in range(4)]
        flood = await asyncio.gather(*(client.post(path, json=request) for _ in range(20)))
        # All answered while predict is still blocked: refused at once, not timed out.
        assert not busy.done() and not any(t.done() for t in queued)
        assert [r.status_code for r in flood] == [503] * 20
        assert all(r.headers["retry-after"] == "1" and "waiting" in r.json()["error"] for r in flood)
        gated.release.set()
        assert (await busy).status_code == 200
        assert [(await t).status_code for t in queued] == [200] * 4
        assert (await client.post(path, json=request)).status_code == 200


@pytest.mark.parametrize("batching", [0, 8], ids=["unbatched", "batched"])
async def test_an_expired_deadline_gets_an_error_not_a_late_answer(batching):
    gated = GatedModel(name="gated")
    gated.instances, gated.max_batch_size = 1, batching
    async with serve_in_process(gated) as client:
        request = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [3]}]}
        hung = await client.post("/v2/models/gated/infer", json=request | {"parameters": {"timeout": 20_000}})
        assert hung.status_code == 504 and "deadline" in hung.json()["error"]
        queued = await client.post("/v2/models/gated/infer", json=request | {"parameters": {"timeout": 20_000}})
        assert queued.status_code == 504
        bad = await client.post("/v2/models/gated/infer", json=request | {"parameters": {"timeout": "soon"}})
        assert bad.status_code == 400
        gated.release.set()
        assert (await client.post("/v2/models/gated/infer", json=request)).status_code == 200


async def test_warm_up_runs_before_ready_and_a_failing_warm_up_fails_the_load():
    warm = CountingDouble(name="warm", warmup_inputs={"x": [[1.0, 2.0]]})
    cold = ErrorModel(name="cold", warmup_inputs={"x": [1.0]})
    async with serve_in_process(warm, cold) as client:
        assert warm.calls == [1]
        ready = (await client.get("/v2/models/cold/ready")).json()
        assert ready["state"] == "FAILED" and "warm-up failed: ValueError: boom" in ready["reason"]


def test_batch_split_rejects_models_that_do_not_keep_rows():
    model = CountingDouble(max_batch_size=4)
    scheduler = BatchScheduler(ModelInvoker(model, None), ModelRecorder("m", None))
    with pytest.raises(InferenceError, match="one row per input row"):
        scheduler._split({"y": np.zeros((3, 2))}, [1, 1])


async def test_slots_bound_concurrency_and_survive_cancelled_waiters():
    class Tracking(CountingDouble):
        running = peak = 0

        async def predict(self, inputs):
            Tracking.running += 1
            Tracking.peak = max(Tracking.peak, Tracking.running)
            await asyncio.sleep(0.01)
            Tracking.running -= 1
            return {"y": inputs["x"]}

    model = Tracking(name="tracking", instances=2)
    scheduler = ConcurrencyScheduler(ModelInvoker(model, None), ModelRecorder("m", None))
    inputs = {"x": np.ones((1, 1), dtype=np.float32)}
    waiting = [asyncio.ensure_future(scheduler.submit(inputs, RequestContext(id=str(i)), None)) for i in range(10)]
    await asyncio.sleep(0)
    for task in waiting[4:7]:
        task.cancel()  # waiters that give up must neither run nor keep a slot
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 3
    assert Tracking.peak == 2 and scheduler.waiting == 0
    more = await asyncio.gather(*(scheduler.submit(inputs, RequestContext(id="x"), None) for _ in range(4)))
    assert len(more) == 4 and Tracking.peak == 2


class SyncTracking(Model):
    """A sync predict that records the order calls start in and how many run at once, and waits at ``gate``."""

    def __init__(self, instances: int):
        super().__init__(name="tracking", instances=instances)
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.order: list[str] = []
        self.running = self.peak = 0

    def enter(self, name: str) -> None:
        with self.lock:
            self.order.append(name)
            self.running += 1
            self.peak = max(self.peak, self.running)

    def leave(self) -> None:
        with self.lock:
            self.running -= 1

    def predict(self, inputs, context):
        self.enter(context.id)
        try:
            if not self.gate.wait(10):
                raise TimeoutError("never released")
            return {"y": inputs["x"]}
        finally:
            self.leave()


def tracking_scheduler(instances: int) -> tuple[SyncTracking, Scheduler, ModelRecorder]:
    model = SyncTracking(instances)
    stats = ModelRecorder("tracking", None)
    scheduler = make_scheduler(ModelInvoker(model, None), stats)
    assert isinstance(scheduler, ThreadedConcurrencyScheduler)
    return model, scheduler, stats


async def test_sync_predicts_queued_for_an_instance_run_in_order_one_slot_at_a_time_with_other_waiters():
    model, scheduler, stats = tracking_scheduler(instances=1)
    inputs = {"x": np.ones((1, 1), dtype=np.float32)}

    def predict(name: str) -> asyncio.Task:
        return asyncio.ensure_future(scheduler.submit(inputs, RequestContext(id=name), None))

    async def operation() -> str:  # a custom operation: it waits on the loop for the same slots
        model.enter("op")
        model.leave()
        return "op done"

    first = predict("a")
    await asyncio.sleep(0)  # it takes the free instance
    queued = [predict("b"), predict("c")]
    await asyncio.sleep(0)
    op = asyncio.ensure_future(scheduler.call(operation))
    await asyncio.sleep(0)
    queued += [predict("d"), predict("e")]
    await asyncio.sleep(0)
    assert scheduler.waiting == 5
    queued[1].cancel()  # gave up while queued: never runs, keeps no slot
    model.gate.set()
    results = await asyncio.gather(first, *queued, op, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError) and results[-1] == "op done"
    assert model.order == ["a", "b", "op", "d", "e"] and model.peak == 1
    assert scheduler.waiting == 0 and stats.running == 0
    assert sum(stats.queue_wait.counts) == 5 and sum(stats.predict.counts) == 4  # the operation waited too
    again = await asyncio.gather(*(predict(f"x{i}") for i in range(3)))
    assert len(again) == 3 and model.peak == 1


async def test_a_sync_predict_that_outlives_its_deadline_keeps_its_instance_until_it_returns():
    model, scheduler, stats = tracking_scheduler(instances=1)
    inputs = {"x": np.ones((1, 1), dtype=np.float32)}
    loop = asyncio.get_running_loop()
    with pytest.raises(DeadlineExceeded):
        await scheduler.submit(inputs, RequestContext(id="late"), loop.time() + 0.05)
    assert model.order == ["late"] and model.running == 1  # still running in its thread
    with pytest.raises(DeadlineExceeded):  # queued behind it until its own deadline: it leaves the queue
        await scheduler.submit(inputs, RequestContext(id="queued"), loop.time() + 0.05)
    assert scheduler.waiting == 0
    after = asyncio.ensure_future(scheduler.submit(inputs, RequestContext(id="next"), None))
    await asyncio.sleep(0)
    assert scheduler.waiting == 1  # queued behind the abandoned call, not running beside it
    model.gate.set()
    assert (await after)["y"].shape == (1, 1)
    assert model.order == ["late", "next"] and model.peak == 1 and stats.running == 0
