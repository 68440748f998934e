"""The benchmark models as KServe models, calling the same model code, bound to 127.0.0.1.

MLP_PATH=mlp.onnx python kserve_server.py PORT
"""

from __future__ import annotations

import logging
import os
import sys

import kserve
import kserve.protocol.rest.server as rest
import model_code
from kserve import InferOutput, InferRequest, InferResponse

_Config = rest.uvicorn.Config


class _LoopbackConfig(_Config):  # KServe 0.21 hard-codes host="0.0.0.0"
    def __init__(self, *args, **kwargs) -> None:
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


rest.uvicorn.Config = _LoopbackConfig


def _output(name: str, array) -> InferOutput:
    output = InferOutput(name=name, shape=list(array.shape), datatype="FP32" if array.dtype.kind == "f" else "INT32")
    output.set_data_from_numpy(array, binary_data=False)
    return output


class _Base(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True


class AddSub(_Base):
    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        arrays = {i.name: i.as_numpy() for i in payload.inputs}
        total, difference = model_code.add_sub(arrays["INPUT0"], arrays["INPUT1"])
        return InferResponse(payload.id, self.name, [_output("OUTPUT0", total), _output("OUTPUT1", difference)])


class MLP(_Base):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.mlp = model_code.MLP(os.environ["MLP_PATH"])

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        return InferResponse(payload.id, self.name, [_output("probabilities", self.mlp(x))])


class ChannelMean(_Base):
    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        return InferResponse(payload.id, self.name, [_output("mean", model_code.channel_mean(x))])


if __name__ == "__main__":
    logging.getLogger("uvicorn.access").disabled = True
    server = kserve.ModelServer(http_port=int(sys.argv[1]), enable_grpc=False, enable_latency_logging=False)
    server.start([AddSub("add_sub"), MLP("mlp"), ChannelMean("channel_mean")])
