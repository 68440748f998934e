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


async def test_only_directories_that_hold_a_model_are_listed_or_loaded(tmp_path):
    write_model(tmp_path / "scale", factor=2)
    write_model(tmp_path / "versioned" / "1", factor=3)
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / "flow.yaml").write_text("topology: flow\n")
    async with serve_in_process(repository={"root": str(tmp_path)}) as client:
        index = (await client.post("/v2/repository/index")).json()
        assert [row["name"] for row in index] == ["scale", "versioned"]
        refused = await client.post("/v2/repository/models/graphs/load")
        assert refused.status_code == 404 and "it has: scale, versioned" in refused.json()["error"]


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
        assert "model_repository" not in (await client.get("/v2")).json()["extensions"]  # not advertised either


# ---- what a repository directory may and may not do (hardening issue, 7)


async def test_a_directory_cannot_load_under_another_models_name(tmp_path):
    write_model(tmp_path / "scale", factor=2)
    write_model(tmp_path / "hijack", factor=-1)
    settings = json.loads((tmp_path / "hijack" / "model-settings.json").read_text())
    (tmp_path / "hijack" / "model-settings.json").write_text(json.dumps(settings | {"name": "scale"}))
    async with serve_in_process(repository={"root": str(tmp_path)}) as client:
        await client.post("/v2/repository/models/scale/load")
        hijack = await client.post("/v2/repository/models/hijack/load")
        assert hijack.status_code == 500 and "loaded under its directory's name only" in hijack.json()["error"]
        assert await answer(client) == 2
        assert (await client.get("/v2/models")).json()["models"] == ["scale"]


async def test_a_reload_serves_the_edited_code(tmp_path):
    write_model(tmp_path / "scale", factor=2)
    async with serve_in_process(repository={"root": str(tmp_path)}) as client:
        await client.post("/v2/repository/models/scale/load")
        assert await answer(client) == 2
        code = (tmp_path / "scale" / "model.py").read_text()
        (tmp_path / "scale" / "model.py").write_text(code.replace('inputs["x"] * self.factor', 'inputs["x"] + 100'))
        assert "+ 100" in (tmp_path / "scale" / "model.py").read_text()
        assert (await client.post("/v2/repository/models/scale/load")).status_code == 200
        assert await answer(client) == 101


@pytest.mark.parametrize(("name", "status"), [("m" * 256, 400), ("é" * 128, 400), ("m" * 255, 404)])
async def test_model_names_longer_than_a_directory_name_are_a_400(tmp_path, name, status):
    async with serve_in_process(repository={"root": str(tmp_path)}) as client:
        response = await client.post(f"/v2/repository/models/{name}/load")
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    "implementation",
    ["../../outside/model.py:Scale", "{tmp}/outside/model.py:Scale", "tests.fixtures:SumModel", "os.path:join"],
)
async def test_implementation_is_confined_to_the_directory_and_named_packages(tmp_path, implementation):
    write_model(tmp_path / "outside", factor=3)
    write_model(tmp_path / "repo" / "scale", factor=2)
    settings_file = tmp_path / "repo" / "scale" / "model-settings.json"
    settings_file.write_text(json.dumps({"implementation": implementation.format(tmp=tmp_path)}))
    async with serve_in_process(repository={"root": str(tmp_path / "repo")}) as client:
        response = await client.post("/v2/repository/models/scale/load")
    assert response.status_code == 500
    assert (
        "outside the model's directory" in response.json()["error"]
        or "implementation_packages" in (response.json()["error"])
    )


async def test_a_package_named_by_the_operator_may_be_imported(tmp_path):
    (tmp_path / "sum").mkdir()
    (tmp_path / "sum" / "model-settings.json").write_text(json.dumps({"implementation": "tests.fixtures:SumModel"}))
    settings = {"repository": {"root": str(tmp_path)}, "implementation_packages": ["tests"]}
    async with serve_in_process(**settings) as client:
        assert (await client.post("/v2/repository/models/sum/load")).status_code == 200
        assert (await client.get("/v2/models/sum/ready")).status_code == 200


@pytest.mark.parametrize(
    ("host", "token", "status"), [("0.0.0.0", None, 403), ("0.0.0.0", "s3cret", 200), ("::1", None, 200)]
)
async def test_without_a_token_load_and_unload_answer_only_on_loopback(tmp_path, host, token, status):
    write_model(tmp_path / "scale", factor=2)
    settings = {"repository": {"root": str(tmp_path), "token": token}, "http": {"host": host}}
    async with serve_in_process(**settings) as client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        load = await client.post("/v2/repository/models/scale/load", headers=headers)
        unload = await client.post("/v2/repository/models/scale/unload", headers=headers)
        index = await client.post("/v2/repository/index", headers=headers)
    assert load.status_code == status, load.text
    assert unload.status_code == status
    assert index.status_code == 200
    if status == 403:
        assert "V2SERVE_REPOSITORY__TOKEN" in load.json()["error"]
