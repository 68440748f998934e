"""The same archives under real TorchServe 0.12 (Java) and under v2serve, asked the same requests: the answers
are the same, except for the corrections v2serve makes on purpose, which are asserted as differences here
(and listed in the README's migration guide). Skipped where java is not installed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, serve_in_thread
from tests.torchserve.conftest import Store
from v2serve.models.torchserve import TorchServeArchive

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="real TorchServe needs java")

ARCHIVES = {"raw": "raw", "echo": "echo_v1", "mlp": "mlp", "stream": "stream"}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str | None
    chunked: bool

    def json(self):
        return json.loads(self.body)


def _start_torchserve(store: Store, work: Path) -> tuple[subprocess.Popen, str]:
    model_store = work / "model_store"
    model_store.mkdir()
    for name, archive in ARCHIVES.items():
        shutil.copy(store[archive], model_store / f"{name}.mar")
    inference, management, metrics = free_port(), free_port(), free_port()
    config = work / "config.properties"
    config.write_text(
        f"inference_address=http://127.0.0.1:{inference}\nmanagement_address=http://127.0.0.1:{management}\n"
        f"metrics_address=http://127.0.0.1:{metrics}\ngrpc_inference_port={free_port()}\n"
        f"grpc_management_port={free_port()}\nenable_model_api=true\ninstall_py_dep_per_model=false\n"
        "default_workers_per_model=1\ndisable_system_metrics=true\n"
    )
    models = ",".join(f"{name}={name}.mar" for name in ARCHIVES)
    command = [
        str(Path(sys.executable).parent / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
        "--model-store", str(model_store), "--ts-config", str(config), "--models", models,
    ]  # fmt: skip
    # TorchServe keeps its pid file in the temporary folder and refuses to start beside another: one of its own.
    env = {**os.environ, "TMPDIR": str(work), "TEMP": str(work)}
    with (work / "torchserve.log").open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError("TorchServe exited:\n" + (work / "torchserve.log").read_text()[-3000:])
        if all(_workers_ready(management, name) for name in ARCHIVES):
            return process, f"http://127.0.0.1:{inference}"
        time.sleep(0.5)  # TorchServe reports nothing to wait on: its /ping is 200 before workers are up
    _stop(process)
    raise AssertionError("TorchServe's workers did not start:\n" + (work / "torchserve.log").read_text()[-3000:])


def _workers_ready(management: int, name: str) -> bool:
    try:
        described = requests.get(f"http://127.0.0.1:{management}/models/{name}", timeout=5).json()
    except (requests.RequestException, ValueError):
        return False
    workers = described[0].get("workers", []) if isinstance(described, list) else []
    return bool(workers) and all(worker["status"] == "READY" for worker in workers)


def _stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture(scope="module")
def servers(store: Store, tmp_path_factory: pytest.TempPathFactory):
    process, torchserve = _start_torchserve(store, tmp_path_factory.mktemp("torchserve"))
    try:
        models = [TorchServeArchive(name=name, model_path=str(store[archive])) for name, archive in ARCHIVES.items()]
        with serve_in_thread(*models) as v2serve:
            yield torchserve, v2serve
    finally:
        _stop(process)


def ask(base: str, method: str, path: str, **kwargs) -> Answer:
    response = requests.request(method, f"{base}{path}", timeout=60, **kwargs)
    return Answer(
        response.status_code, response.content, response.headers.get("content-type"),
        response.headers.get("transfer-encoding") == "chunked",
    )  # fmt: skip


def both(servers, method: str, path: str, **kwargs) -> tuple[Answer, Answer]:
    torchserve, v2serve = servers
    return ask(torchserve, method, path, **kwargs), ask(v2serve, method, path, **kwargs)


SAME = [
    ("JSON body", "POST", "/predictions/raw", {"json": {"a": [1, 2]}}),
    ("text body", "POST", "/predictions/raw", {"data": "hello", "headers": {"Content-Type": "text/plain"}}),
    ("curl -T", "PUT", "/predictions/raw", {"data": bytes(range(256))}),
    ("curl -d form", "POST", "/predictions/raw", {"data": {"p": "1", "q": "2"}}),
    ("curl -F form", "POST", "/predictions/raw", {"files": {"data": b"\xff\xd8" + bytes(50)}, "data": {"n": "joe"}}),
    ("a header", "POST", "/predictions/raw", {"json": [1], "headers": {"X-Custom": "yes"}}),
    ("GET", "GET", "/predictions/raw", {}),
    ("DELETE", "DELETE", "/predictions/raw", {"data": b"x"}),
    ("a status set", "POST", "/predictions/raw", {"data": b"teapot"}),
    ("a content type set", "POST", "/predictions/raw", {"data": b"png"}),
    ("PredictionException", "POST", "/predictions/raw", {"data": b"refuse"}),
    ("a version", "POST", "/predictions/echo/1.0", {"data": b"hi"}),
    ("an explanation, PUT", "PUT", "/explanations/raw", {"data": b"x"}),
    ("an explanation, POST", "POST", "/explanations/raw", {"json": {"a": 1}}),
    ("ping", "GET", "/ping", {}),
]


@pytest.mark.parametrize(("case", "method", "path", "kwargs"), SAME, ids=[case[0] for case in SAME])
def test_the_same_request_gets_the_same_answer(servers, case, method, path, kwargs):
    torchserve, v2serve = both(servers, method, path, **kwargs)
    assert v2serve.status == torchserve.status
    if torchserve.content_type is not None:
        assert v2serve.content_type == torchserve.content_type
    if "files" in kwargs:  # each request's form has a boundary of its own, which the handler echoes
        assert _without_boundary(v2serve.json()) == _without_boundary(torchserve.json())
    elif torchserve.content_type == "application/json":
        assert v2serve.json() == torchserve.json()
    else:
        assert v2serve.body == torchserve.body  # JSON a handler returned is indented as TorchServe indents it


def _without_boundary(answer: dict) -> dict:
    assert answer["content_type"].startswith("multipart/form-data; boundary=")
    return {**answer, "content_type": None}


def test_a_torchscript_model_computes_the_same(servers):
    torchserve, v2serve = both(servers, "POST", "/predictions/mlp", json=[0.5, -1.0, 2.0, 0.25])
    assert torchserve.status == v2serve.status == 200
    assert v2serve.json() == pytest.approx(torchserve.json(), rel=1e-6)


def test_a_stream_arrives_in_the_same_chunks(servers):
    kwargs = {"data": "one two three", "headers": {"content-type": "text/plain"}}
    torchserve, v2serve = both(servers, "POST", "/predictions/stream", **kwargs)
    assert torchserve.status == v2serve.status == 200
    assert torchserve.chunked and v2serve.chunked
    assert v2serve.body == torchserve.body == b"one two three"


def test_unknown_models_and_versions_answer_the_same_type(servers):
    for path in ("/predictions/nothing", "/predictions/echo/9.0"):
        torchserve, v2serve = both(servers, "POST", path, data=b"x")
        assert v2serve.status == torchserve.status == 404
        assert v2serve.json()["type"] == torchserve.json()["type"]


def test_the_corrections(servers):
    # A handler that raises: TorchServe answers 503 (retry later), though nothing will change on a retry.
    torchserve, v2serve = both(servers, "POST", "/predictions/raw", data=b"crash")
    assert (torchserve.status, v2serve.status) == (503, 500)
    assert torchserve.json()["message"] == "Prediction failed"
    assert v2serve.json()["message"].startswith("Prediction failed: RuntimeError")
    # An answer without a content type the handler set: TorchServe sends none; v2serve says what it sent.
    torchserve, v2serve = both(servers, "POST", "/predictions/echo", data=b"hi")
    assert torchserve.content_type is None and v2serve.content_type == "application/json"
    assert v2serve.body == torchserve.body
    # A request header asked for in another case than the client wrote it: TorchServe finds none (its headers
    # are a plain dict); v2serve finds it, as HTTP's header names are case-insensitive.
    torchserve, v2serve = both(servers, "POST", "/predictions/raw", data="hi", headers={"content-type": "text/plain"})
    assert torchserve.json()["content_type"] is None and v2serve.json()["content_type"] == "text/plain"
