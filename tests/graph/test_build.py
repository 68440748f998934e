"""Graphs that cannot work fail when built, naming the step, and specs round-trip through YAML."""

import pytest

from tests.graph import steps
from v2serve.graph.kinds import STEP_KINDS, StepKind
from v2serve.graph.spec import GraphError, GraphSpec
from v2serve.sdk import Graph


def flow(*specs, **extra) -> Graph:
    return Graph.from_spec(GraphSpec.from_dict({"topology": "flow", "steps": list(specs), **extra}))


TASK = "tests.graph.steps:double"


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (
            flow({"name": "a", "handler": TASK, "after": ["b"]}, {"name": "b", "handler": TASK, "after": ["a"]}),
            r"cycle through steps \['a', 'b'\]",
        ),
        (
            flow({"name": "a", "handler": TASK, "after": ["ghost"]}),
            r"step 'a' comes after unknown step\(s\) \['ghost'\]",
        ),
        (
            flow({"name": "a", "kind": "model", "class_name": "tests.graph.steps:NoSuchModel"}),
            "step 'a': cannot import 'tests.graph.steps:NoSuchModel'",
        ),
        (flow({"name": "a", "handler": "no_such_module:fn"}), "step 'a': cannot import 'no_such_module:fn'"),
        (
            flow({"name": "a", "kind": "model", "class_name": "tests.graph.steps:Affine", "class_args": {"c": 1}}),
            "step 'a': cannot create Affine: .*unexpected keyword argument 'c'",
        ),
        (
            flow({"name": "a", "class_name": "tests.graph.steps:Scale", "class_args": {"wrong": 1}}),
            "step 'a': cannot create Scale",
        ),
        (flow({"name": "a", "kind": "router"}), "step 'a': a router step needs routes"),
        (flow({"name": "a", "handler": TASK}, {"name": "b", "handler": TASK}), "the flow ends in several steps"),
        (flow({"name": "a", "handler": TASK}, {"name": "a", "handler": TASK}), "step name 'a' is used twice"),
        (
            flow({"name": "a", "kind": "model", "class_name": "tests.graph.steps:to_request"}),
            "step 'a': .* is not a subclass of v2serve.Model",
        ),
        (
            Graph.from_spec(GraphSpec.from_dict({"steps": [{"name": "vote", "kind": "ensemble"}]})),
            "step 'vote': an ensemble needs routes",
        ),
        (
            Graph.from_spec(GraphSpec.from_dict({"steps": [{"name": "t", "kind": "task", "handler": TASK}]})),
            "step 't': a router graph routes to model or ensemble steps",
        ),
    ],
    ids=[
        "cycle",
        "unknown-after",
        "unknown-model-class",
        "unknown-handler",
        "bad-model-arg",
        "bad-task-arg",
        "router-without-routes",
        "two-sinks",
        "duplicate-name",
        "not-a-model",
        "empty-ensemble",
        "task-in-router",
    ],
)
def test_broken_graphs_fail_at_build_naming_the_step(graph, message):
    with pytest.raises(GraphError, match=message):
        graph.build_server()


def test_spec_rejects_unknown_fields():
    with pytest.raises(ValueError, match="extra"):
        GraphSpec.from_dict({"steps": [{"name": "a", "colour": "red"}]})


def test_locally_defined_classes_cannot_be_serialised_but_can_be_served():
    def local(body):
        return body

    graph = Graph("flow")
    graph.to(local, name="local")
    with pytest.raises(GraphError, match=r"step 'local': .* cannot be serialised"):
        graph.to_yaml()
    with graph.to_mock_server() as server:
        assert server.test("/", body={"a": 1}) == {"a": 1}


def python_built_graphs():
    router = Graph().add_model("affine:1", steps.Affine, a=2, b=1).add_model("label", steps.Label, threshold=2)
    router.add_ensemble("vote").add_model("low", steps.Label, threshold=1).add_model("high", steps.Label, threshold=5)
    flow_graph = Graph("flow")
    (
        flow_graph.to(steps.to_request, name="pre")
        .to(steps.Affine, "affine", a=3)
        .to(steps.first_output, name="post")
        .respond()
    )
    return {"router": router, "flow": flow_graph}


REQUESTS = {
    "router": [
        (
            "POST",
            "/v2/models/affine/infer",
            {"id": "1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]},
        ),
        (
            "POST",
            "/v2/models/affine/versions/1/infer",
            {"id": "2", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [5]}]},
        ),
        (
            "POST",
            "/v2/models/vote/infer",
            {"id": "3", "inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [0, 3, 9]}]},
        ),
        (
            "POST",
            "/v2/models/label/infer",
            {"id": "4", "inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1]}]},
        ),
        ("GET", "/v2/models/vote", None),
        ("GET", "/v2/models", None),
    ],
    "flow": [
        ("POST", "/", {"values": [1, 2], "id": "f"}),
        ("POST", "/", {"values": "oops"}),
        ("GET", "/v2/health/ready", None),
    ],
}


@pytest.mark.parametrize("name", ["router", "flow"])
def test_python_graph_written_to_yaml_and_read_back_answers_identically(name):
    graph = python_built_graphs()[name]
    text = graph.to_yaml()
    reread = Graph.from_yaml(text)
    assert reread.to_yaml() == text
    with graph.to_mock_server() as original, reread.to_mock_server() as copy:
        for method, path, body in REQUESTS[name]:
            a = original.request(path, body, method)
            b = copy.request(path, body, method)
            assert (a.status, a.content_type, a.body) == (b.status, b.content_type, b.body), path


def test_an_unknown_step_kind_is_refused_naming_the_kinds():
    spec = GraphSpec.from_dict({"topology": "flow", "steps": [{"name": "x", "kind": "lambda"}]})
    with pytest.raises(GraphError, match="step 'x': unknown step kind 'lambda'; the kinds are task, model"):
        Graph.from_spec(spec).build_server()


class Repeat:
    """A step kind added by a test: ``{"values"}``, the body ``times`` times over (``class_args``)."""

    def __init__(self, name: str, times: int) -> None:
        self.name = name
        self._times = times

    async def run(self, body, event):
        return {"values": [body] * self._times}


@pytest.fixture
def repeat_kind():
    STEP_KINDS["repeat"] = StepKind(lambda compiler, spec: Repeat(spec.name, spec.class_args["times"]))
    yield
    del STEP_KINDS["repeat"]


def test_a_new_step_kind_is_one_entry_in_the_registry(repeat_kind):
    spec = {
        "topology": "flow",
        "steps": [
            {"name": "twice", "kind": "repeat", "class_args": {"times": 2}},
            {"name": "count", "kind": "task", "handler": "tests.graph.steps:count", "after": ["twice"]},
        ],
    }
    with Graph.from_spec(GraphSpec.from_dict(spec)).to_mock_server() as server:
        assert server.test("/", body={"values": [1, 2, 3]}) == {"count": 2}
    router = GraphSpec.from_dict({"steps": [{"name": "twice", "kind": "repeat", "class_args": {"times": 2}}]})
    with pytest.raises(GraphError, match="a router graph routes to model or ensemble steps, not repeat"):
        Graph.from_spec(router).build_server()
