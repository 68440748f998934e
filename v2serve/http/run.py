"""Running the HTTP transport: uvicorn with the HTTP settings and v2serve's connection limits."""

from __future__ import annotations

import signal
from typing import Any

from v2serve.http.connections import uvicorn_options
from v2serve.settings import Settings


def run_uvicorn(app: Any, settings: Settings, **extra: Any) -> None:
    """Run uvicorn with the HTTP settings; a SIGTERM drains in-flight requests and returns normally."""
    import uvicorn

    http = settings.http
    _exit_quietly_after_graceful_shutdown()
    uvicorn.run(app, host=http.host, port=http.port, lifespan="on", **uvicorn_options(http), **extra)


def _exit_quietly_after_graceful_shutdown() -> None:
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal under the handler that
    # was installed before it started; with the default one the process would die by the signal after a
    # clean shutdown. A no-op handler lets run() return, so a graceful stop exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
