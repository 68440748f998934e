"""MLRun's router options and VotingEnsemble on a router graph: the default route, weights by route key
(normalised; a route left out weighs 0), the vote type inferred, ties broken the same way every time,
graph parameters through get_param, and input_path / result_path on router routes."""

from __future__ import annotations

import json

import pytest

from v2serve.graph.spec import GraphError, GraphSpec
from v2serve.mock import MockServer
from v2serve.server import ModelServer
from v2serve.settings import Settings

ABOVE = "tests.mlrun.models:Above"
SCALE = "tests.mlrun.models:Scale"


def serve(spec: dict, tmp_path):
    return MockServer(ModelServer([], Settings(models=[]), graph=GraphSpec.model_validate(spec), graph_dir=tmp_path))


def ensemble(routes: list[dict], **options) -> dict:
    return {"topology": "router", "steps": [{"name": "vote", "kind": "ensemble", "routes": routes, **options}]}


def x(*values: float) -> dict:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(values)], "data": list(values)}]}


def labels(answer: dict) -> list:
    return answer["outputs"][0]["data"]


def above(name: str, threshold: float, version: str | None = None) -> dict:
    route = {"name": name, "kind": "model", "class_name": ABOVE, "class_args": {"threshold": threshold}}
    return route | ({"version": version} if version else {})


def test_a_request_naming_no_model_gets_the_ensembles_vote(tmp_path):
    routes = [above("low", 1), above("mid", 5), above("high", 9)]
    with serve(ensemble(routes), tmp_path) as server:
        named = labels(server.test("/v2/models/vote/infer", x(0, 6, 10)))
        assert named == [0, 1, 1]
        assert labels(server.test("/v2/models/infer", x(0, 6, 10))) == named
        assert labels(server.test("/v2/models/predict", x(0, 6, 10))) == named
        assert labels(server.test("/", x(0, 6, 10))) == named  # POST / without a model
        assert labels(server.test("/v2/models/low/infer", x(0, 6, 10))) == [0, 1, 1]  # members stay addressable


def test_weights_are_keyed_by_route_key_normalised_and_a_route_left_out_weighs_nothing(tmp_path):
    routes = [above("m3", 1, "v1"), above("m3", 5, "v2"), above("m9", 9)]
    with serve(ensemble(routes, weights={"m3:v1": 2, "m3:v2": 1}), tmp_path) as server:
        # x=3: m3:v1 says 1 (weight 2/3), m3:v2 says 0 (1/3), m9 says 0 (0): class 1 wins despite two 0 votes.
        assert labels(server.test("/v2/models/infer", x(3))) == [1]
        assert labels(server.test("/v2/models/m3/versions/v2/infer", x(3))) == [0]
    with pytest.raises(GraphError, match="not its routes"):
        serve(ensemble(routes, weights={"m3": 1}), tmp_path)


def test_the_vote_type_is_inferred(tmp_path):
    scaled = [{"name": f"s{f}", "kind": "model", "class_name": SCALE, "class_args": {"factor": f}} for f in (1, 2)]
    with serve(ensemble(scaled, weights={"s1": 1, "s2": 3}), tmp_path) as server:
        assert labels(server.test("/v2/models/infer", x(4))) == [pytest.approx((4 * 1 + 8 * 3) / 4)]  # regression


def test_a_classification_tie_goes_to_the_smallest_class_every_time(tmp_path):
    routes = [above("yes", -1), above("no", 100)]  # one votes 1, the other 0, with equal weights
    with serve(ensemble(routes), tmp_path) as server:
        assert {tuple(labels(server.test("/v2/models/infer", x(5, 6)))) for _ in range(5)} == {(0, 0)}


def test_without_a_default_route_a_request_naming_no_model_is_a_400(tmp_path):
    spec = {"topology": "router", "steps": [above("a", 0), above("b", 1)]}
    with serve(spec, tmp_path) as server:
        answer = server.test("/v2/models/infer", x(1), silent=True, get_body=False)
        assert answer.status_code == 400 and "names no model" in answer.json()["error"]
    with serve(spec | {"default_route": "b"}, tmp_path) as server:
        assert labels(server.test("/v2/models/infer", x(0.5))) == [0]
        assert labels(server.test("/", x(0.5))) == [0]


