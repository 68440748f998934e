"""Model artifacts on S3 (moto): fetched once into the cache, reused after a restart without asking the store,
and never left half-written."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import free_port, serve_in_process
from tests.data.conftest import s3_options
from tests.fixtures import NpyWeights
from v2serve.data.artifacts import ArtifactCache
from v2serve.settings import DataSettings

pytestmark = pytest.mark.anyio
WEIGHTS = np.arange(6, dtype=np.float32).reshape(2, 3)
REQUEST = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 1]}]}
URL = "s3://v2serve-data/models/weights.npy"


@pytest.fixture
def uploaded(s3):
    endpoint, client = s3
    buffer = io.BytesIO()
    np.save(buffer, WEIGHTS)
    client.put_object(Bucket="v2serve-data", Key="models/weights.npy", Body=buffer.getvalue())
    return endpoint


def settings(cache: Path, endpoint: str, **extra) -> dict:
    return {"data": DataSettings(model_cache_dir=str(cache), storage_options={"s3": s3_options(endpoint)}, **extra)}


async def test_s3_model_loads_is_cached_and_restarts_from_the_cache_without_the_store(tmp_path, uploaded):
    cache = tmp_path / "cache"
    async with serve_in_process(NpyWeights(name="w", model_path=URL), **settings(cache, uploaded)) as client:
        first = await client.post("/v2/models/w/infer", json=REQUEST)
    assert first.json()["outputs"][0]["data"] == [3.0, 5.0, 7.0]
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == ["artifact.json", "weights.npy"]

    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: any request to the store would fail
    async with serve_in_process(NpyWeights(name="w", model_path=URL), **settings(cache, nowhere)) as client:
        again = await client.post("/v2/models/w/infer", json=REQUEST)
    assert again.status_code == 200 and again.json()["outputs"] == first.json()["outputs"]

    revalidating = settings(cache, nowhere, revalidate_artifacts=True)
    async with serve_in_process(NpyWeights(name="w", model_path=URL), **revalidating) as client:
        ready = (await client.get("/v2/models/w/ready")).json()
    assert ready["state"] == "FAILED"


def test_a_failed_download_leaves_no_entry_and_the_next_one_succeeds(tmp_path, uploaded, monkeypatch):
    cache = ArtifactCache(DataSettings(model_cache_dir=str(tmp_path), storage_options={"s3": s3_options(uploaded)}))
    real = cache._filesystem

    class Breaking:
        def __init__(self, fs):
            self.fs = fs

        def info(self, path):
            return self.fs.info(path)

        def get_file(self, path, local, **kwargs):  # fsspec's signature: callback=...
            Path(local).write_bytes(b"\x93NUMPY half")
            raise ConnectionError("connection reset while downloading")

    monkeypatch.setattr(cache, "_filesystem", lambda protocol: Breaking(real(protocol)))
    with pytest.raises(ConnectionError):
        cache.local_path(URL)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []

    monkeypatch.setattr(cache, "_filesystem", real)
    path = cache.local_path(URL)
    np.testing.assert_array_equal(np.load(path), WEIGHTS)


def test_local_paths_are_used_as_they_are(tmp_path):
    cache = ArtifactCache(DataSettings(model_cache_dir=str(tmp_path)))
    assert cache.local_path("/models/w.npy") == "/models/w.npy"
    assert cache.local_path("file:///models/w.npy") == "/models/w.npy"
