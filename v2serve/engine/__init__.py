"""The serving engine: what runs models, apart from the models themselves. The registry (versions and their
readiness, the accounting of each request), the schedulers (bounded queues, dynamic batching, deadlines),
the invoker and instance threads, the loaders and the model repository."""

from v2serve.engine.registry import ModelEntry, ModelRegistry, ModelState

__all__ = ["ModelEntry", "ModelRegistry", "ModelState"]
