"""v2serve against real TorchServe 0.12 on the same archives, in one run (issue #28, item 6).

Two archives are built with torch-model-archiver from one handler (``examples/torchserve/mlp_handler.py``: a
BaseHandler on a TorchScript MLP, 64 -> 256 -> 10): ``mlp`` (batch size 1) and ``mlp_batched`` (batchSize 8,
maxBatchDelay 5 ms), one worker each. TorchServe (java) and v2serve serve both, each pinned to core 0 with
one torch thread; wrk on core 1 posts one JSON row per request to ``/predictions/{model}``. Servers take
turns round by round (the idle one is stopped with SIGSTOP), and the table gives each round's paired ratio.

    .venv/bin/python benchmarks/torchserve.py                 # 5 rounds x c=1,8,32, 5 s each
    .venv/bin/python benchmarks/torchserve.py --rounds 1 --duration 2 --concurrency 8

Run it with the test environment's python (torchserve, torch-model-archiver and torch are there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import ROOT, WORK, Server, free_port, stop_all  # noqa: E402

BIN = Path(sys.executable).parent
HANDLER = ROOT / "examples" / "torchserve" / "mlp_handler.py"
ONE_WORKER = "minWorkers: 1\nmaxWorkers: 1\n"
MODELS = {"mlp": ONE_WORKER, "mlp_batched": ONE_WORKER + "batchSize: 8\nmaxBatchDelay: 5\n"}
ROW = [((i * 37) % 17 - 8) / 8 for i in range(64)]
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def build_archives(store: Path) -> None:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    weights = WORK / "mlp.pt"
    torch.jit.script(model).save(str(weights))
    for name, config in MODELS.items():
        config_file = WORK / f"{name}-config.yaml"
        config_file.write_text(config)
        subprocess.run(
            [str(BIN / "torch-model-archiver"), "--model-name", name, "--version", "1.0", "--handler", str(HANDLER),
             "--serialized-file", str(weights), "--config-file", str(config_file), "--export-path", str(store), "-f"],
            check=True,
        )  # fmt: skip


def start_torchserve(store: Path) -> Server:
    work = WORK / "torchserve"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    port, management = free_port(), free_port()
    config = work / "config.properties"
    config.write_text(
        f"inference_address=http://127.0.0.1:{port}\nmanagement_address=http://127.0.0.1:{management}\n"
        f"metrics_address=http://127.0.0.1:{free_port()}\ngrpc_inference_port={free_port()}\n"
        f"grpc_management_port={free_port()}\ninstall_py_dep_per_model=false\ndisable_system_metrics=true\n"
    )
    log = work / "torchserve.log"
    models = ",".join(f"{name}={name}.mar" for name in MODELS)
    command = [
        "taskset", "-c", "0", str(BIN / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
        "--model-store", str(store), "--ts-config", str(config), "--models", models,
    ]  # fmt: skip
    env = {**os.environ, **SINGLE_THREAD, "TMPDIR": str(work), "TEMP": str(work)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server("torchserve", port, process, log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("TorchServe exited:\n" + log.read_text()[-3000:])
        if all(_ready(management, name) for name in MODELS):
            return server
        time.sleep(0.5)  # TorchServe says nothing when its workers are up: /ping answers before
    raise RuntimeError("TorchServe's workers did not start:\n" + log.read_text()[-3000:])


def _ready(management: int, name: str) -> bool:
    try:
        described = requests.get(f"http://127.0.0.1:{management}/models/{name}", timeout=5).json()
        workers = described[0]["workers"]
    except (requests.RequestException, ValueError, KeyError, IndexError, TypeError):
        return False
    return bool(workers) and all(worker["status"] == "READY" for worker in workers)


def start_v2serve(store: Path) -> Server:
    port = free_port()
    log = WORK / "v2serve-torchserve.log"
    command = ["taskset", "-c", "0", str(BIN / "v2serve"), "serve", str(store), "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **SINGLE_THREAD}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = Server("v2serve", port, process, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("v2serve exited:\n" + log.read_text()[-3000:])
        if "Uvicorn running on" in log.read_text():
            return server
        time.sleep(0.2)
    raise RuntimeError("v2serve did not start:\n" + log.read_text()[-3000:])


def check_answers(servers: list[Server]) -> None:
    answers = {}
    for server in servers:
        for name in MODELS:
            response = requests.post(f"{server.url}/predictions/{name}", json=ROW, timeout=30)
            response.raise_for_status()
            answers[server.name, name] = response.json()
    reference = answers["torchserve", "mlp"]
    for key, answer in answers.items():
        if len(answer) != 10 or max(abs(a - b) for a, b in zip(answer, reference, strict=True)) > 1e-5:
            raise RuntimeError(f"{key} answered {answer}, not {reference}")


def measure(server: Server, model: str, concurrency: int, duration: int) -> dict:
    body_file = WORK / "torchserve-row.json"
    body_file.write_text(json.dumps(ROW))
    env = {**os.environ, "BODY_FILE": str(body_file), "CONTENT_TYPE": "application/json", "IHCL": ""}
    cpu_before = server.cpu_seconds()
    completed = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "10s", "-s",
         str(HERE / "post.lua"), f"{server.url}/predictions/{model}"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    cpu = server.cpu_seconds() - cpu_before
    match = re.search(r"V2BENCH (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+) (\d+)", completed.stdout)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{completed.stdout}\n{completed.stderr}")
    count, micros, p50, p99, _, errors = match.groups()
    return {"rps": int(count) / (int(micros) / 1e6), "p50": float(p50) / 1000, "p99": float(p99) / 1000,
            "errors": int(errors), "cpu_us": cpu / max(int(count), 1) * 1e6}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    if shutil.which("java") is None or shutil.which("wrk") is None:
        raise SystemExit("needs java (TorchServe's frontend) and wrk")
    WORK.mkdir(exist_ok=True)
    store = WORK / "torchserve-store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir()
    build_archives(store)
    servers = [start_torchserve(store), start_v2serve(store)]
    results: list[dict] = []
    try:
        check_answers(servers)
        for server in servers:
            server.pause()
        for round_ in range(1, args.rounds + 1):
            for model in MODELS:
                for concurrency in args.concurrency:
                    for server in servers:
                        server.resume()
                        measure(server, model, concurrency, 1)  # warm the connections and the JIT
                        result = measure(server, model, concurrency, args.duration)
                        server.wait_idle()
                        server.pause()
                        results.append(
                            {"server": server.name, "model": model, "c": concurrency, "round": round_, **result}
                        )
                        rps = result["rps"]
                        print(f"round {round_} {model} c={concurrency} {server.name}: {rps:,.0f} req/s", flush=True)
    finally:
        stop_all(servers)
        for server in servers:  # TorchServe's launcher leaves its java frontend and workers behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
    report = render(results, args)
    out = HERE / "results" / f"torchserve-{time.strftime('%Y%m%d-%H%M%S')}.md"
    out.write_text(report)
    print(report)
    print(f"written to {out}")


def render(results: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "# v2serve vs TorchServe 0.12 on the same archives",
        "",
        f"`.venv/bin/python benchmarks/torchserve.py --rounds {args.rounds} --duration {args.duration} "
        f"--concurrency {' '.join(map(str, args.concurrency))}`: servers on core 0 (one torch thread, one "
        "worker), wrk on core 1, servers taking turns each round. Medians over rounds; the ratio is "
        "v2serve / TorchServe within each round (median, lowest, highest).",
        "",
        "| model | c | server | req/s | p50 ms | p99 ms | server CPU µs/req | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault((result["model"], result["c"], result["server"]), []).append(result)
    for (model, c, server), runs in sorted(groups.items()):
        lines.append(
            f"| {model} | {c} | {server} | {statistics.median(r['rps'] for r in runs):,.0f} | "
            f"{statistics.median(r['p50'] for r in runs):.2f} | {statistics.median(r['p99'] for r in runs):.2f} | "
            f"{statistics.median(r['cpu_us'] for r in runs):,.0f} | {sum(r['errors'] for r in runs)} |"
        )
    lines += ["", "| model | c | v2serve / TorchServe (median) | lowest | highest |", "|---|---|---|---|---|"]
    by_key = {(r["model"], r["c"], r["round"], r["server"]): r["rps"] for r in results}
    for model in MODELS:
        for c in args.concurrency:
            ratios = [by_key[model, c, n, "v2serve"] / by_key[model, c, n, "torchserve"]
                      for n in range(1, args.rounds + 1) if (model, c, n, "v2serve") in by_key]  # fmt: skip
            if ratios:
                median, low, high = statistics.median(ratios), min(ratios), max(ratios)
                lines.append(f"| {model} | {c} | {median:.2f} | {low:.2f} | {high:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
