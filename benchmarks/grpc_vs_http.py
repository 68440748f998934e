"""gRPC against HTTP, and v2serve's gRPC against MLServer's, measured by one load generator (h2load, from
Debian's nghttp2-client) in one run:

    python3 benchmarks/grpc_vs_http.py --concurrency 1,8,32 --duration 5 --rounds 3

Cells (servers pinned to core 0, h2load to core 1, the other server paused while one is measured):

- add_sub over v2serve HTTP/1.1 JSON (c connections) and over v2serve and MLServer gRPC (one HTTP/2
  connection, c streams, as a gRPC channel multiplexes), the request carrying raw_input_contents as
  tritonclient.grpc sends it;
- the 602 KB tensor (channel_mean, FP32 [1,3,224,224]) over v2serve HTTP binary and gRPC raw contents;
- the floor of any grpcio server (servers/grpc_floor.py: grpc.aio on uvloop answering a fixed response), on
  the add_sub request and on the large tensor's.

h2load counts a gRPC call that failed with a grpc-status as a success (the HTTP status is 200), so every
server's gRPC answer is checked with a real client before anything is measured. Results and the paired
ratios (taken within each round, medians over rounds) go to benchmarks/results/grpc-<stamp>.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import (  # noqa: E402
    VENVS,
    WORK,
    Server,
    ensure_venvs,
    free_port,
    prepare_models,
    python,
    start,
    stop_all,
    wait_and_validate,
)

SERVICE = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class Cell:
    name: str
    server: str
    concurrency: int
    round: int
    rps: float
    mean_ms: float
    failed: int


def grpc_frame(message: bytes) -> bytes:
    """A gRPC message on the wire: not compressed, 4-byte big-endian length, the message."""
    return struct.pack(">?I", False, len(message)) + message


def add_sub_request() -> tuple[bytes, object]:
    import numpy as np

    from v2serve.grpc.generated import inference_pb2 as pb

    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 7, dtype=np.int32)
    request = pb.ModelInferRequest(model_name="add_sub", id="bench")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
    request.raw_input_contents.extend([a.tobytes(), b.tobytes()])

    def check(response: object) -> bool:
        out = [np.frombuffer(raw, dtype=np.int32) for raw in response.raw_output_contents]  # type: ignore[attr-defined]
        names = [o.name for o in response.outputs]  # type: ignore[attr-defined]
        values = dict(zip(names, out, strict=True))
        return bool(
            np.array_equal(values["OUTPUT0"], (a + b).ravel()) and np.array_equal(values["OUTPUT1"], (a - b).ravel())
        )

    return request.SerializeToString(), check


def channel_mean_request() -> tuple[bytes, object]:
    import numpy as np

    from v2serve.grpc.generated import inference_pb2 as pb

    x = np.random.default_rng(11).random((1, 3, 224, 224), dtype=np.float32)
    request = pb.ModelInferRequest(model_name="channel_mean", id="bench")
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    expected = x.mean(axis=(2, 3)).ravel()

    def check(response: object) -> bool:
        raw = response.raw_output_contents[0]  # type: ignore[attr-defined]
        return bool(np.allclose(np.frombuffer(raw, dtype=np.float32), expected, rtol=1e-5))

    return request.SerializeToString(), check


def validate_grpc(server: Server, message: bytes, check: object, timeout: float = 60) -> None:
    import grpc

    from v2serve.grpc.generated import inference_pb2 as pb

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(
        f"127.0.0.1:{server.grpc_port}", options=[("grpc.max_receive_message_length", -1)]
    ) as channel:
        call = channel.unary_unary(
            SERVICE, request_serializer=None, response_deserializer=pb.ModelInferResponse.FromString
        )
        while True:
            try:
                response = call(message, timeout=10)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
    if not check(response):  # type: ignore[operator]
        raise RuntimeError(f"{server.name} answered gRPC wrongly: {str(response)[:300]}")


def h2load(
    url: str, body: Path, headers: dict[str, str], concurrency: int, duration: int, grpc: bool
) -> tuple[float, float, int]:
    """req/s, mean request time (ms) and failed requests of one h2load run."""
    shape = ["-c", "1", "-m", str(concurrency)] if grpc else ["--h1", "-c", str(concurrency), "-m", "1"]
    command = ["taskset", "-c", "1", "h2load", *shape, "-D", str(duration), "--warm-up-time", "1", "-d", str(body)]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", done.stdout)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", done.stdout)
    failed = re.search(r"requests: .* (\d+) failed, (\d+) errored", done.stdout)
    codes = re.search(r"status codes: (\d+) 2xx", done.stdout)
    if rps is None or mean is None or failed is None or codes is None:
        raise RuntimeError(f"h2load printed no summary:\n{done.stdout}\n{done.stderr}")
    mean_ms = _ms(mean.group(1))
    return float(rps.group(1)), mean_ms, int(failed.group(1)) + int(failed.group(2))


def _ms(value: str) -> float:
    number = float(re.sub(r"[a-z]+$", "", value))
    unit = re.search(r"[a-z]+$", value).group(0)  # type: ignore[union-attr]
    return number * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_venvs({"v2serve"})
    if Path(sys.prefix).resolve() != (VENVS / "v2serve").resolve():
        os.execv(str(python("v2serve")), [str(python("v2serve")), __file__, *sys.argv[1:]])
    ensure_venvs({"mlserver"})
    onnx_path = prepare_models()
    from workloads import add_sub, large_tensor_binary

    small, small_check = add_sub_request()
    large, large_check = channel_mean_request()
    bodies = {
        "add_sub.grpc": grpc_frame(small),
        "channel_mean.grpc": grpc_frame(large),
        "add_sub.json": add_sub().body,
        "channel_mean.bin": large_tensor_binary().body,
    }
    for name, content in bodies.items():
        (WORK / name).write_bytes(content)
    binary = large_tensor_binary()
    binary_headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(binary.header_length),
    }
    grpc_headers = {"content-type": "application/grpc", "te": "trailers"}
    servers = {name: start(name, onnx_path, grpc_port=free_port()) for name in ("v2serve", "mlserver", "grpc_floor")}
    cells: list[Cell] = []
    try:
        for server in servers.values():
            if server.name != "grpc_floor":  # it serves no HTTP
                wait_and_validate(server, add_sub(), "add_sub")
            validate_grpc(server, small, small_check)
        validate_grpc(servers["v2serve"], large, large_check)
        wait_and_validate(servers["v2serve"], binary, "channel_mean")
        plan = [
            ("add_sub http json", "v2serve", False, "add_sub.json", {"content-type": "application/json"}),
            ("add_sub grpc", "v2serve", True, "add_sub.grpc", grpc_headers),
            ("add_sub grpc", "mlserver", True, "add_sub.grpc", grpc_headers),
            ("add_sub grpc", "grpc_floor", True, "add_sub.grpc", grpc_headers),
            ("channel_mean http binary", "v2serve", False, "channel_mean.bin", binary_headers),
            ("channel_mean grpc raw", "v2serve", True, "channel_mean.grpc", grpc_headers),
            ("channel_mean grpc raw", "grpc_floor", True, "channel_mean.grpc", grpc_headers),
        ]  # fmt: skip
        for round_ in range(args.rounds):
            for concurrency in map(int, args.concurrency.split(",")):
                order = plan[round_ % len(plan) :] + plan[: round_ % len(plan)]
                for name, server_name, is_grpc, body, headers in order:
                    server = servers[server_name]
                    for other in servers.values():
                        if other is not server:
                            other.pause()
                    server.resume()
                    model = name.split()[0]
                    url = (
                        f"http://127.0.0.1:{server.grpc_port}{SERVICE}"
                        if is_grpc
                        else f"{server.url}/v2/models/{model}/infer"
                    )
                    rps, mean_ms, failed = h2load(url, WORK / body, headers, concurrency, args.duration, is_grpc)
                    server.wait_idle()
                    cells.append(Cell(name, server_name, concurrency, round_, rps, mean_ms, failed))
                    print(f"{name:>26} {server_name:<9} c={concurrency:<3} {rps:>9,.0f} req/s  mean {mean_ms:7.2f} ms  "
                          f"failed {failed}", flush=True)  # fmt: skip
    finally:
        stop_all(servers.values())
    write_report(cells, args)


RATIOS = [
    ("v2serve gRPC / grpc.aio no-op floor (add_sub)", ("add_sub grpc", "v2serve"), ("add_sub grpc", "grpc_floor"), 0.9),
    ("v2serve gRPC / MLServer gRPC (add_sub)", ("add_sub grpc", "v2serve"), ("add_sub grpc", "mlserver"), 2.5),
    ("v2serve gRPC raw / no-op floor, same 602 KB payload", ("channel_mean grpc raw", "v2serve"),
     ("channel_mean grpc raw", "grpc_floor"), 0.9),
    ("v2serve gRPC / v2serve HTTP JSON (add_sub)", ("add_sub grpc", "v2serve"), ("add_sub http json", "v2serve"), 0.0),
    ("v2serve gRPC raw / HTTP binary (602 KB tensor)", ("channel_mean grpc raw", "v2serve"),
     ("channel_mean http binary", "v2serve"), 0.0),
]  # fmt: skip


def write_report(cells: list[Cell], args: argparse.Namespace) -> None:
    lines = ["| cell | server | c | req/s (median) | mean ms (median) | failed |", "|---|---|---|---|---|---|"]
    keys = sorted({(c.name, c.server, c.concurrency) for c in cells}, key=lambda k: (k[0], k[1], k[2]))
    for name, server, concurrency in keys:
        mine = [c for c in cells if (c.name, c.server, c.concurrency) == (name, server, concurrency)]
        lines.append(
            f"| {name} | {server} | {concurrency} | {statistics.median(c.rps for c in mine):,.0f} | "
            f"{statistics.median(c.mean_ms for c in mine):.2f} | {sum(c.failed for c in mine)} |"
        )
    lines += ["", "Paired ratios (req/s), each taken within one round; median over rounds (target):", ""]
    lines += ["| ratio | " + " | ".join(f"c={c}" for c in args.concurrency.split(",")) + " | target |"]
    lines += ["|---|" + "---|" * (len(args.concurrency.split(",")) + 1)]
    for label, top, bottom, target in RATIOS:
        row = []
        for concurrency in map(int, args.concurrency.split(",")):
            ratios = []
            for round_ in range(args.rounds):
                a = [c.rps for c in cells if (c.name, c.server, c.concurrency, c.round) == (*top, concurrency, round_)]
                b = [
                    c.rps for c in cells if (c.name, c.server, c.concurrency, c.round) == (*bottom, concurrency, round_)
                ]
                if a and b and b[0]:
                    ratios.append(a[0] / b[0])
            row.append(f"{statistics.median(ratios):.2f}" if ratios else "-")
        lines.append(f"| {label} | " + " | ".join(row) + (f" | ≥{target} |" if target else " | (context) |"))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    header = (
        f"# gRPC against HTTP {stamp}\n\n`python3 benchmarks/grpc_vs_http.py {' '.join(sys.argv[1:])}`; servers on "
        f"core 0, h2load on core 1, {args.duration} s per cell, {args.rounds} round(s).\n\n"
    )
    path = out / f"grpc-{stamp}.md"
    path.write_text(header + "\n".join(lines) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()
