"""The MLRun migration example's graphs (MLRun's classes, only the import changed), every way in: the mock
server, a real HTTP server and a Kafka message through a real broker answer each graph the same."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import CLIServer
from tests.streams.kafka_tools import TopicReader, Topics, produce
from v2serve import Graph

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mlrun_migration"
POINTS = [[1, 1], [2, 3]]

# graph file, the HTTP path, the same request as a Kafka message (the body names what the path names), and
# the fields of the answer that must agree (ids and timestamps are each request's own).
CASES = [
    ("router.yaml", "/v2/models/m3/versions/v1/infer", {"model": "m3", "version": "v1"},
     ("model_name", "model_version", "outputs")),
    ("ensemble.yaml", "/v2/models/infer", {}, ("model_name", "outputs")),
    ("flow.yaml", "/", {}, None),
]  # fmt: skip


def agreeing(answer: dict, fields: tuple[str, ...] | None) -> dict:
    return answer if fields is None else {field: answer[field] for field in fields}


@pytest.mark.parametrize(("graph", "path", "routing", "fields"), CASES, ids=[case[0] for case in CASES])
async def test_a_graph_answers_the_same_through_mock_http_and_kafka(kafka_broker, graph, path, routing, fields):
    body = {"points": POINTS} if graph == "flow.yaml" else {"inputs": POINTS}
    with Graph.from_file(EXAMPLE / graph).to_mock_server() as mock:
        expected = agreeing(mock.test(path, body), fields)
    topics = await Topics().create(kafka_broker)
    server = CLIServer(str(EXAMPLE / graph), *topics.cli_args(kafka_broker, f"g-{graph}"), cwd=str(ROOT))
    try:
        server.wait_started()
        assert server.wait_for_line("partitions assigned"), server.output
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            over_http = await client.post(path, json=body)
        assert over_http.status_code == 200, over_http.text
        await produce(kafka_broker, topics.input, [(b"k1", orjson.dumps({**routing, **body}))])
        async with TopicReader(kafka_broker, [topics.output, topics.errors]) as reader:
            await reader.until(lambda records: len(records) == 1)
        assert reader.records[0].topic == topics.output, reader.records[0].value
        over_kafka = orjson.loads(reader.records[0].value)
    finally:
        assert server.stop() == 0, server.output
    assert agreeing(over_http.json(), fields) == expected
    assert agreeing(over_kafka, fields) == expected
