"""TorchServe's inference API, called as the TorchServe document calls it: with requests, raw bodies
(``curl -T`` sends PUT), forms of files, JSON; against a real uvicorn server."""

from __future__ import annotations

import concurrent.futures
import os
import time

import numpy as np
import pytest
import requests

from tests.conftest import serve_in_thread
from tests.fixtures import GatedLoadModel
from tests.frontends.models import ByteLength, Reverse, RowSum

JPEG = bytes([0xFF, 0xD8, 0xFF, 0xE0]) + os.urandom(4096) + b"\r\n--not-a-boundary\r\n" + bytes([0xFF, 0xD9])


@pytest.fixture(scope="module")
def url():
    with serve_in_thread(RowSum(name="rowsum"), ByteLength(name="bytelen"), Reverse(name="reverse")) as base:
        yield base


def test_ping_is_healthy(url):
    response = requests.get(f"{url}/ping", timeout=10)
    assert response.status_code == 200 and response.json() == {"status": "Healthy"}


def test_ping_is_500_unhealthy_while_a_model_is_not_ready():
    model = GatedLoadModel(name="loading")
    try:
        with serve_in_thread(model, load_in_background=True) as base:
            response = requests.get(f"{base}/ping", timeout=10)
            assert response.status_code == 500 and response.json() == {"status": "Unhealthy"}
            model.release.set()
    finally:
        model.release.set()


def test_curl_upload_file_is_a_put_of_the_raw_body(url):
    # curl http://localhost:8080/predictions/resnet-18 -T kitten_small.jpg
    response = requests.put(f"{url}/predictions/bytelen", data=JPEG, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"length": len(JPEG), "first": 0xFF}


def test_post_with_a_content_type_of_its_own(url):
    response = requests.post(
        f"{url}/predictions/bytelen", data=JPEG, headers={"content-type": "image/jpeg"}, timeout=10
    )
    assert response.json() == {"length": len(JPEG), "first": 0xFF}


def test_the_documents_form_upload(url):
    # requests.post(url, files={'data': open('kitten_small.jpg', 'rb')}), as in the document
    response = requests.post(f"{url}/predictions/bytelen", files={"data": JPEG}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"length": len(JPEG), "first": 0xFF}


