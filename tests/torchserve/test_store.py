"""A model store holding TorchServe archives beside v2serve's own model folders serves both; an archive is
named by its manifest, or by ``name=file.mar`` as TorchServe's ``--models`` names it."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import pytest
import requests

from tests.conftest import CLIServer
from tests.torchserve.conftest import Store
from v2serve.data.archives import extract
from v2serve.engine.loader import models_from_target
from v2serve.models.torchserve import TorchServeArchive

ROOT = Path(__file__).resolve().parents[2]


def test_a_store_of_archives_and_model_folders_serves_both(store: Store, tmp_path):
    root = tmp_path / "model_store"
    root.mkdir()
    shutil.copy(store["echo_v1"], root / "echo_v1.mar")
    shutil.copy(store["raw"], root / "raw.mar")
    shutil.copytree(ROOT / "examples" / "add_sub", root / "add_sub")
    server = CLIServer(str(root), cwd=str(ROOT))
    try:
        server.wait_started()
        echoed = requests.post(f"{server.url}/predictions/echo", data=b"hi", timeout=10)
        assert echoed.json() == {"version": "1.0", "echo": "hi"}
        teapot = requests.post(f"{server.url}/predictions/raw", data=b"teapot", timeout=10)
        assert teapot.status_code == 418
        row = {
            "inputs": [{"name": f"INPUT{i}", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16} for i in (0, 1)]
        }
        added = requests.post(f"{server.url}/v2/models/add_sub/infer", json=row, timeout=10)
        assert added.json()["outputs"][0]["data"] == [2] * 16
    finally:
        server.stop()


def test_an_archive_is_named_by_its_manifest_or_by_name_equals(store: Store, tmp_path):
    (model,) = models_from_target(str(store["echo_v2"]))
    assert isinstance(model, TorchServeArchive) and (model.name, model.version) == ("echo", "2.0")
    (renamed,) = models_from_target("greeter=echo_v2.mar", store=str(store.root))
    assert (renamed.name, renamed.version) == ("greeter", "2.0")
    with pytest.raises(ValueError, match="no archive"):
        models_from_target("greeter=missing.mar", store=str(store.root))


def test_an_extracted_archive_serves_as_its_mar_does(store: Store, tmp_path):
    folder = extract(store["echo_v1"], tmp_path / "echo")
    (model,) = models_from_target(str(folder))
    assert isinstance(model, TorchServeArchive) and model.name == "echo"


def test_the_archive_config_maps_onto_batching_instances_and_the_deadline(store: Store):
    batching = TorchServeArchive(model_path=str(store["batching"]))
    assert (batching.max_batch_size, batching.max_batch_delay_ms, batching.instances) == (4, 500.0, 1)
    raw = TorchServeArchive(model_path=str(store["raw"]))
    assert (raw.max_batch_size, raw.timeout_s, raw.instances) == (0, 1.0, 2)
    overridden = TorchServeArchive(model_path=str(store["raw"]), max_batch_size=8, instances=1)
    assert (overridden.max_batch_size, overridden.instances) == (8, 1)


def test_a_zip_that_is_no_archive_is_refused_with_what_it_lacks(tmp_path):
    archive = tmp_path / "plain.mar"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("handler.py", "")
    with pytest.raises(ValueError, match=r"has no MAR-INF/MANIFEST.json: is it a TorchServe model archive"):
        TorchServeArchive(model_path=str(archive))


def test_a_handler_that_is_neither_a_file_nor_a_default_handler_fails_to_load_with_why(tmp_path, monkeypatch):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    archive = tmp_path / "bad.mar"
    manifest = b'{"model": {"modelName": "bad", "handler": "nowhere.py", "modelVersion": "1"}}'
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("MAR-INF/MANIFEST.json", manifest)
    model = TorchServeArchive(model_path=str(archive))
    with pytest.raises(ValueError, match="neither a file of the archive nor one of TorchServe's default handlers"):
        model.load()
    assert list(temporary.iterdir()) == []  # what the failed load extracted is gone
