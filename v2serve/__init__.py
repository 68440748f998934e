"""v2serve: a model server for the v2 Open Inference Protocol.

``import v2serve`` is light: no web server, torch, onnxruntime, aiokafka or boto3 is imported here.
"""

from v2serve._version import __version__
from v2serve.errors import (
    InferenceError,
    InvalidRequest,
    ModelNotFound,
    ModelNotReady,
    V2ServeError,
)
from v2serve.models.base import Model, RequestContext
from v2serve.protocol.types import TensorSpec
from v2serve.sdk import Graph

__all__ = [
    "Graph",
    "InferenceError",
    "InvalidRequest",
    "Model",
    "ModelNotFound",
    "ModelNotReady",
    "RequestContext",
    "TensorSpec",
    "V2ServeError",
    "__version__",
]
