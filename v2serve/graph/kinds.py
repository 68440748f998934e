"""Step kinds by name: how the compiler builds each kind of step, as a registry (as ``models/runtimes`` is).

A kind is a ``StepKind``: how it runs as a step of a flow, and, for kinds that serve a model (``model``,
``ensemble``), the Model it registers, which also makes it a route of a router graph. A new kind is its
runtime (a ``Step``, in a module of its own) and one entry in ``STEP_KINDS``; the spec accepts every name
registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from v2serve.core.server_core import ServerCore
from v2serve.engine.registry import ModelEntry
from v2serve.graph.ensemble import VotingEnsemble
from v2serve.graph.spec import GraphError, StepSpec
from v2serve.graph.steps import ModelStep, ParallelStep, RouterStep, Step
from v2serve.models.base import Model


class GraphCompiler(Protocol):
    """What a kind's builders use of the compiler (``graph/compile.py``)."""

    core: ServerCore

    def register(self, spec: StepSpec) -> ModelEntry: ...
    def step(self, spec: StepSpec) -> Step: ...
    def task(self, spec: StepSpec) -> Step: ...
    def model(self, spec: StepSpec) -> Model: ...


@dataclass(frozen=True)
class StepKind:
    """How the compiler builds one kind of step."""

    flow_step: Callable[[GraphCompiler, StepSpec], Step]
    """The step as it runs in a flow."""
    model: Callable[[GraphCompiler, StepSpec], Model] | None = None
    """The model the step serves (registered once); None: the kind serves none and cannot be a route."""


def _model_step(compiler: GraphCompiler, spec: StepSpec) -> Step:
    entry = compiler.register(spec)
    return ModelStep(spec.name, entry.name, entry.version, compiler.core)


def _ensemble(compiler: GraphCompiler, spec: StepSpec) -> Model:
    if not spec.routes:
        raise GraphError(f"step {spec.name!r}: an ensemble needs routes")
    members = [compiler.register(route) for route in spec.routes]
    try:
        return VotingEnsemble(
            spec.name,
            members,
            spec.vote_type,
            spec.weights,
            spec.version,
            resolve=compiler.core.registry.resolve,
            prediction_col_name=spec.prediction_col_name,
            always_by_col_name=spec.format_response_with_col_name_flag,
            one_by_one=spec.executor_type == "array",
        )
    except ValueError as exc:
        raise GraphError(f"step {spec.name!r}: {exc}") from None


def _children(compiler: GraphCompiler, spec: StepSpec) -> list[Step]:
    if not spec.routes:
        raise GraphError(f"step {spec.name!r}: a {spec.kind} step needs routes")
    return [compiler.step(route) for route in spec.routes]


def _router(compiler: GraphCompiler, spec: StepSpec) -> Step:
    children = _children(compiler, spec)
    return RouterStep(spec.name, {route.key: child for route, child in zip(spec.routes, children, strict=True)})


def _parallel(compiler: GraphCompiler, spec: StepSpec) -> Step:
    return ParallelStep(spec.name, _children(compiler, spec), spec.extend_event, by_step=spec.merge == "by_step")


def _task(compiler: GraphCompiler, spec: StepSpec) -> Step:
    return compiler.task(spec)


def _model(compiler: GraphCompiler, spec: StepSpec) -> Model:
    return compiler.model(spec)


STEP_KINDS: dict[str, StepKind] = {
    "task": StepKind(_task),
    "model": StepKind(_model_step, _model),
    "ensemble": StepKind(_model_step, _ensemble),
    "router": StepKind(_router),
    "parallel": StepKind(_parallel),
}
"""Every kind of step a graph may hold, by the name its spec gives (``kind``)."""
