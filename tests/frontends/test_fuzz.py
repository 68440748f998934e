"""Fuzzing the doors beside v2 as ``tests/protocol/test_fuzz.py`` fuzzes v2's: TorchServe bodies and forms,
KServe v1 instances, Ingrain's request bodies and images, MLRun document bodies (through the mock server,
which answers as HTTP does), and gRPC ``ModelInferRequest`` messages (through a real gRPC server).

Whatever a request holds, the answer is a 2xx or a 4xx in the front-end's own error shape: never a 5xx (the
models here never fail on their own), never an allocation of more than a small multiple of the body, and
the server is ready after. Examples are fixed when ``CI=true``, as there.
"""

from __future__ import annotations

import base64
import collections
import io
import tracemalloc
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import free_port, serve_in_thread
from tests.frontends.models import ByteLength, RowSum
from tests.protocol.test_fuzz import (
    ALLOWED_BASE,
    ALLOWED_GROWTH,
    DATATYPES,
    FUZZ_SETTINGS,
    any_json,
    data,
    dumps,
    scalars,
)
from v2serve.mock import MockServer
from v2serve.models.embeddings import EmbeddingModel
from v2serve.models.images import ImageEmbeddingModel
from v2serve.models.mlrun import V2ModelServer
from v2serve.server import ModelServer
from v2serve.settings import Settings


class QuietRowSum(RowSum):
    """RowSum, quiet about infinities: the fuzzed data holds every float bit pattern, and the suite turns
    numpy's overflow warnings into errors, which would be the model's own failure, not the server's."""

    def predict(self, inputs):
        with np.errstate(all="ignore"):
            return super().predict(inputs)

    def explain(self, inputs):
        with np.errstate(all="ignore"):
            return super().explain(inputs)


class MeanColours(ImageEmbeddingModel):
    """Every step of image preparation (decode, bounds, crop, resize), then a vector that needs no weights."""

    image_size = 16
    labels = ["dark", "light"]

    def load(self) -> None:
        self.set_dimensions(3)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return pixels.mean(axis=(2, 3))

    def classify_pixels(self, pixels: np.ndarray) -> np.ndarray:
        light = 1 / (1 + np.exp(-pixels.mean(axis=(1, 2, 3))))
        return np.stack([1 - light, light], axis=1)


class CharacterCounts(EmbeddingModel):
    """A text embedding from character counts."""

    def load(self) -> None:
        self.set_dimensions(2)

    def embed(self, items: list[Any]) -> np.ndarray:
        return np.array([[len(text), text.count(" ")] for text in items], dtype=np.float32)


class DocumentSize(V2ModelServer):
    """An MLRun-style model that takes any document its class accepts."""

    def load(self) -> None:
        pass

    def predict(self, body: dict) -> list:
        return [len(orjson.dumps(body.get("inputs"), default=str))]


MODELS = ["rowsum", "bytelen", "images", "text", "mlrun", "missing"]


@pytest.fixture(scope="module")
def server():
    models = [
        QuietRowSum(name="rowsum"),
        ByteLength(name="bytelen"),
        MeanColours("images"),
        CharacterCounts("text"),
        DocumentSize(name="mlrun"),
    ]
    with MockServer(ModelServer(models, Settings(models=[]))) as mock:
        yield mock
        assert mock.request("/v2/health/ready", b"", "GET").status == 200
    # A fuzzer that only ever reached the first check would prove little: each door that ran here served
    # some requests through to the model.
    for door, statuses in ANSWERED.items():
        if door == "grpc":
            continue  # its own fixture checks it
        assert any(status < 300 for status in statuses), f"{door}: no request got through, {statuses}"


ANSWERED: dict[str, collections.Counter[int | str]] = collections.defaultdict(collections.Counter)


def send(server, door: str, path: str, body: bytes, method: str = "POST", headers: dict[str, str] | None = None):
    tracemalloc.start()
    try:
        reply = server.request(path, body, method, headers)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 501: explain on a model that has no explainer, an honest answer to a well-formed request.
    assert reply.status < 500 or reply.status == 501, f"{method} {path} {reply.status}: {reply.body[:500]!r}"
    if reply.status >= 400 and reply.status != 405:
        answer = orjson.loads(reply.body)
        # v2 and KServe v1 say {"error"}, Ingrain {"detail"}, TorchServe {"code", "type", "message"}.
        assert any(isinstance(answer.get(key), str) for key in ("error", "detail", "message")), answer
    assert peak <= ALLOWED_GROWTH * len(body) + ALLOWED_BASE, f"{peak} bytes allocated for {len(body)}"
    ANSWERED[door][reply.status] += 1
    return reply


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (width % 256, 90, 200)).save(buffer, "PNG")
    return buffer.getvalue()


