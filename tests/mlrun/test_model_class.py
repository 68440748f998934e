"""An MLRun model class (V2ModelServer) runs with only its import changed: the body as sent, MLRun's
response shape, its hooks in MLRun's order, class arguments through get_param, get_model, op_<name>."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mlrun.models import ClassifierModel, EchoInputs, Greeter, ReadsFiles
from v2serve.graph.spec import GraphSpec
from v2serve.mock import MockServer
from v2serve.server import ModelServer
from v2serve.settings import Settings


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("classifier")
    (folder / "model.json").write_text(json.dumps({"weights": [1, 2]}))
    (folder / "notes.txt").write_text("not the model")
    return folder


@pytest.fixture(scope="module")
def server(model_dir):
    models = [
        ClassifierModel(name="m1", model_path=str(model_dir), threshold=4),
        ClassifierModel(name="m3", version="v1", model_path=str(model_dir / "model.json")),
        EchoInputs(name="echo"),
        Greeter(name="greeter"),
        ReadsFiles(name="files"),
    ]
    with MockServer(ModelServer(models, Settings(models=[]))) as mock:
        yield mock


def test_predict_gets_the_body_and_answers_in_mlruns_shape(server):
    answer = server.test("/v2/models/m1/infer", {"id": "r1", "inputs": [[1, 1], [3, 4]]})
    assert answer["id"] == "r1" and answer["model_name"] == "m1" and "model_version" not in answer
    assert answer["outputs"] == [0, 1]  # 1+2=3 <= 4, 3+8=11 > 4 (threshold from the class arguments)
    assert isinstance(answer["timestamp"], str) and answer["timestamp"][:4].isdigit()


def test_a_versioned_model_names_its_version_and_the_id_is_generated(server):
    answer = server.test("/v2/models/m3/versions/v1/predict", {"inputs": [[5, 5]]})
    assert answer["model_version"] == "v1" and answer["outputs"] == [1]  # default threshold 10, 15 > 10
    assert len(answer["id"]) >= 16


def test_the_hooks_run_in_mlruns_order(server):
    model = server.server.registry.resolve("m1").model
    model.calls.clear()
    server.test("/v2/models/m1/infer", {"inputs": [[1, 1]]})
    assert model.calls == [("preprocess", "infer"), ("validate", "infer"), ("postprocess", None)]
    # preprocess and validate are told the operation as it was called, as MLRun tells them.
    for path, body, named in [
        ("/v2/models/m1/predict", {"inputs": [[1, 1]]}, "predict"),
        ("/", {"model": "m1", "operation": "predict", "inputs": [[1, 1]]}, "predict"),
        ("/v2/models/m1/explain", {"inputs": [[1, 1]]}, "explain"),
    ]:
        model.calls.clear()
        server.test(path, body)
        assert model.calls[:2] == [("preprocess", named), ("validate", named)], path


def test_explain_and_custom_operations(server):
    explained = server.test("/v2/models/m1/explain", {"inputs": [[1, 1]]})
    assert explained["outputs"] == {"weights": [1, 2]} and "timestamp" not in explained  # MLRun gives none
    # op_<name> gets MLRun's event (body, path), as MLRun calls it
    assert server.test("/v2/models/m1/weights", {"x": 1}) == {"weights": [1, 2], "asked": {"x": 1}, "path": "/weights"}


def test_inputs_arrive_exactly_as_sent(server):
    mixed = [[1, "a", None, {"k": [1.5]}], [2, "b", True, {}]]
    assert server.test("/v2/models/echo/infer", {"inputs": mixed})["outputs"] == ["list", mixed]
    text = server.test("/v2/models/echo/infer", "plain words", headers={"content-type": "text/plain"})
    assert text["outputs"] == ["str", "plain words"]
    raw = server.test("/v2/models/echo/infer", b"\xff\xd8\xff" * 10, content_type="application/octet-stream")
    assert raw["outputs"] == ["bytes", 30]
    # An image as MLRun's router passes it: inputs holding one file object of its bytes.
    image = server.test("/v2/models/files/infer", b"\xff\xd8\xff" * 10, content_type="image/jpeg")
    assert image["outputs"] == [{"size": 30, "head": "ffd8ffff"}]


def test_a_string_answer_is_text_and_bytes_are_octets(server):
    text = server.test("/v2/models/greeter/infer", {"inputs": ["world"]}, get_body=False)
    assert text.content_type.startswith("text/plain") and text.body == b"hello world"
    image = server.test("/v2/models/greeter/image", {}, get_body=False)
    assert image.content_type == "application/octet-stream" and image.body == b"\x89PNG\r\n"


def test_a_request_without_inputs_is_a_json_400(server):
    answer = server.test("/v2/models/m1/infer", {"data": [1]}, get_body=False, silent=True)
    assert answer.status_code == 400 and "inputs" in answer.json()["error"]


def test_a_graph_passes_class_arguments(model_dir, tmp_path):
    spec = GraphSpec.model_validate(
        {
            "topology": "router",
            "steps": [
                {
                    "name": "m1",
                    "kind": "model",
                    "class_name": "tests.mlrun.models:ClassifierModel",
                    "model_path": str(model_dir),
                    "class_args": {"threshold": 100},
                }
            ],
        }
    )
    with MockServer(ModelServer([], Settings(models=[]), graph=spec, graph_dir=tmp_path)) as mock:
        assert mock.test("/v2/models/m1/infer", {"inputs": [[3, 4]]})["outputs"] == [0]


@pytest.mark.parametrize(
    ("handler", "body", "content_type", "answer"),
    [
        ("tests.mlrun.models:shout", {"text": "hi"}, "text/plain; charset=utf-8", b"HI"),
        ("tests.mlrun.models:raw_bytes", {"values": [1, 2]}, "application/octet-stream", b"\x01\x02"),
    ],
)
def test_a_flow_step_that_answers_a_string_or_bytes_is_not_json(tmp_path, handler, body, content_type, answer):
    spec = GraphSpec.model_validate({"topology": "flow", "steps": [{"name": "s", "handler": handler}]})
    with MockServer(ModelServer([], Settings(models=[]), graph=spec, graph_dir=tmp_path)) as mock:
        reply = mock.test("/", body, get_body=False)
    assert reply.content_type == content_type and reply.body == answer


class Blocking(EchoInputs):
    """predict waits until released, so that requests pile up behind it."""

    def load(self):
        import threading

        self.started, self.release = threading.Event(), threading.Event()

    def predict(self, body: dict) -> list:
        self.started.set()
        assert self.release.wait(10), "never released"
        return super().predict(body)


@pytest.mark.anyio
async def test_mlrun_style_models_are_bounded_by_instances_and_their_queue():
    import asyncio

    from tests.conftest import serve_in_process

    model = Blocking(name="blocking")
    model.instances, model.max_queue_size = 1, 2
    async with serve_in_process(model) as client:
        body = {"inputs": [[1, 2]]}
        busy = asyncio.create_task(client.post("/v2/models/blocking/infer", json=body))
        await asyncio.to_thread(model.started.wait, 5)
        queued = [asyncio.create_task(client.post("/v2/models/blocking/infer", json=body)) for _ in range(2)]
        await asyncio.sleep(0)
        flood = await asyncio.gather(*(client.post("/v2/models/blocking/infer", json=body) for _ in range(5)))
        assert [r.status_code for r in flood] == [503] * 5 and not busy.done()
        model.release.set()
        assert [(await t).status_code for t in (busy, *queued)] == [200] * 3


def test_a_flow_model_steps_input_and_result_paths_apply_once():
    """MLRun's model applies its own input_path and result_path: in a flow they are not applied again (the
    body {"req": {"inputs": [5]}} with input_path "req" was a 400, and result_path nested the answer twice)."""
    from v2serve import Graph

    selected = Graph("flow")
    selected.to(EchoInputs, "m", input_path="req").respond()
    with selected.to_mock_server() as server:
        answer = server.test("/", body={"req": {"inputs": [5]}})
    assert answer["model_name"] == "m" and answer["outputs"] == ["list", [5]]
    written = Graph("flow")
    written.to(EchoInputs, "m", result_path="out").respond()
    with written.to_mock_server() as server:
        answer = server.test("/", body={"inputs": [5]})
    assert answer["inputs"] == [5] and answer["out"]["outputs"] == ["list", [5]] and "out" not in answer["out"]


@pytest.mark.parametrize("outputs", [[{"name": "species"}], ["species"]])
def test_data_points_on_a_typed_model_honour_the_requested_outputs(outputs):
    """MLRun-style data points ({"inputs": [[...]]}) to a model that declares its tensors: only the outputs
    asked for come back (both did)."""
    from v2serve.engine.loader import models_from_target

    with MockServer(ModelServer(models_from_target("examples/iris"), Settings(models=[]))) as server:
        answer = server.test("/v2/models/iris/infer", body={"inputs": [[5.1, 3.5, 1.4, 0.2]], "outputs": outputs})
        unknown = server.test("/v2/models/iris/infer", body={"inputs": [[5.1, 3.5, 1.4, 0.2]], "outputs": ["x"]},
                              silent=True, get_body=False)  # fmt: skip
    assert [output["name"] for output in answer["outputs"]] == ["species"]
    assert answer["outputs"][0]["data"] == ["setosa"]
    assert unknown.status_code == 400 and "'x'" in unknown.json()["error"]


MODEL_SPEC = """kind: model
metadata: {key: classifier}
spec:
  model_file: model.json
  inputs:
  - {name: petal, value_type: float}
  - {name: sepal, value_type: float}
  outputs:
  - {name: label, value_type: int}
