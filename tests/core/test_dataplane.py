"""The data plane, typed: decoded requests in, numpy results out, counted like any request."""

import numpy as np
import pytest

from tests.fixtures import GatedLoadModel, SumModel
from v2serve.errors import ModelNotReady
from v2serve.protocol.decode import DecodedRequest
from v2serve.protocol.response import InferenceResult
from v2serve.protocol.types import InferenceRequest, RequestInput
from v2serve.server import ModelServer
from v2serve.settings import Settings

pytestmark = pytest.mark.anyio


def decoded(values):
    array = np.asarray(values, dtype=np.float32)
    request = InferenceRequest([RequestInput("INPUT0", list(array.shape), "FP32")], id="typed")
    return DecodedRequest(request, {"INPUT0": array})


async def test_a_typed_request_gets_numpy_outputs_and_is_counted():
    server = ModelServer([SumModel(name="sum")], Settings(models=[]))
    await server.start()
    try:
        entry = server.registry.resolve("sum")
        result = await server.core.dataplane.infer(entry, lambda schema: decoded([[1, 2, 3]]))
        assert isinstance(result, InferenceResult) and result.id == "typed"
        [output] = result.outputs
        assert output.name == "OUTPUT0" and output.array.tolist() == [6.0]
        assert server.core.dataplane.statistics(entry)["model_stats"][0]["inference_count"] == 1
    finally:
        await server.stop()


async def test_a_typed_request_to_a_model_not_ready_raises_the_typed_error():
    model = GatedLoadModel(name="loading")
    server = ModelServer([model], Settings(models=[], load_in_background=True))
    await server.start()
    try:
        with pytest.raises(ModelNotReady):
            await server.core.dataplane.infer(server.registry.resolve("loading"), lambda schema: decoded([1.0]))
    finally:
        model.release.set()
        await server.stop()
