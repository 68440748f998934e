"""Streaming models (predict is a generator): chunked on /predictions, server-sent events on v2's
generate_stream; each item leaves when it is produced, and a client that leaves stops the model."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import requests

from tests.conftest import serve_in_thread
from tests.frontends.models import AsyncCountdown, EchoStream, GatedStream, RowSum
from v2serve.mock import MockServer
from v2serve.models.base import Model
from v2serve.protocol.types import TensorSpec
from v2serve.server import ModelServer
from v2serve.settings import Settings


@pytest.fixture(scope="module")
def url():
    with serve_in_thread(
        EchoStream(name="echo_stream"), AsyncCountdown(name="countdown"), RowSum(name="rowsum")
    ) as base:
        yield base


def test_the_documents_echo_stream_test(url):
    response = requests.post(url + "/predictions/echo_stream", data="foo", stream=True, timeout=10)
    assert response.headers["Transfer-Encoding"] == "chunked"

    prediction = []
    for chunk in response.iter_content(chunk_size=None):
        if chunk:
            prediction.append(chunk.decode("utf-8"))

    assert str(" ".join(prediction)) == "hello hello hello hello world "


def test_the_first_chunk_leaves_before_the_generator_has_finished():
    model = GatedStream()
    with serve_in_thread(model) as base:
        started = time.perf_counter()
        model.released.release()  # the first item: the response starts with it
        with requests.post(f"{base}/predictions/gated_stream", data=b"go", stream=True, timeout=30) as response:
            chunks = response.iter_content(chunk_size=None)
            assert next(chunks) == b"token-1"
            first_at = time.perf_counter() - started
            # The model is still blocked before its second item: the first chunk cannot have waited for it.
            assert model.produced == 1 and not model.closed.is_set()
            model.released.release()
            assert next(chunks) == b"token-2"
            model.released.release()
            assert next(chunks) == b"token-3"
            total_at = time.perf_counter() - started
        assert first_at < total_at
        assert closed_while_allowed_to_run(model), "closing the response did not stop the generator"


def test_a_client_that_disconnects_stops_the_generator_and_frees_its_instance():
    model = GatedStream()
    with serve_in_thread(model) as base:
        address = urlsplit(base)
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            sock.sendall(b"POST /predictions/gated_stream HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\ngo")
            model.released.release()
            received = b""
            while b"token-1" not in received:
                received += sock.recv(4096)
        assert closed_while_allowed_to_run(model), "the generator ran on after its client left"
        produced = model.produced
        while model.released.acquire(blocking=False):  # the permits it did not use
            pass
        # Its only instance is free again: the next stream is served.
        model.closed.clear()
        model.released.release()
        with requests.post(f"{base}/predictions/gated_stream", data=b"go", stream=True, timeout=30) as response:
            assert next(response.iter_content(chunk_size=None)) == f"token-{produced + 1}".encode()


def closed_while_allowed_to_run(model: GatedStream) -> bool:
    """Whether the model's generator is closed while items keep being allowed (a blocked generator can only
    be stopped at its next yield; one that nobody stops runs on for as long as items are allowed)."""
    for _ in range(400):
        if model.closed.wait(0.05):
            return True
        model.released.release()
    return False


def test_generate_stream_sends_one_event_per_item(url):
    with httpx.stream("POST", f"{url}/v2/models/countdown/generate_stream", json={"start": 3}, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [orjson.loads(line[len("data: ") :]) for line in response.iter_lines() if line]
    assert events == [{"model_name": "countdown", "count": value} for value in (3, 2, 1)]


def test_a_failure_mid_stream_is_a_last_error_event(url):
    with httpx.stream("POST", f"{url}/v2/models/countdown/generate_stream", json={"start": 2}, timeout=10) as response:
        events = [orjson.loads(line[len("data: ") :]) for line in response.iter_lines() if line]
    assert events[:2] == [{"model_name": "countdown", "count": 2}, {"model_name": "countdown", "count": 1}]
    assert "countdown broke after two" in events[2]["error"]


def test_a_failure_before_the_first_item_keeps_its_status(url):
    bad = httpx.post(f"{url}/v2/models/countdown/generate_stream", json={"start": "three"}, timeout=10)
    assert bad.status_code == 400 and "error" in bad.json()
    unknown = httpx.post(f"{url}/v2/models/nope/generate_stream", json={"start": 1}, timeout=10)
    assert unknown.status_code == 404


def test_generate_on_a_model_that_does_not_stream(url):
    one = httpx.post(f"{url}/v2/models/rowsum/generate", json={"x": [1, 2, 3]}, timeout=10)
    assert one.status_code == 200 and one.json() == {"model_name": "rowsum", "total": 6.0}
    streamed = httpx.post(f"{url}/v2/models/rowsum/generate_stream", json={"x": [1, 2, 3]}, timeout=10)
    assert streamed.text == 'data: {"model_name":"rowsum","total":6.0}\n\n'


def test_a_streaming_model_refuses_the_calls_that_answer_once(url):
    infer = httpx.post(
        f"{url}/v2/models/countdown/infer",
        json={"inputs": [{"name": "start", "datatype": "INT64", "shape": [1], "data": [3]}]},
        timeout=10,
    )
    assert infer.status_code == 400 and "generate_stream" in infer.json()["error"]
    generate = httpx.post(f"{url}/v2/models/countdown/generate", json={"start": 3}, timeout=10)
    assert generate.status_code == 400


def test_the_mock_server_gets_a_stream_whole():
    with MockServer(ModelServer([EchoStream(name="echo_stream")], Settings(models=[]))) as server:
        assert server.test("/predictions/echo_stream", b"foo") == b"hellohellohellohello world "


def test_a_streaming_model_cannot_batch():
    class Batched(Model):
        inputs = [TensorSpec("x", "FP32", [-1])]
        max_batch_size = 8

        def predict(self, inputs):
            yield inputs["x"]

    with pytest.raises(ValueError, match="cannot be batched"):
        ModelServer([Batched(name="batched")], Settings(models=[]))
