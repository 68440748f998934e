"""A served process moves its loaded heap out of the garbage collector's reach once its models have loaded
(launch.FrozenHeap), and gives it back when it stops."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.fixtures import GatedLoadModel
from v2serve.launch import create_app_from_settings
from v2serve.server import ModelServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.anyio
async def test_the_heap_is_frozen_once_the_models_have_loaded_and_thawed_at_stop():
    assert gc.get_freeze_count() == 0
    settings = make_settings().model_copy(update={"models": [str(ROOT / "examples" / "add_sub")]})
    app = create_app_from_settings(settings)
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


@pytest.mark.anyio
async def test_when_loaded_waits_for_a_background_load():
    model = GatedLoadModel(name="gated")
    server = ModelServer([model], make_settings(load_in_background=True))
    called = asyncio.Event()
    try:
        await server.start()
        server.when_loaded(called.set)
        await asyncio.sleep(0)
        assert not called.is_set()
        model.release.set()
        await asyncio.wait_for(called.wait(), 30)
    finally:
        model.release.set()
        await server.stop()
