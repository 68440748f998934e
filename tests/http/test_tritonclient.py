"""The examples served by the real CLI process, exercised with Triton's own HTTP client."""

from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.conftest import CLIServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def examples_url():
    server = CLIServer(str(ROOT / "examples"), cwd=str(ROOT))
    try:
        server.wait_started()
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture
def client(examples_url):
    with triton.InferenceServerClient(examples_url) as client:
        yield client


def add_sub_inputs(binary: bool):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    inputs = [triton.InferInput("INPUT0", [1, 16], "INT32"), triton.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a, binary_data=binary)
    inputs[1].set_data_from_numpy(b, binary_data=binary)
    return a, b, inputs


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("add_sub")
    assert client.is_model_ready("add_sub", "1")
    assert not client.is_model_ready("missing")
    server = client.get_server_metadata()
    assert server["name"] == "v2serve" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("add_sub")
    assert meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == ["INPUT0", "INPUT1"]
    assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_add_sub(client, binary):
    a, b, inputs = add_sub_inputs(binary)
    outputs = [
        triton.InferRequestedOutput("OUTPUT0", binary_data=binary),
        triton.InferRequestedOutput("OUTPUT1", binary_data=binary),
    ]
    result = client.infer("add_sub", inputs, outputs=outputs, request_id="rid-1", model_version="1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert response["id"] == "rid-1" and response["model_version"] == "1"


def test_add_sub_without_requested_outputs(client):
    a, b, inputs = add_sub_inputs(True)
    result = client.infer("add_sub", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_echo_bytes_round_trips_non_ascii(client, binary):
    values = np.array(["héllo wörld".encode(), "日本語".encode(), "emoji 🎉".encode(), b""], dtype=object)
    tensor = triton.InferInput("INPUT0", [4], "BYTES")
    tensor.set_data_from_numpy(values, binary_data=binary)
    result = client.infer("echo_bytes", [tensor], outputs=[triton.InferRequestedOutput("OUTPUT0", binary_data=binary)])
    returned = result.as_numpy("OUTPUT0")
    assert [v if isinstance(v, bytes) else v.encode() for v in returned.tolist()] == values.tolist()


def test_unknown_model_is_an_error_the_client_reports(client):
    _, _, inputs = add_sub_inputs(False)
    with pytest.raises(triton.InferenceServerException, match="does not exist"):
        client.infer("missing", inputs)


def test_iris_infer_dict_orders_features_by_schema(examples_url):
    rows = [
        {"petal_width": 0.2, "petal_length": 1.4, "sepal_width": 3.5, "sepal_length": 5.1},
        {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
    ]
    response = httpx.post(f"http://{examples_url}/v2/models/iris/infer_dict", json={"id": "t", "inputs": rows})
    body = response.json()
    assert response.status_code == 200 and body["id"] == "t"
    assert body["outputs"][0]["data"] == ["setosa", "virginica"]


def test_a_large_json_batch_is_decoded_like_a_small_one(client, examples_url):
    # 512 rows of JSON (about 60 KB) take the simdjson route; the answers and errors must not change.
    rng = np.random.default_rng(5)
    a = rng.integers(-(2**31), 2**31 - 1, size=(512, 16), dtype=np.int64).astype(np.int32) // 2
    b = rng.integers(-1000, 1000, size=(512, 16), dtype=np.int32)
    inputs = [triton.InferInput("INPUT0", [512, 16], "INT32"), triton.InferInput("INPUT1", [512, 16], "INT32")]
    inputs[0].set_data_from_numpy(a, binary_data=False)
    inputs[1].set_data_from_numpy(b, binary_data=False)
    outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in ("OUTPUT0", "OUTPUT1")]
    result = client.infer("add_sub", inputs, outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)

    too_big = a.astype(np.int64)
    too_big[300, 7] = 2**40
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [512, 16], "data": too_big.ravel().tolist()},
            {"name": "INPUT1", "datatype": "INT32", "shape": [512, 16], "data": b.ravel().tolist()},
        ]
    }
    response = httpx.post(f"http://{examples_url}/v2/models/add_sub/infer", json=body)
    assert response.status_code == 400
    assert "outside the range of INT32" in response.json()["error"]
