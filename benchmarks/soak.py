"""Soak: minutes of mixed good and hostile requests at about 80% of capacity; does memory or latency drift?

    .venv/bin/python benchmarks/soak.py                    # 10 minutes, as the hardening issue asks
    .venv/bin/python benchmarks/soak.py --duration 60      # a quick look

``v2serve serve`` (the examples, wordllama, an MLRun-style model; gRPC on) runs pinned to core 0; the load
generator (asyncio, raw HTTP/1.1 on keep-alive connections, grpc.aio beside) runs pinned to core 1. First a
closed-loop burst measures capacity (what this generator gets through at full speed); then an open loop paces
requests at ``--load`` (0.8) of it for ``--duration`` seconds. Every front-end is in the mix: v2 (half the
requests), TorchServe's form upload, KServe v1, Ingrain's embed_text, an MLRun-style document model, and gRPC
beside HTTP (about one call in twenty). One request in four is hostile: malformed JSON, an unknown model, an
unknown operation (a new name each time, which must not add a metric series), a binary request whose shape
lies about its size, a truncated gzip body, data of the wrong shape, a nested multipart form, KServe v1
instances that are not a list, an Ingrain image download that sets Host, a data_url spelling loopback as one
number, a document without inputs, gRPC bytes that are no message and raw contents shorter than their shape; a
scrape of /metrics now and then. Every answer's status is checked against what that request must get.

Reported (and written to benchmarks/results/soak-<time>.{md,json}): resident memory at the start of the
paced phase (after a 30 s warm-up) and at its end, the growth in percent (the issue's bound: under 5%), and
p99 latency of the first and the last minute of the paced phase, with their drift (bound: under 10%).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gzip
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from run import ROOT, python

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


@dataclass(frozen=True)
class Request:
    kind: str
    raw: bytes
    expected: int


def http_request(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: soak", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def add_sub_body(values: list[int]) -> bytes:
    tensors = [{"name": f"INPUT{i}", "shape": [1, 16], "datatype": "INT32", "data": values} for i in (0, 1)]
    return json.dumps({"inputs": tensors}).encode()


def form(parts: list[bytes], boundary: str = "soak") -> tuple[bytes, dict[str, str]]:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + boundary.encode() + b"--\r\n", {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def request_mix() -> list[tuple[float, object]]:
    """Good requests through every HTTP front-end (v2, TorchServe, KServe v1, Ingrain, an MLRun-style
    model), and hostile ones aimed at each."""
    good = Request("good", http_request("/v2/models/add_sub/infer", add_sub_body(list(range(16)))), 200)
    lying = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [10**9], "datatype": "BYTES", "parameters": {"binary_data_size": 4}}]}
    ).encode()
    nested = b"".join(b'--in\r\ncontent-disposition: form-data; name="x"\r\n\r\nv\r\n' for _ in range(2000))
    nested_form = form([b'content-disposition: form-data; name="data"\r\ncontent-type: multipart/mixed; boundary=in'
                        b"\r\n\r\n" + nested + b"--in--\r\n"])  # fmt: skip
    file_form = form([b'content-disposition: form-data; name="data"; filename="a.bin"\r\n\r\n' + bytes(range(256))])
    json_type = {"Content-Type": "application/json"}
    front_ends = [
        Request("torchserve", http_request("/predictions/echo_bytes", *file_form), 200),
        Request("kserve_v1", http_request("/v1/models/iris:predict", b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'), 200),
        Request("ingrain", http_request("/embed_text", b'{"name": "wordllama", "text": ["soak"]}', json_type), 200),
        Request("mlrun", http_request("/v2/models/document/infer", b'{"inputs": [[1, 2], [3, 4]]}'), 200),
    ]
    hostile = [
        Request("malformed", http_request("/v2/models/add_sub/infer", b'{"inputs": ['), 400),
        Request("unknown_model", http_request("/v2/models/nope/infer", add_sub_body(list(range(16)))), 404),
        Request("wrong_shape", http_request("/v2/models/add_sub/infer", add_sub_body(list(range(15)))), 400),
        Request(
            "lying_binary",
            http_request(
                "/v2/models/add_sub/infer", lying + b"\0\0\0\0", {"Inference-Header-Content-Length": str(len(lying))}
            ),
            400,
        ),
        Request(
            "truncated_gzip",
            http_request(
                "/v2/models/add_sub/infer",
                gzip.compress(add_sub_body(list(range(16))))[:-5],
                {"Content-Encoding": "gzip"},
            ),
            400,
        ),
        Request("nested_form", http_request("/predictions/echo_bytes", *nested_form), 400),
        Request("kserve_v1_bad", http_request("/v1/models/iris:predict", b'{"instances": "x"}'), 400),
        Request(
            "ingrain_host_header",
            http_request(
                "/embed_image",
                b'{"name": "wordllama", "image": "http://example.com/a.png", "image_download_headers": {"Host": "x"}}',
                json_type,
            ),
            400,
        ),
        Request(
            "loopback_data_url",
            http_request("/v2/models/echo_bytes/infer", b'{"data_url": "http://2130706433/a"}'),
            403,
        ),
        Request("mlrun_no_inputs", http_request("/v2/models/document/infer", b'{"x": 1}'), 400),
    ]
    mix: list[tuple[float, object]] = [(0.5, good), *((0.06, r) for r in front_ends)]
    mix += [(0.02, r) for r in hostile]
    mix.append((0.039, "unknown_op"))
    mix.append((0.001, Request("metrics", b"GET /metrics HTTP/1.1\r\nHost: soak\r\n\r\n", 200)))
    return mix


def pick(mix: list[tuple[float, object]], rng: random.Random, counter: list[int]) -> Request:
    choice = rng.choices([item for _, item in mix], weights=[weight for weight, _ in mix])[0]
    if choice == "unknown_op":
        counter[0] += 1  # a new operation name every time: it must not grow the metrics
        return Request("unknown_op", http_request(f"/v2/models/add_sub/op{counter[0]}", b"{}"), 404)
    assert isinstance(choice, Request)
    return choice


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() == "close"


class Load:
    def __init__(self, port: int, grpc_port: int, seed: int) -> None:
        self.port = port
        self.grpc_port = grpc_port
        self.rng = random.Random(seed)
        self.mix = request_mix()
        self.counter = [0]
        self.samples: list[tuple[float, float, str]] = []  # (start, latency s, kind)
        self.wrong: dict[str, int] = {}

    async def connection(self, until: float, interval: float | None) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        due = loop.time()
        while loop.time() < until:
            request = pick(self.mix, self.rng, self.counter)
            started = time.perf_counter()
            writer.write(request.raw)
            status, closed = await read_response(reader)
            self.samples.append((started, time.perf_counter() - started, request.kind))
            if status != request.expected:
                self.wrong[f"{request.kind}:{status}"] = self.wrong.get(f"{request.kind}:{status}", 0) + 1
            if closed:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            if interval is not None:
                due += interval
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
        writer.close()

    async def grpc_channel(self, until: float, interval: float) -> None:
        """gRPC beside HTTP, one call every ``interval`` s: good add_sub calls, and calls for a model that
        does not exist, with bytes that are no message, and with raw contents shorter than the shape."""
        import grpc

        sys.path.insert(0, str(ROOT))
        from v2serve.grpc.generated import inference_pb2 as pb

        good = pb.ModelInferRequest(model_name="add_sub")
        for name in ("INPUT0", "INPUT1"):
            good.inputs.add(name=name, datatype="INT32", shape=[1, 16])
            good.raw_input_contents.append(bytes(64))
        short = pb.ModelInferRequest()
        short.CopyFrom(good)
        short.raw_input_contents[1] = bytes(60)
        calls = [
            ("grpc", good.SerializeToString(), grpc.StatusCode.OK),
            (
                "grpc_unknown_model",
                pb.ModelInferRequest(model_name="no").SerializeToString(),
                grpc.StatusCode.NOT_FOUND,
            ),
            ("grpc_not_a_message", b"\xff\xff\xff", grpc.StatusCode.INVALID_ARGUMENT),
            ("grpc_short_contents", short.SerializeToString(), grpc.StatusCode.INVALID_ARGUMENT),
        ]
        loop = asyncio.get_running_loop()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            due = loop.time()
            while loop.time() < until:
                kind, message, expected = self.rng.choices(calls, weights=[0.7, 0.1, 0.1, 0.1])[0]
                started = time.perf_counter()
                try:
                    await infer(message, timeout=10)
                    status = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    status = exc.code()
                self.samples.append((started, time.perf_counter() - started, kind))
                if status != expected:
                    self.wrong[f"{kind}:{status.name}"] = self.wrong.get(f"{kind}:{status.name}", 0) + 1
                due += interval
                await asyncio.sleep(max(0.0, due - loop.time()))

    async def run(self, seconds: float, connections: int, rate: float | None) -> None:
        until = asyncio.get_running_loop().time() + seconds
        interval = None if rate is None else connections / rate
        grpc_interval = 0.01 if rate is None else 20 / rate  # about one call in twenty
        await asyncio.gather(
            *(self.connection(until, interval) for _ in range(connections)), self.grpc_channel(until, grpc_interval)
        )


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98] if len(latencies) > 100 else max(latencies)


SOAK_TARGETS = ["examples", "examples/embeddings/wordllama", str(HERE / "servers" / "soak_document")]
"""The examples (add_sub, echo_bytes, iris), a text embedding model for Ingrain's routes, an MLRun-style one."""