def test_graph_parameters_reach_every_mlrun_model_and_router_routes_take_input_and_result_paths(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"weights": [1, 1]}))
    classifier = {"kind": "model", "class_name": "tests.mlrun.models:ClassifierModel", "model_path": str(folder)}
    spec = {
        "topology": "router",
        "parameters": {"threshold": 3},
        "steps": [
            classifier | {"name": "plain"},
            classifier | {"name": "paths", "input_path": "request.body", "result_path": "answer"},
        ],
    }
    with serve(spec, tmp_path) as server:
        assert server.test("/v2/models/plain/infer", {"inputs": [[1, 1], [2, 2]]})["outputs"] == [0, 1]
        wrapped = server.test("/v2/models/paths/infer", {"request": {"body": {"inputs": [[5, 5]]}}, "keep": 1})
        assert wrapped["keep"] == 1 and wrapped["request"] == {"body": {"inputs": [[5, 5]]}}
        assert wrapped["answer"]["outputs"] == [1] and wrapped["answer"]["model_name"] == "paths"
        missing = server.test("/v2/models/paths/infer", {"inputs": [[5, 5]]}, silent=True, get_body=False)
        assert missing.status_code == 400 and "request.body" in missing.json()["error"]


def test_the_model_list_of_an_ensemble_router_answers_its_weights_as_mlrun_does(tmp_path):
    routes = [above("low", 1), above("high", 9)]
    with serve(ensemble(routes, weights={"low": 3, "high": 1}), tmp_path) as server:
        listed = server.test("/v2/models")
        assert sorted(listed["models"]) == ["high", "low", "vote"]
        assert listed["weights"] == {"low": 3, "high": 1}  # as given, as MLRun's VotingEnsemble answers them
    with serve(ensemble(routes), tmp_path) as server:
        assert server.test("/v2/models")["weights"] is None
    with serve({"topology": "router", "steps": [above("low", 1)]}, tmp_path) as server:
        assert "weights" not in server.test("/v2/models")  # no ensemble, no weights


ECHO = "tests.mlrun.models:EchoInputs"


def echo(name: str, version: str | None = None) -> dict:
    return {"name": name, "kind": "model", "class_name": ECHO} | ({"version": version} if version else {})


def test_a_router_of_mlrun_style_models_answers_about_itself_as_mlruns_router(tmp_path):
    spec = {"topology": "router", "steps": [echo("m1"), echo("m3", "v1"), echo("m3", "v2")]}
    with serve(spec, tmp_path) as server:
        assert server.test("/v2/health") == {"name": "ModelRouter", "version": "v2", "extensions": []}
        assert server.test("/v2/models/m1") == {"name": "m1", "version": "", "inputs": [], "outputs": []}
        assert server.test("/v2/models/m3/versions/v1")["version"] == "v1"
        ready = server.test("/v2/models/m1/ready", event_id="e1", get_body=False)
        assert ready.status_code == 200 and ready.body == b"Model m1 is ready (event_id = e1)"
        # MLRun's router knows routes by key: m3 alone is none of them (v2serve would pick the highest version).
        unknown = server.test("/v2/models/m3/infer", {"inputs": [1]}, silent=True, get_body=False)
        assert unknown.status_code == 404
        assert unknown.json()["error"] == "model m3 doesnt exist, available models: m1 | m3:v1 | m3:v2"
        assert server.test("/v2/models/m3/versions/v2/infer", {"inputs": [1]})["outputs"] == ["list", [1]]
        for path in ("/v2/models/nope/infer", "/v2/models/m3/versions/v9/infer"):
            missing = server.test(path, {"inputs": [1]}, silent=True, get_body=False)
            assert missing.status_code == 404 and missing.json()["error"].endswith(
                "doesnt exist, available models: m1 | m3:v1 | m3:v2"
            )


def test_an_ensemble_router_of_mlrun_style_models_is_a_voting_ensemble_and_typed_graphs_keep_v2s_answers(tmp_path):
    with serve(ensemble([echo("a"), echo("b")]), tmp_path) as server:
        assert server.test("/v2/health")["name"] == "VotingEnsemble"
        metadata = server.test("/v2/models/vote")
        assert metadata == {"name": "vote", "model_endpoint_uid": "", "inputs": [], "outputs": []}
    with serve(ensemble([above("low", 1), above("high", 9)]), tmp_path) as server:
        assert server.test("/v2/health")["name"] == "v2serve"
        assert server.test("/v2/models/low")["platform"] == "python"  # v2's model metadata
