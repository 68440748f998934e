"""MLRun's request shapes on typed v2serve models: data points for inputs, bodies by content type, and
MLRun's server routes (its serving API document is the spec)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.frontends.models import ByteLength, RowSum
from v2serve.mock import MockServer
from v2serve.models.base import Model
from v2serve.protocol.types import TensorSpec
from v2serve.server import ModelServer
from v2serve.settings import Settings


class Double(Model):
    inputs = [TensorSpec("x", "FP32", [-1])]
    outputs = [TensorSpec("y", "FP32", [-1])]

    def predict(self, inputs):
        return inputs["x"] * 2


class TwoInputs(Model):
    inputs = [TensorSpec("a", "FP32", [-1]), TensorSpec("b", "FP32", [-1])]

    def predict(self, inputs):
        return inputs["a"] + inputs["b"]


@pytest.fixture(scope="module")
def server():
    models = [
        Double(name="m1"),
        RowSum(name="rows"),
        TwoInputs(name="two"),
        ByteLength(name="bytes"),
        Double(name="m3", version="v1"),
        Double(name="m3", version="v2"),
    ]
    with MockServer(ModelServer(models, Settings(models=[]))) as mock:
        yield mock


def output(answer: dict, name: str) -> list:
    [tensor] = [o for o in answer["outputs"] if o["name"] == name]
    return np.asarray(tensor["data"]).reshape(tensor["shape"]).tolist()


def test_a_list_of_data_points_fills_the_single_input(server):
    answer = server.test("/v2/models/m1/infer", {"id": "a", "inputs": [5]})
    assert answer["id"] == "a" and output(answer, "y") == [10.0]
    batch = server.test("/v2/models/rows/infer", {"inputs": [[1, 2, 3], [4, 5, 6]]})
    assert output(batch, "total") == [6.0, 15.0]


def test_a_single_data_point_is_a_batch_of_one(server):
    assert output(server.test("/v2/models/rows/predict", {"inputs": [1, 2, 3.5]}), "total") == [6.5]


def test_data_points_for_a_model_with_several_inputs_are_a_clear_400(server):
    answer = server.test("/v2/models/two/infer", {"inputs": [1, 2]}, get_body=False, silent=True)
    assert answer.status_code == 400
    assert "single input" in answer.json()["error"] and "'a'" in answer.json()["error"]


def test_data_points_are_cast_and_checked(server):
    answer = server.test("/v2/models/rows/infer", {"inputs": [[1, 2]]}, get_body=False, silent=True)
    assert answer.status_code == 400 and "shape" in answer.json()["error"]


def test_an_image_body_reaches_the_model_as_bytes(server):
    jpeg = bytes([0xFF, 0xD8, 0xFF]) + b"\x00" * 100
    answer = server.test("/v2/models/bytes/infer", jpeg, headers={"content-type": "image/jpeg"})
    assert output(answer, "length") == [len(jpeg)] and output(answer, "first") == [0xFF]
    octets = server.test("/v2/models/bytes/infer", b"\x01\x02", headers={"content-type": "application/octet-stream"})
    assert output(octets, "length") == [2]


def test_a_text_body_reaches_the_model_as_a_string(server):
    answer = server.test("/v2/models/bytes/infer", "héllo", headers={"content-type": "text/plain; charset=utf-8"})
    assert output(answer, "length") == [len("héllo".encode())]


def test_bytes_to_a_numeric_input_is_a_clear_400(server):
    answer = server.test("/v2/models/m1/infer", b"\xff\xd8", headers={"content-type": "image/jpeg"}, silent=True,
                         get_body=False)  # fmt: skip
    assert answer.status_code == 400 and "FP32" in answer.json()["error"]


def test_v2_health_is_the_server_info(server):
    info = server.test("/v2/health")
    assert info == server.test("/v2") and info["name"] == "v2serve" and "extensions" in info
    assert {key: server.test("/")[key] for key in info} == info  # GET / adds KServe v1's "status" only


def test_the_model_list_names_versions_as_mlrun_does(server):
    assert server.test("/v2/models/")["models"] == ["m1", "rows", "two", "bytes", "m3:v1", "m3:v2"]


def test_model_metadata_includes_the_version(server):
    assert server.test("/v2/models/m3/versions/v1")["version"] == "v1"
    assert server.test("/v2/models/m3:v2")["version"] == "v2"
    assert "version" not in server.test("/v2/models/m1")


def test_a_data_url_reaches_an_mlrun_style_model_as_mlruns_router_passes_it(tmp_path):
    from tests.mlrun.models import ReadsFiles
    from v2serve.settings import DataSettings

    (tmp_path / "photo.png").write_bytes(b"\x89PNG fake image")
    np.save(tmp_path / "rows.npy", np.asarray([[1.0, 2.0]], dtype=np.float32))
    data = DataSettings(protocols=["file"], data_root=str(tmp_path))
    server = ModelServer([ReadsFiles(name="files")], Settings(models=[], data=data))
    with MockServer(server) as mock:
        for name in ("photo.png", "rows.npy"):
            raw = (tmp_path / name).read_bytes()
            answer = mock.test("/v2/models/files/infer", {"data_url": str(tmp_path / name)})
            assert answer["outputs"] == [{"size": len(raw), "head": raw[:4].hex()}], name
        refused = mock.test("/v2/models/files/infer", {"data_url": "/etc/passwd"}, silent=True, get_body=False)
        assert refused.status_code == 403  # outside data_root: the data policy holds for these models too


def test_a_data_url_reaches_an_mlrun_style_model_step_of_a_flow(tmp_path):
    from tests.mlrun.models import ReadsFiles
    from v2serve.sdk import Graph
    from v2serve.settings import DataSettings

    (tmp_path / "photo.png").write_bytes(b"\x89PNG fake image")
    graph = Graph("flow")
    graph.to(ReadsFiles, name="files", kind="model").respond()
    settings = Settings(models=[], data=DataSettings(protocols=["file"], data_root=str(tmp_path)))
    with graph.to_mock_server(settings) as mock:
        answer = mock.test("/", {"data_url": str(tmp_path / "photo.png")})
    assert answer["outputs"] == [{"size": len(b"\x89PNG fake image"), "head": "89504e47"}]
