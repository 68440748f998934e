"""The v2 gRPC service against real clients: tritonclient.grpc (sync and aio) and kserve's
InferenceGRPCClient, raw and typed contents, every datatype, errors as status codes, Triton's extensions,
health and reflection; a real server with HTTP beside it on the same loop."""

from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import free_port, run_kserve_check, serve_in_thread
from tests.fixtures import ErrorModel, GatedLoadModel, SlowModel
from tests.frontends.models import AsyncCountdown, RowSum
from v2serve.engine.loader import models_from_target
from v2serve.grpc.generated import inference_pb2 as pb
from v2serve.grpc.server import GrpcServer
from v2serve.grpc.service import SERVICE
from v2serve.models.base import Model
from v2serve.protocol.types import TensorSpec

pytestmark = pytest.mark.anyio

DATATYPES = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


class Identity(Model):
    """Gives back whatever it is sent, under the same names."""

    def predict(self, inputs):
        return dict(inputs)


class Scaled(Model):
    """x times the optional scale, or x alone when the request leaves the scale out."""

    inputs = [TensorSpec("x", "FP32", [-1, 2]), TensorSpec("scale", "FP32", [1], optional=True)]

    def predict(self, inputs):
        return {"y": inputs["x"] * inputs["scale"] if "scale" in inputs else inputs["x"]}


