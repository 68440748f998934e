"""TorchServe's management API on its own port, called as TorchServe's management document calls it, and its
metrics port; against ``v2serve serve`` started from the command line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from tests.conftest import CLIServer, free_port
from tests.torchserve.conftest import Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ports(store: Store, tmp_path_factory: pytest.TempPathFactory):
    model_store = tmp_path_factory.mktemp("store")
    for name in ("echo_v1", "echo_v2", "raw", "batching"):
        shutil.copy(store[name], model_store / f"{name}.mar")
    management, metrics = free_port(), free_port()
    server = CLIServer(
        "--models", "echo=echo_v1.mar", "--model-store", str(model_store),
        "--torchserve-management-port", str(management), "--torchserve-metrics-port", str(metrics),
        cwd=str(ROOT),
    )  # fmt: skip
    try:
        server.wait_started()
        yield server.url, f"http://127.0.0.1:{management}", f"http://127.0.0.1:{metrics}"
    finally:
        server.stop()


def test_register_describe_predict_and_unregister(ports):
    inference, management, _ = ports
    registered = requests.post(f"{management}/models", params={"url": "raw.mar", "initial_workers": 1}, timeout=60)
    assert registered.status_code == 200, registered.text
    assert registered.json() == {"status": 'Model "raw" Version: 1.0 registered with 1 initial workers'}
    assert requests.post(f"{inference}/predictions/raw", data=b"teapot", timeout=10).status_code == 418
    again = requests.post(f"{management}/models", params={"url": "raw.mar"}, timeout=60)
    assert again.status_code == 409 and again.json()["type"] == "ConflictStatusException"
    (described,) = requests.get(f"{management}/models/raw", timeout=10).json()
    assert described["modelName"] == "raw" and described["modelVersion"] == "1.0"
    assert described["modelUrl"] == "raw.mar" and described["loadedAtStartup"] is False
    assert [worker["status"] for worker in described["workers"]] == ["READY"]
    assert described["responseTimeout"] == 1  # from the archive's model-config.yaml
    gone = requests.delete(f"{management}/models/raw", timeout=30)
    assert gone.json() == {"status": 'Model "raw" unregistered'}
    missing = requests.post(f"{inference}/predictions/raw", data=b"teapot", timeout=10)
    assert missing.status_code == 404 and missing.json()["type"] == "ModelNotFoundException"


def test_registration_options_override_the_archive_config(ports):
    inference, management, _ = ports
    params = {"url": "batching.mar", "model_name": "batcher", "initial_workers": 2, "batch_size": 2,
              "max_batch_delay": 20, "response_timeout": 9}  # fmt: skip
    assert requests.post(f"{management}/models", params=params, timeout=60).status_code == 200
    try:
        (described,) = requests.get(f"{management}/models/batcher", timeout=10).json()
        assert (described["batchSize"], described["maxBatchDelay"], described["responseTimeout"]) == (2, 20, 9)
        assert described["minWorkers"] == 2 and len(described["workers"]) == 2
        answer = requests.post(f"{inference}/predictions/batcher", json=5, timeout=10).json()
        assert answer["value"] == 5
    finally:
        requests.delete(f"{management}/models/batcher", timeout=30)


def test_versions_the_default_and_set_default(ports):
    inference, management, _ = ports
    assert requests.post(f"{management}/models", params={"url": "echo_v2.mar"}, timeout=60).status_code == 200
    try:
        # The version registered first stays the default, as in TorchServe, until set-default.
        assert requests.post(f"{inference}/predictions/echo", data=b"x", timeout=10).json()["version"] == "1.0"
        versions = requests.get(f"{management}/models/echo/all", timeout=10).json()
        assert sorted(v["modelVersion"] for v in versions) == ["1.0", "2.0"]
        refused = requests.delete(f"{management}/models/echo/1.0", timeout=10)
        assert (
            refused.status_code == 403 and refused.json()["message"] == "Cannot remove default version for model echo"
        )
        changed = requests.put(f"{management}/models/echo/2.0/set-default", timeout=10)
        assert changed.json() == {"status": 'Default version successfully updated for model "echo" to "2.0"'}
        assert requests.post(f"{inference}/predictions/echo", data=b"x", timeout=10).json()["version"] == "2.0"
        unknown = requests.put(f"{management}/models/echo/9.0/set-default", timeout=10)
        assert unknown.status_code == 404 and unknown.json()["type"] == "ModelVersionNotFoundException"
    finally:
        requests.put(f"{management}/models/echo/1.0/set-default", timeout=10)
        requests.delete(f"{management}/models/echo/2.0", timeout=30)


def test_scale_workers_swaps_in_the_new_instances(ports):
    inference, management, _ = ports
    scaled = requests.put(f"{management}/models/echo", params={"min_worker": 3, "synchronous": "true"}, timeout=60)
    assert scaled.json() == {"status": "Workers scaled to 3 for model: echo"}
    (described,) = requests.get(f"{management}/models/echo", timeout=10).json()
    assert len(described["workers"]) == 3
    assert requests.post(f"{inference}/predictions/echo", data=b"x", timeout=10).json()["echo"] == "x"
    refused = requests.put(f"{management}/models/echo", params={"min_worker": "many"}, timeout=10)
    assert refused.status_code == 400 and refused.json()["type"] == "BadRequestException"


def test_list_pages_through_the_models(ports):
    _, management, _ = ports
    requests.post(f"{management}/models", params={"url": "raw.mar"}, timeout=60)
    try:
        first = requests.get(f"{management}/models", params={"limit": 1}, timeout=10).json()
        assert first == {"nextPageToken": "1", "models": [{"modelName": "echo", "modelUrl": "echo_v1.mar"}]}
        second = requests.get(f"{management}/models", params={"limit": 1, "next_page_token": 1}, timeout=10).json()
        assert second == {"models": [{"modelName": "raw", "modelUrl": "raw.mar"}]}
    finally:
        requests.delete(f"{management}/models/raw", timeout=30)


def test_a_url_outside_the_store_or_to_download_is_refused(ports):
    _, management, _ = ports
    for url in ("../raw.mar", "/etc/passwd", "https://example.com/m.mar"):
        response = requests.post(f"{management}/models", params={"url": url}, timeout=10)
        assert response.status_code == 400, url
    missing = requests.post(f"{management}/models", params={"url": "absent.mar"}, timeout=10)
    assert missing.status_code == 404 and missing.json()["message"] == "Model not found at: absent.mar"


def test_each_port_answers_its_own_api_only(ports):
    inference, management, metrics = ports
    assert requests.get(f"{management}/ping", timeout=10).status_code == 404
    assert requests.post(f"{management}/predictions/echo", data=b"x", timeout=10).status_code == 404
    assert requests.get(f"{inference}/models", timeout=10).status_code == 404
    scraped = requests.get(f"{metrics}/metrics", timeout=10)
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    assert 'model="echo"' in scraped.text
    assert requests.get(f"{metrics}/models", timeout=10).status_code == 404


def test_changes_follow_the_repository_rules_a_token_when_one_is_set(store: Store, tmp_path):
    shutil.copy(store["raw"], tmp_path / "raw.mar")
    management = free_port()
    server = CLIServer(
        "--model-store", str(tmp_path), "--torchserve-management-port", str(management), cwd=str(ROOT),
        env={"V2SERVE_REPOSITORY__TOKEN": "s3cret"},
    )  # fmt: skip
    try:
        server.wait_started()
        url = f"http://127.0.0.1:{management}/models"
        refused = requests.post(url, params={"url": "raw.mar"}, timeout=30)
        assert refused.status_code == 401 and refused.json()["code"] == 401
        allowed = requests.post(url, params={"url": "raw.mar"}, headers={"authorization": "Bearer s3cret"}, timeout=60)
        assert allowed.status_code == 200, allowed.text
        assert requests.get(url, timeout=10).json()["models"] == [{"modelName": "raw", "modelUrl": "raw.mar"}]
    finally:
        server.stop()
