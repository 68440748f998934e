"""The ``v2serve`` command line. Flags map onto ``Settings``; unset flags leave environment values alone."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from typing import Any

import orjson
from pydantic import ValidationError

from v2serve._version import __version__
from v2serve.logs import configure_logging
from v2serve.settings import Settings

_APP_FACTORY = "v2serve.launch:create_app_from_settings"
INGRAIN_INFERENCE_PORT = 8686
INGRAIN_MODEL_PORT = 8687
TORCHSERVE_MANAGEMENT_PORT = 8081
TORCHSERVE_METRICS_PORT = 8082


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="v2serve", description="Serve models over the v2 inference protocol.")
    parser.add_argument("--version", action="version", version=f"v2serve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve models over HTTP, and any streams configured beside it")
    _add_model_arguments(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 8080)")
    serve.add_argument("--workers", type=int, help="server processes sharing the port (default 1)")
    serve.add_argument("--max-body-bytes", type=int, help="refuse larger request bodies with 413")
    serve.add_argument("--access-log", action="store_true", default=None, help="log every request")
    serve.add_argument("--max-connections", type=int, help="answer 503 beyond this many open connections")
    serve.add_argument("--header-timeout", type=float, help="seconds a request's headers may take (default 10)")
    serve.add_argument("--body-timeout", type=float, help="seconds a body may stall between chunks (default 30)")
    serve.add_argument("--keep-alive-timeout", type=float, help="seconds an idle connection is kept (default 5)")
    serve.add_argument("--grpc-port", type=int, help="serve the v2 gRPC service on this port too (v2serve[grpc])")
    serve.add_argument("--grpc-host", help="address gRPC binds (default: the HTTP host)")
    serve.add_argument(
        "--torchserve",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TorchServe's /ping, /predictions and /explanations routes (default on)",
    )
    serve.add_argument(
        "--kserve-v1",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="KServe v1's /v1/models routes (default on)",
    )
    ingrain = serve.add_argument_group("Ingrain's APIs (embeddings; their routes are on by default)")
    ingrain.add_argument(
        "--ingrain", action=argparse.BooleanOptionalAction, default=None, help="Ingrain's inference and model routes"
    )
    ingrain.add_argument(
        "--ingrain-ports",
        action="store_true",
        default=None,
        help="also listen on Ingrain's ports, 8686 (inference) and 8687 (models), where its clients look",
    )
    ingrain.add_argument("--ingrain-inference-port", type=int, help="also listen on this port for Ingrain's client")
    ingrain.add_argument("--ingrain-model-port", type=int, help="also listen on this port for Ingrain's model calls")
    ingrain.add_argument("--ingrain-max-loaded-models", type=int, help="models its load routes keep (default 8)")
    ingrain.add_argument(
        "--hub-allow",
        action="append",
        metavar="ORG_OR_REPO",
        help="fetch models by name from the Hugging Face hub, these organisations or repositories only "
        "(repeatable; '*': any); off without it",
    )
    ingrain.add_argument("--hub-endpoint", help="the hub to fetch from (default https://huggingface.co)")
    torchserve = serve.add_argument_group("TorchServe's management and metrics APIs (each on a port of its own)")
    torchserve.add_argument(
        "--torchserve-ports",
        action="store_true",
        default=None,
        help="listen on TorchServe's ports too: 8081 (management) and 8082 (metrics)",
    )
    torchserve.add_argument("--torchserve-management-port", type=int, help="TorchServe's management API on this port")
    torchserve.add_argument("--torchserve-metrics-port", type=int, help="GET /metrics alone on this port")
    torchserve.add_argument(
        "--model-store", help="where the management API finds archives (default: --repository), as TorchServe's"
    )
    _add_stream_arguments(serve)
    consume = commands.add_parser("consume", help="serve models to Kafka or Kinesis streams only, without HTTP")
    _add_model_arguments(consume)
    _add_stream_arguments(consume)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets",
        nargs="*",
        help="model classes ('module:Class' or 'file.py:Class'), model directories (model-settings.json), "
        "TorchServe archives (file.mar, name=file.mar), stores of them, or one graph spec file (.yaml, .json)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        dest="more_targets",
        metavar="TARGET",
        help="more targets, as TorchServe's --models takes them (name=file.mar, relative to --model-store)",
    )
    parser.add_argument("--predict-threads", type=int, help="size of the thread pool for model code")
    parser.add_argument(
        "--load-in-background",
        action="store_true",
        default=None,
        help="serve at once and load models behind 503 + Retry-After",
    )
    parser.add_argument("--graceful-timeout", type=float, help="seconds in-flight work gets on SIGTERM")
    parser.add_argument("--debug", action="store_true", default=None, help="tracebacks in error messages")
    parser.add_argument("--server-name", help="name reported by GET /v2")
    parser.add_argument("--log-format", choices=["text", "json"], help="log lines as text (default) or JSON")
    parser.add_argument("--repository", help="model repository directory for /v2/repository/models/{m}/load")


def _add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    kafka = parser.add_argument_group("Kafka (on when --kafka-servers is given)")
    kafka.add_argument("--kafka-servers", help="bootstrap servers, host:port[,host:port]")
    kafka.add_argument("--kafka-input-topic", action="append", help="topic to consume (repeatable)")
    kafka.add_argument("--kafka-output-topic", help="topic for results (default v2serve-output)")
    kafka.add_argument("--kafka-error-topic", help="topic for error records (default v2serve-errors)")
    kafka.add_argument("--kafka-group", help="consumer group id (default v2serve)")
    kafka.add_argument("--kafka-max-in-flight", type=int, help="messages served at once (default 256)")
    kinesis = parser.add_argument_group("Kinesis (on when --kinesis-input-stream is given)")
    kinesis.add_argument("--kinesis-input-stream", help="stream to consume, every shard")
    kinesis.add_argument("--kinesis-output-stream", help="stream for results (default v2serve-output)")
    kinesis.add_argument("--kinesis-error-stream", help="stream for error records (default v2serve-errors)")
    kinesis.add_argument("--kinesis-region", help="AWS region")
    kinesis.add_argument("--kinesis-endpoint-url", help="for a Kinesis-compatible server")
    kinesis.add_argument("--kinesis-checkpoint-dir", help="where per-shard checkpoints are kept")
    kinesis.add_argument("--kinesis-lease-table", help="DynamoDB table of shard leases: several consumers split")


# (flag, settings section or None for the top level, field)
_FLAG_FIELDS = (
    ("predict_threads", None, "predict_threads"),
    ("load_in_background", None, "load_in_background"),
    ("debug", None, "debug"),
    ("server_name", None, "server_name"),
    ("repository", "repository", "root"),
    ("log_format", None, "log_format"),
    ("host", "http", "host"),
    ("port", "http", "port"),
    ("workers", "http", "workers"),
    ("max_body_bytes", "http", "max_body_bytes"),
    ("graceful_timeout", "http", "graceful_timeout_s"),
    ("access_log", "http", "access_log"),
    ("max_connections", "http", "max_connections"),
    ("header_timeout", "http", "header_timeout_s"),
    ("body_timeout", "http", "body_timeout_s"),
    ("keep_alive_timeout", "http", "keep_alive_timeout_s"),
    ("grpc_port", "grpc", "port"),
    ("grpc_host", "grpc", "host"),
    ("torchserve", "frontends", "torchserve"),
    ("kserve_v1", "frontends", "kserve_v1"),
    ("ingrain", "ingrain", "enabled"),
    ("ingrain_inference_port", "ingrain", "inference_port"),
    ("ingrain_model_port", "ingrain", "model_port"),
    ("ingrain_max_loaded_models", "ingrain", "max_loaded_models"),
    ("hub_allow", "hub", "allow"),
    ("hub_endpoint", "hub", "endpoint"),
    ("torchserve_management_port", "torchserve", "management_port"),
    ("torchserve_metrics_port", "torchserve", "metrics_port"),
    ("model_store", "torchserve", "model_store"),
    ("kafka_servers", "kafka", "bootstrap_servers"),
    ("kafka_input_topic", "kafka", "input_topics"),
    ("kafka_output_topic", "kafka", "output_topic"),
    ("kafka_error_topic", "kafka", "error_topic"),
    ("kafka_group", "kafka", "group_id"),
    ("kafka_max_in_flight", "kafka", "max_in_flight"),
    ("kinesis_input_stream", "kinesis", "input_stream"),
    ("kinesis_output_stream", "kinesis", "output_stream"),
    ("kinesis_error_stream", "kinesis", "error_stream"),
    ("kinesis_region", "kinesis", "region_name"),
    ("kinesis_endpoint_url", "kinesis", "endpoint_url"),
    ("kinesis_checkpoint_dir", "kinesis", "checkpoint_dir"),
    ("kinesis_lease_table", "kinesis", "lease_table"),
)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Environment first, flags on top: only the flags given override anything."""
    base = Settings()
    updates: dict[str | None, dict[str, Any]] = {}
    targets = [*args.targets, *(getattr(args, "more_targets", None) or [])]
    if targets:
        updates.setdefault(None, {})["models"] = targets
    if getattr(args, "ingrain_ports", None):
        ports = {"inference_port": INGRAIN_INFERENCE_PORT, "model_port": INGRAIN_MODEL_PORT}
        updates.setdefault("ingrain", {}).update(ports)
    if getattr(args, "hub_allow", None):
        updates.setdefault("hub", {})["enabled"] = True
    if getattr(args, "torchserve_ports", None):
        ports = {"management_port": TORCHSERVE_MANAGEMENT_PORT, "metrics_port": TORCHSERVE_METRICS_PORT}
        updates.setdefault("torchserve", {}).update(ports)
    for flag, section, field in _FLAG_FIELDS:
        value = getattr(args, flag, None)
        if value is not None:
            updates.setdefault(section, {})[field] = value
    top = updates.pop(None, {})
    for section, fields in updates.items():
        assert section is not None  # the top level was popped above
        top[section] = getattr(base, section).model_copy(update=fields)
    return base.model_copy(update=top)


