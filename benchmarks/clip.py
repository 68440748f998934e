"""CLIP image and text embeddings, one item per request at concurrency 32, served by v2serve against the
model's own ``encode_image``/``encode_text`` called directly at the batch size the server formed:

    .venv/bin/python benchmarks/clip.py --rounds 3 --duration 20

The model is open_clip's ViT-B-32 with random weights (a fixed seed: no weights are downloadable here),
saved once in open_clip's hub layout and served by the ``open_clip`` runtime through Ingrain's routes
(``/embed_image`` with a base64 JPEG of 640x480, ``/embed_text`` with a sentence). The server runs on core 0
with one torch thread, wrk on core 1; each round measures images then texts, and after each the direct calls
in a process pinned to core 0, on batches of the size v2serve formed (requests over predict calls, from its
statistics), doing the same work per item: decoding the JPEG and the model's own transform, or the
tokenizer. Before anything is measured, the served vectors are checked against open_clip's own. Ratios are
paired within a round, medians over rounds; results go to benchmarks/results/clip-<stamp>.md.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import embeddings  # noqa: E402
from embeddings import (  # noqa: E402
    ONE_THREAD,
    Target,
    batch_stats,
    free_port,
    get_json,
    lua_script,
    pinned,
    run_direct,
    sentences,
    write_report,
    wrk,
)

WORK = HERE / ".work" / "clip"
ARCHITECTURE = "ViT-B-32"
MODEL = "clip"
TARGET = 0.9


def make_model(folder: Path) -> None:
    """ViT-B-32 with random weights (seed 0), in open_clip's hub layout."""
    if (folder / "open_clip_model.safetensors").exists():
        return
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": open_clip.get_model_config(ARCHITECTURE), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    save_file(open_clip.create_model(f"local-dir:{folder}").state_dict(), str(folder / "open_clip_model.safetensors"))


def photos(count: int = 64) -> list[bytes]:
    """640x480 JPEGs of smooth random colour fields (compressible as photographs are; about 20 KB each)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(3)
    images = []
    for _ in range(count):
        small = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(small).resize((640, 480), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def start(folder: Path) -> Target:
    directory = WORK / "model"
    directory.mkdir(parents=True, exist_ok=True)
    settings = {"name": MODEL, "implementation": "open_clip", "model_path": str(folder), "args": {"torch_threads": 1}}
    (directory / "model-settings.json").write_text(json.dumps(settings))
    port = free_port()
    log = (WORK / "v2serve.log").open("wb")
    command = [sys.executable, "-m", "v2serve", "serve", str(directory), "--port", str(port)]
    process = subprocess.Popen(pinned(command), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ONE_THREAD})
    return Target("v2serve", port, process, "", "")


def for_route(target: Target, name: str, path: str, body: str) -> Target:
    return Target(name, target.port, target.process, path, body)


def wait_ready(target: Target) -> None:
    deadline = time.monotonic() + 300
    while target.process.poll() is None and time.monotonic() < deadline:
        try:
            get_json(f"{target.url}/v2/models/{MODEL}/ready")
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"v2serve did not start; see {WORK / 'v2serve.log'}")


CHECK = """
import base64, io, json, sys
import numpy as np, open_clip, torch
from PIL import Image
folder, text, image = sys.argv[1], sys.argv[2], base64.b64decode(sys.argv[3])
model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
with torch.inference_mode():
    t = model.eval().encode_text(tokenizer([text]), normalize=True)[0]
    i = model.encode_image(preprocess(Image.open(io.BytesIO(image)).convert("RGB"))[None], normalize=True)[0]
