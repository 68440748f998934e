"""A server short of file descriptors still answers at once: a flood of idle sockets on the HTTP and gRPC
ports, more than the process may open, leaves a legitimate client a fast 503 with Retry-After (HTTP) or
UNAVAILABLE (gRPC), never a hang, and the server serves again once the sockets close."""

from __future__ import annotations

import concurrent.futures
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
import requests

from tests.conftest import CLIServer, free_port

grpc = pytest.importorskip("grpc")

FD_LIMIT = 256
IDLE_SOCKETS = 306
ADD_SUB = {
    "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [2] * 16},
    ]
}


@contextmanager
def idle_sockets(ports: list[int], count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections spread over ``ports`` that never send a byte (those the server refuses close)."""
    with ExitStack() as stack:
        opened = []
        for index in range(count):
            sock = stack.enter_context(socket.socket())
            sock.settimeout(5)
            sock.connect(("127.0.0.1", ports[index % len(ports)]))
            opened.append(sock)
        yield opened


def infer(url: str) -> requests.Response:
    return requests.post(f"{url}/v2/models/add_sub/infer", json=ADD_SUB, timeout=10)


def grpc_live(port: int) -> grpc.StatusCode:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_idle_sockets_beyond_the_descriptor_limit_leave_clients_a_fast_answer():
    grpc_port = free_port()
    server = CLIServer("examples", "--grpc-port", str(grpc_port), cwd=None, fd_limit=FD_LIMIT)
    try:
        server.wait_started()
        port = int(server.url.rsplit(":", 1)[1])
        with idle_sockets([port, grpc_port], IDLE_SOCKETS):
            time.sleep(0.5)  # let the server accept (and refuse) what it will
            with concurrent.futures.ThreadPoolExecutor(5) as pool:
                started = time.perf_counter()
                answers = list(pool.map(lambda _: infer(server.url), range(5)))
                http_s = time.perf_counter() - started
            started = time.perf_counter()
            grpc_status = grpc_live(grpc_port)
            grpc_s = time.perf_counter() - started
        for answer in answers:  # a slot (200) or a refusal saying when to come back; a hang fails in 10 s
            assert answer.status_code in (200, 503), answer.text
            if answer.status_code == 503:
                assert answer.headers["retry-after"] == "1" and "limit" in answer.json()["error"]
        assert grpc_status in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE), grpc_status
        print(f"5 HTTP answers in {http_s * 1000:.0f} ms, gRPC {grpc_status.name} in {grpc_s * 1000:.0f} ms")
        after = infer(server.url)  # the idle sockets are gone: served again
        assert after.status_code == 200 and after.json()["outputs"][0]["data"] == [3] * 16
        assert grpc_live(grpc_port) == grpc.StatusCode.OK
    finally:
        server.stop()
    assert "Too many open files" not in server.output, server.output[-3000:]