def sample(datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([[b"a", b"\x00\xff"], [b"", "é".encode()]], dtype=object)
    if datatype == "BOOL":
        return np.array([[True, False], [False, True]])
    dtype = np.dtype(DATATYPES[datatype])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([[info.min, info.max], [0, 1]], dtype=dtype)
    return np.array([[1.5, -2.25], [np.finfo(dtype).max, 0]], dtype=dtype)


@pytest.fixture(scope="module")
def servers():
    port = free_port()
    add_sub = models_from_target("examples/add_sub", [])
    models = [
        *add_sub,
        RowSum(name="rowsum"),
        Identity(name="identity"),
        Scaled(name="scaled"),
        ErrorModel(name="broken"),
        SlowModel(name="slow", seconds=2.0),
        AsyncCountdown(name="countdown"),
    ]
    grpc_settings = {"port": port, "max_message_bytes": 1024 * 1024}
    with serve_in_thread(*models, services=[GrpcServer], grpc=grpc_settings) as http_url:
        yield http_url, f"127.0.0.1:{port}"


@pytest.fixture
def address(servers):
    return servers[1]


def call(channel: grpc.Channel, method: str, request):
    """A unary RPC of the service, as a generated stub would make it."""
    response = getattr(pb, SERVICE.methods_by_name[method].output_type.name)
    path = f"/{SERVICE.full_name}/{method}"
    return channel.unary_unary(path, type(request).SerializeToString, response.FromString)(request)


def add_sub_inputs(binary: bool = True):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    inputs = [triton.InferInput("INPUT0", [1, 16], "INT32"), triton.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return a, b, inputs


def test_tritonclient_sync(address):
    with triton.InferenceServerClient(address) as client:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("add_sub") and client.is_model_ready("add_sub", "1")
        with pytest.raises(InferenceServerException, match="NOT_FOUND"):
            client.is_model_ready("add_sub", "7")
        metadata = client.get_model_metadata("add_sub")
        assert metadata.name == "add_sub" and [t.name for t in metadata.inputs] == ["INPUT0", "INPUT1"]
        assert client.get_server_metadata().name == "v2serve"
        a, b, inputs = add_sub_inputs()
        result = client.infer("add_sub", inputs, request_id="sync", outputs=[triton.InferRequestedOutput("OUTPUT1")])
        assert result.get_response().id == "sync"
        assert result.as_numpy("OUTPUT1").tolist() == (a - b).tolist() and result.as_numpy("OUTPUT0") is None


async def test_tritonclient_aio(address):
    async with triton_aio.InferenceServerClient(address) as client:
        assert await client.is_server_live()
        a, b, inputs = add_sub_inputs()
        result = await client.infer("add_sub", inputs)
        assert result.as_numpy("OUTPUT0").tolist() == (a + b).tolist()


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_round_trips_raw(address, datatype):
    value = sample(datatype)
    tensor = triton.InferInput("x", list(value.shape), datatype)
    tensor.set_data_from_numpy(value)
    with triton.InferenceServerClient(address) as client:
        result = client.infer("identity", [tensor])
    back = result.as_numpy("x")
    assert back.dtype == value.dtype or datatype == "BYTES"
    assert back.tolist() == value.tolist()


def test_a_large_raw_tensor_is_read_from_the_wire_and_answered_whole(address):
    # Over wire.SPLIT_FROM_BYTES: its contents are views into the message grpcio received, not upb's copies.
    value = np.random.default_rng(3).random((2, 40_000), dtype=np.float32)
    small = np.array([[1, -2]], dtype=np.int64)
    tensors = [triton.InferInput("x", list(value.shape), "FP32"), triton.InferInput("n", [1, 2], "INT64")]
    tensors[0].set_data_from_numpy(value)
    tensors[1].set_data_from_numpy(small)
    with triton.InferenceServerClient(address) as client:
        result = client.infer("identity", tensors, request_id="large")
    assert result.get_response().id == "large"
    assert np.array_equal(result.as_numpy("x"), value) and result.as_numpy("n").tolist() == [[1, -2]]


def test_a_large_request_with_raw_and_typed_contents_is_invalid(address):
    request = pb.ModelInferRequest(model_name="identity")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(1.0)
    request.raw_input_contents.append(b"\x00" * 100_000)
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
        call(channel, "ModelInfer", request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "has contents, but the request uses raw_input_contents" in refused.value.details()


def test_kserve_client_typed_and_raw_contents(address):
    run_kserve_check("grpc", address)


def test_typed_contents_are_answered_with_typed_contents(address):
    request = pb.ModelInferRequest(model_name="rowsum", id="typed")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    tensor.contents.fp32_contents.extend([1, 2, 3])
    with grpc.insecure_channel(address) as channel:
        response = call(channel, "ModelInfer", request)
    assert not response.raw_output_contents
    assert list(response.outputs[0].contents.fp32_contents) == [6.0]


def test_errors_are_status_codes(address):
    with triton.InferenceServerClient(address) as client:
        with pytest.raises(InferenceServerException) as unknown:
            client.get_model_metadata("nope")
        assert unknown.value.status() == "StatusCode.NOT_FOUND"
        bad = triton.InferInput("INPUT0", [1, 16], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 16), dtype=np.float32))
        with pytest.raises(InferenceServerException) as invalid:
            client.infer("add_sub", [bad])
        assert invalid.value.status() == "StatusCode.INVALID_ARGUMENT" and "INT32" in invalid.value.message()
        one = triton.InferInput("a", [1], "INT8")
        one.set_data_from_numpy(np.array([1], dtype=np.int8))
        with pytest.raises(InferenceServerException) as failed:
            client.infer("broken", [one])
        assert failed.value.status() == "StatusCode.INTERNAL"


def test_an_optional_input_may_be_left_out_and_a_required_one_may_not(address):
    x = triton.InferInput("x", [1, 2], "FP32")
    x.set_data_from_numpy(np.array([[1.5, -2.0]], dtype=np.float32))
    scale = triton.InferInput("scale", [1], "FP32")
    scale.set_data_from_numpy(np.array([4.0], dtype=np.float32))
    with triton.InferenceServerClient(address) as client:
        assert client.infer("scaled", [x]).as_numpy("y").tolist() == [[1.5, -2.0]]
        assert client.infer("scaled", [x, scale]).as_numpy("y").tolist() == [[6.0, -8.0]]
        with pytest.raises(InferenceServerException) as missing:
            client.infer("scaled", [scale])
    assert missing.value.status() == "StatusCode.INVALID_ARGUMENT" and "['x']" in missing.value.message()


@pytest.mark.parametrize("method", ["ModelInfer", "ModelStreamInfer"])
def test_bytes_that_are_not_a_request_are_invalid_argument_and_the_server_goes_on(address, method):
    path = f"/{SERVICE.full_name}/{method}"
    with grpc.insecure_channel(address) as channel:
        if method == "ModelInfer":
            send = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            calling = lambda: send(b"\xff\xff\xff")  # noqa: E731
        else:
            stream = channel.stream_stream(path, request_serializer=None, response_deserializer=None)
            calling = lambda: list(stream(iter([b"\xff\xff\xff"])))  # noqa: E731
        with pytest.raises(grpc.RpcError) as refused:
            calling()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid ModelInferRequest" in refused.value.details()
    a, b, inputs = add_sub_inputs()
    with triton.InferenceServerClient(address) as client:
        assert client.infer("add_sub", inputs).as_numpy("OUTPUT0").tolist() == (a + b).tolist()


def test_a_typed_value_out_of_its_datatypes_range_is_invalid(address):
    request = pb.ModelInferRequest(model_name="identity")
    request.inputs.add(name="x", datatype="INT8", shape=[1]).contents.int_contents.append(300)
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
        call(channel, "ModelInfer", request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_clients_deadline_is_deadline_exceeded(address):
    tensor = triton.InferInput("INPUT0", [1], "FP32")
    tensor.set_data_from_numpy(np.zeros(1, dtype=np.float32))
    with triton.InferenceServerClient(address) as client, pytest.raises(InferenceServerException) as late:
        client.infer("slow", [tensor], client_timeout=0.2)
    assert late.value.status() == "StatusCode.DEADLINE_EXCEEDED"


def test_an_oversize_message_is_resource_exhausted(address):
    big = np.zeros((1, 2 * 1024 * 1024 // 4), dtype=np.float32)
    tensor = triton.InferInput("x", list(big.shape), "FP32")
    tensor.set_data_from_numpy(big)
    with triton.InferenceServerClient(address) as client, pytest.raises(InferenceServerException) as refused:
        client.infer("identity", [tensor])
    assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_a_request_still_queued_at_its_timeout_is_deadline_exceeded(address):
    request = pb.ModelInferRequest(model_name="slow", parameters={"timeout": pb.InferParameter(int64_param=1)})
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1]).contents.fp32_contents.append(0)
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as late:
        call(channel, "ModelInfer", request)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "deadline" in late.value.details()


def test_a_model_not_ready_is_unavailable_with_retry_info():
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    model = GatedLoadModel(name="loading")
    port = free_port()
    with serve_in_thread(model, services=[GrpcServer], grpc={"port": port}, load_in_background=True):
        try:
            request = pb.ModelInferRequest(model_name="loading")
            request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(0)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as refused:
                call(channel, "ModelInfer", request)
        finally:
            model.release.set()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    [detail] = rpc_status.from_call(refused.value).details
    retry = error_details_pb2.RetryInfo()
    assert detail.Unpack(retry) and retry.retry_delay.seconds == 1


def test_repository_calls_answer_as_http_does(servers):
    http_url, address = servers
    over_http = httpx.post(f"{http_url}/v2/repository/models/add_sub/load", timeout=10)
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
        call(channel, "RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="add_sub"))
    assert over_http.status_code == 404 and refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert refused.value.details() == over_http.json()["error"]


def test_stream_infer_carries_streaming_models_and_errors(address):
    responses = []
    with triton.InferenceServerClient(address) as client:
        client.start_stream(callback=lambda result, error: responses.append((result, error)))
        start = triton.InferInput("start", [1], "INT64")
        start.set_data_from_numpy(np.array([3], dtype=np.int64))
        client.async_stream_infer("countdown", [start], request_id="c")
        client.async_stream_infer("nope", [start], request_id="n")
        _, _, inputs = add_sub_inputs()
        client.async_stream_infer("add_sub", inputs, request_id="a")
        client.stop_stream()
    counts = [r.as_numpy("count").tolist() for r, e in responses if e is None and r.get_response().id == "c"]
    assert counts == [[3], [2], [1]]
    errors = [e for _, e in responses if e is not None]
    assert len(errors) == 1 and "nope" in errors[0].message()
    assert any(e is None and r.get_response().id == "a" for r, e in responses)


def test_statistics_and_the_repository_index(address):
    with triton.InferenceServerClient(address) as client:
        _, _, inputs = add_sub_inputs()
        client.infer("add_sub", inputs)
        stats = client.get_inference_statistics("add_sub")
        assert stats.model_stats[0].name == "add_sub" and stats.model_stats[0].inference_count >= 1
        assert stats.model_stats[0].inference_stats.success.count >= 1
        assert len(client.get_inference_statistics().model_stats) >= 5
        index = client.get_model_repository_index()
        assert {m.name for m in index.models} >= {"add_sub", "rowsum"}


def test_a_model_answers_the_same_over_grpc_and_http(servers):
    http_url, address = servers
    x = np.array([[1, 2, 3.5]], dtype=np.float32)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": x.ravel().tolist()}]}
    over_http = httpx.post(f"{http_url}/v2/models/rowsum/infer", json=body, timeout=10).json()["outputs"][0]
    tensor = triton.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(x)
    with triton.InferenceServerClient(address) as client:
        over_grpc = client.infer("rowsum", [tensor]).get_output("total")
        answer = client.infer("rowsum", [tensor]).as_numpy("total")
    assert (over_grpc.name, over_grpc.datatype, list(over_grpc.shape)) == ("total", "FP32", over_http["shape"])
    assert answer.tolist() == over_http["data"]


def test_health_and_reflection(address):
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [answer] = list(reflection.ServerReflectionInfo(iter([request])))
        names = {service.name for service in answer.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names


def test_the_command_line_serves_grpc_beside_http_from_one_process():
    from pathlib import Path

    from tests.conftest import CLIServer

    root = Path(__file__).resolve().parents[2]
    grpc_port = free_port()
    server = CLIServer(str(root / "examples" / "add_sub"), "--grpc-port", str(grpc_port), cwd=str(root))
    try:
        server.wait_started()
        assert server.wait_for_line("gRPC listening on", 10), server.output
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200
        a, b, inputs = add_sub_inputs()
        with triton.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            assert client.infer("add_sub", inputs).as_numpy("OUTPUT0").tolist() == (a + b).tolist()
        assert server.stop() == 0
    finally:
        server.kill()
