"""v2serve: a model server for the v2 Open Inference Protocol.

``import v2serve`` is light: no web server, torch, onnxruntime, aiokafka or boto3 is imported here.
"""

__version__ = "0.1.0"

from v2serve.errors import (
    InferenceError,
    InvalidRequest,
    ModelNotFound,
    ModelNotReady,
    V2ServeError,
)
from v2serve.graph.sdk import Graph
from v2serve.models.base import Model, RequestContext
from v2serve.protocol.types import TensorSpec

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
