"""MLRun's model class, so that a class written for MLRun serving runs on v2serve with only its import
changed::

    from v2serve.models.mlrun import V2ModelServer      # was: from mlrun.serving import V2ModelServer

    class ClassifierModel(V2ModelServer):
        def load(self):
            model_file, extra = self.get_model(".pkl")
            self.model = load(open(model_file, "rb"))

        def predict(self, body: dict) -> list:
            return self.model.predict(np.asarray(body["inputs"])).tolist()

Such a class takes the request document as it was sent, not tensors: ``predict(body)`` gets the body with
its ``inputs`` untouched (bytes for an image or octet-stream body, a str for text), and the answer has
MLRun's shape, ``{"id", "model_name", "model_version" (when versioned), "outputs": <what predict returned>,
"timestamp"}``. ``preprocess(body, operation)``, ``validate(body, operation)``, ``postprocess(response)``,
``explain(body)`` and ``op_<name>(event)`` (the event's ``body`` is the request's) are called as MLRun
calls them; class arguments arrive as keyword arguments and are read with ``get_param``.
"""

from __future__ import annotations

import datetime
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2serve.errors import InvalidRequest, NotImplementedOperation
from v2serve.models.base import Model, RequestContext
from v2serve.protocol.ids import new_request_id
from v2serve.protocol.paths import get_path, set_path
from v2serve.protocol.types import TensorSpec

DOCUMENT_OPERATIONS = ("infer", "predict", "explain", "infer_dict", "predict_dict")


class ServingContext:
    """What MLRun's ``self.context`` offers a model that v2serve has: a logger and the graph's parameters."""

    def __init__(self, logger: logging.Logger | None = None, parameters: dict[str, Any] | None = None) -> None:
        self.logger = logger or logging.getLogger("v2serve.mlrun")
        self.parameters: dict[str, Any] = dict(parameters or {})


@dataclass
class ServingEvent:
    """What MLRun passes an ``op_<name>`` method: the request's ``body``, its ``path`` (``/<name>``),
    ``method``, ``id`` and ``headers``."""

    body: Any
    path: str = "/"
    method: str = "POST"
    id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


MODEL_SPEC_FILE = "model_spec.yaml"

_VALUE_TYPES = {"float": "FP64", "float32": "FP32", "float64": "FP64", "double": "FP64", "float16": "FP16",
                "int": "INT64", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
                "uint8": "UINT8", "bool": "BOOL", "str": "BYTES", "string": "BYTES", "bytes": "BYTES"}  # fmt: skip


@dataclass(frozen=True)
class Feature:
    """One input or output of MLRun's model spec: a name and a ``value_type`` (``float``, ``int``, ``str``)."""

    name: str
    value_type: str = ""

    def tensor_spec(self) -> TensorSpec:
        # A column of values: one element a row.
        return TensorSpec(self.name, _VALUE_TYPES.get(self.value_type.lower(), "BYTES"), [-1])


@dataclass(frozen=True)
class ModelSpec:
    """MLRun's model spec as ``log_model`` writes it (``model_spec.yaml``): the model's inputs and outputs."""

    inputs: list[Feature]
    outputs: list[Feature]

    @classmethod
    def read(cls, path: Path) -> ModelSpec:
        import yaml

        document = yaml.safe_load(path.read_text()) or {}
        spec = document.get("spec", document) if isinstance(document, dict) else {}
        return cls(_features(spec.get("inputs"), path), _features(spec.get("outputs"), path))


def _feature_dict(feature: Feature) -> dict[str, str]:
    return {"name": feature.name, "value_type": feature.value_type} if feature.value_type else {"name": feature.name}


def _features(items: Any, path: Path) -> list[Feature]:
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(item, dict) and "name" in item for item in items):
        raise ValueError(f"{path}: inputs and outputs are lists of {{name, value_type}}")
    return [Feature(str(item["name"]), str(item.get("value_type") or "")) for item in items]


