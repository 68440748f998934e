"""Request ids reach everything logged for a request, model code in its worker thread included."""

import json
import logging

import pytest

from tests.conftest import serve_in_process
from v2serve.logs import REQUEST_ID, JSONFormatter, RequestIdFilter
from v2serve.models.base import Model

pytestmark = pytest.mark.anyio


class SeesRequestId(Model):
    def __init__(self):
        super().__init__(name="sees")
        self.seen = []

    def predict(self, inputs):
        self.seen.append(REQUEST_ID.get())
        return dict(inputs)


async def test_model_code_in_its_thread_sees_the_request_id():
    model = SeesRequestId()
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}
    async with serve_in_process(model) as client:
        await client.post("/v2/models/sees/infer", json=body, headers={"x-request-id": "abc"})
        await client.post("/v2/models/sees/infer", json=body)
    assert model.seen[0] == "abc"
    assert model.seen[1] != "abc"
    assert REQUEST_ID.get() == "-"


def test_json_lines_carry_the_request_id():
    record = logging.LogRecord("v2serve.x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    token = REQUEST_ID.set("r-7")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(JSONFormatter().format(record))
    assert (line["message"], line["level"], line["request_id"]) == ("hello world", "WARNING", "r-7")
