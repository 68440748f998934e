"""Real clients of the other APIs, unmodified, against a real server: the kserve client (v1 and v2 REST)
and the Open Inference Protocol's generated client (which sends integer tensors as floats)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.conftest import serve_in_thread
from tests.fixtures import GatedLoadModel
from tests.frontends.models import RowSum
from v2serve.models.loader import models_from_target

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def url():
    add_sub = models_from_target("examples/add_sub", [])
    model = GatedLoadModel(name="loading")
    with serve_in_thread(RowSum(name="rowsum"), *add_sub, model, load_in_background=True) as base:
        try:
            yield base
        finally:
            model.release.set()


async def test_kserve_client_v1(url):
    from kserve import InferenceRESTClient, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v1"))
    try:
        assert await client.is_server_live(url) is True
        assert await client.is_model_ready(url, "rowsum") is True
        assert await client.is_model_ready(url, "loading") is False
        result = await client.infer(url, {"instances": [[1, 2, 3], [4, 5, 6.5]]}, model_name="rowsum")
        assert result == {"predictions": [6.0, 15.5]}
        explained = await client.explain(url, "rowsum", {"instances": [[1, 1, 2]]})
        assert np.allclose(explained["explanations"], [[0.25, 0.25, 0.5]])
    finally:
        await client.close()


async def test_kserve_client_v1_errors_are_http_errors(url):
    from kserve import InferenceRESTClient, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v1"))
    try:
        with pytest.raises(httpx.HTTPStatusError, match="400"):
            await client.infer(url, {"instances": [[1, 2]]}, model_name="rowsum")
        with pytest.raises(httpx.HTTPStatusError, match="404"):
            await client.infer(url, {"instances": [[1, 2, 3]]}, model_name="nope")
    finally:
        await client.close()


async def test_kserve_client_v2(url):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v2"))
    try:
        assert await client.is_server_live(url) is True
        assert await client.is_model_ready(url, "add_sub") is True
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor = InferInput(name, list(a.shape), "INT32")
            tensor.set_data_from_numpy(a, binary_data=name == "INPUT1")
            inputs.append(tensor)
        response = await client.infer(url, InferRequest("add_sub", inputs, request_id="kserve"), model_name="add_sub")
        outputs = {output.name: output.as_numpy() for output in response.outputs}
        assert outputs["OUTPUT0"].tolist() == (a + a).tolist()
        assert outputs["OUTPUT1"].tolist() == (a - a).tolist()
    finally:
        await client.close()


def test_open_inference_client_sends_integers_as_floats(url):
    from open_inference.openapi.client import InferenceRequest as Request
    from open_inference.openapi.client import OpenInferenceClient

    data = list(range(16))
    request = Request(
        inputs=[
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": data},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16},
        ]
    )
    assert request.inputs[0].data.__root__[1] == 1.0  # what travels: floats
    with httpx.Client(timeout=10) as http:
        client = OpenInferenceClient(base_url=url, httpx_client=http)
        client.check_server_liveness()
        response = client.model_infer("add_sub", request=request)
        outputs = {output.name: output.data for output in response.outputs}
        assert [float(v) for v in outputs["OUTPUT0"].__root__] == [float(v + 1) for v in data]
        assert client.read_model_metadata("add_sub").name == "add_sub"
