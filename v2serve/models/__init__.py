"""Model base class, registry with readiness, and the loaders that build models from targets."""

from v2serve.models.base import Model, RequestContext
from v2serve.models.registry import ModelEntry, ModelRegistry, ModelState

__all__ = ["Model", "ModelEntry", "ModelRegistry", "ModelState", "RequestContext"]
