"""The MLRun migration example (examples/mlrun_migration), served as the README's guide describes it."""

from pathlib import Path

import pytest

from v2serve import Graph

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mlrun_migration"


@pytest.fixture(scope="module")
def router():
    with Graph.from_file(EXAMPLE / "router.yaml").to_mock_server() as server:
        yield server


def test_the_router_serves_each_version_with_its_class_arguments(router):
    assert router.test("/v2/models/")["models"] == ["m1", "m3:v1", "m3:v2"]
    body = {"id": "q", "inputs": [[1, 1], [2, 2]]}  # weighted sums 3 and 6
    assert router.test("/v2/models/m1/infer", body)["outputs"] == [0, 1]  # threshold 5, a graph parameter
    v1 = router.test("/v2/models/m3/versions/v1/infer", body)
    assert v1["outputs"] == [1, 1] and v1["model_version"] == "v1" and v1["id"] == "q"
    assert router.test("/v2/models/m3:v2/predict", body)["outputs"] == [0, 0]
    assert router.test("/v2/models/m3/versions/v2")["version"] == "v2"
    # A router of MLRun-style models answers about itself as MLRun's router does.
    assert router.test("/v2/health") == {"name": "ModelRouter", "version": "v2", "extensions": []}


def test_the_ensemble_votes_when_no_model_is_named():
    with Graph.from_file(EXAMPLE / "ensemble.yaml").to_mock_server() as server:
        # [1,1] -> 3: low 1, mid 0, high 0 -> weights 1 vs 3 -> 0; [3,3] -> 9: all 1 -> 1
        answer = server.test("/v2/models/infer", {"inputs": [[1, 1], [3, 3]]})
        assert answer["outputs"] == [0, 1] and answer["model_name"] == "vote"
        assert server.test("/v2/models/low/infer", {"inputs": [[1, 1]]})["outputs"] == [1]


def test_the_flow_branches_merges_and_handles_errors():
    with Graph.from_file(EXAMPLE / "flow.yaml").to_mock_server() as server:
        answer = server.test("/", {"points": [[1, 1], [2, 3]]})  # scaled x2: sums 6 and 16
        assert answer == {"classes": [1, 1], "inputs": [[2, 2], [4, 6]], "count": 2, "largest": 6}
        failed = server.test("/", {"nothing": 1})
        assert failed["failed_step"] == "clean" and failed["request"] == {"nothing": 1}
        assert "no 'points'" in failed["error"]


def test_model_probes_on_a_flow_answer_without_running_it():
    with Graph.from_file(EXAMPLE / "flow.yaml").to_mock_server() as server:
        # The flow would answer {"failed_step": "clean", ...} to anything it ran: these never reach it.
        assert server.test("/v2/models/classify/ready") == {"name": "classify", "ready": True}
        assert server.test("/v2/models/classify")["name"] == "classify"
        assert server.test("/v2/models/classify/stats")["model_stats"][0]["inference_count"] == 0
