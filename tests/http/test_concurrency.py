"""Behaviour under concurrency, against a real uvicorn server and a real client."""

import asyncio

import httpx
import numpy as np
import pytest

from tests.conftest import serve_in_thread
from tests.fixtures import GatedModel, SumModel

pytestmark = pytest.mark.anyio


async def test_slow_predict_does_not_block_health_or_other_models():
    gated = GatedModel(name="gated")
    with serve_in_thread(gated, SumModel(name="sum")) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            slow = asyncio.create_task(
                client.post(
                    "/v2/models/gated/infer",
                    json={"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [7]}]},
                )
            )
            await asyncio.to_thread(gated.started.wait, 5)
            assert gated.started.is_set()
            live = await client.get("/v2/health/live")
            other = await client.post(
                "/v2/models/sum/infer",
                json={"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]},
            )
            # Both answered while the gated predict is still running: it has not been released yet.
            assert not slow.done()
            assert live.status_code == 200 and other.status_code == 200
            assert other.json()["outputs"][0]["data"] == [3.0]
            gated.release.set()
            assert (await slow).json()["outputs"][0]["data"] == [7]


async def test_concurrent_requests_each_get_their_own_outputs():
    with serve_in_thread(SumModel(name="sum")) as url:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

            async def one(i: int) -> tuple[int, dict]:
                row = (np.arange(4) + i).tolist()
                response = await client.post(
                    "/v2/models/sum/infer",
                    json={
                        "id": f"req-{i}",
                        "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": row}],
                    },
                )
                return i, response.json()

            results = await asyncio.gather(*(one(i) for i in range(200)))
    for i, body in results:
        assert body["id"] == f"req-{i}"
        assert body["outputs"][0]["data"] == [float(4 * i + 6)]
