"""The Python SDK for building graphs: ``add_model`` for routers, ``.to()`` chains for flows.

Example::

    graph = Graph("flow")
    graph.to(normalise, name="pre").to(MyModel, "model", model_path="w.onnx").to(label, name="post").respond()
    server = graph.to_mock_server()
    server.test("/", body={"inputs": [...]})

Everything the SDK writes is a ``GraphSpec``: ``graph.to_yaml()`` and ``Graph.from_yaml(text)`` round-trip it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from v2serve.graph.spec import GraphSpec, StepSpec
from v2serve.models.base import Model, _snake_case
from v2serve.settings import Settings

if TYPE_CHECKING:
    from v2serve.mock import MockServer
    from v2serve.server import ModelServer


class Graph:
    """A serving graph under construction. ``topology`` is ``"router"`` (default) or ``"flow"``."""

    def __init__(self, topology: Literal["router", "flow"] = "router", *, base_dir: str | Path | None = None) -> None:
        self.spec = GraphSpec(topology=topology)
        self.base_dir = Path(base_dir) if base_dir is not None else None

    # ------------------------------------------------------------ router

    def add_model(self, key: str, class_name: Any = None, model_path: str | None = None, **class_args: Any) -> Graph:
        """Add a model route. ``key`` is ``name`` or ``name:version``; ``class_name`` a class or import path."""
        self.spec.steps.append(_model_spec(key, class_name, model_path, class_args))
        return self

    def add_ensemble(
        self,
        name: str,
        vote_type: Literal["classification", "regression"] | None = None,
        weights: dict[str, float] | None = None,
        prediction_col_name: str | None = None,
        format_response_with_col_name_flag: bool = False,
        executor_type: Literal["thread", "array"] = "thread",
    ) -> EnsembleBuilder:
        """Add a voting ensemble; add its members with ``.add_model`` on the returned builder.
        ``prediction_col_name``, ``format_response_with_col_name_flag`` and ``executor_type`` are MLRun's:
        the key members answer their predictions under, the vote always answered under it, members run at
        once (``thread``) or one after another (``array``)."""
        spec = StepSpec(
            name=name, kind="ensemble", vote_type=vote_type, weights=weights, prediction_col_name=prediction_col_name,
            format_response_with_col_name_flag=format_response_with_col_name_flag, executor_type=executor_type,
        )  # fmt: skip
        self.spec.steps.append(spec)
        return EnsembleBuilder(spec)

    # ------------------------------------------------------------ flow

    def to(self, class_name: Any = None, name: str | None = None, **options: Any) -> StepRef:
        """Add a step that receives the request body (a flow's entry step)."""
        return self.add_step(class_name, name, after=None, **options)

    def add_step(
        self,
        class_name: Any = None,
        name: str | None = None,
        *,
        after: str | list[str] | None = None,
        **options: Any,
    ) -> StepRef:
        """Add a flow step after the named step(s). Options: handler, kind, model_path, version,
        input_path, result_path, routes; anything else is passed to the class's constructor."""
        spec = _step_spec(class_name, name, options)
        spec.after = [after] if isinstance(after, str) else list(after or [])
        self.spec.steps.append(spec)
        return StepRef(self, spec)

    def error_handler(self, handler: Any = None, class_name: Any = None, **class_args: Any) -> Graph:
        """A task whose output answers any request in which a step failed without its own handler."""
        self.spec.error_handler = _handler_spec("error_handler", handler, class_name, class_args)
        return self

    # ------------------------------------------------------------ serialisation and serving

    def to_dict(self) -> dict[str, Any]:
        return self.spec.to_dict()

    def to_yaml(self) -> str:
        return self.spec.to_yaml()

    @classmethod
    def from_spec(cls, spec: GraphSpec, base_dir: str | Path | None = None) -> Graph:
        graph = cls(spec.topology, base_dir=base_dir)
        graph.spec = spec
        return graph

    @classmethod
    def from_yaml(cls, text: str, base_dir: str | Path | None = None) -> Graph:
        return cls.from_spec(GraphSpec.from_text(text), base_dir)

    @classmethod
    def from_file(cls, path: str | Path) -> Graph:
        return cls.from_spec(GraphSpec.from_file(path), Path(path).resolve().parent)

    def build_server(self, settings: Settings | None = None) -> ModelServer:
        """Validate and build the runtime; every graph error surfaces here, naming the step."""
        from v2serve.server import ModelServer

        return ModelServer(settings=settings, graph=self.spec, graph_dir=self.base_dir)

    def to_mock_server(self, settings: Settings | None = None) -> MockServer:
        """An in-process server whose ``test()`` answers exactly as HTTP would."""
        from v2serve.mock import MockServer

        return MockServer(self.build_server(settings))

    def serve(self, settings: Settings | None = None) -> None:
        """Serve over HTTP until SIGTERM/SIGINT (host and port from ``settings.http``)."""
        from v2serve.http.app import create_app
        from v2serve.http.run import run_uvicorn

        server = self.build_server(settings)
        run_uvicorn(create_app(server), server.settings)


class StepRef:
    """A step of a flow, returned by ``to``/``add_step`` so that calls chain."""

    def __init__(self, graph: Graph, spec: StepSpec) -> None:
        self.graph = graph
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def to(self, class_name: Any = None, name: str | None = None, before: str | None = None, **options: Any) -> StepRef:
        """Add a step that receives this step's output; ``before``: insert it between this step and the step
        of that name, which then receives the new step's output instead (MLRun's ``before``)."""
        added = self.graph.add_step(class_name, name, after=self.spec.name, **options)
        if before is not None:
            following = [step for step in self.graph.spec.steps if step.name == before]
            if not following or self.spec.name not in following[0].after:
                raise ValueError(f"step {before!r} does not come after {self.spec.name!r}")
            following[0].after = [added.name if n == self.spec.name else n for n in following[0].after]
        return added

    def respond(self) -> StepRef:
        """Make this step's output the response."""
        self.spec.responder = True
        return self

    def error_handler(
        self, handler: Any = None, class_name: Any = None, before: str | None = None, **class_args: Any
    ) -> StepRef:
        """A task whose output answers the request when this step fails, ending the flow (MLRun's rule); it
        receives an ``ErrorEvent`` (MLRun's ``event.body``, ``event.error``, ``event.origin_state``).
        ``before``: a step after this one, which gets the handler's output instead, and the flow goes on."""
        self.spec.on_error = _handler_spec(f"{self.spec.name}_on_error", handler, class_name, class_args)
        self.spec.on_error.before = before
        return self


class EnsembleBuilder:
    def __init__(self, spec: StepSpec) -> None:
        self.spec = spec

    def add_model(
        self, key: str, class_name: Any = None, model_path: str | None = None, **class_args: Any
    ) -> EnsembleBuilder:
        self.spec.routes.append(_model_spec(key, class_name, model_path, class_args))
        return self


def _model_spec(key: str, class_name: Any, model_path: str | None, class_args: dict[str, Any]) -> StepSpec:
    name, _, version = key.partition(":")
    return StepSpec(
        name=name,
        kind="model",
        class_name=class_name,
        model_path=model_path,
        version=version or None,
        class_args=class_args,
    )


_STEP_OPTIONS = (
    "handler", "model_path", "version", "input_path", "result_path", "routes", "vote_type", "weights", "merge",
    "extend_event",
)  # fmt: skip


def _step_spec(class_name: Any, name: str | None, options: dict[str, Any]) -> StepSpec:
    kind: str | None = options.pop("kind", None)
    fields = {key: options.pop(key) for key in _STEP_OPTIONS if key in options}
    if class_name is not None and not isinstance(class_name, str) and not inspect.isclass(class_name):
        fields.setdefault("handler", class_name)  # a function given positionally
        class_name = None
    kind = kind or _infer_kind(class_name)
    return StepSpec(
        name=name or _default_name(class_name, fields.get("handler")),
        kind=kind,
        class_name=class_name,
        class_args=options,
        **fields,
    )


def _handler_spec(name: str, handler: Any, class_name: Any, class_args: dict[str, Any]) -> StepSpec:
    return StepSpec(name=name, kind="task", handler=handler, class_name=class_name, class_args=class_args)


def _infer_kind(class_name: Any) -> str:
    if inspect.isclass(class_name) and issubclass(class_name, Model):
        return "model"
    if isinstance(class_name, str):
        from v2serve.models.imports import import_object

        try:
            target = import_object(class_name)
        except (ImportError, ValueError):
            return "task"  # unknown here (maybe relative to a spec file): the build will say
        return _infer_kind(target)
    return "task"


def _default_name(class_name: Any, handler: Any) -> str:
    target = class_name or handler
    if isinstance(target, str):
        return _snake_case(target.rpartition(":")[2].rpartition(".")[2])
    if target is not None:
        return _snake_case(getattr(target, "__name__", "step"))
    raise ValueError("a step needs a class_name or a handler")
