import gzip

import anyio
import httpx
import numpy as np
import orjson
import pytest
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request

from tests.conftest import make_settings, serve_in_process
from tests.fixtures import (
    AsyncDouble,
    ContextModel,
    EchoModel,
    ExplainingModel,
    FailingLoadModel,
    GatedLoadModel,
    SumModel,
)
from v2serve.http.app import create_app
from v2serve.protocol.binary import HEADER_LENGTH
from v2serve.server import ModelServer

pytestmark = pytest.mark.anyio

ROW = {"name": "INPUT0", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}


async def test_server_metadata_and_health():
    async with serve_in_process(SumModel(name="sum")) as client:
        for path in ("/", "/v2"):
            meta = (await client.get(path)).json()
            assert meta["name"] == "v2serve" and "binary_tensor_data" in meta["extensions"]
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        ready = await client.get("/v2/health/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        assert (await client.get("/v2/models")).json() == {"models": ["sum"]}
        model_ready = await client.get("/v2/models/sum/ready")
        assert model_ready.status_code == 200 and model_ready.json() == {"name": "sum", "ready": True}


async def test_model_metadata_omits_what_it_does_not_know():
    async with serve_in_process(SumModel(name="sum"), EchoModel(name="echo")) as client:
        meta = (await client.get("/v2/models/sum")).json()
        assert meta == {
            "name": "sum",
            "platform": "python",
            "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, -1]}],
            "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}],
        }
        response = await client.post("/v2/models/sum/infer", json={"inputs": [ROW]})
        assert "model_version" not in response.json() and "parameters" not in response.json()


async def test_versions_default_to_the_highest_and_are_addressable():
    models = [SumModel(name="m", version=v) for v in ("2", "10", "9")]
    async with serve_in_process(*models) as client:
        assert (await client.get("/v2/models/m")).json()["versions"] == ["2", "9", "10"]
        default = await client.post("/v2/models/m/infer", json={"inputs": [ROW]})
        assert default.json()["model_version"] == "10"
        pinned = await client.post("/v2/models/m/versions/9/infer", json={"inputs": [ROW]})
        assert pinned.json()["model_version"] == "9"
        keyed = await client.post("/v2/models/m:2/infer", json={"inputs": [ROW]})
        assert keyed.json()["model_version"] == "2"
        assert (await client.get("/v2/models/m/versions/2/ready")).json()["ready"] is True


async def test_id_is_echoed_or_generated_and_x_request_id_is_echoed():
    async with serve_in_process(SumModel(name="sum")) as client:
        given = await client.post(
            "/v2/models/sum/infer", json={"id": "abc", "inputs": [ROW]}, headers={"x-request-id": "trace-1"}
        )
        assert given.json()["id"] == "abc"
        assert given.headers["x-request-id"] == "trace-1"
        generated = [(await client.post("/v2/models/sum/infer", json={"inputs": [ROW]})).json()["id"] for _ in range(2)]
        assert all(isinstance(i, str) and i for i in generated) and generated[0] != generated[1]


async def test_json_body_without_content_type_is_accepted():
    async with serve_in_process(SumModel(name="sum")) as client:
        response = await client.post(
            "/v2/models/sum/infer", content=orjson.dumps({"inputs": [ROW]}), headers={"content-type": ""}
        )
        assert response.status_code == 200
        assert response.json()["outputs"][0]["data"] == [3.0, 7.0]


async def test_gzip_request_body():
    async with serve_in_process(SumModel(name="sum")) as client:
        response = await client.post(
            "/v2/models/sum/infer",
            content=gzip.compress(orjson.dumps({"inputs": [ROW]})),
            headers={"content-encoding": "gzip"},
        )
        assert response.json()["outputs"][0]["data"] == [3.0, 7.0]


async def test_outputs_filter_and_parameters_reach_the_model():
    context_model = ContextModel(name="ctx")
    async with serve_in_process(EchoModel(name="echo"), context_model) as client:
        two = {"inputs": [ROW, ROW | {"name": "B", "datatype": "INT64"}], "outputs": [{"name": "B"}]}
        echoed = (await client.post("/v2/models/echo/infer", json=two)).json()
        assert [o["name"] for o in echoed["outputs"]] == ["B"]
        assert echoed["outputs"][0] == {"name": "B", "datatype": "INT64", "shape": [2, 2], "data": [1, 2, 3, 4]}

        request = {
            "id": "r1",
            "parameters": {"threshold": 0.5, "mode": "fast"},
            "inputs": [ROW | {"parameters": {"content_type": "np"}}],
            "outputs": [{"name": "n"}],
        }
        await client.post("/v2/models/ctx/infer", json=request, headers={"x-custom": "yes"})
        seen = context_model.seen[-1]
        assert seen.id == "r1"
        assert seen.parameters == {"threshold": 0.5, "mode": "fast"}
        assert seen.input_parameters == {"INPUT0": {"content_type": "np"}}
        assert seen.requested_outputs == ["n"]
        assert seen.headers["x-custom"] == "yes"


async def test_async_predict_and_single_array_result():
    async with serve_in_process(AsyncDouble(name="double")) as client:
        response = await client.post(
            "/v2/models/double/infer",
            json={"inputs": [{"name": "x", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]}]},
        )
        assert response.json()["outputs"] == [{"name": "y", "datatype": "INT64", "shape": [3], "data": [2, 4, 6]}]


