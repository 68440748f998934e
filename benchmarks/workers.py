"""One v2serve worker process against two, on both cores, over HTTP and gRPC, in one run:

    python3 benchmarks/workers.py --rounds 5 --duration 10

Both servers (``--workers 1`` and ``--workers 2``, HTTP and gRPC, the benchmark's models) start once and
are unpinned: two workers need both cores, and the load generator shares them, as it would on a 2-core host.
The server not being measured is paused (SIGSTOP), so its timers take nothing. Each round measures:

- HTTP: add_sub JSON, wrk with one thread and 32 connections;
- gRPC: add_sub with raw contents, h2load with 16 connections of 2 streams each (a gRPC channel is one
  connection, and ``SO_REUSEPORT`` spreads connections, not calls, over the workers: one channel would
  only ever reach one worker).

It reports req/s, the CPU each server used per request (its threads counted apart: the event loop's
thread, grpcio's threads), how the two workers shared the load, and the paired ratio two workers / one
for each round, with the median over rounds. Results go to ``benchmarks/results/workers-<stamp>.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from grpc_vs_http import SERVICE, add_sub_request, grpc_frame, validate_grpc  # noqa: E402
from run import (  # noqa: E402
    SERVERS_DIR,
    VENVS,
    WORK,
    Server,
    ensure_venvs,
    free_port,
    prepare_models,
    process_tree,
    python,
    server_env,
    stop_all,
    wait_and_validate,
)

TICK = 1 / os.sysconf("SC_CLK_TCK")


@dataclass
class Measure:
    workers: int
    transport: str
    round: int
    rps: float
    cpu_us: float
    """Server CPU (all processes, all threads) per request."""
    threads: dict[str, float] = field(default_factory=dict)
    """CPU per request by thread kind: the event loops ("loop"), grpcio's poller and event-engine threads."""
    shares: list[float] = field(default_factory=list)
    """Each worker process's share of the server's CPU."""


