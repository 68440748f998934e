"""A data_url source that never answers costs its own reads a 504 and nothing else: model work, other
sources and shutdown go on."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import CLIServer, serve_in_process
from tests.data import stuck_source
from tests.fixtures import EchoModel, SumModel
from v2serve.settings import DataSettings

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
pytestmark = pytest.mark.anyio


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    listener.settimeout(0.05)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", listener, accepted
    for conn in accepted:
        conn.close()
    listener.close()


def settings(tmp_path, **data) -> dict:
    base = {
        "protocols": ["file", "http", "stuck"],
        "data_root": str(tmp_path),
        "allow_private_addresses": True,
        "timeout_s": 0.3,
        "read_threads": 2,
    }
    return {"data": DataSettings(**(base | data)), "predict_threads": 2}


async def test_stuck_http_reads_starve_neither_models_nor_local_files(tmp_path, silent_server):
    url, _, _ = silent_server
    (tmp_path / "small.txt").write_bytes(b"nine byte")
    async with serve_in_process(EchoModel(name="echo"), SumModel(name="sum"), **settings(tmp_path)) as client:
        stuck = await asyncio.gather(
            *(client.post("/v2/models/echo/infer", json={"data_url": f"{url}/x{i}"}) for i in range(6))
        )
        assert [r.status_code for r in stuck] == [504] * 6
        local = await client.post("/v2/models/echo/infer", json={"data_url": str(tmp_path / "small.txt")})
        model = await client.post("/v2/models/sum/infer", json=GOOD)
    assert local.status_code == 200 and local.json()["outputs"][0]["data"] == ["nine byte"]
    assert model.status_code == 200


async def test_a_stuck_blocking_source_uses_up_its_own_budget_only(tmp_path):
    (tmp_path / "small.txt").write_bytes(b"nine byte")
    stuck_source.RELEASE.clear()
    try:
        async with serve_in_process(EchoModel(name="echo"), SumModel(name="sum"), **settings(tmp_path)) as client:
            first = await asyncio.gather(
                *(client.post("/v2/models/echo/infer", json={"data_url": f"stuck://x{i}"}) for i in range(2))
            )
            refused = await client.post("/v2/models/echo/infer", json={"data_url": "stuck://more"})
            local = await client.post("/v2/models/echo/infer", json={"data_url": str(tmp_path / "small.txt")})
            model = await client.post("/v2/models/sum/infer", json=GOOD)
            started = time.monotonic()
        stopped_in = time.monotonic() - started
    finally:
        stuck_source.RELEASE.set()
    assert [r.status_code for r in first] == [504, 504]
    assert refused.status_code == 503 and "stuck" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) > 0
    assert local.status_code == 200 and model.status_code == 200
    assert stopped_in < 5, "stopping the server waited for the abandoned reads"


async def test_a_fifo_under_the_data_root_is_refused_not_read(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    async with serve_in_process(EchoModel(name="echo"), **settings(tmp_path, timeout_s=30)) as client:
        response = await client.post("/v2/models/echo/infer", json={"data_url": str(tmp_path / "pipe")})
    assert response.status_code == 403 and "not a regular file" in response.json()["error"]


def test_sigterm_exits_while_a_read_is_stuck():
    env = {"V2SERVE_DATA__PROTOCOLS": '["stuck"]', "V2SERVE_DATA__TIMEOUT_S": "0.3"}
    server = CLIServer("tests.data.stuck_source:EchoModel", cwd=str(ROOT), env=env)
    try:
        server.wait_started()
        reply = httpx.post(f"{server.url}/v2/models/echo_model/infer", json={"data_url": "stuck://x"}, timeout=10)
        assert reply.status_code == 504
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(15) == 0, server.output
    finally:
        server.kill()
