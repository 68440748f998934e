from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fixtures import FailingLoadModel, SumModel
from v2serve.engine.invoker import bind
from v2serve.engine.loader import models_from_target
from v2serve.engine.registry import ModelRegistry, ModelState, version_sort_key
from v2serve.errors import ModelNotFound, ModelNotReady


@pytest.fixture
def registry():
    with ThreadPoolExecutor(2) as pool:
        yield ModelRegistry(pool)


def test_default_version_is_the_highest(registry):
    for version in ("1", "10", "9", "beta"):
        registry.add(SumModel(name="m", version=version))
    assert registry.resolve("m").version == "10"
    assert registry.resolve("m", "beta").version == "beta"
    assert registry.resolve("m:9").version == "9"
    assert sorted(["10", "9", "beta", None], key=version_sort_key) == [None, "beta", "9", "10"]


def test_unknown_names_and_versions_list_what_exists(registry):
    registry.add(SumModel(name="a"))
    registry.add(SumModel(name="b", version="1"))
    with pytest.raises(ModelNotFound, match="available models: a, b"):
        registry.resolve("c")
    with pytest.raises(ModelNotFound, match="no version '2'; versions: '1'"):
        registry.resolve("b", "2")


def test_duplicate_registration_is_refused(registry):
    registry.add(SumModel(name="a"))
    with pytest.raises(ValueError, match="registered twice"):
        registry.add(SumModel(name="a"))


@pytest.mark.anyio
async def test_states_follow_loading(registry):
    good, bad = registry.add(SumModel(name="good")), registry.add(FailingLoadModel(name="bad"))
    assert good.state is ModelState.LOADING
    with pytest.raises(ModelNotReady, match="is loading"):
        good.require_ready()
    await registry.load_all()
    assert good.state is ModelState.READY and good.load_seconds is not None
    assert bad.state is ModelState.FAILED and bad.reason == "RuntimeError: weights file is corrupt"
    assert not registry.is_ready()
    await registry.unload_all()
    assert good.state is ModelState.UNLOADED


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_bind_drops_the_context_only_for_methods_without_it():
    def one(inputs):
        return ("one", inputs)

    def two(inputs, context):
        return ("two", inputs, context)

    assert bind(one, 2).call("i", "c") == ("one", "i")
    assert bind(two, 2).call("i", "c") == ("two", "i", "c")


def test_loader_reads_model_directories_and_import_paths():
    models = models_from_target("examples")
    assert sorted((m.name, m.version) for m in models) == [("add_sub", "1"), ("echo_bytes", None), ("iris", None)]
    [sum_model] = models_from_target("tests.fixtures:SumModel")
    assert sum_model.name == "sum_model"
    with pytest.raises(ValueError, match=r"not a subclass of v2serve\.Model"):
        models_from_target("tests.fixtures:np")
    with pytest.raises(ValueError, match="import path"):
        models_from_target("no_such_thing")