print(json.dumps([t.tolist(), i.tolist()]))
"""


def check_vectors(target: Target, folder: Path, text: str, image: bytes) -> None:
    encoded = base64.b64encode(image).decode()
    done = subprocess.run([sys.executable, "-c", CHECK, str(folder), text, encoded], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    expected_text, expected_image = json.loads(done.stdout)
    served_text = get_json(f"{target.url}/embed_text", json.dumps({"name": MODEL, "text": text}).encode())
    served_image = get_json(f"{target.url}/embed_image", json.dumps({"name": MODEL, "image": encoded}).encode())
    for kind, served, expected in (("text", served_text, expected_text), ("image", served_image, expected_image)):
        cosine = sum(a * b for a, b in zip(served["embeddings"][0], expected, strict=True))
        if cosine < 0.9999:
            raise SystemExit(f"v2serve's {kind} vector is at cosine {cosine:.6f} from open_clip's")
        print(f"{kind}: cosine {cosine:.6f} to open_clip's own", flush=True)


DIRECT = """
import base64, io, json, sys, time
import open_clip, torch
from PIL import Image
torch.set_num_threads(1)
kind, folder, batch, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
items = json.loads(open(sys.argv[5]).read())
model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
model.eval()
tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
if kind == "image":
    items = [base64.b64decode(item) for item in items]
    prepare = lambda chunk: torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in chunk])
    encode = model.encode_image
else:
    prepare, encode = tokenizer, model.encode_text
def run(chunk):
    with torch.inference_mode():
        return encode(prepare(chunk)).numpy()
batches = [items[i:i + batch] for i in range(0, len(items) - batch + 1, batch)] or [items[:batch]]
run(batches[0])
done, started, i = 0, time.perf_counter(), 0
while time.perf_counter() - started < seconds:
    run(batches[i % len(batches)]); done += len(batches[i % len(batches)]); i += 1
print("DIRECT", done / (time.perf_counter() - started))
"""


def direct(kind: str, folder: Path, batch: int, seconds: int, items: list[str]) -> float:
    listing = WORK / f"{kind}-items.json"
    listing.write_text(json.dumps(items))
    return run_direct([sys.executable, "-c", DIRECT, kind, str(folder), str(batch), str(seconds), str(listing)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    embeddings.WORK.mkdir(parents=True, exist_ok=True)  # where lua_script writes
    folder = WORK / "vit-b-32"
    make_model(folder)
    images = [base64.b64encode(image).decode() for image in photos()]
    texts = sentences(500)
    server = start(folder)
    rows: list[dict[str, object]] = []
    try:
        wait_ready(server)
        check_vectors(server, folder, texts[0], base64.b64decode(images[0]))
        routes = {
            "image": (for_route(server, "v2serve-image", "/embed_image", '{"name": "clip", "image": %s}'), images),
            "text": (for_route(server, "v2serve-text", "/embed_text", '{"name": "clip", "text": %s}'), texts),
        }
        scripts = {kind: lua_script(target, items) for kind, (target, items) in routes.items()}
        for number in range(1, args.rounds + 1):
            for kind, (target, items) in routes.items():
                wrk(target, scripts[kind], args.warmup)
                before = batch_stats(server, MODEL)
                cell = wrk(target, scripts[kind], args.duration)
                after = batch_stats(server, MODEL)
                cell["batch"] = (after[0] - before[0]) / max(1, after[1] - before[1])
                rows.append({"round": number, "cell": target.name, **cell})
                print(number, target.name, {k: round(v, 2) for k, v in cell.items()}, flush=True)
                batch = max(1, round(cell["batch"]))
                per_s = direct(kind, folder, batch, args.duration, items)
                rows.append({"round": number, "cell": f"direct-{kind}", "per_s": per_s, "batch": batch})
                print(number, f"direct-{kind}", round(per_s, 2), "at batch", batch, flush=True)
    finally:
        server.process.terminate()
        server.process.wait(20)
    report(rows, args)


def report(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    heading = [
        f"# CLIP ({ARCHITECTURE}, random weights): one item per request at concurrency 32",
        "",
        f"`.venv/bin/python benchmarks/clip.py --rounds {args.rounds} --duration {args.duration}`: v2serve and the "
        "direct calls on core 0 with one torch thread, wrk on core 1.",
    ]
    ratios: list[tuple[str, str, str, float | None]] = [
        (f"v2serve / direct encode_{kind} (at v2serve's batch)", f"v2serve-{kind}", f"direct-{kind}", TARGET)
        for kind in ("image", "text")
    ]
    write_report(rows, heading, "items/s", ratios, "clip")


if __name__ == "__main__":
    main()
