"""The floor of a Python gRPC server: grpc.aio on uvloop, ModelInfer answered with a fixed, pre-serialised
add_sub response and no work at all. What any Python model server built on grpcio can at best reach.

    python grpc_floor.py PORT
"""

from __future__ import annotations

import sys

import grpc
import numpy as np
import uvloop

from v2serve.grpc.generated import inference_pb2 as pb


def fixed_response() -> bytes:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 7, dtype=np.int32)
    response = pb.ModelInferResponse(model_name="add_sub", id="bench")
    for name in ("OUTPUT0", "OUTPUT1"):
        response.outputs.add(name=name, datatype="INT32", shape=[1, 16])
    response.raw_output_contents.extend([(a + b).tobytes(), (a - b).tobytes()])
    return response.SerializeToString()


async def serve(port: int) -> None:
    answer = fixed_response()

    async def infer(request: bytes, context: object) -> bytes:
        return answer

    handler = grpc.unary_unary_rpc_method_handler(infer)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": handler})]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