SMALL_PNG = png(5, 3)
images = st.one_of(
    st.just(SMALL_PNG),
    st.binary(max_size=200),
    st.integers(1, len(SMALL_PNG) - 1).map(lambda n: SMALL_PNG[:n]),  # truncated
    st.sampled_from([png(1, 40), png(40, 1)]),
    st.just(SMALL_PNG[:16] + b"\x7f\xff\xff\xff" * 2 + SMALL_PNG[24:]),  # a header claiming a huge canvas
)
image_values = st.one_of(
    images.map(lambda raw: base64.b64encode(raw).decode()),
    images.map(lambda raw: "data:image/png;base64," + base64.b64encode(raw).decode()),
    st.sampled_from(["http://127.0.0.1:1/x.png", "ftp://x/y", "data:,", "data:image/png;base64,!!!", ""]),
    scalars,
)
texts = st.one_of(st.text(max_size=20), st.lists(st.text(max_size=10), max_size=5), scalars, any_json)


# ---------------------------------------------------------------- TorchServe


@st.composite
def forms(draw) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from(["b", "----x", "a b", ""]))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        headers = [b'content-disposition: form-data; name="' + draw(st.sampled_from([b"data", b"body", b"x"])) + b'"']
        if draw(st.booleans()):
            headers.append(b"content-type: " + draw(st.sampled_from([b"image/png", b"multipart/mixed; boundary=i"])))
        if draw(st.booleans()):
            headers.append(draw(st.binary(max_size=30)))
        content = draw(st.one_of(images, st.binary(max_size=50)))
        parts.append(b"--" + boundary.encode() + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + content + b"\r\n")
    closing = draw(st.sampled_from([b"--" + boundary.encode() + b"--\r\n", b"", b"--"]))
    return b"".join(parts) + closing, f"multipart/form-data; boundary={boundary}"


torchserve_bodies = st.one_of(
    forms(),
    st.tuples(st.binary(max_size=300), st.sampled_from(["application/octet-stream", "image/jpeg", "text/plain", ""])),
    st.tuples(any_json.map(dumps), st.just("application/json")),
    st.tuples(st.lists(st.lists(scalars, max_size=4), max_size=4).map(dumps), st.just("application/json")),
)


@FUZZ_SETTINGS
@given(
    body=torchserve_bodies,
    route=st.sampled_from(["predictions", "explanations"]),
    model=st.sampled_from(MODELS),
    version=st.sampled_from(["", "", "", "/1"]),
    method=st.sampled_from(["POST", "PUT"]),
)
def test_any_torchserve_request_is_answered_2xx_or_4xx(server, body, route, model, version, method):
    raw, content_type = body
    headers = {"content-type": content_type} if content_type else {}
    send(server, "torchserve", f"/{route}/{model}{version}", raw, method, headers)


# ---------------------------------------------------------------- KServe v1


kserve_v1_documents = st.one_of(
    st.fixed_dictionaries({"instances": st.one_of(data, st.lists(st.lists(scalars, max_size=4), max_size=4))}),
    st.fixed_dictionaries(
        {
            "instances": st.lists(
                st.fixed_dictionaries({"data": images.map(lambda raw: base64.b64encode(raw).decode())}), max_size=3
            )
        }
    ),
    st.fixed_dictionaries({"inputs": data}),
    any_json,
)


@FUZZ_SETTINGS
@given(
    document=kserve_v1_documents,
    model=st.sampled_from(MODELS),
    verb=st.sampled_from([":predict", ":explain", ""]),
)
def test_any_kserve_v1_request_is_answered_2xx_or_4xx(server, document, model, verb):
    send(
        server, "kserve_v1", f"/v1/models/{model}{verb}", dumps(document), headers={"content-type": "application/json"}
    )


# ---------------------------------------------------------------- Ingrain


@st.composite
def ingrain_bodies(draw) -> dict[str, Any]:
    body: dict[str, Any] = {"name": draw(st.sampled_from(["images", "text", "missing", "rowsum", ""]))}
    if draw(st.booleans()):
        body["text"] = draw(texts)
    if draw(st.booleans()):
        body["image"] = draw(st.one_of(image_values, st.lists(image_values, max_size=3)))
    if draw(st.booleans()):
        body["normalize"] = draw(scalars)
    if draw(st.booleans()):
        body["n_dims"] = draw(st.one_of(st.integers(-2, 5), scalars))
    if draw(st.booleans()):
        body["image_download_headers"] = draw(
            st.one_of(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3), scalars)
        )
    if draw(st.booleans()):
        del body["name"]
    return body


plausible_ingrain_bodies = st.one_of(
    st.fixed_dictionaries({"name": st.just("text"), "text": st.one_of(st.text(max_size=20), st.lists(st.text()))}),
    st.fixed_dictionaries(
        {"name": st.just("images"), "image": st.one_of(image_values, st.lists(image_values, max_size=3))},
        optional={"normalize": st.booleans(), "n_dims": st.integers(0, 4)},
    ),
)


