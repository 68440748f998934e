"""Running the HTTP transport: uvicorn with the HTTP settings and v2serve's connection limits."""

from __future__ import annotations

import logging
import signal
import socket
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from v2serve.http.connections import uvicorn_options
from v2serve.settings import Settings

logger = logging.getLogger("v2serve.http")
_uvicorn_logger = logging.getLogger("uvicorn.error")


def run_uvicorn(app: Any, settings: Settings, *, workers: int = 1, **extra: Any) -> None:
    """Run uvicorn with the HTTP settings; a SIGTERM drains in-flight requests and returns normally.

    Besides the main port, the app listens on the extra ports the settings name (Ingrain's two): one app
    on several sockets, in every worker, so that a request's ``Event.listener`` says which port it came to.
    """
    http = settings.http
    _exit_quietly_after_graceful_shutdown()
    config = uvicorn.Config(
        app, host=http.host, port=http.port, lifespan="on", workers=workers, **uvicorn_options(http), **extra
    )
    extra_sockets = [_bind(http.host, port) for port in extra_ports(settings)]
    if workers > 1:
        # The workers' servers are uvicorn's own, which log nothing for given sockets: bind_socket logs.
        Multiprocess(config, sockets=[config.bind_socket(), *extra_sockets]).run()
    else:
        _Server(config).run(sockets=[_bind(http.host, http.port), *extra_sockets])


class _Server(uvicorn.Server):
    """uvicorn's server, saying where it listens once the lifespan has run: given its sockets, uvicorn says
    nothing, and ``Config.bind_socket`` says it before the models have loaded."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            for sock in sockets:
                host, port = sock.getsockname()[:2]
                _uvicorn_logger.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", host, port)


def extra_ports(settings: Settings) -> list[int]:
    """The ports besides the main one that the HTTP app listens on."""
    ingrain, torchserve = settings.ingrain, settings.torchserve
    ports = (ingrain.inference_port, ingrain.model_port, torchserve.management_port, torchserve.metrics_port)
    return [port for port in ports if port is not None]


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc}") from None
    sock.set_inheritable(True)
    return sock


def _exit_quietly_after_graceful_shutdown() -> None:
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal under the handler that
    # was installed before it started; with the default one the process would die by the signal after a
    # clean shutdown. A no-op handler lets run() return, so a graceful stop exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
