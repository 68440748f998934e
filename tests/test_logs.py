"""Request ids reach everything logged for a request, model code in its worker thread included."""

import json
import logging
from pathlib import Path

import pytest

from tests.conftest import serve_in_process
from v2serve.logs import REQUEST_ID, JSONFormatter, RequestIdFilter
from v2serve.models.base import Model

pytestmark = pytest.mark.anyio


class SeesRequestId(Model):
    def __init__(self):
        super().__init__(name="sees")
        self.seen = []

    def predict(self, inputs):
        self.seen.append(REQUEST_ID.get())
        return dict(inputs)


async def test_model_code_in_its_thread_sees_the_request_id():
    model = SeesRequestId()
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}
    async with serve_in_process(model) as client:
        await client.post("/v2/models/sees/infer", json=body, headers={"x-request-id": "abc"})
        await client.post("/v2/models/sees/infer", json=body)
    assert model.seen[0] == "abc"
    assert model.seen[1] != "abc"
    assert REQUEST_ID.get() == "-"


def test_json_lines_carry_the_request_id():
    record = logging.LogRecord("v2serve.x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    token = REQUEST_ID.set("r-7")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(JSONFormatter().format(record))
    assert (line["message"], line["level"], line["request_id"]) == ("hello world", "WARNING", "r-7")


class Broken(Model):
    def load(self):
        raise RuntimeError("weights are corrupt")


class Slow(Model):
    def load(self):
        import time

        time.sleep(0.3)


async def test_the_start_up_summary_names_listeners_front_ends_and_each_model_with_its_state(caplog):
    from tests.fixtures import SumModel

    caplog.set_level(logging.INFO, logger="v2serve")
    settings = {"grpc": {"port": 8001}, "frontends": {"kserve_v1": False}}
    async with serve_in_process(SumModel(name="sum", version="2"), Broken(name="broken"), **settings):
        pass
    summary = next(r.getMessage() for r in caplog.records if "serving:" in r.getMessage())
    lines = summary.splitlines()
    assert any(line.split()[:2] == ["HTTP", "http://127.0.0.1:8080"] and "TorchServe" in line for line in lines)
    assert "KServe v1" not in summary and "gRPC      127.0.0.1:8001" in summary
    assert any(line.split()[:3] == ["model", "sum:2", "READY"] for line in lines)
    assert "broken  FAILED: RuntimeError: weights are corrupt" in summary


async def test_a_long_load_says_it_is_still_loading(caplog, monkeypatch):
    monkeypatch.setattr("v2serve.engine.registry.PROGRESS_EVERY_S", 0.05)
    caplog.set_level(logging.INFO, logger="v2serve")
    async with serve_in_process(Slow(name="slow")):
        pass
    assert any("model 'slow' still loading" in r.getMessage() for r in caplog.records)
    fast = [r for r in caplog.records if "still loading" in r.getMessage() and "'slow'" not in r.getMessage()]
    assert fast == []


def test_a_download_into_the_model_cache_is_logged_with_its_progress(tmp_path, caplog, monkeypatch):
    import fsspec

    from v2serve.data.artifacts import ArtifactCache
    from v2serve.settings import DataSettings

    monkeypatch.setattr("v2serve.data.artifacts.PROGRESS_EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="v2serve")
    with fsspec.open("memory://weights/model.bin", "wb") as handle:
        handle.write(b"w" * 3_000_000)
    path = ArtifactCache(DataSettings(model_cache_dir=str(tmp_path))).local_path("memory://weights/model.bin")
    messages = [r.getMessage() for r in caplog.records]
    assert "downloading memory://weights/model.bin into the model cache (3.0 MB)" in messages
    assert any(m.startswith("downloading memory://weights/model.bin: ") and "of 3.0 MB" in m for m in messages)
    assert any(m.startswith("downloaded memory://weights/model.bin in ") for m in messages)
    assert Path(path).read_bytes() == b"w" * 3_000_000