"""


def test_infer_dict_orders_rows_by_the_model_spec_as_mlrun_does(tmp_path):
    """A model folder as MLRun's log_model writes it (model_spec.yaml): infer_dict rows are put in the spec's
    input order, a missing feature and list rows are refused, and the metadata lists the inputs and outputs."""
    (tmp_path / "model.json").write_text(json.dumps({"weights": [1, 10]}))
    (tmp_path / "model_spec.yaml").write_text(MODEL_SPEC)
    models = [ClassifierModel(name="m", model_path=str(tmp_path), threshold=5), ClassifierModel(name="bare")]
    models[1].model_path = str(tmp_path / "model.json")  # a file, not a folder: no model spec
    with MockServer(ModelServer(models, Settings(models=[]))) as server:
        # petal*1 + sepal*10 > 5: the order decides (sepal first would give 0 for the first row).
        rows = [{"sepal": 0, "petal": 6}, {"sepal": 1, "petal": 0}, {"petal": 1, "sepal": 0}]
        assert server.test("/v2/models/m/infer_dict", {"inputs": rows})["outputs"] == [1, 1, 0]
        assert server.test("/v2/models/m/predict_dict", {"inputs": [{"sepal": 1, "petal": 0}]})["outputs"] == [1]
        missing = server.test("/v2/models/m/infer_dict", {"inputs": [{"petal": 1}]}, silent=True, get_body=False)
        assert missing.status_code == 400 and "['sepal']" in missing.json()["error"]
        lists = server.test("/v2/models/m/infer_dict", {"inputs": [[1, 2]]}, silent=True, get_body=False)
        assert lists.status_code == 400 and "`list[dict]` or `dict`" in lists.json()["error"]
        bare = server.test("/v2/models/bare/infer_dict", {"inputs": [{"petal": 1}]}, silent=True, get_body=False)
        assert bare.status_code == 400 and "model_path" in bare.json()["error"]
        metadata = server.test("/v2/models/m", method="GET")
    assert [spec["name"] for spec in metadata["inputs"]] == ["petal", "sepal"]
    assert [spec["name"] for spec in metadata["outputs"]] == ["label"]
    assert metadata["parameters"]["feature_names"] == ["petal", "sepal"]


@pytest.mark.parametrize(
    ("body", "content_type", "received"),
    [
        (b'{"a": 1}', "application/json", {"type": "dict", "value": {"a": 1}}),
        (b'{"a": 1}', None, {"type": "dict", "value": {"a": 1}}),  # no content type: JSON when it parses
        (b"hello there", None, {"type": "str", "value": "hello there"}),  # and as it is when it does not
        (b'{"a": 1}', "text/plain", {"type": "str", "value": '{"a": 1}'}),  # text stays text
        (b"a,b\n1,2\n", "text/csv", {"type": "str", "value": "a,b\n1,2\n"}),
        (b"\x89PNG\r\n\x1a\n", "image/png", {"type": "bytes", "value": 8}),
        (b"\xff\xfe", None, {"type": "bytes", "value": 2}),
    ],
)
def test_a_flow_body_is_what_its_content_type_says_as_mlrun_decides(tmp_path, body, content_type, received):
    spec = GraphSpec.model_validate(
        {"topology": "flow", "steps": [{"name": "s", "handler": "tests.mlrun.models:kind_of_body"}]}
    )
    with MockServer(ModelServer([], Settings(models=[]), graph=spec, graph_dir=tmp_path)) as mock:
        assert mock.test("/", body, content_type=content_type) == received
        malformed = mock.test("/", b"{", content_type="application/json", get_body=False, silent=True)
        assert malformed.status_code == 400  # it says it is JSON, and is not
