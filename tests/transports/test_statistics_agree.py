"""A model's Triton statistics mean the same whichever front-end served it: one request to each of five copies
of one model (v2 infer, v2 generate, KServe v1, TorchServe, gRPC), over a real uvicorn and a real gRPC
server, fills the same fields of each copy's record: success, queue, compute_input (decode), compute_infer
(predict) and compute_output (encode, which every front-end's rendering is timed as)."""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as triton

from tests.conftest import free_port, serve_in_thread
from tests.frontends.models import RowSum
from v2serve.grpc.server import GrpcServer

ROWS = [[1.0, 2.0, 3.5], [-4.0, 0.25, 6.0]]
FRONT_ENDS = ("v2", "generate", "kserve", "torchserve", "grpc")


@pytest.fixture(scope="module")
def statistics():
    """Each copy's Triton statistics after one request through its own front-end."""
    port = free_port()
    models = [RowSum(name=f"rowsum_{front_end}") for front_end in FRONT_ENDS]
    with (
        serve_in_thread(*models, services=[GrpcServer], grpc={"port": port}) as base,
        httpx.Client(base_url=base, timeout=10) as client,
    ):
        v2 = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": ROWS}]}
        answers = [
            client.post("/v2/models/rowsum_v2/infer", json=v2),
            client.post("/v2/models/rowsum_generate/generate", json={"x": ROWS}),
            client.post("/v1/models/rowsum_kserve:predict", json={"instances": ROWS}),
            client.post("/predictions/rowsum_torchserve", content=orjson.dumps(ROWS),
                        headers={"content-type": "application/json"}),
        ]  # fmt: skip
        assert [answer.status_code for answer in answers] == [200] * 4, [a.text for a in answers]
        tensor = triton.InferInput("x", [2, 3], "FP32")
        tensor.set_data_from_numpy(np.asarray(ROWS, dtype=np.float32))
        with triton.InferenceServerClient(f"127.0.0.1:{port}") as grpc_client:
            grpc_client.infer("rowsum_grpc", [tensor])
        yield {
            front_end: client.get(f"/v2/models/rowsum_{front_end}/stats").json()["model_stats"][0]
            for front_end in FRONT_ENDS
        }


def filled(record: dict) -> dict[str, int]:
    """The counts of a record: requests, executions, and each inference_stats field."""
    counts = {kind: duration["count"] for kind, duration in record["inference_stats"].items()}
    return {"inference_count": record["inference_count"], "execution_count": record["execution_count"], **counts}


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_one_request_fills_the_same_statistics_through_every_front_end(statistics, front_end):
    expected = {"inference_count": 1, "execution_count": 1, "success": 1, "fail": 0, "queue": 1,
                "compute_input": 1, "compute_infer": 1, "compute_output": 1}  # fmt: skip
    assert filled(statistics[front_end]) == expected


def test_every_filled_duration_took_time(statistics):
    for front_end, record in statistics.items():
        for kind in ("success", "compute_input", "compute_infer", "compute_output"):
            assert record["inference_stats"][kind]["ns"] > 0, (front_end, kind)