class V2ModelServer(Model):
    """The base class of MLRun-style models (see the module's description)."""

    takes_documents = True
    platform = "mlrun"

    def __init__(
        self,
        context: ServingContext | None = None,
        name: str | None = None,
        model_path: str | None = None,
        model: Any = None,
        protocol: str | None = None,
        input_path: str | None = None,
        result_path: str | None = None,
        version: str | None = None,
        **class_args: Any,
    ) -> None:
        super().__init__(name=name, version=version, model_path=None if model_path is None else str(model_path))
        self.context = context or ServingContext()
        self.model = model
        self.protocol = protocol or "v2"
        self.input_path = input_path
        self.result_path = result_path
        self.model_spec: ModelSpec | None = None
        """MLRun's model spec (inputs and outputs as features), from the model folder's model_spec.yaml."""
        self._class_args = class_args
        for key, value in class_args.items():
            if not hasattr(type(self), key):  # MLRun sets class arguments as attributes too
                setattr(self, key, value)

    # ------------------------------------------------------------ MLRun's model API

    def get_param(self, key: str, default: Any = None) -> Any:
        """A class argument, else a parameter of the graph (function-level), else ``default``."""
        if key in self._class_args:
            return self._class_args[key]
        return self.context.parameters.get(key, default)

    def get_model(self, suffix: str = "") -> tuple[str, dict[str, Any]]:
        """The model file and MLRun's extra data items (none here): ``model_path`` itself when it is a file,
        else the file in that folder whose name ends with ``suffix``. A folder's ``model_spec.yaml`` (what
        MLRun's ``log_model`` writes) gives ``model_spec``: its inputs order ``infer_dict`` rows and are the
        model's metadata."""
        if self.model_path is None:
            raise FileNotFoundError(f"model {self.name!r} has no model_path")
        path = Path(self.model_path)
        if path.is_dir():
            spec_file = path / MODEL_SPEC_FILE
            if spec_file.is_file():
                self._use_model_spec(ModelSpec.read(spec_file))
            matches = sorted(
                p for p in path.iterdir() if p.is_file() and p.name.endswith(suffix) and p.name != MODEL_SPEC_FILE
            )
            if not matches:
                raise FileNotFoundError(f"no file ending in {suffix!r} in {path}")
            path = matches[0]
        return str(path), {}

    def mlrun_metadata(self) -> dict[str, Any]:
        """The model's metadata as MLRun answers ``GET /v2/models/<m>``: name, version ("" when none), and
        the model spec's inputs and outputs as features (``{name, value_type}``)."""
        spec = self.model_spec
        return {
            "name": self.name,
            "version": self.version or "",
            "inputs": [] if spec is None else [_feature_dict(feature) for feature in spec.inputs],
            "outputs": [] if spec is None else [_feature_dict(feature) for feature in spec.outputs],
        }

    def _use_model_spec(self, spec: ModelSpec) -> None:
        self.model_spec = spec
        self.feature_names = [feature.name for feature in spec.inputs]
        self.inputs = [feature.tensor_spec() for feature in spec.inputs]
        self.outputs = [feature.tensor_spec() for feature in spec.outputs]

    def _inputs_to_list(self, request: dict[str, Any]) -> dict[str, Any]:
        """``infer_dict``: rows keyed by feature name, put in the order of the model spec's inputs (MLRun's)."""
        if self.model_spec is None or not self.model_spec.inputs:
            raise InvalidRequest(
                "In order to use predict_dict or infer_dict operation you have to provide `model_path` to the model "
                "server and to load it by `load()` function"
            )
        order = [feature.name for feature in self.model_spec.inputs]
        inputs = request.get("inputs")
        if isinstance(inputs, dict):
            rows, single = [inputs], True
        elif isinstance(inputs, list) and all(isinstance(row, dict) for row in inputs):
            rows, single = inputs, False
        else:
            raise InvalidRequest(
                "When using predict_dict or infer_dict operation the inputs must be of type `list[dict]` or `dict`"
            )
        missing = sorted({name for row in rows for name in order if name not in row})
        if missing:
            raise InvalidRequest(f"the input rows lack feature(s) {missing}; the model's inputs are {order}")
        ordered = [[row[name] for name in order] for row in rows]
        return {**request, "inputs": ordered[0] if single else ordered}

    def preprocess(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """The request document before validate and predict; MLRun calls it ``preprocess(request,
        operation)``, and so does v2serve."""
        return inputs

    def validate(self, request: dict[str, Any], operation: str) -> dict[str, Any]:
        """Check the request; MLRun's default asks for ``inputs`` as a list on predict and explain."""
        if operation in DOCUMENT_OPERATIONS:
            if "inputs" not in request:
                raise InvalidRequest(f"the request to {self.name!r} has no 'inputs'")
            inputs = request["inputs"]
            if not isinstance(inputs, list | bytes | str):
                raise InvalidRequest(f"'inputs' must be a list, got {type(inputs).__name__}")
        return request

    def postprocess(self, outputs: Any, *args: Any, **kwargs: Any) -> Any:
        """The response document before it is sent (MLRun: ``postprocess(response)``)."""
        return outputs

    # ------------------------------------------------------------ what the data plane calls

    def custom_operation(self, name: str) -> Callable[..., Any] | None:
        """``op_<name>(event)``, as MLRun calls it: with the event, whose ``body`` is the request's."""
        method = super().custom_operation(name)
        if method is None:
            return None

        def event_of(body: Any, context: RequestContext) -> ServingEvent:
            return ServingEvent(body=body, path=f"/{name}", id=context.id, headers=dict(context.headers))

        if inspect.iscoroutinefunction(method):

            async def call_async(body: Any, context: RequestContext) -> Any:
                return await method(event_of(body, context))

            return call_async

        def call(body: Any, context: RequestContext) -> Any:
            return method(event_of(body, context))

        return call

    def serve_document(self, operation: str, body: Any, event_id: str | None) -> Any:
        """One infer, predict or explain, as MLRun's ``do_event`` runs it."""
        started = datetime.datetime.now(datetime.timezone.utc)
        original = body
        if self.input_path:
            body = get_path(body, self.input_path, f"model {self.name!r} (its input_path)")
        if not isinstance(body, dict):
            body = {"inputs": body}
        if operation in ("infer_dict", "predict_dict"):
            body = self._inputs_to_list(body)
        request = self.preprocess(body, operation)
        request = self.validate(request, operation)
        if operation == "explain":
            if type(self).explain is Model.explain:
                raise NotImplementedOperation(f"model {self.name!r} does not implement explain")
            outputs = self.explain(request)
        else:
            outputs = self.predict(request)
        request_id = body.get("id") if isinstance(body.get("id"), str) else None
        response: dict[str, Any] = {"id": request_id or event_id or new_request_id(), "model_name": self.name}
        if self.version:
            response["model_version"] = self.version
        response["outputs"] = outputs
        if operation != "explain":  # MLRun's explain answers carry no timestamp
            response["timestamp"] = started.isoformat(sep=" ", timespec="microseconds")
        response = self.postprocess(response)
        if self.result_path:
            if not isinstance(original, dict):
                raise InvalidRequest(f"result_path {self.result_path!r} needs a JSON object body")
            original = dict(original)
            set_path(original, self.result_path, response)
            return original
        return response
