from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager

import httpx
import pytest
import uvicorn

from v2serve.http.app import create_app
from v2serve.http.connections import uvicorn_options
from v2serve.models.base import Model
from v2serve.server import ModelServer
from v2serve.settings import HTTPSettings, Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_settings(**overrides) -> Settings:
    http = overrides.pop("http", {})
    return Settings(models=[], http=HTTPSettings(**http), **overrides)


@asynccontextmanager
async def serve_in_process(*models: Model, **settings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client wired straight to the ASGI app, with the model server started and stopped."""
    server = ModelServer(models, make_settings(**settings))
    app = create_app(server)
    await server.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://v2serve.test") as client:
            yield client
    finally:
        await server.stop()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server (S3, Kinesis, ...) on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    _serialise_kinesis_appends()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _serialise_kinesis_appends() -> None:
    """moto's server handles requests in threads, but its Kinesis shard append is not thread-safe ("not safe
    for concurrency" in moto's source): two consumers writing results to one shard at once can be given the
    same sequence number, and one record silently replaces the other. Real Kinesis serialises appends to a
    shard; so does this lock, in the test's moto server."""
    import threading

    from moto.kinesis import models

    if getattr(models.Shard.put_record, "serialised", False):
        return
    lock = threading.Lock()
    append = models.Shard.put_record

    def put_record(self, *args, **kwargs):
        with lock:
            return append(self, *args, **kwargs)

    put_record.serialised = True
    models.Shard.put_record = put_record


def port_is_free(port: int) -> bool:
    """Whether ``port`` can be bound on loopback now: a test about a default port skips when it cannot."""
    with socket.socket() as sock:
        # As servers bind (uvicorn does): a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_in_thread(
    *models: Model, server: ModelServer | None = None, services: Sequence[Callable] = (), **settings
) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, in a thread; yields its base URL. ``services``: what to
    run beside it, each made from the ModelServer (``GrpcServer``)."""
    port = free_port()
    server = server or ModelServer(models, make_settings(**settings))
    app = create_app(server, [make(server) for make in services])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options(server.settings.http)
    )
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    try:
        # uvicorn sets `started` once the socket listens and the lifespan startup has run.
        for _ in range(1000):
            if uvicorn_server.started or not thread.is_alive():
                break
            threading.Event().wait(0.01)
        assert uvicorn_server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        uvicorn_server.should_exit = True
        thread.join(10)


class CLIProcess:
    """``python -m v2serve <command> ...`` in a subprocess; its output is drained and kept for assertions."""

    def __init__(
        self,
        command: str,
        *args: str,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        fd_limit: int | None = None,
    ):
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "v2serve", command, *args],
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=None if fd_limit is None else functools.partial(_limit_descriptors, fd_limit),
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                with self._new_line:
                    self.lines.append(line)
                    self._new_line.notify_all()
        with self._new_line:
            self.lines.append("<exited>")
            self._new_line.notify_all()

    def wait_for_line(self, fragment: str, timeout: float = 60) -> bool:
        with self._new_line:
            return self._new_line.wait_for(
                lambda: any(fragment in line or line == "<exited>" for line in self.lines), timeout
            ) and any(fragment in line for line in self.lines)

    def wait_for(self, seen: Callable[[list[str]], bool], timeout: float = 60) -> bool:
        """Wait until ``seen(lines so far)`` holds (False if the process exits or the time runs out first)."""
        with self._new_line:
            self._new_line.wait_for(lambda: seen(self.lines) or "<exited>" in self.lines, timeout)
            return seen(self.lines)

    def kill(self, timeout: float = 15) -> int:
        """SIGKILL: no chance to finish or clean up anything."""
        self.process.kill()
        return self.stop(timeout)

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _limit_descriptors(limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


class CLIServer(CLIProcess):
    """``python -m v2serve serve ...`` on a free port."""

    def __init__(
        self, *args: str, cwd: str | None = None, env: dict[str, str] | None = None, fd_limit: int | None = None
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__("serve", *args, "--port", str(self.port), cwd=cwd, env=env, fd_limit=fd_limit)

    def wait_started(self, timeout: float = 60) -> None:
        # uvicorn prints this once the socket listens, after the lifespan loaded the models.
        assert self.wait_for_line("Uvicorn running on", timeout), "server did not start:\n" + self.output


def run_kserve_check(check: str, address: str) -> None:
    """Run one of tests/kserve_checks.py in a process of its own; fails with its output when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.kserve_checks", check, address],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert done.returncode == 0 and f"{check}: ok" in done.stdout, done.stdout + done.stderr
