"""The Model base class that users subclass."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from v2serve.errors import NotImplementedOperation
from v2serve.protocol.types import TensorSpec

Tensors = dict[str, np.ndarray]


@dataclass(slots=True)
class RequestContext:
    """What a model may want to know about the request beyond its input tensors."""

    id: str
    parameters: dict[str, Any] = field(default_factory=dict)
    input_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    requested_outputs: list[str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    batch: list[RequestContext] | None = None
    """When dynamic batching merged several requests into this call: each request's context, in row order."""


class Model:
    """A model served by v2serve.

    Lifecycle: ``__init__`` is cheap (store arguments); ``load()`` does the heavy work (read weights, build
    sessions) and runs once before the model is marked ready; ``unload()`` releases it. Requests then call
    ``preprocess`` -> ``predict`` -> ``postprocess`` on numpy arrays keyed by tensor name.

    Each of ``load``, ``predict``, ``preprocess``, ``postprocess``, ``explain``, ``unload`` and the custom
    operations ``op_<name>`` may be a plain or an ``async`` method. Plain methods run in the server's
    bounded thread pool, never on the event loop, so blocking work there does not stall other requests;
    ``async`` methods are awaited on the loop and must not block. Whether a method is sync or async, and
    whether it accepts the ``context`` argument, is decided once when the model is registered.

    Metadata: ``inputs`` and ``outputs`` describe the tensors (shape -1 = variable) and are checked against
    requests when given; ``feature_names`` orders the dict rows of ``infer_dict`` into the columns of the
    model's single input.

    Example::

        class AddOne(Model):
            inputs = [TensorSpec("x", "FP32", [-1])]
            outputs = [TensorSpec("y", "FP32", [-1])]

            def predict(self, inputs):
                return {"y": inputs["x"] + 1}
    """

    inputs: Sequence[TensorSpec] = ()
    outputs: Sequence[TensorSpec] = ()
    feature_names: Sequence[str] | None = None
    platform: str = "python"

    max_batch_size: int = 0
    """Dynamic batching: concatenate up to this many rows of concurrent requests along the first axis into
    one predict call, then split the outputs back (0 or 1: off). predict must then map rows to rows."""
    max_batch_delay_ms: float = 2.0
    """How long a batch waits for more requests once its first one is in."""
    instances: int = 4
    """How many predict calls of this model may run at once (worker threads; on a GPU, CUDA streams)."""
    max_queue_size: int = 512
    """Requests waiting beyond this get 503 with Retry-After at once instead of queueing."""
    timeout_s: float | None = None
    """Default deadline of a request; a request's ``parameters.timeout`` (microseconds) overrides it."""
    warmup_inputs: Mapping[str, Any] | None = None
    """Sample inputs run once through predict after load, before the model is marked ready."""
    takes_documents: bool = False
    """The model takes request documents as they were sent, not tensors (MLRun's classes, see
    ``v2serve.models.mlrun``); its ``serve_document(operation, body, event_id)`` answers infer and explain."""
    bytes_content_type: str = "application/octet-stream"
    """The content type of a response that is one BYTES value sent as it is (TorchServe's /predictions: an
    image a model produced, say); a str value goes as text/plain."""

    def __init__(
        self,
        name: str | None = None,
        version: str | None = None,
        model_path: str | None = None,
        *,
        max_batch_size: int | None = None,
        max_batch_delay_ms: float | None = None,
        instances: int | None = None,
        max_queue_size: int | None = None,
        timeout_s: float | None = None,
        warmup_inputs: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name or _snake_case(type(self).__name__)
        self.version = None if version is None else str(version)
        self.model_path = model_path
        overrides = {
            "max_batch_size": max_batch_size,
            "max_batch_delay_ms": max_batch_delay_ms,
            "instances": instances,
            "max_queue_size": max_queue_size,
            "timeout_s": timeout_s,
            "warmup_inputs": warmup_inputs,
        }
        for attribute, value in overrides.items():
            if value is not None:
                setattr(self, attribute, value)

    def load(self) -> Any:
        """Load weights and build whatever predict needs. The default does nothing."""
        return None

    def unload(self) -> Any:
        """Release what load acquired. The default does nothing."""
        return None

    def preprocess(self, inputs: Tensors, *args: Any, **kwargs: Any) -> Any:
        return inputs

    def predict(self, inputs: Tensors, *args: Any, **kwargs: Any) -> Any:
        """Compute outputs from inputs: a dict of arrays by output name, or one array for one output.

        A generator (sync or async) streams: each item it yields is one response, sent as soon as it is
        produced (chunked on TorchServe's /predictions, server-sent events on v2's ``generate_stream``); the
        generator is closed when the client goes away. A streaming model cannot batch.

        Write it as ``predict(self, inputs)``, or ``predict(self, inputs, context)`` to receive the request's
        RequestContext as the second argument (so for preprocess, postprocess and explain); both type-check
        against this signature.
        """
        raise NotImplementedOperation(f"model {self.name!r} does not implement predict")

    def postprocess(self, outputs: Tensors, *args: Any, **kwargs: Any) -> Any:
        return outputs

    def finalize(self, outputs: Tensors, context: RequestContext) -> Tensors:
        """Shape one request's outputs by that request's parameters, after predict and postprocess, once a
        batch has been split back into its requests (an embedding's ``n_dims``, say, which differs per
        request while the batch's rows share one width). Runs on the event loop: keep it to vectorised numpy
        on the request's own rows. Not called unless a subclass overrides it."""
        return outputs

    def explain(self, inputs: Tensors, *args: Any, **kwargs: Any) -> Any:
        """Explain a prediction. Models without an explainer answer 501."""
        raise NotImplementedOperation(f"model {self.name!r} does not implement explain")

    def custom_operation(self, name: str) -> Callable[..., Any] | None:
        """The method behind custom operation ``name``: ``op_<name>``, called with the request's value and
        its context. A family of models that calls its operations otherwise (MLRun's get an event) says so
        here; None: the model has no such operation."""
        method = getattr(self, f"op_{name}", None)
        return method if callable(method) else None

    def __repr__(self) -> str:
        version = f", version={self.version!r}" if self.version else ""
        return f"{type(self).__name__}(name={self.name!r}{version})"


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