def start_server(port: int, grpc_port: int) -> subprocess.Popen[bytes]:
    # The benchmark venv (run.py builds it: httptools and uvloop, as deployed) when there is one.
    interpreter = python("v2serve") if python("v2serve").exists() else Path(sys.executable)
    command = ["taskset", "-c", "0", str(interpreter), "-m", "v2serve", "serve", *SOAK_TARGETS, "--port", str(port),
               "--grpc-port", str(grpc_port)]  # fmt: skip
    # http data_urls allowed, so that a loopback address spelled as one number meets the address check.
    env = {**os.environ, "V2SERVE_DATA__PROTOCOLS": '["http", "https"]'}
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not start")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="seconds of paced load (default 600)")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of the measured capacity (default 0.8)")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    port, grpc_port = free_port(), free_port()
    server = start_server(port, grpc_port)
    try:
        capacity_run = Load(port, grpc_port, seed=1)
        asyncio.run(capacity_run.run(10, args.connections, None))
        capacity = len(capacity_run.samples) / 10
        rate = capacity * args.load
        print(f"capacity {capacity:.0f} req/s through this generator; pacing at {rate:.0f} req/s", flush=True)
        warm = Load(port, grpc_port, seed=2)
        asyncio.run(warm.run(30, args.connections, rate))
        rss_start = rss_kb(server.pid)
        paced = Load(port, grpc_port, seed=3)
        asyncio.run(paced.run(args.duration, args.connections, rate))
        rss_end = rss_kb(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    report(args, capacity, rate, rss_start, rss_end, paced)


def report(args: argparse.Namespace, capacity: float, rate: float, rss_start: int, rss_end: int, load: Load) -> None:
    begin = load.samples[0][0]
    end = load.samples[-1][0]
    first = [latency for started, latency, _ in load.samples if started - begin < 60]
    last = [latency for started, latency, _ in load.samples if end - started < 60]
    result = {
        "duration_s": args.duration,
        "capacity_rps": round(capacity),
        "paced_rps": round(rate),
        "achieved_rps": round(len(load.samples) / max(end - begin, 1e-9)),
        "requests": len(load.samples),
        "by_kind": dict(sorted(collections.Counter(kind for *_, kind in load.samples).items())),
        "unexpected_statuses": load.wrong,
        "rss_start_mb": round(rss_start / 1024, 1),
        "rss_end_mb": round(rss_end / 1024, 1),
        "rss_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 2),
        "p99_first_minute_ms": round(1000 * p99(first), 3),
        "p99_last_minute_ms": round(1000 * p99(last), 3),
    }
    result["p99_drift_pct"] = round(100 * (result["p99_last_minute_ms"] / result["p99_first_minute_ms"] - 1), 2)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"soak-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Soak", "", f"`python3 benchmarks/soak.py --duration {args.duration:g}`", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in result.items()]
    (RESULTS / f"soak-{stamp}.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
