"""Clients that hold connections without finishing a request are cut off on time, a connection cap keeps
descriptors for real clients, and requests cut by a graceful shutdown's time-out get a JSON 503. Against a
real uvicorn, with each of uvicorn's HTTP implementations (h11, httptools)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import CLIServer, serve_in_thread
from tests.fixtures import SumModel
from v2serve.http import connections

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}


@pytest.fixture(params=["httptools", "h11"])
def implementation(request, monkeypatch):
    if request.param == "h11":
        monkeypatch.setattr(connections, "GuardedHttpToolsProtocol", None)
    else:
        assert connections.GuardedHttpToolsProtocol is not None, "install httptools to test it"
    return request.param


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """What the server sent before it closed the connection. A server that closes while the client's bytes
    are still unread makes the kernel reset the connection, and the reset can overtake its last answer."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        received += b"<reset>"
    return received


def assert_serves(url: str) -> None:
    response = httpx.post(f"{url}/v2/models/sum/infer", json=GOOD, timeout=10)
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [6.0]


def test_incomplete_headers_are_cut_off_after_the_header_timeout(implementation):
    with serve_in_thread(SumModel(name="sum"), http={"header_timeout_s": 0.5}) as url:
        sockets = [connect(url) for _ in range(300)]
        for sock in sockets:
            sock.sendall(b"POST /v2/models/sum/infer HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answers = [read_until_closed(sock) for sock in sockets]
        assert time.monotonic() - started < 10
        assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[0]
        assert b"headers took over 0.5 s" in answers[0]
        for sock in sockets:
            sock.close()
        assert_serves(url)


def test_headers_trickling_in_do_not_extend_the_deadline(implementation):
    with serve_in_thread(SumModel(name="sum"), http={"header_timeout_s": 0.5}) as url:
        sock = connect(url)
        sock.sendall(b"POST /v2/models/sum/infer HTTP/1.1\r\n")
        closed = threading.Event()

        def trickle():
            for _ in range(50):
                if closed.is_set():
                    return
                try:
                    sock.sendall(b"X-a: b\r\n")
                except OSError:
                    return
                time.sleep(0.05)

        sender = threading.Thread(target=trickle)
        sender.start()
        started = time.monotonic()
        try:
            answer = read_until_closed(sock)
        finally:
            closed.set()
            sender.join()
            sock.close()
        # Cut off at the header deadline, though bytes kept coming (the 408 may be lost to the reset).
        assert answer.startswith(b"HTTP/1.1 408") or answer == b"<reset>", answer
        assert time.monotonic() - started < 2


def test_a_stalled_body_is_cut_off_and_the_server_still_serves(implementation):
    with serve_in_thread(SumModel(name="sum"), http={"body_timeout_s": 0.5}) as url:
        stalled = []
        for _ in range(8):
            sock = connect(url)
            sock.sendall(b"POST /v2/models/sum/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
            sock.sendall(b"x" * 200_000)
            stalled.append(sock)
        answers = [read_until_closed(sock) for sock in stalled]
        for sock in stalled:
            sock.close()
        assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[0]
        assert b"body stalled for over 0.5 s" in answers[0]
        assert_serves(url)


def test_a_slow_but_steady_body_is_not_cut_off(implementation):
    with serve_in_thread(SumModel(name="sum"), http={"body_timeout_s": 0.5}) as url:
        body = orjson.dumps(GOOD)
        sock = connect(url)
        sock.sendall(b"POST /v2/models/sum/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n")
        sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body))
        for i in range(0, len(body), 10):  # about 1 s in all, never 0.5 s without a byte
            sock.sendall(body[i : i + 10])
            time.sleep(0.1)
        answer = read_until_closed(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer


def test_connections_over_the_cap_are_answered_503_at_once(implementation):
    with serve_in_thread(SumModel(name="sum"), http={"max_connections": 20, "header_timeout_s": 30}) as url:
        idle = [connect(url) for _ in range(20)]
        time.sleep(0.2)  # the server has accepted them all
        extra = connect(url)
        answer = read_until_closed(extra)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"limit of 20 connections" in answer
        assert b"retry-after: 1" in answer.lower()
        for sock in idle:
            sock.close()
        time.sleep(0.2)
        assert_serves(url)


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(implementation):
    with serve_in_thread(SumModel(name="sum"), http={"keep_alive_timeout_s": 0.3}) as url:
        sock = connect(url)
        body = orjson.dumps(GOOD)
        sock.sendall(
            b"POST /v2/models/sum/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        started = time.monotonic()
        answer = read_until_closed(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200") and 0.2 < time.monotonic() - started < 5


def test_requests_cut_by_the_graceful_timeout_get_a_json_503():
    server = CLIServer("tests.fixtures:SlowModel", "--graceful-timeout", "0.3", cwd=str(ROOT))
    try:
        server.wait_started()
        result: dict[str, httpx.Response] = {}
        row = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [5]}]}
        sender = threading.Thread(
            target=lambda: result.setdefault(
                "response", httpx.post(f"{server.url}/v2/models/slow/infer", json=row, timeout=30)
            )
        )
        sender.start()
        for _ in range(1000):
            if httpx.get(f"{server.url}/v2/models/slow/in_flight").json()["in_flight"] == 1:
                break
            time.sleep(0.005)
        server.process.send_signal(signal.SIGTERM)
        sender.join(30)
        response = result["response"]
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/json"
        assert "shutting down" in response.json()["error"]
        assert server.process.wait(15) == 0
    finally:
        server.kill()
