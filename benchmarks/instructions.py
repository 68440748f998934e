"""Instructions per add_sub request, counted by valgrind: a measure that does not drift with the host.

Timings on these shared machines move by ±30% from second to second, so a change worth 5% cannot be seen
in them without many rounds. Instruction counts are exact and repeatable, and a fair guide to what a change
in the request path does (they do not see cache misses, which make a bigger footprint cost more again).

    python3 benchmarks/instructions.py                     # v2serve's ASGI app and the floor's, per request
    python3 benchmarks/instructions.py core decode encode  # or any of the stages below

Each stage runs in a loop under callgrind, collecting only inside the loop, at two loop lengths; the
difference divided by the difference in length is the cost of one call, free of start-up costs. Needs
valgrind (Debian package) and the benchmark virtual environment that ``run.py`` builds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from run import SERVERS_DIR, WORK, python

SHORT, LONG = 1_000, 4_000

STAGES = {
    "asgi": "v2serve's ASGI app, one whole request (adapter, router, model, encoding)",
    "floor": "the floor's ASGI app (starlette + orjson + numpy), one whole request",
    "core": "ModelServer.handle on an Event: everything in v2serve but the ASGI adapter",
    "parse": "orjson.loads and parse_inference_request",
    "decode": "checking the parsed inputs against the model and decoding them into numpy",
    "submit": "the scheduler: queue bound, instance slot, statistics, predict",
    "encode": "outputs to the JSON response body",
    "stream": "a stream message (Kafka's, Kinesis'): event_from_message, ModelServer.handle, record_for_reply",
    "grpc": "the gRPC ModelInfer handler, serialised request to serialised response (grpcio's own work aside)",
}


def count(stage: str, loops: int) -> int:
    """Instructions collected by callgrind inside ``loops`` runs of ``stage``."""
    interpreter = python("v2serve") if python("v2serve").exists() else Path(sys.executable)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--collect-atstart=no",
        "--toggle-collect=deque_init",  # the C function that drives the loop (see ``_drive_loop``)
        "--callgrind-out-file=/dev/null",
        str(interpreter),
        __file__,
        "--child",
        stage,
        str(loops),
    ]
    # A fixed hash seed keeps dict and set layouts, and so the instruction count, the same from run to run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    collected = re.search(r"Collected : ([\d,]+)", result.stderr)
    if collected is None:
        raise RuntimeError(f"callgrind reported no count:\n{result.stderr[-2000:]}")
    return int(collected.group(1).replace(",", ""))


def per_call(stage: str) -> int:
    return (count(stage, LONG) - count(stage, SHORT)) // (LONG - SHORT)


# ---------------------------------------------------------------- the child: one stage in a loop


def _complete(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (none of the measured ones does) to its result, on the spot."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the measured coroutine suspended")


def _drive_loop(call: Callable[[], Any], loops: int) -> None:
    # deque(maxlen=0) consumes the map in C, so callgrind can collect inside deque_init and nowhere else.
    collections.deque(map(lambda _: call(), range(loops)), maxlen=0)


async def _child(stage: str, loops: int) -> None:
    sys.path.insert(0, str(SERVERS_DIR))
    os.environ.setdefault("MLP_PATH", str(WORK / "mlp.onnx"))
    import orjson
    import workloads
    from v2serve_models import AddSub

    from v2serve.event import Event
    from v2serve.http.app import create_app
    from v2serve.models.base import RequestContext
    from v2serve.protocol import decode
    from v2serve.protocol.body import Body
    from v2serve.protocol.outputs import select_outputs
    from v2serve.protocol.response import encode_inference_response
    from v2serve.protocol.types import parse_inference_request
    from v2serve.server import ModelServer
    from v2serve.settings import Settings
    from v2serve.streams.messages import event_from_message, record_for_reply

    body = workloads.add_sub().body
    path = "/v2/models/add_sub/infer"
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
    ]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 9000)}  # fmt: skip
    message = {"type": "http.request", "body": body, "more_body": False}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(reply: dict[str, Any]) -> None:
        sent.append(reply)

    if stage == "grpc":
        await _grpc_child(loops)
        return
    if stage == "floor":
        import floor

        app = floor.app
    else:
        server = ModelServer([AddSub(name="add_sub")], Settings(models=[]))
        app = create_app(server)
    async with app.router.lifespan_context(app):
        if stage in ("asgi", "floor"):
            call: Callable[[], Any] = lambda: _complete(app(dict(scope), receive, send))  # noqa: E731
        else:
            entry = server.registry.resolve("add_sub")
            json_headers = {"content-type": "application/json"}
            stream_headers = [("v2-model", b"add_sub")]  # as benchmarks/kafka.py sends them
            request = parse_inference_request(orjson.loads(body))
            inputs = decode.decode_tensors(entry.schema, request, None)
            outputs = await entry.model.predict(inputs)
            context = RequestContext(id="bench")
            call = {
                # A new Event per request, as a transport builds one: its body is parsed once, then memoised.
                "core": lambda: _complete(
                    server.handle(Event(Body.of(body, json_headers), path, "POST", json_headers))
                ),
                "stream": lambda: record_for_reply(
                    event := event_from_message(body, b"bench", stream_headers, "kafka"),
                    b"bench",
                    _complete(server.handle(event)),
                ),
                "parse": lambda: parse_inference_request(orjson.loads(body)),
                "decode": lambda: decode.decode_tensors(entry.schema, request, None),
                "submit": lambda: _complete(entry.scheduler.submit(inputs, context, None)),
                "encode": lambda: encode_inference_response(
                    model_name="add_sub",
                    model_version=None,
                    request_id="bench",
                    outputs=select_outputs(entry.schema, outputs, None),
                ),
            }[stage]
        for _ in range(200):  # warm: imports done, caches filled, the interpreter's specialisations in place
            call()
        sent.clear()
        _drive_loop(call, loops)
        if stage in ("asgi", "floor"):
            assert sent and sent[-1]["body"].startswith(b'{"model_name"'), sent[-1:]


class _GrpcContext:
    """What the ModelInfer handler asks of grpc.aio's servicer context on a request that succeeds."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("user-agent", "grpc-c/51.0.0"),)

    def time_remaining(self) -> None:
        return None


async def _grpc_child(loops: int) -> None:
    from grpc_vs_http import add_sub_request
    from v2serve_models import AddSub

    from v2serve.grpc.service import InferenceService, method_handlers
    from v2serve.http.app import create_app
    from v2serve.server import ModelServer
    from v2serve.settings import Settings

    server = ModelServer([AddSub(name="add_sub")], Settings(models=[]))
    app = create_app(server)
    message, check = add_sub_request()
    handler = method_handlers(InferenceService(server.core, None))["ModelInfer"]
    serve, serialise, context = handler.unary_unary, handler.response_serializer, _GrpcContext()
    async with app.router.lifespan_context(app):
        call = lambda: serialise(_complete(serve(message, context)))  # noqa: E731
        for _ in range(200):
            call()
        _drive_loop(call, loops)
        from v2serve.grpc.generated import inference_pb2 as pb

        assert check(pb.ModelInferResponse.FromString(call()))  # type: ignore[operator]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="*", metavar="stage", help=f"any of {', '.join(STAGES)}")
    args = parser.parse_args()
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    for stage in args.stages or ["asgi", "floor"]:
        print(f"{stage:8} {per_call(stage):>9,} instructions   {STAGES[stage]}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        asyncio.run(_child(sys.argv[2], int(sys.argv[3])))
    else:
        main()
