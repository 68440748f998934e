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
``explain(body)`` and ``op_<name>(body)`` are called as MLRun calls them; class arguments arrive as keyword
arguments and are read with ``get_param``.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from pathlib import Path
from typing import Any

from v2serve.errors import InvalidRequest, NotImplementedOperation
from v2serve.models.base import Model
from v2serve.protocol.paths import get_path, set_path

DOCUMENT_OPERATIONS = ("infer", "predict", "explain")


class ServingContext:
    """What MLRun's ``self.context`` offers a model that v2serve has: a logger and the graph's parameters."""

    def __init__(self, logger: logging.Logger | None = None, parameters: dict[str, Any] | None = None) -> None:
        self.logger = logger or logging.getLogger("v2serve.mlrun")
        self.parameters: dict[str, Any] = dict(parameters or {})


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
        else the file in that folder whose name ends with ``suffix``."""
        if self.model_path is None:
            raise FileNotFoundError(f"model {self.name!r} has no model_path")
        path = Path(self.model_path)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(suffix))
            if not matches:
                raise FileNotFoundError(f"no file ending in {suffix!r} in {path}")
            path = matches[0]
        return str(path), {}

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

    def serve_document(self, operation: str, body: Any, event_id: str | None) -> Any:
        """One infer, predict or explain, as MLRun's ``do_event`` runs it."""
        started = datetime.datetime.now(datetime.timezone.utc)
        original = body
        if self.input_path:
            body = get_path(body, self.input_path, f"model {self.name!r} (its input_path)")
        if not isinstance(body, dict):
            body = {"inputs": body}
        request = self.preprocess(body, operation)
        request = self.validate(request, operation)
        if operation == "explain":
            if type(self).explain is Model.explain:
                raise NotImplementedOperation(f"model {self.name!r} does not implement explain")
            outputs = self.explain(request)
        else:
            outputs = self.predict(request)
        request_id = body.get("id") if isinstance(body.get("id"), str) else None
        response: dict[str, Any] = {"id": request_id or event_id or uuid.uuid4().hex, "model_name": self.name}
        if self.version:
            response["model_version"] = self.version
        response["outputs"] = outputs
        response["timestamp"] = started.isoformat(sep=" ", timespec="microseconds")
        response = self.postprocess(response)
        if self.result_path:
            if not isinstance(original, dict):
                raise InvalidRequest(f"result_path {self.result_path!r} needs a JSON object body")
            original = dict(original)
            set_path(original, self.result_path, response)
            return original
        return response
