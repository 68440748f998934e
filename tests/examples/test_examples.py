from pathlib import Path

import httpx
import pytest

from tests.conftest import CLIServer, serve_in_process
from v2serve import Graph
from v2serve.engine.loader import models_from_target

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.anyio


async def test_iris_classifies_each_species_centroid_from_dict_rows_in_any_key_order():
    models = models_from_target(str(EXAMPLES / "iris"))
    rows = [
        {"sepal_width": 3.4, "sepal_length": 5.0, "petal_width": 0.2, "petal_length": 1.5},
        {"petal_length": 4.3, "petal_width": 1.3, "sepal_length": 5.9, "sepal_width": 2.8},
        {"petal_width": 2.0, "sepal_length": 6.6, "petal_length": 5.6, "sepal_width": 3.0},
    ]
    async with serve_in_process(*models) as client:
        body = (await client.post("/v2/models/iris/infer_dict", json={"inputs": rows})).json()
        species, probabilities = body["outputs"]
        assert species["data"] == ["setosa", "versicolor", "virginica"]
        assert probabilities["shape"] == [3, 3]
        single = await client.post("/v2/models/iris/infer_dict", json={"inputs": rows[0]})
        assert single.json()["outputs"][0]["data"] == ["setosa"]
        meta = (await client.get("/v2/models/iris")).json()
        assert meta["parameters"]["feature_names"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ({"sepal_length": 1, "sepal_width": 1, "petal_length": 1}, "lacks features ['petal_width']"),
        (
            {"sepal_length": 1, "sepal_width": 1, "petal_length": 1, "petal_width": 1, "colour": 2},
            "unknown features ['colour']",
        ),
        ({"sepal_length": "x", "sepal_width": 1, "petal_length": 1, "petal_width": 1}, "not FP32"),
        ([1, 2, 3, 4], "row 0 must be an object"),
    ],
)
async def test_iris_infer_dict_rejects_rows_that_do_not_fit_the_schema(inputs, fragment):
    async with serve_in_process(*models_from_target(str(EXAMPLES / "iris"))) as client:
        response = await client.post("/v2/models/iris/infer_dict", json={"inputs": inputs})
        assert response.status_code == 400
        assert fragment in response.json()["error"]


async def test_infer_dict_on_a_model_without_features_is_a_clear_error():
    async with serve_in_process(*models_from_target(str(EXAMPLES / "add_sub"))) as client:
        response = await client.post("/v2/models/add_sub/infer_dict", json={"inputs": [{"a": 1}]})
        assert response.status_code == 400 and "does not declare feature_names" in response.json()["error"]


def test_flow_example_preprocesses_classifies_and_postprocesses():
    with Graph.from_file(EXAMPLES / "graphs" / "flow.yaml").to_mock_server() as server:
        answer = server.test("/", body={"id": "q", "unit": "mm", "rows": [[51, 35, 14, 2], [67, 30, 52, 23]]})
    assert answer["id"] == "q" and answer["species"] == ["setosa", "virginica"]
    assert all(0.5 < c <= 1 for c in answer["confidence"])


def test_ensemble_example_votes_and_members_answer_alone():
    # Sepals alone call this versicolor flower virginica; the two other members outvote them.
    row = {"sepal_length": 6.4, "sepal_width": 3.0, "petal_length": 4.3, "petal_width": 1.3}
    with Graph.from_file(EXAMPLES / "graphs" / "ensemble.yaml").to_mock_server() as server:
        vote = server.test("/v2/models/iris_vote/infer_dict", body={"inputs": [row]})
        sepals = server.test("/v2/models/sepals/infer_dict", body={"inputs": [row]})
    assert vote["outputs"][0]["data"] == ["versicolor"]
    assert sepals["outputs"][0]["data"] == ["virginica"]


def test_cli_serves_a_graph_file():
    server = CLIServer(str(EXAMPLES / "graphs" / "flow.yaml"))
    try:
        server.wait_started()
        response = httpx.post(server.url + "/", json={"rows": [[5.0, 3.4, 1.5, 0.2]]}, timeout=10)
        assert response.json()["species"] == ["setosa"]
    finally:
        assert server.stop() == 0