def start(workers: int, onnx_path: Path) -> Server:
    port, grpc_port = free_port(), free_port()
    env = server_env(onnx_path)
    command = [str(python("v2serve")), "-m", "v2serve", "serve", str(WORK / "v2serve"), "--port", str(port),
               "--grpc-port", str(grpc_port), "--workers", str(workers)]  # fmt: skip
    log = WORK / f"workers-{workers}.log"
    process = subprocess.Popen(command, cwd=SERVERS_DIR, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return Server(f"v2serve --workers {workers}", port, process, log, grpc_port)


def thread_ticks(server: Server) -> dict[tuple[int, int], tuple[str, int]]:
    """(process, thread) -> (thread name, user+system ticks so far), for every thread of the server."""
    ticks = {}
    for pid in process_tree(server.process.pid):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            ticks[(pid, int(tid))] = (name, int(fields[11]) + int(fields[12]))
    return ticks


def thread_kind(server: Server, pid: int, tid: int, name: str) -> str:
    if pid == server.process.pid and len(process_tree(server.process.pid)) > 1:
        return "supervisor"
    if tid == pid:
        return "loop"
    return "grpc event engine" if name.startswith("event_engine") else f"other ({name})"


def measure(server: Server, workers: int, transport: str, round_: int, command: list[str], duration: float) -> Measure:
    before = thread_ticks(server)
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    after = thread_ticks(server)
    if transport == "http":
        found = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
        if errors:
            raise RuntimeError(f"wrk saw errors:\n{done.stdout}")
    else:
        found = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", done.stdout)
        failed = re.search(r"requests: .* (\d+) failed, (\d+) errored", done.stdout)
        if failed is None or int(failed.group(1)) + int(failed.group(2)):
            raise RuntimeError(f"h2load saw failures:\n{done.stdout}")
    if found is None:
        raise RuntimeError(f"no rate in:\n{done.stdout}\n{done.stderr}")
    rps = float(found.group(1))
    # h2load's warm-up second is load too, which its rate leaves out
    requests = rps * (duration + (1 if transport == "grpc" else 0))
    by_kind: dict[str, float] = {}
    by_process: dict[int, float] = {}
    total = 0.0
    for key, (name, ticks) in after.items():
        used = (ticks - before.get(key, (name, 0))[1]) * TICK
        total += used
        kind = thread_kind(server, *key, name)
        by_kind[kind] = by_kind.get(kind, 0.0) + used / requests * 1e6
        if kind != "supervisor":
            by_process[key[0]] = by_process.get(key[0], 0.0) + used
    busy = sum(by_process.values()) or 1.0
    shares = sorted((used / busy for used in by_process.values()), reverse=True)
    return Measure(workers, transport, round_, rps, total / requests * 1e6, by_kind, shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    ensure_venvs({"v2serve"})
    if Path(sys.prefix).resolve() != (VENVS / "v2serve").resolve():
        os.execv(str(python("v2serve")), [str(python("v2serve")), __file__, *sys.argv[1:]])
    onnx_path = prepare_models()
    from workloads import add_sub

    message, check = add_sub_request()
    grpc_body = WORK / "add_sub.grpc"
    grpc_body.write_bytes(grpc_frame(message))
    http_body = WORK / "body-add_sub.bin"
    http_body.write_bytes(add_sub().body)
    os.environ.update(BODY_FILE=str(http_body), CONTENT_TYPE="application/json")  # for wrk's post.lua
    servers = {workers: start(workers, onnx_path) for workers in (1, 2)}
    measures: list[Measure] = []
    try:
        for server in servers.values():
            wait_and_validate(server, add_sub(), "add_sub")
            validate_grpc(server, message, check)
        time.sleep(2)  # with two workers, the first answer can come before the second one listens
        for round_ in range(args.rounds):
            order = (1, 2) if round_ % 2 == 0 else (2, 1)
            for workers in order:
                server = servers[workers]
                for other in servers.values():
                    if other is not server:
                        other.pause()
                server.resume()
                wrk = ["wrk", "-t1", "-c32", f"-d{args.duration}s", "-s", str(HERE / "post.lua"),
                       f"{server.url}/v2/models/add_sub/infer"]  # fmt: skip
                h2load = ["h2load", "-c", "16", "-m", "2", "-D", str(args.duration), "--warm-up-time", "1",
                          "-d", str(grpc_body), "-H", "content-type: application/grpc", "-H", "te: trailers",
                          f"http://127.0.0.1:{server.grpc_port}{SERVICE}"]  # fmt: skip
                for transport, command in (("http", wrk), ("grpc", h2load)):
                    result = measure(server, workers, transport, round_, command, args.duration)
                    server.wait_idle()
                    measures.append(result)
                    print(f"round {round_} workers={workers} {transport:4} {result.rps:>9,.0f} req/s "
                          f"{result.cpu_us:6.0f} µs CPU/req  shares {[round(s, 2) for s in result.shares[:workers]]}",
                          flush=True)  # fmt: skip
        resident = {workers: resident_kb(server) for workers, server in servers.items()}
    finally:
        stop_all(servers.values())
    report(measures, resident, args)


def resident_kb(server: Server) -> int:
    total = 0
    for pid in process_tree(server.process.pid):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(found.group(1)) if found else 0
    return total


def report(measures: list[Measure], resident: dict[int, int], args: argparse.Namespace) -> None:
    lines = ["| transport | workers | req/s (median) | server CPU µs/req | by thread, µs/req | workers' shares |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for transport in ("http", "grpc"):
        for workers in (1, 2):
            mine = [m for m in measures if (m.transport, m.workers) == (transport, workers)]
            kinds = sorted({k for m in mine for k, used in m.threads.items() if used >= 1})
            threads = ", ".join(f"{k} {statistics.median(m.threads.get(k, 0.0) for m in mine):.0f}" for k in kinds)
            shares = "/".join(f"{statistics.median(m.shares[i] for m in mine):.2f}" for i in range(workers))
            lines.append(
                f"| {transport} | {workers} | {statistics.median(m.rps for m in mine):,.0f} | "
                f"{statistics.median(m.cpu_us for m in mine):.0f} | {threads} | {shares} |"
            )
    lines += ["", "Two workers / one, paired within each round (median, low-high over rounds):", ""]
    lines += ["| transport | ratio | rounds |", "|---|---|---|"]
    for transport in ("http", "grpc"):
        ratios = []
        for round_ in range(args.rounds):
            one = [m.rps for m in measures if (m.transport, m.workers, m.round) == (transport, 1, round_)]
            two = [m.rps for m in measures if (m.transport, m.workers, m.round) == (transport, 2, round_)]
            if one and two:
                ratios.append(two[0] / one[0])
        lines.append(
            f"| {transport} | {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + " |"
        )
    lines += ["", f"Resident memory, all processes: one worker {resident[1]:,} kB, two workers {resident[2]:,} kB."]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    header = (
        f"# One worker against two {stamp}\n\n`python3 benchmarks/workers.py {' '.join(sys.argv[1:])}`; "
        f"{os.cpu_count()} cores, servers and load generators unpinned, {args.duration} s per cell, "
        f"{args.rounds} round(s). HTTP: wrk -t1 -c32; gRPC: h2load -c16 -m2.\n\n"
    )
    path = HERE / "results" / f"workers-{stamp}.md"
    path.write_text(header + "\n".join(lines) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()
