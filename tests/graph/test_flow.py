import pytest

from tests.graph import steps
from v2serve.graph.spec import GraphError
from v2serve.sdk import Graph


def branching_flow(with_handler: bool) -> Graph:
    graph = Graph("flow")
    start = graph.to(steps.Scale, "scale", factor=10)
    start.to(steps.double, name="double")
    start.to(steps.negate, name="negate")
    merged = graph.add_step(steps.merge, name="merge", after=["double", "negate"])
    boom = merged.to(steps.explode, name="explode")
    if with_handler:
        boom.error_handler(steps.recover)
    boom.respond()
    return graph


def test_branch_merge_and_a_step_error_handler():
    with branching_flow(with_handler=True).to_mock_server() as server:
        result = server.test("/", body={"values": [1, 2]})
    assert result["recovered_from"] == "explode" and result["status"] == 500
    assert "ZeroDivisionError: exploded on purpose" in result["error"]
    assert result["body"] == {"values": [1, 2]}  # the request's body, as MLRun gives it


def test_a_step_error_handler_answers_and_ends_the_flow():
    graph = Graph("flow")
    graph.to(steps.explode, name="explode").error_handler(steps.recover).to(steps.double, name="after")
    with graph.to_mock_server() as server:
        # MLRun's rule: the handler's output is the response; the step after the failed one does not run.
        assert server.test("/", body={"values": [1]})["recovered_from"] == "explode"


def test_without_a_handler_the_failed_step_is_named_in_a_500():
    with branching_flow(with_handler=False).to_mock_server() as server:
        response = server.test("/", body={"values": [1, 2]}, get_body=False, silent=True)
        assert response.status_code == 500
        assert response.json() == {"error": "step 'explode' failed: ZeroDivisionError: exploded on purpose"}
        with pytest.raises(RuntimeError, match=r"failed \(500\)"):
            server.test("/", body={"values": [1, 2]})


@pytest.mark.parametrize(("merge", "handler"), [("list", steps.merge), ("by_step", steps.merge_by_step)])
def test_a_step_after_branches_receives_their_outputs_in_branch_order_or_by_step(merge, handler):
    graph = Graph("flow")
    start = graph.to(steps.Scale, "scale", factor=10)
    start.to(steps.double, name="double")
    start.to(steps.negate, name="negate")
    graph.add_step(handler, name="merge", after=["double", "negate"], merge=merge)
    with graph.to_mock_server() as server:
        assert server.test("/", body={"values": [1, 2]}) == {"sum": [10.0, 20.0]}


def test_to_before_inserts_a_step():
    graph = Graph("flow")
    first = graph.to(steps.Scale, "first", factor=2)
    first.to(steps.negate, name="last").respond()
    first.to(steps.Scale, "inserted", before="last", factor=10)
    assert [s.after for s in graph.spec.steps] == [[], ["inserted"], ["first"]]
    with graph.to_mock_server() as server:
        assert server.test("/", body={"values": [1, 2]}) == [-20, -40]


def test_graph_level_error_handler_answers_when_no_step_handler_does():
    graph = Graph("flow")
    graph.to(steps.double, name="double", result_path="doubled").to(steps.explode, name="explode")
    graph.error_handler(steps.recover)
    with graph.to_mock_server() as server:
        answer = server.test("/", body={"values": [3]})
    assert answer["recovered_from"] == "explode" and answer["body"] == {"values": [3]}


def test_model_step_between_tasks_with_input_and_result_paths():
    graph = Graph("flow")
    (
        graph.to(steps.to_request, name="pre")
        .to(steps.Affine, "affine", a=2, b=1)
        .to(steps.first_output, name="post", result_path="result")
        .respond()
    )
    with graph.to_mock_server() as server:
        answer = server.test("/", body={"values": [1, 2, 3], "id": "abc"})
    assert answer["result"] == {"id": "abc", "y": [3.0, 5.0, 7.0]}
    assert answer["model_name"] == "affine"  # result_path kept the body it was given


def test_input_path_selects_part_of_the_body():
    graph = Graph("flow")
    graph.to(steps.double, name="double", input_path="payload")
    with graph.to_mock_server() as server:
        assert server.test("/", body={"payload": {"values": [4]}}) == [8]
        response = server.test("/", body={"other": 1}, silent=True, get_body=False)
        assert response.status_code == 400 and "step 'double': the body has no 'payload'" in response.json()["error"]


def test_a_parallel_step_merges_its_childrens_objects_as_mlrun_does():
    graph = Graph("flow")
    graph.to(
        name="fanout",
        kind="parallel",
        routes=[
            {"name": "total", "kind": "task", "handler": steps.total},
            {"name": "count", "kind": "task", "handler": steps.count},
        ],
    )
    with graph.to_mock_server() as server:
        assert server.test("/", body={"values": [1, 2]}) == {"total": 3, "count": 2}


def test_a_parallel_step_of_children_answering_no_object_says_so_or_keeps_them_by_step():
    routes = [
        {"name": "double", "kind": "task", "handler": steps.double},
        {"name": "negate", "kind": "task", "handler": steps.negate},
    ]
    graph = Graph("flow")
    graph.to(name="fanout", kind="parallel", routes=routes)
    with graph.to_mock_server() as server:
        refused = server.test("/", body={"values": [1, 2]}, get_body=False, silent=True)
    assert refused.status_code == 500 and b"not an object to merge" in refused.body
    by_step = Graph("flow")
    by_step.to(name="fanout", kind="parallel", routes=routes, merge="by_step")
    with by_step.to_mock_server() as server:
        assert server.test("/", body={"values": [1, 2]}) == {"double": [2, 4], "negate": [-1, -2]}


