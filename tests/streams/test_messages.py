"""Stream messages to Events, replies to records, and retries of retriable errors, without a broker: the
replies come from a real server core, which resolves what each message names."""

import asyncio

import orjson
import pytest

from tests.fixtures import GatedLoadModel, SumModel
from v2serve.errors import ModelNotReady, V2ServeError
from v2serve.event import Addressed, Reply
from v2serve.server import ModelServer
from v2serve.settings import RetrySettings, Settings
from v2serve.streams.messages import error_record, event_from_message, record_for_reply
from v2serve.streams.retry import Backoff, serve_event

pytestmark = pytest.mark.anyio

GOOD = {"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}


def test_a_message_becomes_a_body_routed_event_with_the_key_as_id():
    event = event_from_message(b"{}", b"key-1", [("V2-Model", b"m"), ("Content-Type", b"application/json")], "kafka")
    assert (event.path, event.method, event.id, event.trigger) == ("/", "POST", "key-1", "kafka")
    assert event.headers == {"v2-model": "m", "content-type": "application/json"}
    assert event.body.content_type == "application/json"


def test_a_tombstone_becomes_an_empty_body():
    assert bytes(event_from_message(None, None, [], "kafka").body) == b""


def test_success_is_a_result_record_keyed_like_the_request():
    event = event_from_message(b"{}", b"k", [], "kafka")
    record = record_for_reply(event, b"k", Reply.json({"outputs": []}))
    assert not record.is_error
    assert (record.key, record.value) == (b"k", b'{"outputs":[]}')
    assert ("v2-status", b"200") in record.headers


@pytest.fixture
async def server():
    server = ModelServer([SumModel(name="sum")], Settings(models=[]))
    await server.start()
    yield server
    await server.stop()


async def test_failure_is_an_error_record_naming_what_the_request_named(server):
    body = orjson.dumps({"id": "r1", "model": "sum", "version": "2", "operation": "explain", **GOOD})
    event = event_from_message(body, None, [], "kafka")
    reply = await server.handle(event)
    assert reply.addressed == Addressed("sum", "2", "explain", "r1")
    record = record_for_reply(event, None, reply)
    assert record.is_error and record.key == b"r1"
    fields = orjson.loads(record.value)
    assert {k: fields[k] for k in ("id", "model", "version", "operation", "status")} == {
        "id": "r1",
        "model": "sum",
        "version": "2",
        "operation": "explain",
        "status": 404,
    }
    assert "no version '2'" in fields["error"]


async def test_an_error_record_falls_back_to_headers_and_the_key_when_the_body_is_not_json(server):
    event = event_from_message(b"\xff not json", b"k9", [("v2-model", b"m"), ("v2-operation", b"op_x")], "kafka")
    reply = await server.handle(event)
    record = record_for_reply(event, b"k9", reply)
    fields = orjson.loads(record.value)
    assert (fields["id"], fields["model"], fields["operation"], fields["status"]) == ("k9", "m", "op_x", 400)
    assert "malformed JSON" in fields["error"]


def test_an_error_outside_the_graph_keeps_what_the_message_named():
    event = event_from_message(b"{}", None, [], "kafka")
    record = error_record(
        event, None, V2ServeError("the result could not be written"), Addressed("m", None, "infer", "7")
    )
    fields = orjson.loads(record.value)
    assert (record.key, fields["model"], fields["status"]) == (b"7", "m", 500)


async def test_a_retriable_error_is_retried_until_the_model_is_ready():
    model = GatedLoadModel(name="loading")
    server = ModelServer([model], Settings(models=[], load_in_background=True))
    await server.start()
    try:
        event = event_from_message(orjson.dumps({"model": "loading", **GOOD}), b"k", [], "kafka")
        first = await server.handle(event)
        assert first.error is not None and first.error.retriable and first.status == 503
        serving = asyncio.create_task(
            serve_event(server.handle, event, "test", RetrySettings(attempts=50, backoff_s=0.01))
        )
        await asyncio.sleep(0.05)
        assert not serving.done()
        model.release.set()
        reply = await asyncio.wait_for(serving, 10)
        assert reply.status == 200, reply.body
    finally:
        model.release.set()
        await server.stop()


async def test_retries_are_bounded_then_the_error_is_answered():
    calls = []

    async def never_ready(event):
        calls.append(event)
        error = ModelNotReady("model 'm' is loading")
        return Reply(503, b"{}", error=error)

    event = event_from_message(b"{}", None, [], "kafka")
    reply = await serve_event(never_ready, event, "test", RetrySettings(attempts=3, backoff_s=0.001))
    assert reply.status == 503 and len(calls) == 4


def test_backoff_doubles_with_jitter_up_to_its_limit():
    backoff = Backoff(1.0, 4.0)
    delays = [backoff.next() for _ in range(5)]
    for delay, ceiling in zip(delays, [1, 2, 4, 4, 4], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in [Backoff(1.0).next() for _ in range(20)]}) > 1, "no jitter"
