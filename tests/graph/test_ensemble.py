import json

import pytest

from tests.graph import steps
from v2serve.sdk import Graph
from v2serve.settings import Settings


def request(values, datatype="FP32"):
    return {"inputs": [{"name": "x", "datatype": datatype, "shape": [len(values)], "data": values}]}


def test_classification_takes_the_weighted_majority_and_members_stay_addressable():
    graph = Graph()
    vote = graph.add_ensemble("vote", weights={"strict": 3.0})
    vote.add_model("lenient", steps.Label, threshold=0).add_model("middle", steps.Label, threshold=5)
    vote.add_model("strict", steps.Label, threshold=10)
    with graph.to_mock_server() as server:
        # x=3: lenient big, middle small, strict small -> small (weights 1 vs 1+3)
        # x=7: lenient big, middle big, strict small -> small (2 vs 3); x=20: all big
        together = server.test("/v2/models/vote/infer", body=request([3, 7, 20]))
        assert together["outputs"] == [
            {"name": "label", "datatype": "BYTES", "shape": [3], "data": ["small", "small", "big"]}
        ]
        alone = server.test("/v2/models/lenient/infer", body=request([3, 7, 20]))
        assert alone["outputs"][0]["data"] == ["big", "big", "big"]
        assert server.test("/v2/models/vote")["platform"] == "ensemble"


def test_regression_takes_the_weighted_mean():
    graph = Graph()
    vote = graph.add_ensemble("avg", vote_type="regression", weights={"a": 1.0, "b": 3.0})
    vote.add_model("a", steps.Affine, a=1).add_model("b", steps.Affine, a=2)
    with graph.to_mock_server() as server:
        outputs = server.test("/v2/models/avg/infer", body=request([4.0]))["outputs"]
        assert outputs[0]["data"] == [pytest.approx((4 * 1 + 8 * 3) / 4)]


def test_ensemble_is_not_ready_while_a_member_failed():
    graph = Graph()
    graph.add_ensemble("vote").add_model("ok", steps.Label).add_model("bad", "tests.fixtures:FailingLoadModel")
    with graph.to_mock_server() as server:
        response = server.test("/v2/models/vote/infer", body=request([1]), silent=True, get_body=False)
        assert response.status_code == 503 and "'bad' failed to load" in response.json()["error"]


def test_a_member_reloaded_through_the_repository_answers_in_the_ensemble(tmp_path):
    member = tmp_path / "b"
    member.mkdir()
    settings = {"implementation": "tests.graph.steps:Affine", "args": {"a": 10}}
    (member / "model-settings.json").write_text(json.dumps(settings))
    graph = Graph()
    graph.add_ensemble("avg", vote_type="regression").add_model("a", steps.Affine, a=1).add_model(
        "b", steps.Affine, a=2
    )
    settings = Settings(repository={"root": str(tmp_path)}, implementation_packages=["tests"])
    with graph.to_mock_server(settings) as server:
        assert server.test("/v2/models/avg/infer", body=request([4.0]))["outputs"][0]["data"] == [6.0]
        server.test("/v2/repository/models/b/load", body={})
        # (4*1 + 4*10) / 2: the reloaded member answers, not the unloaded one it replaced.
        assert server.test("/v2/models/avg/infer", body=request([4.0]))["outputs"][0]["data"] == [22.0]
