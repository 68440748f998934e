"""Building the runtime of a graph from its spec, with every error found here rather than at a request.

Classes are imported and instantiated (cheap: ``load`` runs later), so an unknown class or an argument the
class does not accept fails the build with a message naming the step; so do cycles, references to unknown
steps and an unclear responder.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2serve.core.server_core import ServerCore
from v2serve.engine.invoker import Runner, bind
from v2serve.engine.registry import ModelEntry
from v2serve.graph.flow import Flow, FlowNode
from v2serve.graph.kinds import STEP_KINDS, StepKind
from v2serve.graph.spec import GraphError, GraphSpec, StepSpec
from v2serve.graph.steps import ModelStep, Step, TaskStep
from v2serve.models.base import Model
from v2serve.models.imports import import_object
from v2serve.models.mlrun import ServingContext, V2ModelServer


@dataclass(frozen=True)
class CompiledGraph:
    """A graph ready to serve: a router graph's models are registered and served by the routes of every
    front-end (``flow`` None), a flow answers every request that is not about the server itself."""

    flow: Flow | None = None
    default_model: str | None = None
    """The route that answers a request naming no model (a router graph's ``default_route`` or ensemble)."""
    listing: dict[str, Any] = field(default_factory=dict)
    """What ``GET /v2/models`` answers beside the models: a router graph's ensemble's ``weights``, as given
    (MLRun's VotingEnsemble answers them there)."""
    mlrun_router: str | None = None
    """A router graph whose models are all MLRun-style: the MLRun router class it stands for (``ModelRouter``,
    or ``VotingEnsemble`` when its default route is an ensemble), whose answers about itself it gives."""


class GraphCompiler:
    def __init__(self, core: ServerCore, runner: Runner, base_dir: Path | None = None) -> None:
        self.core = core
        self._registry = core.registry
        self._runner = runner
        self._base_dir = base_dir
        self._parameters: dict[str, Any] = {}

    def compile(self, spec: GraphSpec) -> CompiledGraph:
        self._parameters = spec.parameters
        if spec.topology == "router":
            for step in spec.steps:
                if _kind(step).model is None:
                    raise GraphError(
                        f"step {step.name!r}: a router graph routes to model or ensemble steps, not {step.kind}"
                    )
                self.register(step)
            default = _default_route(spec)
            return CompiledGraph(
                default_model=default, listing=_listing(spec, default), mlrun_router=self._mlrun_router(spec, default)
            )
        if spec.default_route is not None:
            raise GraphError("default_route is for router graphs; a flow answers every request itself")
        return CompiledGraph(flow=self._flow(spec))

    def _mlrun_router(self, spec: GraphSpec, default: str | None) -> str | None:
        entries = list(self._registry)
        if not entries or not all(entry.model.takes_documents for entry in entries):
            return None
        ensemble = any(step.kind == "ensemble" and step.key == default for step in spec.steps)
        return "VotingEnsemble" if ensemble else "ModelRouter"

    # ------------------------------------------------------------ models

    def register(self, spec: StepSpec) -> ModelEntry:
        """The model a step serves, registered (once) in the server's registry."""
        build = _kind(spec).model
        if build is None:
            raise GraphError(f"step {spec.name!r}: only model steps can be routes here, not {spec.kind}")
        model = build(self, spec)
        try:
            return self._registry.add(model)
        except ValueError as exc:
            raise GraphError(f"step {spec.name!r}: {exc}") from None

    def model(self, spec: StepSpec) -> Model:
        """A model step's Model, created (its ``load`` runs later)."""
        cls = self._import(spec, spec.class_name, "class_name")
        if not (isinstance(cls, type) and issubclass(cls, Model)):
            raise GraphError(f"step {spec.name!r}: {cls!r} is not a subclass of v2serve.Model")
        kwargs: dict[str, Any] = {"name": spec.name, **spec.class_args}
        if spec.version is not None:
            kwargs["version"] = spec.version
        if spec.model_path is not None:
            kwargs["model_path"] = self._located(spec.model_path)
        if issubclass(cls, V2ModelServer):
            # MLRun's routes take input_path and result_path, and read the graph's parameters.
            kwargs["context"] = ServingContext(parameters=self._parameters)
            kwargs.update({k: v for k, v in (("input_path", spec.input_path), ("result_path", spec.result_path)) if v})
        model: Model = self._instantiate(spec, cls, kwargs)
        return model

    def _instantiate(self, spec: StepSpec, cls: type, kwargs: dict[str, Any]) -> Any:
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise GraphError(f"step {spec.name!r}: cannot create {cls.__name__}: {exc}") from None

    def _import(self, spec: StepSpec, target: Any, field: str) -> Any:
        if target is None:
            raise GraphError(f"step {spec.name!r} ({spec.kind}) needs a {field}")
        if not isinstance(target, str):
            return target
        try:
            return import_object(target, self._base_dir)
        except (ImportError, ValueError) as exc:
            raise GraphError(f"step {spec.name!r}: cannot import {target!r}: {exc}") from None

    # ------------------------------------------------------------ flow steps

    def step(self, spec: StepSpec) -> Step:
        """A step as it runs in a flow, built by its kind."""
        return _kind(spec).flow_step(self, spec)

    def task(self, spec: StepSpec) -> TaskStep:
        """A task step: a function, or a class instance's ``do``."""
        if spec.handler is not None:
            function = self._import(spec, spec.handler, "handler")
            if not callable(function):
                raise GraphError(f"step {spec.name!r}: handler {spec.handler!r} is not callable")
            return TaskStep(spec.name, bind(function, 2), self._runner)
        cls = self._import(spec, spec.class_name, "handler or class_name")
        instance = self._instantiate(spec, cls, self._task_arguments(spec, cls))
        if not callable(getattr(instance, "do", None)):
            raise GraphError(f"step {spec.name!r}: {cls.__name__} has no do(body) method")
        return TaskStep(spec.name, bind(instance.do, 2), self._runner)

    def _located(self, model_path: str) -> str:
        """A relative local model_path is relative to the graph file's folder (URLs are left as they are)."""
        if self._base_dir is None or "://" in model_path or Path(model_path).is_absolute():
            return model_path
        return str(self._base_dir / model_path)

    def _task_arguments(self, spec: StepSpec, cls: type) -> dict[str, Any]:
        """The class arguments, plus ``name`` and ``context`` when the constructor takes them (MLRun's steps)."""
        kwargs = dict(spec.class_args)
        try:
            parameters = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            return kwargs
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        if "name" in parameters or takes_any:
            kwargs.setdefault("name", spec.name)
        if "context" in parameters or takes_any:
            kwargs.setdefault("context", ServingContext(parameters=self._parameters))
        return kwargs

    def _flow(self, spec: GraphSpec) -> Flow:
        by_name = _unique_steps(spec.steps)
        nodes = {}
        for step in spec.steps:
            unknown = [name for name in step.after if name not in by_name]
            if unknown:
                raise GraphError(f"step {step.name!r} comes after unknown step(s) {unknown}")
            on_error = self.task(step.on_error) if step.on_error is not None else None
            runtime = self.step(step)
            # An MLRun-style model applies its own input_path and result_path (as MLRun's do_event does): the
            # flow leaves them to it, or they would be applied twice.
            own = isinstance(runtime, ModelStep) and isinstance(
                self.core.registry.resolve(runtime.model, runtime.version).model, V2ModelServer
            )
            input_path, result_path = (None, None) if own else (step.input_path, step.result_path)
            goes_on = _continues_after_error(step, spec.steps)
            nodes[step.name] = FlowNode(
                runtime, list(step.after), input_path, result_path, on_error, step.merge, goes_on
            )
        levels = _levels(by_name)
        if spec.error_handler is not None and spec.error_handler.before is not None:
            raise GraphError("the graph's error_handler answers the request; 'before' is for a step's own handler")
        handler = self.task(spec.error_handler) if spec.error_handler is not None else None
        return Flow(nodes, levels, _responder(spec.steps), handler)


def _continues_after_error(step: StepSpec, steps: list[StepSpec]) -> bool:
    """Whether ``step``'s error handler hands its output on (``before``): it must name a step after it."""
    before = step.on_error.before if step.on_error is not None else None
    if before is None:
        return False
    following = [other.name for other in steps if step.name in other.after]
    if before not in following:
        raise GraphError(
            f"step {step.name!r}: its error handler's 'before' names {before!r}, which is not a step after it "
            f"(steps after it: {following or 'none'})"
        )
    return True


def _kind(spec: StepSpec) -> StepKind:
    kind = STEP_KINDS.get(spec.kind)
    if kind is None:
        raise GraphError(f"step {spec.name!r}: unknown step kind {spec.kind!r}; the kinds are {', '.join(STEP_KINDS)}")
    return kind


def _unique_steps(steps: list[StepSpec]) -> dict[str, StepSpec]:
    if not steps:
        raise GraphError("a flow needs at least one step")
    by_name: dict[str, StepSpec] = {}
    for step in steps:
        if step.name in by_name:
            raise GraphError(f"step name {step.name!r} is used twice")
        by_name[step.name] = step
    return by_name


def _levels(steps: dict[str, StepSpec]) -> list[list[str]]:
    """Steps grouped so that each group depends only on earlier groups (Kahn's algorithm)."""
    remaining = {name: set(step.after) for name, step in steps.items()}
    levels: list[list[str]] = []
    done: set[str] = set()
    while remaining:
        ready = [name for name, parents in remaining.items() if parents <= done]
        if not ready:
            raise GraphError(f"the flow has a cycle through steps {sorted(remaining)}")
        levels.append(ready)
        done.update(ready)
        for name in ready:
            del remaining[name]
    return levels


def _responder(steps: list[StepSpec]) -> str:
    marked = [step.name for step in steps if step.responder]
    if len(marked) > 1:
        raise GraphError(f"only one step can respond; {marked} are marked")
    if marked:
        return marked[0]
    upstream = {parent for step in steps for parent in step.after}
    sinks = [step.name for step in steps if step.name not in upstream]
    if len(sinks) != 1:
        raise GraphError(f"the flow ends in several steps {sinks}; mark the one that responds with respond()")
    return sinks[0]


def _listing(spec: GraphSpec, default: str | None) -> dict[str, Any]:
    ensemble = next((step for step in spec.steps if step.kind == "ensemble" and step.key == default), None)
    return {} if ensemble is None else {"weights": ensemble.weights}


def _default_route(spec: GraphSpec) -> str | None:
    """The route that answers requests naming no model: ``default_route``, else the graph's only ensemble."""
    keys = {step.key for step in spec.steps}
    if spec.default_route is not None:
        if spec.default_route not in keys:
            raise GraphError(f"default_route {spec.default_route!r} is not one of the routes {sorted(keys)}")
        return spec.default_route
    ensembles = [step.name for step in spec.steps if step.kind == "ensemble"]
    return ensembles[0] if len(ensembles) == 1 else None
