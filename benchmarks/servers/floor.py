"""The floor: bare starlette + uvicorn + orjson doing the same parsing and model work, and nothing else.

MLP_PATH=mlp.onnx uvicorn floor:app --port 9000
"""

from __future__ import annotations

import os

import model_code
import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DTYPES = {"INT32": np.int32, "FP32": np.float32}
mlp = model_code.MLP(os.environ["MLP_PATH"])


def _add_sub(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    total, difference = model_code.add_sub(inputs["INPUT0"], inputs["INPUT1"])
    return {"OUTPUT0": total, "OUTPUT1": difference}


HANDLERS = {
    "add_sub": _add_sub,
    "mlp": lambda inputs: {"probabilities": mlp(inputs["input"])},
    "channel_mean": lambda inputs: {"mean": model_code.channel_mean(inputs["x"])},
}
DATATYPES = {np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32"}


async def infer(request: Request) -> Response:
    model = request.path_params["model"]
    body = orjson.loads(await request.body())
    inputs = {
        item["name"]: np.asarray(item["data"], dtype=DTYPES[item["datatype"]]).reshape(item["shape"])
        for item in body["inputs"]
    }
    outputs = [
        {"name": name, "datatype": DATATYPES[array.dtype], "shape": list(array.shape), "data": array.ravel()}
        for name, array in HANDLERS[model](inputs).items()
    ]
    content = orjson.dumps({"model_name": model, "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, media_type="application/json")


app = Starlette(routes=[Route("/v2/models/{model}/infer", infer, methods=["POST"])])
