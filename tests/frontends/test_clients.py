"""Real clients of the other APIs, unmodified, against a real server: the kserve client (v1 and v2 REST)
and the Open Inference Protocol's generated client (which sends integer tensors as floats)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import run_kserve_check, serve_in_thread
from tests.fixtures import GatedLoadModel
from tests.frontends.models import RowSum
from v2serve.engine.loader import models_from_target


@pytest.fixture(scope="module")
def url():
    add_sub = models_from_target("examples/add_sub", [])
    model = GatedLoadModel(name="loading")
    with serve_in_thread(RowSum(name="rowsum"), *add_sub, model, load_in_background=True) as base:
        try:
            yield base
        finally:
            model.release.set()


def test_kserve_client_v1(url):
    run_kserve_check("rest_v1", url)


def test_kserve_client_v2(url):
    run_kserve_check("rest_v2", url)


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