@FUZZ_SETTINGS
@given(
    body=st.one_of(ingrain_bodies(), plausible_ingrain_bodies, any_json),
    path=st.sampled_from(
        ["/embed_text", "/embed_image", "/embed", "/infer_text", "/infer_image", "/infer", "/classify_image"]
    ),
)
def test_any_ingrain_request_is_answered_2xx_or_4xx(server, body, path):
    send(server, "ingrain", path, dumps(body), headers={"content-type": "application/json"})


# ---------------------------------------------------------------- MLRun documents


@FUZZ_SETTINGS
@given(
    document=st.one_of(any_json, st.fixed_dictionaries({"inputs": st.one_of(data, any_json)})),
    operation=st.sampled_from(["infer", "predict", "explain", "infer_dict", "op_x"]),
)
def test_any_mlrun_document_is_answered_2xx_or_4xx(server, document, operation):
    send(server, "mlrun", f"/v2/models/mlrun/{operation}", dumps(document))


# ---------------------------------------------------------------- gRPC


@pytest.fixture(scope="module")
def grpc_channel():
    grpc = pytest.importorskip("grpc")
    from v2serve.grpc.generated import inference_pb2 as pb
    from v2serve.grpc.server import GrpcServer

    port = free_port()
    models = [QuietRowSum(name="rowsum"), ByteLength(name="bytelen")]
    grpc_settings = {"port": port, "max_message_bytes": 1 << 20}
    with (
        serve_in_thread(*models, services=[GrpcServer], grpc=grpc_settings),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        yield channel
        ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady")
        answer = ready(pb.ServerReadyRequest().SerializeToString(), timeout=10)
        assert pb.ServerReadyResponse.FromString(answer).ready
    if ANSWERED["grpc"]:
        assert ANSWERED["grpc"]["OK"], f"no gRPC request got through: {ANSWERED['grpc']}"


@st.composite
def infer_messages(draw) -> bytes:
    from v2serve.grpc.generated import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name=draw(st.sampled_from(MODELS)), id=draw(st.text(max_size=4)))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add()
        tensor.name = draw(st.sampled_from(["x", "data", "y"]))
        tensor.datatype = draw(st.sampled_from(DATATYPES))
        tensor.shape.extend(draw(st.lists(st.integers(-3, 2**40), max_size=3)))
        if raw:
            request.raw_input_contents.append(draw(st.binary(max_size=64)))  # lengths that need not fit
        else:
            contents = draw(st.sampled_from(["fp32_contents", "int_contents", "int64_contents", "bytes_contents"]))
            values = {
                "fp32_contents": st.lists(st.floats(width=32), max_size=12),
                "int_contents": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=12),
                "int64_contents": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=12),
                "bytes_contents": st.lists(st.binary(max_size=8), max_size=12),
            }[contents]
            getattr(tensor.contents, contents).extend(draw(values))
    if draw(st.booleans()):
        request.raw_input_contents.append(draw(st.binary(max_size=16)))  # one more than there are inputs
    if draw(st.booleans()):
        request.outputs.add().name = draw(st.sampled_from(["total", "length", "nope"]))
    return request.SerializeToString()


@st.composite
def plausible_infer_messages(draw) -> bytes:
    """Messages the models can take, some with raw contents one byte off, to reach the decoding itself."""
    from v2serve.grpc.generated import inference_pb2 as pb

    rows = draw(st.integers(0, 4))
    request = pb.ModelInferRequest(model_name="rowsum")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[rows, 3])
    if draw(st.booleans()):
        values = draw(st.lists(st.floats(width=32), min_size=rows * 3, max_size=rows * 3))
        tensor.contents.fp32_contents.extend(values)
    else:
        request.raw_input_contents.append(draw(st.binary(min_size=max(0, rows * 12 - 1), max_size=rows * 12 + 1)))
    return request.SerializeToString()


@FUZZ_SETTINGS
@given(message=st.one_of(infer_messages(), plausible_infer_messages(), st.binary(max_size=200)))
def test_any_grpc_infer_message_is_answered_ok_or_a_client_error(grpc_channel, message):
    import grpc

    infer = grpc_channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    tracemalloc.start()  # traces every thread: the server's, on its own loop, too
    try:
        infer(message, timeout=10)
    except grpc.RpcError as exc:
        server_side = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
        assert exc.code() not in server_side, f"{exc.code()}: {exc.details()}"
        ANSWERED["grpc"][exc.code().name] += 1
    else:
        ANSWERED["grpc"]["OK"] += 1
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= ALLOWED_GROWTH * len(message) + ALLOWED_BASE, f"{peak} bytes allocated for {len(message)}"