async def test_binary_request_and_response():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "INPUT0", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": a.nbytes}}
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        }
    )
    async with serve_in_process(SumModel(name="sum")) as client:
        response = await client.post(
            "/v2/models/sum/infer",
            content=header + a.tobytes(),
            headers={HEADER_LENGTH: str(len(header)), "content-type": "application/octet-stream"},
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        json_length = int(response.headers[HEADER_LENGTH])
        meta = orjson.loads(response.content[:json_length])
        assert meta["outputs"][0]["parameters"] == {"binary_data_size": 8}
        np.testing.assert_array_equal(np.frombuffer(response.content[json_length:], "<f4"), a.sum(axis=1))


async def test_request_level_binary_output_applies_when_outputs_are_listed():
    """kserve#5907: the request-level flag was lost once outputs were listed; here per-output values win."""
    async with serve_in_process(EchoModel(name="echo")) as client:
        request = {
            "parameters": {"binary_data_output": True},
            "inputs": [ROW, ROW | {"name": "B"}],
            "outputs": [{"name": "INPUT0"}, {"name": "B", "parameters": {"binary_data": False}}],
        }
        response = await client.post("/v2/models/echo/infer", json=request)
        meta = orjson.loads(response.content[: int(response.headers[HEADER_LENGTH])])
        assert meta["outputs"][0]["parameters"]["binary_data_size"] == 16
        assert meta["outputs"][1]["data"] == [1.0, 2.0, 3.0, 4.0]


async def test_raw_binary_request_fills_the_single_input():
    values = np.arange(8, dtype=np.int64)
    async with serve_in_process(AsyncDouble(name="double")) as client:
        response = await client.post("/v2/models/double/infer", content=values.tobytes(), headers={HEADER_LENGTH: "0"})
        assert response.status_code == 200
        json_length = int(response.headers[HEADER_LENGTH])
        assert orjson.loads(response.content[:json_length])["outputs"][0]["shape"] == [8]
        np.testing.assert_array_equal(np.frombuffer(response.content[json_length:], "<i8"), values * 2)
        uneven = await client.post("/v2/models/double/infer", content=b"\0" * 7, headers={HEADER_LENGTH: "0"})
        assert uneven.status_code == 400


async def test_explain_and_custom_operation():
    async with serve_in_process(ExplainingModel(name="exp")) as client:
        explained = (await client.post("/v2/models/exp/explain", json={"inputs": [ROW]})).json()
        assert [o["name"] for o in explained["outputs"]] == ["OUTPUT0", "attributions"]
        custom = await client.post("/v2/models/exp/describe", json={"q": 1})
        assert custom.status_code == 200
        assert custom.json()["model"] == "exp" and custom.json()["got"] == {"q": 1}


async def test_failed_load_is_reported_honestly():
    async with serve_in_process(SumModel(name="sum"), FailingLoadModel(name="bad")) as client:
        ready = await client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert ready.json()["models"] == [
            {"name": "bad", "state": "FAILED", "reason": "RuntimeError: weights file is corrupt"}
        ]
        model_ready = await client.get("/v2/models/bad/ready")
        assert model_ready.status_code == 503 and model_ready.json()["state"] == "FAILED"
        assert (await client.get("/v2/models/sum/ready")).status_code == 200


async def test_background_loading_answers_503_until_ready():
    slow = GatedLoadModel(name="slow_loader")
    async with serve_in_process(slow, load_in_background=True) as client:
        assert (await client.get("/v2/health/live")).status_code == 200
        not_yet = await client.post("/v2/models/slow_loader/infer", json={"inputs": [ROW]})
        assert not_yet.status_code == 503 and not_yet.headers["retry-after"] == "1"
        assert "is loading" in not_yet.json()["error"]
        assert (await client.get("/v2/health/ready")).json()["models"][0]["state"] == "LOADING"
        slow.release.set()
        for _ in range(500):
            if (await client.get("/v2/health/ready")).status_code == 200:
                break
            await anyio.sleep(0.01)
        assert (await client.post("/v2/models/slow_loader/infer", json={"inputs": [ROW]})).status_code == 200


async def test_server_with_no_models_is_not_ready():
    async with serve_in_process() as client:
        assert (await client.get("/v2/health/ready")).status_code == 503


class Pipeline(SumModel):
    """preprocess scales by the request's parameter, postprocess adds one."""

    def preprocess(self, inputs, context):
        return {"INPUT0": inputs["INPUT0"] * context.parameters.get("scale", 1)}

    def postprocess(self, outputs, context):
        return {"OUTPUT0": outputs["OUTPUT0"] + 1}


class AsyncPreprocess(Pipeline):
    async def preprocess(self, inputs, context):
        return {"INPUT0": inputs["INPUT0"] * 10}


@pytest.mark.parametrize("model", [Pipeline(name="p"), AsyncPreprocess(name="p")], ids=["sync", "mixed"])
async def test_preprocess_predict_postprocess_run_in_order(model):
    async with serve_in_process(model) as client:
        response = await client.post("/v2/models/p/infer", json={"inputs": [ROW], "parameters": {"scale": 10}})
    # [[1, 2], [3, 4]] scaled by 10 -> row sums 30, 70 -> plus one
    assert response.json()["outputs"][0]["data"] == [31.0, 71.0]


async def test_middleware_an_operator_adds_wraps_every_request():
    server = ModelServer([SumModel(name="sum")], make_settings())
    app = create_app(server)
    seen: list[str] = []

    async def stamp(request: Request, call_next):
        seen.append(request.url.path)
        response = await call_next(request)
        response.headers["x-stamped"] = "yes"
        return response

    app.add_middleware(BaseHTTPMiddleware, dispatch=stamp)
    await server.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://v2serve.test") as client:
            inferred = await client.post("/v2/models/sum/infer", json={"inputs": [ROW]})
            missing = await client.get("/v2/models/nope")
    finally:
        await server.stop()
    assert inferred.status_code == 200 and inferred.headers["x-stamped"] == "yes"
    assert missing.status_code == 404 and missing.headers["x-stamped"] == "yes"
    assert seen == ["/v2/models/sum/infer", "/v2/models/nope"]


@pytest.mark.parametrize("count", [3, 3000], ids=["orjson-route", "simdjson-route"])
async def test_integer_inputs_sent_as_integral_floats_are_served(count):
    # The Open Inference Protocol's own client sends INT32 data as [1.0, 2.0, ...]; every peer accepts it.
    data = [float(i % 7) for i in range(count)]
    tensor = {"name": "x", "shape": [count], "datatype": "INT32", "data": data}
    async with serve_in_process(EchoModel(name="echo")) as client:
        response = await client.post("/v2/models/echo/infer", json={"inputs": [tensor]})
        assert response.status_code == 200, response.text
        [output] = response.json()["outputs"]
        assert output["datatype"] == "INT32" and output["data"] == [int(v) for v in data]
        fractional = await client.post("/v2/models/echo/infer", json={"inputs": [tensor | {"data": [1.5] * count}]})
        assert fractional.status_code == 400 and "non-integer" in fractional.json()["error"]
