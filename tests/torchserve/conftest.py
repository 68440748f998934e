"""Archives built by ``torch-model-archiver`` (0.12, TorchServe's own tool) from the handlers in
``handlers/``, written as TorchServe's documentation writes them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HANDLERS = Path(__file__).parent / "handlers"
EXAMPLE_HANDLER = Path(__file__).resolve().parents[2] / "examples" / "torchserve" / "mlp_handler.py"

pytest.importorskip("ts", reason="TorchServe's handler library: pip install 'v2serve[torchserve]'")
pytest.importorskip("model_archiver", reason="torch-model-archiver builds the test archives")


@dataclass(frozen=True)
class Store:
    """A model store: the archives by the name a test uses."""

    root: Path

    def __getitem__(self, name: str) -> Path:
        return self.root / f"{name}.mar"


def build_archive(
    into: Path, model_name: str, handler: str, *, version: str = "1.0", file_name: str | None = None,
    serialized_file: Path | None = None, config: str | None = None,
) -> Path:  # fmt: skip
    """``torch-model-archiver --model-name ... --handler ...``; the archive, renamed to ``file_name``."""
    work = into / f".build-{file_name or model_name}"
    work.mkdir(parents=True)
    command = [
        sys.executable, "-m", "model_archiver.model_packaging", "--model-name", model_name, "--version", version,
        "--handler", str(HANDLERS / handler if "/" not in handler else handler), "--export-path", str(work),
    ]  # fmt: skip
    if serialized_file is not None:
        command += ["--serialized-file", str(serialized_file)]
    if config is not None:
        config_file = work / "model-config.yaml"
        config_file.write_text(config)
        command += ["--config-file", str(config_file)]
    # torch-model-archiver assembles an archive in $TMPDIR/<model name>: two test processes building a model of
    # the same name at once would share that folder (and one may leave a file where the other wants it).
    scratch = work / "tmp"
    scratch.mkdir()
    environment = {**os.environ, "TMPDIR": str(scratch)}
    subprocess.run(command, check=True, capture_output=True, timeout=120, env=environment)
    archive = into / f"{file_name or model_name}.mar"
    (work / f"{model_name}.mar").rename(archive)
    shutil.rmtree(work)
    return archive


def scripted_mlp(path: Path) -> Path:
    """A small MLP (4 -> 8 -> 3, fixed seed) saved with TorchScript, as BaseHandler loads a ``.pt``."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    torch.jit.script(model).save(str(path))
    return path


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("model_store")
    weights = scripted_mlp(tmp_path_factory.mktemp("weights") / "mlp.pt")
    build_archive(root, "mlp", str(EXAMPLE_HANDLER), serialized_file=weights)
    build_archive(root, "echo", "function_handler.py", version="1.0", file_name="echo_v1")
    build_archive(root, "echo", "function_handler.py", version="2.0", file_name="echo_v2")
    build_archive(root, "stream", "streaming_handler.py", config="minWorkers: 1\nmaxWorkers: 1\n")
    build_archive(root, "hidden_stream", "hidden_streaming_handler.py", config="minWorkers: 1\nmaxWorkers: 1\n")
    build_archive(
        root,
        "batching",
        "batching_handler.py",
        config="batchSize: 4\nmaxBatchDelay: 500\nminWorkers: 1\nmaxWorkers: 1\n",
    )
    build_archive(root, "raw", "raw_handler.py", config="responseTimeout: 1\nmaxWorkers: 2\n")
    return Store(root)
