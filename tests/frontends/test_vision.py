"""CLIP (open_clip) and timm models on Ingrain's routes and v2 (#29, items 2 and 3): the served vectors are
open_clip's own ``encode_text``/``encode_image`` and timm's own features and probabilities on the same
weights (created by the test: real architectures, random weights, a fixed seed), loaded from a repository
folder, from a local hub by the names Ingrain's users give, and (timm) with ``pretrained: false``."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.frontends.hub import COMMIT, LocalHub
from tests.frontends.test_ingrain_models import call, ingrain_server
from tests.frontends.vision import (
    CLIP_CONFIG,
    TIMM_ARCHITECTURE,
    clip_vectors,
    make_clip_folder,
    make_timm_folder,
    photo,
    timm_outputs,
)
from v2serve.mock import MockServer
from v2serve.server import ModelServer
from v2serve.settings import DataSettings, HubSettings, RepositorySettings, Settings

TEXTS = ["a photo of a cat", "a diagram of a server", "tiny weights, real architecture"]
IMAGES = [photo(1), photo(2, (64, 128)), photo(3, (200, 150))]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    return make_clip_folder(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def timm_folder(tmp_path_factory) -> Path:
    return make_timm_folder(tmp_path_factory.mktemp("timm") / "tiny-timm", extra_weights=True)


def in_repository(root: Path, name: str, settings: dict, weights: Path) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    shutil.copytree(weights, folder / "weights")
    (folder / "model-settings.json").write_text(orjson.dumps({**settings, "model_path": "weights"}).decode())


def binary_request(values: dict[str, list]) -> tuple[bytes, int]:
    """A v2 request of BYTES inputs in the binary extension, as tritonclient builds it."""
    from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

    inputs = []
    for name, items in values.items():
        array = np.array([item.encode() if isinstance(item, str) else item for item in items], dtype=object)
        tensor = InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    outputs = [InferRequestedOutput(f"{name}_embedding", binary_data=False) for name in values]
    body, header_length = InferenceServerClient.generate_request_body(inputs, outputs)
    return body, header_length


def b64(image: bytes) -> str:
    return base64.b64encode(image).decode()


def test_clip_answers_text_and_images_together_as_open_clip_encodes_them(tmp_path, clip_folder):
    in_repository(tmp_path / "repository", "tiny-clip", {"implementation": "open_clip"}, clip_folder)
    expected_text, expected_images = clip_vectors(clip_folder, TEXTS, IMAGES)
    with ingrain_server(tmp_path) as server:
        loaded = call(server, "/load_clip_model", {"name": "tiny-clip", "pretrained": None})
        assert loaded.status_code == 200, loaded.body
        both = call(server, "/embed", {"name": "tiny-clip", "text": TEXTS, "image": [b64(i) for i in IMAGES]})
        assert both.status_code == 200, both.body
        np.testing.assert_allclose(both.json()["textEmbeddings"], expected_text, atol=1e-5)
        np.testing.assert_allclose(both.json()["imageEmbeddings"], expected_images, atol=1e-5)
        alone = call(server, "/embed_image", {"name": "tiny-clip", "image": b64(IMAGES[2]), "n_dims": 8})
        short = np.asarray(alone.json()["embeddings"])
        assert short.shape == (1, 8) and np.isclose(np.linalg.norm(short), 1.0, atol=1e-5)  # cut, then normalised
        size = call(server, "/model_embedding_size?name=tiny-clip", method="GET").json()
        assert size == {"embeddingSize": 32}

        # v2 (tritonclient's binary extension): BYTES text and image inputs in one request answer both towers;
        # either alone answers `embedding`.
        body, header_length = binary_request({"text": TEXTS, "image": IMAGES[:1]})
        headers = {"Inference-Header-Content-Length": str(header_length)}
        answer = server.test(
            "/v2/models/tiny-clip/infer", body, headers=headers, content_type="application/octet-stream"
        )
        outputs = {out["name"]: np.reshape(out["data"], out["shape"]) for out in answer["outputs"]}
        assert set(outputs) == {"text_embedding", "image_embedding"}
        np.testing.assert_allclose(outputs["text_embedding"], expected_text, atol=1e-5)
        np.testing.assert_allclose(outputs["image_embedding"], expected_images[:1], atol=1e-5)
        text_only = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": TEXTS}]}
        assert [out["name"] for out in server.test("/v2/models/tiny-clip/infer", text_only)["outputs"]] == ["embedding"]
        neither = server.test("/v2/models/tiny-clip/infer", {"inputs": []}, get_body=False, silent=True)
        assert neither.status_code == 400 and "text or image" in neither.json()["error"]
        metadata = server.test("/v2/models/tiny-clip")
        assert [spec["name"] for spec in metadata["inputs"]] == ["text", "image"]


def test_clip_by_hub_name_and_by_architecture_and_tag_fetches_only_what_it_needs(tmp_path, clip_folder):
    expected_text, _ = clip_vectors(clip_folder, TEXTS, IMAGES[:1])
    # open_clip's own registry says where MobileCLIP-S2's `datacompdr` weights live; the local hub serves the
    # test's weights (with their config) there, so the name a user gives goes all the way through.
    from v2serve.models.runtimes.open_clip import tag_repository

    tagged = tag_repository("MobileCLIP-S2", "datacompdr")
    assert tagged == "apple/MobileCLIP-S2-OpenCLIP"
    with_extra = tmp_path / "with-extra"
    shutil.copytree(clip_folder, with_extra)
    (with_extra / "open_clip_pytorch_model.bin").write_bytes(b"\0" * 4096)  # the same weights, pickled: not fetched
    with LocalHub({"acme/tiny-clip": with_extra, tagged: clip_folder}) as hub:
        settings = Settings(
            models=[],
            repository=RepositorySettings(root=str(tmp_path / "repository")),
            hub=HubSettings(
                enabled=True, endpoint=hub.endpoint, cache_dir=str(tmp_path / "hf"), allow=["acme", "apple"]
            ),
            data=DataSettings(allow_private_addresses=True),
        )
        with MockServer(ModelServer([], settings)) as server:
            by_name = call(server, "/load_clip_model", {"name": "hf-hub:acme/tiny-clip", "pretrained": None})
            assert by_name.status_code == 200, by_name.body
            assert sorted(hub.downloads()) == [
                f"/acme/tiny-clip/resolve/{COMMIT}/open_clip_config.json",
                f"/acme/tiny-clip/resolve/{COMMIT}/open_clip_model.safetensors",
            ]
            texts = call(server, "/embed_text", {"name": "hf-hub:acme/tiny-clip", "text": TEXTS}).json()
            np.testing.assert_allclose(texts["embeddings"], expected_text, atol=1e-5)
            by_tag = call(server, "/load_clip_model", {"name": "MobileCLIP-S2", "pretrained": "datacompdr"})
            assert by_tag.status_code == 200, by_tag.body
            named = {"name": "MobileCLIP-S2", "pretrained": "datacompdr", "text": TEXTS}
            np.testing.assert_allclose(
                call(server, "/embed_text", named).json()["embeddings"], expected_text, atol=1e-5
            )
            other = call(server, "/embed_text", {**named, "pretrained": "openai"})
            assert other.status_code == 400 and "checkpoint openai is not loaded" in other.json()["detail"]
            refused = call(server, "/load_clip_model", {"name": "ViT-B-32", "pretrained": "openai"})
            assert refused.status_code == 404  # timm/... is not allowed here: nothing is fetched
    assert not any("vit_base_patch32" in path for path in hub.downloads())


def test_timm_serves_its_features_and_probabilities_with_its_own_preprocessing(tmp_path, timm_folder):
    in_repository(tmp_path / "repository", "tiny-timm", {"implementation": "timm"}, timm_folder)
    vectors, probabilities = timm_outputs(timm_folder, IMAGES)
    with ingrain_server(tmp_path) as server:
        assert call(server, "/load_timm_model", {"name": "tiny-timm"}).status_code == 200
        images = [b64(image) for image in IMAGES]
        embedded = call(server, "/embed_image", {"name": "tiny-timm", "image": images})
        assert embedded.status_code == 200, embedded.body
        np.testing.assert_allclose(embedded.json()["embeddings"], vectors, atol=1e-5)
        classified = call(server, "/classify_image", {"name": "tiny-timm", "image": images}).json()
        np.testing.assert_allclose(classified["probabilities"], probabilities, atol=1e-5)
        labels = call(server, "/model_classification_labels?name=tiny-timm", method="GET").json()["labels"]
        assert len(labels) == 1000 and labels[0].startswith("tench")  # ImageNet's, as timm names them


def test_timm_architecture_with_pretrained_false_loads_offline_and_hub_names_fetch_one_weights_file(
    tmp_path, timm_folder
):
    registry_repository = f"timm/{TIMM_ARCHITECTURE}.r160_in1k"  # where timm's registry says its weights live
    with LocalHub({"acme/tiny-timm": timm_folder, registry_repository: timm_folder}) as hub:
        settings = Settings(
            models=[],
            repository=RepositorySettings(root=str(tmp_path / "repository")),
            hub=HubSettings(enabled=True, endpoint=hub.endpoint, cache_dir=str(tmp_path / "hf"), allow=["acme"]),
            data=DataSettings(allow_private_addresses=True),
        )
        with MockServer(ModelServer([], settings)) as server:
            random = call(server, "/load_timm_model", {"name": TIMM_ARCHITECTURE, "pretrained": False})
            assert random.status_code == 200, random.body
            vectors = call(server, "/embed_image", {"name": TIMM_ARCHITECTURE, "image": b64(IMAGES[0])}).json()
            assert np.asarray(vectors["embeddings"]).shape == (1, 256)
            assert hub.downloads() == []
            pretrained = call(server, "/load_timm_model", {"name": TIMM_ARCHITECTURE, "pretrained": True})
            assert pretrained.status_code == 404  # its weights are in timm/..., which the operator did not allow
            assert hub.downloads() == []

            name = "hf_hub:acme/tiny-timm"  # Ingrain's documents spell it so
            fetched = call(server, "/load_timm_model", {"name": name, "pretrained": True})
            assert fetched.status_code == 200, fetched.body
            assert sorted(path.rsplit("/", 1)[1] for path in hub.downloads()) == ["config.json", "model.safetensors"]
            served = call(server, "/embed_image", {"name": name, "image": [b64(i) for i in IMAGES]}).json()
    np.testing.assert_allclose(served["embeddings"], timm_outputs(timm_folder, IMAGES)[0], atol=1e-5)


def test_a_library_transform_sees_only_a_bounded_centre_of_a_very_long_image(tmp_path, clip_folder):
    from v2serve.models.runtimes.open_clip import OpenClipModel

    model = OpenClipModel("clip", model_path=str(clip_folder))
    model.load()
    long = photo(7, (4000, 20))  # 200:1; the transform resizes the short side to 64: 12,800 wide uncut
    prepared = model.pixels([long])
    assert prepared.shape == (1, 3, 64, 64)
    _, expected = clip_vectors(clip_folder, [], [long])
    served = model.predict({"image": np.array([long], dtype=object)})["embedding"]
    served /= np.linalg.norm(served, axis=1, keepdims=True)
    assert float(served[0] @ expected[0]) > 0.99  # the same centre, resampled from a cut, not the whole strip


def test_downloaded_weights_over_a_bare_architecture_serve_as_those_weights(tmp_path, clip_folder, timm_folder):
    import open_clip

    from tests.data.conftest import FileServer

    # The tiny CLIP becomes one of open_clip's own architectures (in this process, where the mock server runs).
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny-clip-arch.json").write_text(orjson.dumps(CLIP_CONFIG["model_cfg"]).decode())
    open_clip.add_model_config(tmp_path / "configs")
    files = FileServer()
    files.files["/clip.safetensors"] = (clip_folder / "open_clip_model.safetensors").read_bytes()
    files.files["/timm.safetensors"] = (timm_folder / "model.safetensors").read_bytes()
    try:
        with ingrain_server(tmp_path, protocols=["http"], allow_private_addresses=True) as server:
            for library, file in (("open_clip", "clip"), ("timm", "timm")):
                download = {"library": library, "pretrained_name": f"mine-{file}",
                            "safetensors_url": f"{files.url}/{file}.safetensors"}  # fmt: skip
                assert call(server, "/download_custom_model", download).status_code == 200
            clip = call(server, "/load_clip_model", {"name": "tiny-clip-arch", "pretrained": "mine-clip"})
            assert clip.status_code == 200, clip.body
            texts = call(server, "/embed_text", {"name": "tiny-clip-arch", "pretrained": "mine-clip", "text": TEXTS})
            timm = call(
                server, "/load_model", {"name": TIMM_ARCHITECTURE, "library": "timm", "pretrained": "mine-timm"}
            )
            assert timm.status_code == 200, timm.body
            images = call(server, "/embed_image", {"name": TIMM_ARCHITECTURE, "image": b64(IMAGES[0])})
    finally:
        files.close()
    np.testing.assert_allclose(texts.json()["embeddings"], clip_vectors(clip_folder, TEXTS, IMAGES[:1])[0], atol=1e-5)
    np.testing.assert_allclose(images.json()["embeddings"], timm_outputs(timm_folder, IMAGES[:1])[0], atol=1e-5)
