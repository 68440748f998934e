"""Model families: the Model base class users subclass, the runtimes (onnx, torch, embeddings, ...), the
embedding and image models and MLRun's model class. What serves them is in ``v2serve.engine``."""

from v2serve.models.base import Model, RequestContext

__all__ = ["Model", "RequestContext"]
