import json
import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import CLIServer, free_port
from v2serve.cli import build_parser, serve, settings_from_args

ROOT = Path(__file__).resolve().parents[1]
ROW = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [5]}]}


def test_sigterm_finishes_in_flight_requests_then_exits_zero():
    server = CLIServer("tests.fixtures:SlowModel", cwd=str(ROOT))
    server.wait_started()
    result: dict[str, httpx.Response] = {}

    def send() -> None:
        result["response"] = httpx.post(f"{server.url}/v2/models/slow/infer", json=ROW, timeout=30)

    sender = threading.Thread(target=send)
    sender.start()
    for _ in range(1000):
        if httpx.get(f"{server.url}/v2/models/slow/in_flight").json()["in_flight"] == 1:
            break
        threading.Event().wait(0.005)
    else:
        pytest.fail("the request never reached the model")

    server.process.send_signal(signal.SIGTERM)
    assert server.wait_for_line("Waiting for connections to close", 10), server.output
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/health/live")
    sender.join(30)
    assert result["response"].status_code == 200
    assert result["response"].json()["outputs"][0]["data"] == [5]
    # It exits on its own; stop() would send a second SIGTERM, which, arriving while the interpreter
    # finalises (its signal handlers reset), kills a slow machine's process by the signal.
    assert server.process.wait(30) == 0, server.output
    server.stop()


def test_two_workers_share_the_port():
    ingrain_port = free_port()
    server = CLIServer(
        str(ROOT / "examples" / "add_sub"),
        "--workers",
        "2",
        "--ingrain-inference-port",
        str(ingrain_port),
        cwd=str(ROOT),
    )
    try:
        server.wait_started()
        # uvicorn's supervisor reports started before its children listen; wait for both to be up.
        assert server.wait_for_line("Application startup complete", 60)
        body = {
            "inputs": [
                {"name": f"INPUT{i}", "shape": [1, 16], "datatype": "INT32", "data": list(range(16))} for i in (0, 1)
            ]
        }
        response = httpx.post(f"{server.url}/v2/models/add_sub/infer", json=body, timeout=10)
        assert response.json()["outputs"][0]["data"] == [2 * i for i in range(16)]
        # The workers serve the extra port too, and know it as Ingrain's: /metrics answers its JSON there.
        metrics = httpx.get(f"http://127.0.0.1:{ingrain_port}/metrics", timeout=10).json()
        assert [stats["name"] for stats in metrics["modelStats"]] == ["add_sub"]
        # Each worker configures its logging: its model line and its summary reach the log.
        assert server.wait_for(lambda lines: sum("serving:" in line for line in lines) == 2, 30), server.output
        summaries = [line for line in server.lines if "serving:" in line]
        assert len(summaries) == 2 and len({line.split("process ")[1] for line in summaries}) == 2
        assert sum("model 'add_sub' version '1' ready" in line for line in server.lines) == 2
        assert sum(line.strip().startswith("model     add_sub:1  READY") for line in server.lines) == 2
    finally:
        assert server.stop() == 0


def test_flags_override_environment(monkeypatch):
    monkeypatch.setenv("V2SERVE_HTTP__PORT", "9001")
    monkeypatch.setenv("V2SERVE_PREDICT_THREADS", "3")
    monkeypatch.setenv("V2SERVE_MODELS", '["from_env:Model"]')
    settings = settings_from_args(build_parser().parse_args(["serve", "--host", "0.0.0.0"]))
    assert (settings.http.port, settings.http.host, settings.predict_threads) == (9001, "0.0.0.0", 3)
    assert settings.models == ["from_env:Model"]
    flagged = settings_from_args(build_parser().parse_args(["serve", "a:B", "--port", "1234", "--debug"]))
    assert flagged.http.port == 1234 and flagged.debug and flagged.models == ["a:B"]
    limits = ["--max-connections", "50", "--header-timeout", "2", "--body-timeout", "3", "--keep-alive-timeout", "4"]
    limited = settings_from_args(build_parser().parse_args(["serve", "a:B", *limits])).http
    assert (limited.max_connections, limited.header_timeout_s, limited.body_timeout_s) == (50, 2.0, 3.0)
    assert limited.keep_alive_timeout_s == 4.0
    monkeypatch.setenv("V2SERVE_FRONTENDS__KSERVE_V1", "false")
    frontends = settings_from_args(build_parser().parse_args(["serve", "--no-torchserve"])).frontends
    assert (frontends.torchserve, frontends.kserve_v1) == (False, False)
    assert settings_from_args(build_parser().parse_args(["serve", "--kserve-v1"])).frontends.kserve_v1
    ingrain = settings_from_args(build_parser().parse_args(["serve", "--ingrain-ports"])).ingrain
    assert (ingrain.enabled, ingrain.inference_port, ingrain.model_port) == (True, 8686, 8687)
    args = ["serve", "--ingrain-ports", "--ingrain-model-port", "9687", "--ingrain-max-loaded-models", "3"]
    ingrain = settings_from_args(build_parser().parse_args(args)).ingrain
    assert (ingrain.inference_port, ingrain.model_port, ingrain.max_loaded_models) == (8686, 9687, 3)
    assert not settings_from_args(build_parser().parse_args(["serve", "--no-ingrain"])).ingrain.enabled