def test_several_data_files_are_a_batch_answered_row_by_row(url):
    files = [("data", ("dogs.jpg", JPEG)), ("data", ("kitten.jpg", b"\x01kitten"))]
    response = requests.post(f"{url}/predictions/bytelen", files=files, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == [{"length": len(JPEG), "first": 0xFF}, {"length": 7, "first": 1}]


def test_json_data_points_fill_a_typed_input(url):
    one = requests.post(f"{url}/predictions/rowsum", json=[1, 2, 3.5], timeout=10)
    assert one.status_code == 200 and one.json() == 6.5
    batch = requests.post(f"{url}/predictions/rowsum", json=[[1, 2, 3], [4, 5, 6]], timeout=10)
    assert batch.json() == [6.0, 15.0]


def test_a_bytes_answer_is_sent_as_it_is_with_the_models_content_type(url):
    response = requests.post(f"{url}/predictions/reverse", data=b"\x89PNG-ish", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == b"\x89PNG-ish"[::-1]


def test_a_version_in_the_path(url):
    response = requests.post(f"{url}/predictions/rowsum/1", json=[1, 2, 3], timeout=10)
    assert response.status_code == 404
    assert response.json()["type"] == "ModelVersionNotFoundException"  # as TorchServe names it
    unknown = requests.post(f"{url}/predictions/nothing/1", json=[1, 2, 3], timeout=10)
    assert unknown.status_code == 404 and unknown.json()["type"] == "ModelNotFoundException"


def test_explanations(url):
    response = requests.post(f"{url}/explanations/rowsum", json=[[1, 1, 2]], timeout=10)
    assert response.status_code == 200
    assert np.allclose(response.json(), [[0.25, 0.25, 0.5]])
    # curl http://127.0.0.1:8080/explanations/mnist -T 0.png: curl -T sends PUT, as the document's example does
    uploaded = requests.put(
        f"{url}/explanations/rowsum", data=b"[[1, 1, 2]]", headers={"content-type": "application/json"}, timeout=10
    )
    assert uploaded.status_code == 200 and np.allclose(uploaded.json(), [[0.25, 0.25, 0.5]])


def test_errors_take_torchserves_shape(url):
    unknown = requests.post(f"{url}/predictions/nope", data=b"x", timeout=10)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == 404 and unknown.json()["type"] == "ModelNotFoundException"
    assert "nope" in unknown.json()["message"]
    binary_to_typed = requests.put(f"{url}/predictions/rowsum", data=JPEG, headers={"content-type": "image/jpeg"})
    assert binary_to_typed.status_code == 400
    assert binary_to_typed.json()["type"] == "BadRequestException"
    assert "FP32" in binary_to_typed.json()["message"]
    wrong_shape = requests.post(f"{url}/predictions/rowsum", json=[1, 2], timeout=10)
    assert wrong_shape.status_code == 400 and "shape" in wrong_shape.json()["message"]
    no_explainer = requests.post(f"{url}/explanations/bytelen", data=b"x", timeout=10)
    assert no_explainer.status_code == 501 and no_explainer.json()["code"] == 501


def test_a_broken_form_is_a_400(url):
    body = b"--b\r\ncontent-disposition: form-data; name=data\r\n\r\nabc"  # no closing boundary
    response = requests.post(
        f"{url}/predictions/bytelen", data=body, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 400 and response.json()["type"] == "BadRequestException"


def _nested_form(inner_parts: int) -> bytes:
    inner = b"".join(b'--in\r\ncontent-disposition: form-data; name="x"\r\n\r\nv\r\n' for _ in range(inner_parts))
    return (
        b'--out\r\ncontent-disposition: form-data; name="data"\r\ncontent-type: multipart/mixed; boundary=in\r\n\r\n'
        + inner
        + b"--in--\r\n\r\n--out--\r\n"
    )


def _flat_form(parts: int) -> bytes:
    one = b'--out\r\ncontent-disposition: form-data; name="data"\r\n\r\nv\r\n'
    return one * parts + b"--out--\r\n"


def _long_headers_form(headers: int) -> bytes:
    lines = b"".join(b"x-h: " + b"a" * 6000 + b"\r\n" for _ in range(headers))
    return b'--out\r\ncontent-disposition: form-data; name="data"\r\n' + lines + b"\r\nv\r\n--out--\r\n"


@pytest.mark.parametrize(
    ("form", "refusal"),
    [
        (_nested_form(150_000), "itself a multipart body"),  # 8 MB: the email parser walked every inner part
        (_flat_form(150_000), "at most 1024 parts"),
        (_long_headers_form(12), "headers exceed"),
    ],
    ids=["nested", "many-parts", "long-headers"],
)
def test_a_hostile_form_is_refused_while_health_probes_answer(url, form, refusal):
    """Health probes sent while the form is uploaded and refused all answer. The issue's figure is 100 ms
    (it was 13 to 30 s before); the bound here is looser so that a loaded CI machine does not flake, and the
    measured figure is in the issue's note."""
    headers = {"content-type": "multipart/form-data; boundary=out"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool, requests.Session() as probe:
        probe.get(f"{url}/v2/health/live", timeout=10)  # the probe's connection is open before the upload
        upload = pool.submit(requests.post, f"{url}/predictions/bytelen", data=form, headers=headers, timeout=60)
        slowest = 0.0
        while not upload.done():
            started = time.perf_counter()
            assert probe.get(f"{url}/v2/health/live", timeout=10).status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
        response = upload.result()
    assert response.status_code == 400 and refusal in response.json()["message"], response.text
    assert slowest < 0.5, f"a health probe took {slowest * 1000:.0f} ms while the form was parsed"


def test_options_lists_the_routes_of_every_front_end_that_is_on(url):
    paths = requests.options(f"{url}/", timeout=10).json()["paths"]
    assert {"/ping", "/v1/models/{model}:predict", "/v2/models/{model}/infer", "/v2/models/{model}/generate"} <= set(
        paths
    )


def test_the_front_end_can_be_turned_off():
    with serve_in_thread(RowSum(name="rowsum"), frontends={"torchserve": False, "kserve_v1": False}) as base:
        assert requests.get(f"{base}/ping", timeout=10).status_code == 404
        assert requests.post(f"{base}/predictions/rowsum", json=[1, 2, 3], timeout=10).status_code == 404
        assert requests.get(f"{base}/v1/models", timeout=10).status_code == 404
        assert "/ping" not in requests.options(f"{base}/", timeout=10).json()["paths"]
        assert "status" not in requests.get(f"{base}/", timeout=10).json()


def test_kserve_v1_instances_in_the_row_format_and_binary_values(url):
    """KServe v1 as TorchServe's kserve envelope and TF Serving write it: instances as objects of inputs by
    name, binary values as {"b64": ...}, and TorchServe's {"data": ...} (its mnist.json) for a single input."""
    import base64

    rows = requests.post(f"{url}/v1/models/rowsum:predict", json={"instances": [{"x": [1, 2, 3]}, {"x": [4, 5, 6]}]})
    assert rows.status_code == 200 and rows.json() == {"predictions": [6.0, 15.0]}
    encoded = base64.b64encode(JPEG).decode()
    for instances in ([{"b64": encoded}], [{"data": {"b64": encoded}}]):
        binary = requests.post(f"{url}/v1/models/bytelen:predict", json={"instances": instances}, timeout=10)
        assert binary.status_code == 200 and binary.json() == {"predictions": [{"length": len(JPEG), "first": 0xFF}]}
    # TorchServe's kserve example sends the base64 text under "data"; its handler decodes it, as a model would.
    text = requests.post(f"{url}/v1/models/bytelen:predict", json={"instances": [{"data": encoded}]}, timeout=10)
    assert text.status_code == 200 and text.json()["predictions"][0]["length"] == len(encoded)
    bad = requests.post(f"{url}/v1/models/bytelen:predict", json={"instances": [{"b64": "not base64!"}]}, timeout=10)
    assert bad.status_code == 400 and "base64" in bad.json()["error"]
    ragged = requests.post(f"{url}/v1/models/rowsum:predict", json={"instances": [{"x": [1, 2, 3]}, {"y": [1]}]})
    assert ragged.status_code == 400 and "instance 1" in ragged.json()["error"]
