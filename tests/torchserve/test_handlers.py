"""TorchServe archives built by torch-model-archiver, served by v2serve with their handlers unchanged, and
called as TorchServe's inference document calls them (requests; curl's -T, -d and -F) on a real uvicorn
server."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json

import pytest
import requests
import torch

from tests.conftest import serve_in_thread
from tests.torchserve.conftest import Store, scripted_mlp
from v2serve.models.torchserve import TorchServeArchive


@pytest.fixture(scope="module")
def url(store: Store):
    names = ("mlp", "echo_v1", "echo_v2", "raw", "stream", "hidden_stream")
    models = [TorchServeArchive(model_path=str(store[name])) for name in names]
    with serve_in_thread(*models) as base:
        yield base


def test_a_base_handler_on_a_torchscript_model_answers_what_the_model_computes(url, tmp_path):
    rows = [[0.5, -1.0, 2.0, 0.25]]
    response = requests.post(f"{url}/predictions/mlp", json=rows[0], timeout=30)
    assert response.status_code == 200, response.text
    expected = torch.jit.load(str(scripted_mlp(tmp_path / "same.pt")))(torch.tensor(rows)).tolist()[0]
    assert response.json() == pytest.approx(expected, rel=1e-6)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]


def test_json_is_parsed_text_is_a_str_and_anything_else_is_bytes(url):
    as_json = requests.post(f"{url}/predictions/raw", json={"a": [1, 2]}, timeout=10).json()
    assert as_json["parameters"] == {"body": {"type": "dict", "value": {"a": [1, 2]}}}
    as_text = requests.post(f"{url}/predictions/raw", data="hello", headers={"content-type": "text/plain"}, timeout=10)
    assert as_text.json()["parameters"] == {"body": {"type": "str", "value": "hello"}}
    raw = bytes(range(256))
    uploaded = requests.put(f"{url}/predictions/raw", data=raw, timeout=10).json()  # curl -T
    assert uploaded["parameters"]["body"]["type"] == "bytes"
    assert uploaded["parameters"]["body"]["sha256"] == hashlib.sha256(raw).hexdigest()


def test_each_form_field_is_a_parameter_of_its_name(url):
    image = b"\xff\xd8\xff" + bytes(100)
    answer = requests.post(f"{url}/predictions/raw", files={"data": image}, data={"label": "cat"}, timeout=10).json()
    assert set(answer["parameters"]) == {"data", "label"}
    assert answer["parameters"]["data"]["type"] == "bytes" and answer["parameters"]["label"]["type"] == "bytes"
    # curl -d 'p=1&q=2' sends a urlencoded form, which TorchServe reads as fields
    fields = requests.post(f"{url}/predictions/raw", data={"p": "1", "q": "2"}, timeout=10).json()["parameters"]
    assert {name: value["b64"] for name, value in fields.items()} == {"p": "MQ==", "q": "Mg=="}


def test_request_headers_are_read_in_any_case(url):
    answer = requests.post(f"{url}/predictions/raw", json=[1], headers={"X-Custom": "yes"}, timeout=10).json()
    assert answer["content_type"] == "application/json" and answer["custom_header"] == "yes"
    assert answer["has_request_id"] and answer["model_dir_set"] and answer["batch_size"] == 1


def test_the_status_and_content_type_a_handler_sets_are_the_answers(url):
    teapot = requests.post(f"{url}/predictions/raw", data=b"teapot", timeout=10)
    assert teapot.status_code == 418 and teapot.text == "short and stout"
    assert teapot.headers["content-type"] == "text/x-tea"
    image = requests.post(f"{url}/predictions/raw", data=b"png", timeout=10)
    assert image.status_code == 200 and image.content == b"\x89PNG\r\n\x1a\n"
    assert image.headers["content-type"] == "image/png"


def test_failures_answer_in_torchserve_shape_with_honest_statuses(url):
    refused = requests.post(f"{url}/predictions/raw", data=b"refuse", timeout=10)
    assert refused.status_code == 422  # PredictionException's own code, as TorchServe answers it
    assert refused.json() == {"code": 422, "type": "InternalServerException", "message": "this request is refused"}
    crashed = requests.post(f"{url}/predictions/raw", data=b"crash", timeout=10)
    assert crashed.status_code == 500  # TorchServe: 503 "Prediction failed" (a correction: nothing to retry)
    assert crashed.json()["message"] == "Prediction failed: RuntimeError: the handler crashed"
    timed_out = requests.post(f"{url}/predictions/raw", data=b"sleep", timeout=10)
    assert timed_out.status_code == 504  # responseTimeout: 1 (TorchServe: 500 "Worker died.")
    assert timed_out.json()["type"] == "RequestTimeoutException"
    # the server and the model serve on
    assert requests.post(f"{url}/predictions/raw", data=b"teapot", timeout=10).status_code == 418


def test_two_versions_of_one_model_each_answer_with_their_own(url):
    for version in ("1.0", "2.0"):
        answer = requests.post(f"{url}/predictions/echo/{version}", data=b"hi", timeout=10).json()
        assert answer == {"version": version, "echo": "hi"}
    unknown = requests.post(f"{url}/predictions/echo/3.0", data=b"hi", timeout=10)
    assert unknown.status_code == 404 and unknown.json()["code"] == 404


def test_explanations_reach_the_handler_as_an_explain_request(url):
    # BaseHandler reads the explain header to choose explain_handle; the raw handler shows what it was sent.
    for method in ("POST", "PUT"):
        response = requests.request(method, f"{url}/explanations/raw", data=b"x", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["parameters"] == {
            "body": {"type": "bytes", "sha256": hashlib.sha256(b"x").hexdigest(), "b64": "eA=="}
        }


def test_a_streaming_handler_is_answered_in_chunks_as_it_sends_them(url):
    with requests.post(f"{url}/predictions/stream", data="one two three", headers={"content-type": "text/plain"},
                       stream=True, timeout=10) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers.get("transfer-encoding") == "chunked"
        assert response.headers["x-request-id"]  # a streamed answer names its request as a plain one does
        chunks = [chunk for chunk in response.iter_content(chunk_size=None) if chunk]
    assert b"".join(chunks) == b"one two three"
    assert len(chunks) >= 2


def test_only_handlers_whose_code_names_the_streaming_call_are_taken_for_streaming(store):
    for name, streams in (("stream", True), ("mlp", False), ("echo_v1", False), ("hidden_stream", False)):
        archive = TorchServeArchive(model_path=str(store[name]))
        archive.load()
        try:
            assert archive.may_stream is streams, name
        finally:
            archive.unload()


def test_a_handler_that_streams_unseen_still_sends_everything_it_sends(url):
    with requests.post(f"{url}/predictions/hidden_stream", data="one two three",
                       headers={"content-type": "text/plain"}, stream=True, timeout=10) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers.get("transfer-encoding") == "chunked"
        assert response.headers["x-request-id"]
        body = b"".join(response.iter_content(chunk_size=None))
    assert body == b"one two three"  # the intermediate answers ahead of the return value, none lost


def test_v2_infer_reaches_the_handler_with_each_bytes_element_a_request(url):
    body = {"inputs": [{"name": "body", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]}
    response = requests.post(f"{url}/v2/models/echo/versions/2.0/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"][0]["data"]
    assert [json.loads(output) for output in outputs] == [
        {"version": "2.0", "echo": "a"},
        {"version": "2.0", "echo": "b"},
    ]


def test_batch_size_from_model_config_batches_concurrent_requests(store: Store):
    model = TorchServeArchive(model_path=str(store["batching"]))
    with serve_in_thread(model) as base, concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda i: requests.post(f"{base}/predictions/batching", json=i, timeout=30).json(), range(8)
        ))  # fmt: skip
    assert sorted(answer["value"] for answer in answers) == list(range(8))
    assert max(answer["batch"] for answer in answers) > 1  # batchSize 4: concurrent requests share a call
    assert all(answer["batch"] <= 4 for answer in answers)
    assert len({answer["request_id"] for answer in answers}) == 8


def test_kserve_v1_reaches_an_archive_through_torchserves_kserve_envelope(url, tmp_path):
    rows = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]]
    body = {"instances": [{"data": row} for row in rows]}
    response = requests.post(f"{url}/v1/models/mlp:predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    expected = torch.jit.load(str(scripted_mlp(tmp_path / "same.pt")))(torch.tensor(rows)).tolist()
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    for got, want in zip(predictions, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-6)
    explained = requests.post(f"{url}/v1/models/raw:explain", json={"instances": [{"body": "x"}]}, timeout=30)
    assert explained.status_code == 200, explained.text
    assert set(explained.json()) == {"explanations"}


def test_bad_bodies_are_refused_in_torchserve_shape_and_the_handler_is_not_called(url):
    broken = requests.post(
        f"{url}/predictions/raw", data=b"--x\r\nno end", headers={"content-type": "multipart/form-data; boundary=x"},
        timeout=10,
    )  # fmt: skip
    assert broken.status_code == 400 and broken.json()["type"] == "BadRequestException"
    many = "&".join(f"f{i}=1" for i in range(5000))
    flooded = requests.post(
        f"{url}/predictions/raw", data=many, headers={"content-type": "application/x-www-form-urlencoded"}, timeout=10
    )
    assert flooded.status_code == 400 and "form" in flooded.json()["message"]
    assert requests.post(f"{url}/predictions/raw", data=b"teapot", timeout=10).status_code == 418
