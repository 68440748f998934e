"""The model repository extension over HTTP: index, load, reload under load, failed load, unload, tokens."""

import asyncio
import json
import textwrap

import pytest

from tests.conftest import serve_in_process

pytestmark = pytest.mark.anyio

MODEL_CODE = textwrap.dedent(
    """
    import time

    from v2serve.models.base import Model, TensorSpec


    class Scale(Model):
        inputs = [TensorSpec("x", "FP32", [-1, -1])]
        outputs = [TensorSpec("y", "FP32", [-1, -1])]

        def __init__(self, factor=1.0, fail=False, load_seconds=0.0, **kwargs):
            super().__init__(**kwargs)
            self.factor, self.fail, self.load_seconds = factor, fail, load_seconds

        def load(self):
            time.sleep(self.load_seconds)  # simulated load work, so that requests overlap a reload
            if self.fail:
                raise RuntimeError("weights are corrupt")

        def predict(self, inputs):
            return {"y": inputs["x"] * self.factor}
    """
)
REQUEST = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1]}]}


def write_model(directory, **args):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.py").write_text(MODEL_CODE)
    settings = {"implementation": "model.py:Scale", "args": args}
    (directory / "model-settings.json").write_text(json.dumps(settings))


async def answer(client, path="/v2/models/scale/infer"):
    reply = await client.post(path, json=REQUEST)
    assert reply.status_code == 200, reply.text
    return reply.json()["outputs"][0]["data"][0]


async def test_load_from_the_repository_and_index(tmp_path):
    write_model(tmp_path / "scale", factor=2)
    async with serve_in_process(repository={"root": str(tmp_path)}) as client:
        assert "model_repository" in (await client.get("/v2")).json()["extensions"]
        index = (await client.post("/v2/repository/index")).json()
        assert index == [{"name": "scale", "state": "UNAVAILABLE", "reason": "not loaded"}]
        assert (await client.post("/v2/models/scale/infer", json=REQUEST)).status_code == 404
        assert (await client.post("/v2/repository/models/scale/load")).status_code == 200
        assert await answer(client) == 2
        assert (await client.post("/v2/repository/index", json={"ready": True})).json() == [
            {"name": "scale", "version": "", "state": "READY"}
        ]
        missing = await client.post("/v2/repository/models/nothing/load")
        assert missing.status_code == 404 and "scale" in missing.json()["error"]
        assert (await client.post("/v2/repository/models/..hidden/load")).status_code == 400


async def test_a_reload_under_load_fails_no_request(tmp_path):
    write_model(tmp_path / "scale", factor=2, load_seconds=0.2)
    async with serve_in_process(repository={"root": str(tmp_path)}) as client:
        await client.post("/v2/repository/models/scale/load")
        reloaded = asyncio.Event()
        answers = []

        async def keep_asking():
            while not reloaded.is_set():
                answers.append(await answer(client))

        askers = [asyncio.create_task(keep_asking()) for _ in range(4)]
        write_model(tmp_path / "scale", factor=3, load_seconds=0.2)
        reply = await client.post("/v2/repository/models/scale/load")
        reloaded.set()
        await asyncio.gather(*askers)  # any failed request raised in answer()
        assert reply.status_code == 200
        assert await answer(client) == 3
    assert set(answers) <= {2, 3} and 2 in answers and len(answers) > 8


async def test_a_failed_load_leaves_the_old_version_serving_and_says_why(tmp_path):
    write_model(tmp_path / "scale", factor=2)
    async with serve_in_process(repository={"root": str(tmp_path)}) as client:
        await client.post("/v2/repository/models/scale/load")
        write_model(tmp_path / "scale", factor=3, fail=True)
        failed = await client.post("/v2/repository/models/scale/load")
        assert failed.status_code == 500 and "weights are corrupt" in failed.json()["error"]
        assert await answer(client) == 2
        index = (await client.post("/v2/repository/index")).json()
        assert index[0]["state"] == "READY" and "weights are corrupt" in index[0]["reason"]
        ready = (await client.get("/v2/models/scale/ready")).json()
        assert ready["ready"] is True and "weights are corrupt" in ready["last_load_error"]
        write_model(tmp_path / "scale", factor=4)
        assert (await client.post("/v2/repository/models/scale/load")).status_code == 200
        assert "reason" not in (await client.post("/v2/repository/index")).json()[0]
        assert await answer(client) == 4


async def test_unloading_one_version_leaves_the_others(tmp_path):
    write_model(tmp_path / "scale" / "1", factor=1)
    write_model(tmp_path / "scale" / "2", factor=2)
    async with serve_in_process(repository={"root": str(tmp_path)}) as client:
        await client.post("/v2/repository/models/scale/load")
        assert await answer(client) == 2  # the highest version by default
        assert await answer(client, "/v2/models/scale/versions/1/infer") == 1
        assert (await client.post("/v2/repository/models/scale/versions/2/unload")).status_code == 200
        assert await answer(client) == 1
        gone = await client.post("/v2/models/scale/versions/2/infer", json=REQUEST)
        assert gone.status_code == 404
        assert (await client.post("/v2/repository/models/scale/unload")).status_code == 200
        assert (await client.post("/v2/models/scale/infer", json=REQUEST)).status_code == 404
        assert (await client.post("/v2/repository/models/scale/unload")).status_code == 404


async def test_the_repository_routes_can_need_a_token_or_be_disabled(tmp_path):
    write_model(tmp_path / "scale", factor=2)
    async with serve_in_process(repository={"root": str(tmp_path), "token": "s3cret"}) as client:
        refused = await client.post("/v2/repository/models/scale/load")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        wrong = await client.post("/v2/repository/index", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        auth = {"authorization": "Bearer s3cret"}
        assert (await client.post("/v2/repository/models/scale/load", headers=auth)).status_code == 200
        assert await answer(client) == 2  # inference needs no token
    async with serve_in_process(repository={"root": str(tmp_path), "enabled": False}) as client:
        assert (await client.post("/v2/repository/index")).status_code == 404
