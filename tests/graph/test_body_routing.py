"""Requests with no URL (streams, serverless triggers, POST /) are routed by their body's fields."""

import numpy as np
import orjson
import pytest

from tests.fixtures import CountingDouble
from v2serve import Model
from v2serve.mock import MockServer
from v2serve.protocol import request_json
from v2serve.server import ModelServer
from v2serve.settings import Settings


class DataTypes(Model):
    """A custom operation that says what Python types its body's tensor data arrived as."""

    def predict(self, inputs):
        return inputs

    def op_types(self, body):
        return {"data": [type(tensor["data"]).__name__ for tensor in body["inputs"]]}


@pytest.fixture
def server():
    models = [CountingDouble(name="double"), DataTypes(name="types")]
    with MockServer(ModelServer(models, Settings(models=[]))) as mock:
        yield mock


def _large_tensor_document(model: str, operation: str) -> tuple[dict, np.ndarray]:
    x = np.random.default_rng(3).random((2, 1024), dtype=np.float32)
    document = {
        "model": model,
        "operation": operation,
        "id": "r7",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1024], "data": x.ravel().tolist()}],
    }
    return document, x


def test_a_large_body_routed_request_is_answered_from_its_tensor(server):
    document, x = _large_tensor_document("double", "infer")
    reply = server.test("/", body=document)
    assert reply["model_name"] == "double" and reply["id"] == "r7"
    output = reply["outputs"][0]
    np.testing.assert_allclose(np.asarray(output["data"]).reshape(output["shape"]), x * 2, rtol=1e-6)


def test_a_custom_operation_gets_the_large_body_as_plain_json_lists(server):
    document, _ = _large_tensor_document("types", "types")
    assert len(orjson.dumps(document)) >= request_json._MIN_BYTES  # large enough for the array route
    assert server.test("/", body=document) == {"data": ["list"]}
