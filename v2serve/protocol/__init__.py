"""The v2 wire format: types, datatypes, the tensor codec and the binary extension. No transport imports."""

from v2serve.protocol.types import InferenceRequest, RequestedOutput, RequestInput, TensorSpec

__all__ = ["InferenceRequest", "RequestInput", "RequestedOutput", "TensorSpec"]