def export_to_environment(settings: Settings) -> None:
    """Write settings as ``V2SERVE_*`` variables so that worker processes rebuild exactly the same ones."""
    for name, value in settings.model_dump(mode="json").items():
        encoded = value if isinstance(value, str) else _json(value)
        os.environ[f"V2SERVE_{name.upper()}"] = encoded


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def serve(settings: Settings) -> None:
    if not settings.models and settings.torchserve.management_port is None:
        raise SystemExit(
            "v2serve serve: name at least one model target or graph file (or set V2SERVE_MODELS), or register "
            "models through TorchServe's management API (--torchserve-management-port)"
        )
    from v2serve.http.run import run_uvicorn

    if settings.http.workers > 1:
        from v2serve.server import ModelServer

        ModelServer.read_targets(settings)  # here, once, rather than as a traceback from every worker
        if settings.kinesis.input_stream:
            # Every worker would read every shard and share one checkpoint file: run `consume` beside instead.
            raise SystemExit("v2serve serve: a Kinesis consumer runs in one process; use --workers 1 or `consume`")
        peers = tempfile.mkdtemp(prefix="v2serve-workers-")
        settings = settings.model_copy(update={"http": settings.http.model_copy(update={"peers_dir": peers})})
        export_to_environment(settings)
        try:
            run_uvicorn(_APP_FACTORY, settings, factory=True, workers=settings.http.workers)
        finally:
            shutil.rmtree(peers, ignore_errors=True)
        return
    from v2serve.launch import create_app_from_settings

    run_uvicorn(create_app_from_settings(settings), settings)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:  # a V2SERVE_* variable or a flag's value
        raise SystemExit(f"v2serve {args.command}: invalid settings: {startup_error(exc)}") from None
    configure_logging(settings.log_format)
    # As uvicorn does: `v2serve serve my_module:Model` finds my_module.py in the current directory.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if args.command == "serve":
            serve(settings)
        elif args.command == "consume":
            consume(settings)
    except (ValueError, ImportError, OSError) as exc:
        if settings.debug:
            raise
        raise SystemExit(f"v2serve {args.command}: {startup_error(exc)}") from None


def startup_error(exc: BaseException) -> str:
    """A start-up failure as one line: the message where it names the problem, the type where it does not."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors())
    message = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, ValueError):  # "No module named 'x'" says more with ModuleNotFoundError before it
        message = f"{type(exc).__name__}: {message}"
    return message.splitlines()[0] + " (--debug shows the traceback)"


def consume(settings: Settings) -> None:
    if not settings.models:
        raise SystemExit("v2serve consume: name at least one model target or graph file (or set V2SERVE_MODELS)")
    from v2serve.launch import consume as consume_streams

    run_event_loop(consume_streams(settings))


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where it is installed (the ``fast`` extra), as uvicorn does for ``serve``: a
    stream's every message is a task and futures, which uvloop runs in about half asyncio's time."""
    try:
        import uvloop
    except ImportError:
        import asyncio

        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    main(sys.argv[1:])
