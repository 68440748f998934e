"""The ONNX Runtime and PyTorch runtimes on random-weight models built here: served outputs match running
the model directly, over JSON and binary requests."""

from pathlib import Path

import numpy as np
import onnxruntime
import orjson
import pytest
import torch
import tritonclient.http as triton

from tests.conftest import serve_in_process, serve_in_thread
from v2serve.engine.loader import models_from_target
from v2serve.models.imports import import_object
from v2serve.models.runtimes.onnx import OnnxModel
from v2serve.models.runtimes.torch import TorchModel
from v2serve.protocol.binary import HEADER_LENGTH

ROOT = Path(__file__).resolve().parents[2]
build_mlp = import_object(str(ROOT / "examples/onnx_mlp/make_model.py") + ":build")
pytestmark = pytest.mark.anyio


class TinyNet(torch.nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.hidden = torch.nn.Linear(width, 16)
        self.out = torch.nn.Linear(16, 3)

    def forward(self, x):
        return torch.softmax(self.out(torch.relu(self.hidden(x))), dim=-1)


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "mlp.onnx"
    build_mlp(str(path), sizes=(32, 16, 4), seed=3)
    return path


def binary_request(name: str, array: np.ndarray, datatype: str) -> tuple[bytes, dict]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": array.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    return header + array.tobytes(), {HEADER_LENGTH: str(len(header))}


def binary_output(response, dtype) -> np.ndarray:
    length = int(response.headers[HEADER_LENGTH])
    meta = orjson.loads(response.content[:length])["outputs"][0]
    return np.frombuffer(response.content[length:], dtype=dtype).reshape(meta["shape"])


async def test_onnx_metadata_comes_from_the_model_and_outputs_match_direct_runs(onnx_path):
    x = np.random.default_rng(0).standard_normal((5, 32)).astype(np.float32)
    expected = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[
        0
    ]
    model = OnnxModel(name="mlp", model_path=str(onnx_path), device="cpu")
    async with serve_in_process(model) as client:
        meta = (await client.get("/v2/models/mlp")).json()
        assert meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 32]}]
        assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 4]}]
        as_json = await client.post(
            "/v2/models/mlp/infer",
            json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [5, 32], "data": x.ravel().tolist()}]},
        )
        np.testing.assert_allclose(np.array(as_json.json()["outputs"][0]["data"]).reshape(5, 4), expected, rtol=1e-6)
        content, headers = binary_request("input", x, "FP32")
        as_binary = await client.post("/v2/models/mlp/infer", content=content, headers=headers)
        np.testing.assert_allclose(binary_output(as_binary, "<f4"), expected, rtol=1e-6)
        wrong = await client.post(
            "/v2/models/mlp/infer",
            json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 31], "data": [0.0] * 31}]},
        )
        assert wrong.status_code == 400 and "expects [-1, 32]" in wrong.json()["error"]
    assert model.providers == ["CPUExecutionProvider"]


def test_onnx_batched_over_real_http_with_tritonclient(onnx_path):
    model = OnnxModel(name="mlp", model_path=str(onnx_path), device="cpu", max_batch_size=16, max_batch_delay_ms=5)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rows = np.random.default_rng(1).standard_normal((12, 32)).astype(np.float32)
    with serve_in_thread(model) as url, triton.InferenceServerClient(url.removeprefix("http://"), concurrency=12) as c:
        pending = []
        for row in rows:
            tensor = triton.InferInput("input", [1, 32], "FP32")
            tensor.set_data_from_numpy(row[None, :], binary_data=True)
            pending.append(c.async_infer("mlp", [tensor]))
        results = [p.get_result().as_numpy("probabilities") for p in pending]
    np.testing.assert_allclose(np.concatenate(results), session.run(None, {"input": rows})[0], rtol=1e-5)


def test_onnx_cuda_request_without_a_gpu_fails_the_load_clearly(onnx_path):
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    model = OnnxModel(name="mlp", model_path=str(onnx_path), device="cuda")
    with pytest.raises(RuntimeError, match="install onnxruntime-gpu"):
        model.load()


@pytest.fixture(scope="module")
def torch_artifacts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torch")
    torch.manual_seed(0)
    net = TinyNet().eval()
    torch.jit.save(torch.jit.script(net), folder / "net.pt")
    torch.save(net.state_dict(), folder / "state.pt")
    example = torch.zeros(2, 8)
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: batch},)), folder / "net.pt2")
    return net, folder


TORCH_SPECS = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}],
    "outputs": [{"name": "p", "datatype": "FP32", "shape": [-1, 3]}],
}


@pytest.mark.parametrize("kind", ["torchscript", "export", "state_dict"])
async def test_torch_formats_serve_the_same_outputs_as_the_module(torch_artifacts, kind):
    net, folder = torch_artifacts
    options = {
        "torchscript": {"model_path": str(folder / "net.pt")},
        "export": {"model_path": str(folder / "net.pt2")},
        "state_dict": {"model_path": str(folder / "state.pt"), "model_class": "tests.models.test_runtimes:TinyNet"},
    }[kind]
    x = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    with torch.inference_mode():
        expected = net(torch.from_numpy(x)).numpy()
    model = TorchModel(name="net", device="cpu", **options, **TORCH_SPECS)
    async with serve_in_process(model) as client:
        as_json = await client.post(
            "/v2/models/net/infer",
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [4, 8], "data": x.tolist()}]},
        )
        assert as_json.json()["outputs"][0]["name"] == "p"
        np.testing.assert_allclose(np.array(as_json.json()["outputs"][0]["data"]).reshape(4, 3), expected, rtol=1e-5)
        content, headers = binary_request("x", x, "FP32")
        as_binary = await client.post("/v2/models/net/infer", content=content, headers=headers)
        np.testing.assert_allclose(binary_output(as_binary, "<f4"), expected, rtol=1e-5)


async def test_torch_half_precision_stays_close(torch_artifacts):
    net, folder = torch_artifacts
    x = np.random.default_rng(4).standard_normal((3, 8)).astype(np.float32)
    with torch.inference_mode():
        expected = net(torch.from_numpy(x)).numpy()
    model = TorchModel(name="net", device="cpu", half=True, model_path=str(folder / "net.pt"), **TORCH_SPECS)
    async with serve_in_process(model) as client:
        response = await client.post(
            "/v2/models/net/infer",
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 8], "data": x.tolist()}]},
        )
    np.testing.assert_allclose(np.array(response.json()["outputs"][0]["data"]).reshape(3, 3), expected, atol=5e-3)


def test_runtime_named_in_model_settings(tmp_path, onnx_path):
    settings = {"name": "m", "implementation": "onnx", "model_path": str(onnx_path), "args": {"device": "cpu"}}
    (tmp_path / "model-settings.json").write_bytes(orjson.dumps(settings))
    [model] = models_from_target(str(tmp_path))
    assert isinstance(model, OnnxModel) and model.device == "cpu"
