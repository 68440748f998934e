"""Routes as data: a front-end is a list of routes; the table dispatches them and documents them."""

import pytest

from tests.fixtures import SumModel
from v2serve.core.openapi import openapi_document
from v2serve.core.routes import Route, RouteTable
from v2serve.errors import MethodNotAllowed, OperationNotFound
from v2serve.event import Reply
from v2serve.mock import MockServer
from v2serve.protocol.schemas import Liveness
from v2serve.server import ModelServer
from v2serve.settings import Settings


async def ping(event, params):
    return Reply.json({"status": "Healthy"})


async def echo_model(event, params):
    return Reply.json({"model": params["model"], "version": params.get("version")})


TOY = [
    Route("GET", "/ping", ping, "Liveness, TorchServe style", Liveness, server_level=True),
    Route("POST", "/predictions/{model}/{version}", echo_model, "Which model a prediction names", errors=(404,)),
]


def test_a_toy_front_end_is_dispatched_and_documented_in_a_few_lines():
    # TorchServe's own front-end is off: the toy stands in for it.
    settings = Settings(models=[], frontends={"torchserve": False})
    with MockServer(ModelServer([SumModel(name="sum")], settings, extra_routes=TOY)) as server:
        assert server.test("/ping") == {"status": "Healthy"}
        assert server.test("/predictions/sum/2", body={}) == {"model": "sum", "version": "2"}
        assert server.test("/v2/models/sum/ready")["ready"] is True  # the v2 routes are still there
        document = server.test("/v2/docs/openapi.json")
    assert document["paths"]["/ping"]["get"]["summary"] == "Liveness, TorchServe style"
    assert [p["name"] for p in document["paths"]["/predictions/{model}/{version}"]["post"]["parameters"]] == [
        "model",
        "version",
    ]


def test_the_first_matching_pattern_decides_and_a_missing_method_is_405():
    table = RouteTable(TOY)
    route, params = table.resolve("POST", "/predictions/a/1/")
    assert route.handler is echo_model and params == {"model": "a", "version": "1"}
    with pytest.raises(MethodNotAllowed) as refused:
        table.resolve("GET", "/predictions/a/1")
    assert refused.value.headers == {"allow": "POST"}
    with pytest.raises(OperationNotFound):
        table.resolve("GET", "/predictions/a")


def test_two_routes_for_one_method_and_path_are_refused():
    with pytest.raises(ValueError, match="two routes for GET /ping"):
        RouteTable([*TOY, TOY[0]])


def test_a_route_may_replace_an_earlier_one_when_it_says_so():
    async def other(event, params):
        return Reply.json({})

    table = RouteTable([*TOY, Route("GET", "/ping", other, "Another ping", replaces=True)])
    route, _ = table.resolve("GET", "/ping")
    assert route.handler is other and route.summary == "Another ping"
    assert [r.summary for r in table.routes].count("Another ping") == 1 and len(table.routes) == len(TOY)


def test_the_document_is_generated_from_the_same_table():
    table = RouteTable(TOY)
    assert set(openapi_document(table)["paths"]) == {"/ping", "/predictions/{model}/{version}"}