def test_a_parallel_step_can_extend_the_event_with_its_childrens_results():
    graph = Graph("flow")
    graph.to(
        name="enrich",
        kind="parallel",
        extend_event=True,
        routes=[
            {"name": "total", "kind": "task", "handler": steps.total},
            {"name": "count", "kind": "task", "handler": steps.count},
        ],
    )
    with graph.to_mock_server() as server:
        assert server.test("/", body={"values": [1, 2]}) == {"values": [1, 2], "total": 3, "count": 2}


def test_step_classes_receive_their_name_and_context(tmp_path):
    graph = Graph("flow")
    graph.spec.parameters = {"greeting": "hi"}
    graph.to(steps.Named, name="namer")
    with graph.to_mock_server() as server:
        assert server.test("/", body={}) == {"step": "namer", "greeting": "hi"}


def test_router_step_in_a_flow_routes_by_the_body_model_field():
    graph = Graph("flow")
    graph.to(
        name="route",
        kind="router",
        routes=[
            {"name": "plus", "kind": "model", "class_name": steps.Affine, "class_args": {"b": 1}},
            {"name": "times", "kind": "model", "class_name": steps.Affine, "class_args": {"a": 3}},
        ],
    )
    request = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [2]}]}
    with graph.to_mock_server() as server:
        assert server.test("/", body={**request, "model": "plus"})["outputs"][0]["data"] == [3.0]
        assert server.test("/", body={**request, "model": "times"})["outputs"][0]["data"] == [6.0]
        unknown = server.test("/", body={**request, "model": "nope"}, silent=True, get_body=False)
        assert unknown.status_code == 404 and "has no route 'nope'" in unknown.json()["error"]


def test_health_probes_work_on_a_flow():
    graph = Graph("flow")
    graph.to(steps.double, name="double")
    with graph.to_mock_server() as server:
        assert server.test("/v2/health/ready") == {"ready": True}
        assert server.test("/v2/health/live") == {"live": True}


def test_a_flow_echoes_x_request_id_like_the_router():
    graph = Graph("flow")
    graph.to(steps.double, name="double")
    with graph.to_mock_server() as server:
        response = server.test("/", body={"values": [1]}, headers={"X-Request-Id": "trace-9"}, get_body=False)
    assert response.headers["x-request-id"] == "trace-9"


def test_a_step_error_names_its_step_without_changing_the_original_exception():
    from v2serve.errors import ModelNotReady
    from v2serve.graph.flow import _as_step_error

    original = ModelNotReady("model 'm' is loading", retry_after_s=3)
    named = _as_step_error("enrich", original)
    assert named.message == "step 'enrich' failed: model 'm' is loading"
    assert (named.status_code, named.headers) == (503, {"retry-after": "3"})
    assert original.message == "model 'm' is loading" and str(original) == "model 'm' is loading"


def test_server_requests_reach_the_router_and_the_rest_the_flow():
    graph = Graph("flow")
    graph.to(steps.double, name="double")
    with graph.to_mock_server() as server:
        assert server.test("/", body={"values": [2]}) == [4]
        assert server.test("/v2/health/live") == {"live": True}
        assert server.test("/v2/repository/index", body={}) == []
        assert "paths" in server.test("/", method="OPTIONS")
        assert b"# TYPE v2serve_requests_total counter" in server.test("/metrics", get_body=False).body


RAN: list[object] = []


def record(body):
    RAN.append(body)
    return {"ran": True}


@pytest.mark.parametrize("path", ["/ready", "/record/ready", "/record/ready/"])
def test_a_readiness_probe_on_a_flow_is_answered_without_running_it(path):
    """A GET on .../ready asks about the server (it was the flow run on an empty body: a 400)."""
    flow = Graph("flow")
    flow.to(record, name="record").respond()
    RAN.clear()
    with flow.to_mock_server() as server:
        probe = server.test(path, method="GET", get_body=False, silent=True)
        assert server.test("/", body={"x": 1}) == {"ran": True}  # the flow itself still answers the rest
    assert probe.status_code == 200 and probe.json() == {"ready": True}
    assert RAN == [{"x": 1}]


def test_an_error_handler_gets_mlruns_event():
    graph = Graph("flow")
    graph.to(steps.explode, name="explode").error_handler(steps.mlrun_catcher)
    with graph.to_mock_server() as server:
        answer = server.test("/some/path", body={"values": [1, 2]})
    assert answer["failed"] == "explode" and answer["values"] == [1, 2] and answer["path"] == "/some/path"
    assert answer["errors"] == {"explode": "exploded on purpose"}  # the exception's own text, as MLRun's


def test_an_error_handler_with_before_hands_its_output_on_and_the_flow_goes_on():
    graph = Graph("flow")
    failing = graph.to(steps.explode, name="explode")
    failing.to(steps.tally, name="tally")
    failing.error_handler(steps.fallback_values, before="tally")
    with graph.to_mock_server() as server:
        assert server.test("/", body={"values": [1, 2]}) == {"sum": 0, "recovered": "explode"}


def test_before_must_name_a_step_after_the_failed_one():
    graph = Graph("flow")
    failing = graph.to(steps.explode, name="explode")
    failing.to(steps.tally, name="tally")
    failing.error_handler(steps.fallback_values, before="nowhere")
    with pytest.raises(GraphError, match="'before' names 'nowhere', which is not a step after it"):
        graph.to_mock_server()
