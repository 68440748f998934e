"""The benchmark models as MLServer runtimes, calling the same model code."""

from __future__ import annotations

import model_code
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class AddSub(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        arrays = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        total, difference = model_code.add_sub(arrays["INPUT0"], arrays["INPUT1"])
        outputs = [NumpyCodec.encode_output("OUTPUT0", total), NumpyCodec.encode_output("OUTPUT1", difference)]
        return InferenceResponse(model_name=self.name, outputs=outputs)


class MLP(MLModel):
    async def load(self) -> bool:
        self.mlp = model_code.MLP(str(self.settings.parameters.uri))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("probabilities", self.mlp(x))])


class ChannelMean(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("mean", model_code.channel_mean(x))]
        )
