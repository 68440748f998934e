"""Checks with the kserve client, run in a process of their own (``python -m tests.kserve_checks CHECK
ADDRESS``): kserve and tritonclient.grpc both register the protocol's "inference" messages in protobuf's
default pool, so the two clients cannot be imported into one process. Exits non-zero on a failed check."""

from __future__ import annotations

import asyncio
import sys

import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def rest_v1(url: str) -> None:
    client = InferenceRESTClient(RESTConfig(protocol="v1"))
    try:
        assert await client.is_server_live(url) is True
        assert await client.is_model_ready(url, "rowsum") is True
        assert await client.is_model_ready(url, "loading") is False
        result = await client.infer(url, {"instances": [[1, 2, 3], [4, 5, 6.5]]}, model_name="rowsum")
        assert result == {"predictions": [6.0, 15.5]}, result
        explained = await client.explain(url, "rowsum", {"instances": [[1, 1, 2]]})
        assert np.allclose(explained["explanations"], [[0.25, 0.25, 0.5]]), explained
        for body, model, status in (({"instances": [[1, 2]]}, "rowsum", "400"), ({"instances": [[1]]}, "nope", "404")):
            try:
                await client.infer(url, body, model_name=model)
            except httpx.HTTPStatusError as exc:
                assert status in str(exc), exc
            else:
                raise AssertionError(f"{model} {body} did not fail")
    finally:
        await client.close()


async def rest_v2(url: str) -> None:
    client = InferenceRESTClient(RESTConfig(protocol="v2"))
    try:
        assert await client.is_server_live(url) is True
        assert await client.is_model_ready(url, "add_sub") is True
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor = InferInput(name, list(a.shape), "INT32")
            tensor.set_data_from_numpy(a, binary_data=name == "INPUT1")
            inputs.append(tensor)
        response = await client.infer(url, InferRequest("add_sub", inputs, request_id="kserve"), model_name="add_sub")
        outputs = {output.name: output.as_numpy() for output in response.outputs}
        assert outputs["OUTPUT0"].tolist() == (a + a).tolist()
        assert outputs["OUTPUT1"].tolist() == (a - a).tolist()
    finally:
        await client.close()


async def grpc(address: str) -> None:
    client = InferenceGRPCClient(address)
    try:
        assert await client.is_server_ready()
        assert await client.is_model_ready("rowsum")
        x = np.array([[1, 2, 3], [4, 5, 6.5]], dtype=np.float32)
        for binary in (False, True):  # typed contents, then raw_input_contents
            tensor = InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            response = await client.infer(InferRequest("rowsum", [tensor], request_id=f"k{binary}"))
            assert response.id == f"k{binary}", response.id
            assert response.outputs[0].as_numpy().tolist() == [6.0, 15.5]
    finally:
        await client.close()


CHECKS = {"rest_v1": rest_v1, "rest_v2": rest_v2, "grpc": grpc}

if __name__ == "__main__":
    check, address = sys.argv[1], sys.argv[2]
    asyncio.run(CHECKS[check](address))
    print(f"{check}: ok")