def test_json_logs_carry_the_request_id():
    server = CLIServer("tests.fixtures:ErrorModel", "--log-format", "json", cwd=str(ROOT))
    try:
        server.wait_started()
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}
        reply = httpx.post(f"{server.url}/v2/models/error_model/infer", json=body, headers={"x-request-id": "trace-42"})
        assert reply.status_code == 500 and reply.headers["x-request-id"] == "trace-42"
        assert server.wait_for_line("trace-42"), server.output
    finally:
        assert server.stop() == 0
    records = [json.loads(line) for line in server.lines if line.startswith("{")]
    failure = next(r for r in records if r["request_id"] == "trace-42")
    assert failure["level"] == "ERROR" and "boom: the model is broken" in failure["exception"]
    assert all(r["request_id"] == "-" for r in records if "ready in" in r["message"])


def test_kinesis_is_refused_with_several_workers():
    args = build_parser().parse_args(
        ["serve", "tests.fixtures:SumModel", "--workers", "2", "--kinesis-input-stream", "requests"]
    )
    with pytest.raises(SystemExit, match="Kinesis consumer runs in one process"):
        serve(settings_from_args(args))


def test_with_two_workers_the_repository_refuses_changes_and_every_connection_agrees():
    server = CLIServer(
        str(ROOT / "examples" / "add_sub"), "--workers", "2", "--repository", str(ROOT / "examples"), cwd=str(ROOT)
    )
    try:
        server.wait_started()
        assert server.wait_for_line("Application startup complete", 60)
        refused = httpx.post(f"{server.url}/v2/repository/models/add_sub/unload", timeout=10)
        assert refused.status_code == 409 and "worker processes" in refused.json()["error"]
        # Nothing was unloaded anywhere: 50 fresh connections (spread over both workers) all see it ready.
        statuses = [httpx.get(f"{server.url}/v2/models/add_sub/ready", timeout=10).status_code for _ in range(50)]
        assert statuses == [200] * 50
    finally:
        assert server.stop() == 0


def test_with_two_workers_metrics_and_statistics_are_exact_totals():
    server = CLIServer(str(ROOT / "examples" / "add_sub"), "--workers", "2", cwd=str(ROOT))
    body = {"inputs": [{"name": f"INPUT{i}", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16} for i in (0, 1)]}
    try:
        server.wait_started()
        assert server.wait_for_line("Application startup complete", 60)
        requests = 40
        for _ in range(requests):  # a fresh connection each: the kernel spreads them over both workers
            assert httpx.post(f"{server.url}/v2/models/add_sub/infer", json=body, timeout=10).status_code == 200
        for _ in range(6):  # whichever worker takes the scrape, it reports both
            text = httpx.get(f"{server.url}/metrics", timeout=10).text
            counted = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("v2serve_requests_total{") and 'model="add_sub"' in line
            )
            assert counted == requests
            stats = httpx.get(f"{server.url}/v2/models/add_sub/stats", timeout=10).json()["model_stats"]
            assert [s["inference_count"] for s in stats] == [requests]
            assert (
                httpx.get(f"{server.url}/v2/models/stats", timeout=10).json()["model_stats"][0]["inference_count"]
                == requests
            )
    finally:
        assert server.stop() == 0
