"""The declarative, serialisable description of a serving graph, apart from the runtime that executes it.

A graph is a **router** (the default: requests pick a model by URL or by the message's ``model`` field) or a
**flow** (steps chained with ``after``, the ``responder`` step's output being the response). Steps:

- ``model``: a Model subclass (``class_name``) with ``model_path``, ``version`` and ``class_args``;
- ``task``: a function (``handler``) or a class with ``do(body)`` (``class_name``) transforming the body;
- ``router``: routes the body to one of its ``routes`` (model steps) by URL or ``model`` field;
- ``ensemble``: a voting ensemble over its ``routes`` (``vote_type`` classification or regression);
- ``parallel``: runs all its ``routes`` on the same body and merges their results (objects) into one, as
  MLRun's ParallelRun does (with ``extend_event``, into the body; with ``merge: by_step``, by route name).

Classes and functions are import paths (``package.module:Name`` or ``file.py:Name``) in the serialised form;
the Python SDK also accepts the objects themselves and turns them into import paths when serialising.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from v2serve.errors import did_you_mean


class GraphError(ValueError):
    """A graph that cannot be built; the message names the step at fault."""


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str
    kind: str = "task"
    """One of the kinds in ``graph/kinds.py:STEP_KINDS`` (model, task, router, ensemble, parallel), checked
    when the graph is built."""
    class_name: Any = None
    """Import path of the step's class, or the class itself (SDK)."""
    handler: Any = None
    """Import path of a task function, or the function itself (SDK)."""
    class_args: dict[str, Any] = Field(default_factory=dict)
    model_path: str | None = None
    version: str | None = None
    after: list[str] = Field(default_factory=list)
    responder: bool = False
    input_path: str | None = None
    """Dotted path of the part of the body the step receives (``inputs`` or ``a.b``)."""
    result_path: str | None = None
    """Dotted path at which the step's result is written into the body it received, instead of replacing it."""
    on_error: StepSpec | None = None
    """A task step whose output answers the request when this step fails (MLRun: it ends the flow)."""
    before: str | None = None
    """On an ``on_error`` handler (MLRun's ``error_handler(..., before=)``): the step after the failed one
    that the handler's output goes to; the flow goes on instead of ending with the handler's answer."""
    merge: Literal["list", "by_step"] = "list"
    """A step after several steps receives their outputs as a list in ``after`` order (MLRun's merge), or
    with ``by_step`` as an object of outputs by step name. A parallel step with ``by_step`` answers its
    children's results by child name instead of merging them."""
    extend_event: bool = False
    """Parallel: merge the children's results (objects) into the body the step received (MLRun's
    ``extend_event``), instead of into a new object."""
    routes: list[StepSpec] = Field(default_factory=list)
    vote_type: Literal["classification", "regression"] | None = None
    weights: dict[str, float] | None = None
    prediction_col_name: str | None = None
    """Ensemble of MLRun-style members: the key of their predictions when a member's ``outputs`` is an
    object (``{"prediction": [...]}``) or a list of objects, one per row (MLRun's, default ``prediction``)."""
    format_response_with_col_name_flag: bool = False
    """Ensemble (MLRun's flag): answer the vote as ``{prediction_col_name: [...]}`` whatever shape the members
    answered in."""
    executor_type: Literal["thread", "array"] = "thread"
    """Ensemble (MLRun's ParallelRun modes): members run at once (``thread``) or one after another
    (``array``). MLRun's ``process`` mode is not offered: members share the server's process."""

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return None if value is None else str(value)

    @property
    def key(self) -> str:
        """The step as a route: ``name``, or ``name:version``."""
        return self.name if self.version is None else f"{self.name}:{self.version}"


class GraphSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    topology: Literal["router", "flow"] = "router"
    steps: list[StepSpec] = Field(default_factory=list)
    """Router: the routes (model and ensemble steps). Flow: the steps, linked by ``after``."""
    error_handler: StepSpec | None = None
    """A task step whose output answers any request in which a step failed without its own ``on_error``."""
    default_route: str | None = None
    """Router: the route (step name, or ``name:version``) that answers a request naming no model (``POST /``
    without a ``model``, ``POST /v2/models/infer``); by default the graph's only ensemble, if it has one."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """Function-level parameters: every MLRun-style model reads them with ``get_param``."""

    # ------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        portable: dict[str, Any] = _portable(self.model_dump(exclude_defaults=True))
        return portable

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2).decode()

    def to_yaml(self) -> str:
        import yaml

        return str(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphSpec:
        return cls.model_validate(data)

    @classmethod
    def from_text(cls, text: str, source: str = "the graph spec") -> GraphSpec:
        """Read a spec from JSON or YAML text; GraphError names ``source`` and, for a syntax error, its line
        and column, or the unknown key and the closest valid one."""
        data = _parsed(text, source)
        if not isinstance(data, dict):
            raise GraphError(f"{source} must hold a mapping (topology, steps, ...), not {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except ValidationError as exc:
            raise GraphError(f"{source}: {_described(exc)}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> GraphSpec:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise GraphError(f"{path}: {exc.strerror or exc}") from None
        return cls.from_text(text, source=str(path))


def _parsed(text: str, source: str) -> Any:
    if text.lstrip().startswith("{"):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise GraphError(f"{source}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        raise GraphError(f"{where}: malformed YAML: {getattr(exc, 'problem', None) or exc}") from None


def _described(error: ValidationError) -> str:
    """Each problem of a spec on one line: where it is (``steps[0].agrs``) and what is wrong."""
    problems = []
    for item in error.errors():
        location = item["loc"]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".")
        if item["type"] == "extra_forbidden":
            fields = GraphSpec.model_fields if len(location) == 1 else StepSpec.model_fields
            key = str(location[-1])
            problems.append(f"unknown key {where!r}{did_you_mean(key, fields)}")
        else:
            problems.append(f"{where or 'the spec'}: {item['msg']}")
    return "; ".join(problems)


def import_path_of(obj: Any, where: str) -> str:
    """The ``module:QualName`` of a class or function, or GraphError if it cannot be imported by that path."""
    if isinstance(obj, str):
        return obj
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if (
        not module
        or "<locals>" in qualname
        or module == "__main__"
        or not (inspect.isclass(obj) or inspect.isfunction(obj))
    ):
        raise GraphError(f"{where}: {obj!r} cannot be serialised; give it as an importable 'module:Name' path")
    return f"{module}:{qualname}"


def _portable(data: Any, where: str = "graph") -> Any:
    if isinstance(data, dict):
        name = data.get("name", where)
        out = {}
        for key, value in data.items():
            if key in ("class_name", "handler") and value is not None:
                out[key] = import_path_of(value, f"step {name!r}")
            else:
                out[key] = _portable(value, name)
        return out
    if isinstance(data, list):
        return [_portable(item, where) for item in data]
    return data
