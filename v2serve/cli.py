"""The ``v2serve`` command line. Flags map onto ``Settings``; unset flags leave environment values alone."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from v2serve import __version__
from v2serve.settings import Settings

_APP_FACTORY = "v2serve.http.app:create_app_from_settings"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="v2serve", description="Serve models over the v2 inference protocol.")
    parser.add_argument("--version", action="version", version=f"v2serve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve models over HTTP")
    serve.add_argument(
        "targets",
        nargs="*",
        help="model classes ('module:Class' or 'file.py:Class'), model directories (model-settings.json) "
        "or one graph spec file (.yaml, .yml, .json)",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 8080)")
    serve.add_argument("--workers", type=int, help="server processes sharing the port (default 1)")
    serve.add_argument("--max-body-bytes", type=int, help="refuse larger request bodies with 413")
    serve.add_argument("--graceful-timeout", type=float, help="seconds in-flight requests get on SIGTERM")
    serve.add_argument("--predict-threads", type=int, help="size of the thread pool for model code")
    serve.add_argument(
        "--load-in-background",
        action="store_true",
        default=None,
        help="serve at once and load models behind 503 + Retry-After",
    )
    serve.add_argument("--access-log", action="store_true", default=None, help="log every request")
    serve.add_argument("--debug", action="store_true", default=None, help="tracebacks in error messages")
    serve.add_argument("--server-name", help="name reported by GET /v2")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Environment first, flags on top: only the flags given override anything."""
    base = Settings()
    top: dict[str, Any] = {}
    http: dict[str, Any] = {}
    if args.targets:
        top["models"] = list(args.targets)
    for flag, field in (
        ("predict_threads", "predict_threads"),
        ("load_in_background", "load_in_background"),
        ("debug", "debug"),
        ("server_name", "server_name"),
    ):
        if getattr(args, flag) is not None:
            top[field] = getattr(args, flag)
    for flag, field in (
        ("host", "host"),
        ("port", "port"),
        ("workers", "workers"),
        ("max_body_bytes", "max_body_bytes"),
        ("graceful_timeout", "graceful_timeout_s"),
        ("access_log", "access_log"),
    ):
        if getattr(args, flag) is not None:
            http[field] = getattr(args, flag)
    return base.model_copy(update={**top, "http": base.http.model_copy(update=http)})


def export_to_environment(settings: Settings) -> None:
    """Write settings as ``V2SERVE_*`` variables so that worker processes rebuild exactly the same ones."""
    for name, value in settings.model_dump(mode="json").items():
        encoded = value if isinstance(value, str) else _json(value)
        os.environ[f"V2SERVE_{name.upper()}"] = encoded


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def serve(settings: Settings) -> None:
    if not settings.models:
        raise SystemExit("v2serve serve: name at least one model target or graph file (or set V2SERVE_MODELS)")
    if settings.http.workers > 1:
        export_to_environment(settings)
        run_uvicorn(_APP_FACTORY, settings, factory=True, workers=settings.http.workers)
        return
    from v2serve.http.app import create_app_from_settings

    run_uvicorn(create_app_from_settings(settings), settings)


def run_uvicorn(app: Any, settings: Settings, **extra: Any) -> None:
    """Run uvicorn with the HTTP settings; a SIGTERM drains in-flight requests and returns normally."""
    import uvicorn

    http = settings.http
    _exit_quietly_after_graceful_shutdown()
    uvicorn.run(
        app,
        host=http.host,
        port=http.port,
        access_log=http.access_log,
        timeout_graceful_shutdown=http.graceful_timeout_s,
        lifespan="on",
        **extra,
    )


def _exit_quietly_after_graceful_shutdown() -> None:
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal under the handler that
    # was installed before it started; with the default one the process would die by the signal after a
    # clean shutdown. A no-op handler lets run() return, so a graceful stop exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        serve(settings_from_args(args))


if __name__ == "__main__":
    main(sys.argv[1:])
