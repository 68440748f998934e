"""The flow topology at run time: steps in dependency order, independent branches concurrently."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from v2serve.errors import InferenceError, InvalidRequest, V2ServeError
from v2serve.event import Event, Reply, error_reply, value_reply
from v2serve.graph.steps import Step
from v2serve.protocol.body import Body
from v2serve.protocol.jsonio import JSON_CONTENT_TYPE, loads
from v2serve.protocol.paths import get_path, set_path

logger = logging.getLogger("v2serve.flow")


@dataclass
class FlowNode:
    """A step with its place in the flow and the selectors and error handler around it."""

    step: Step
    after: list[str]
    input_path: str | None = None
    result_path: str | None = None
    on_error: Step | None = None
    merge: str = "list"
    continue_after_error: bool = False
    """The error handler's output takes the failed step's place and the flow goes on (MLRun's ``before``),
    rather than answering the request."""


class ErrorEvent(dict[str, Any]):
    """What an error handler receives: MLRun's event, with ``body`` (what the request carried), ``error``
    (``{step: message}``), ``origin_state`` (the step that failed), ``path``, ``method``, ``id`` and
    ``headers``, as MLRun's handlers read them; and, for handlers written for v2serve, an object of
    ``body``, ``origin_state``, ``error`` (the message) and ``status``."""

    def __init__(
        self, step: str, error: V2ServeError, body: Any, event: Event, cause: BaseException | None = None
    ) -> None:
        super().__init__(body=body, origin_state=step, error=error.message, status=int(error.status_code))
        self.body = body
        # MLRun's message is the exception's own text (err_to_str), without the step v2serve names.
        self.error = {step: str(cause) if cause is not None else error.message}
        self.origin_state = step
        self.status = int(error.status_code)
        self.path, self.method, self.id = event.path, event.method, event.id
        self.headers = dict(event.headers)


class StepFailed(Exception):
    def __init__(self, step: str, error: V2ServeError, cause: BaseException | None = None) -> None:
        super().__init__(step)
        self.step = step
        self.error = error
        self.cause = cause


class Answered(Exception):
    """A step's error handler answered: its output is the response, and the flow ends (MLRun's rule)."""

    def __init__(self, answer: Any) -> None:
        super().__init__("answered by an error handler")
        self.answer = answer


class Flow:
    """Runs a request through the flow's steps and answers with the responder's output.

    A step with one upstream step receives that step's output; one with several receives their outputs as
    a list in ``after`` order (MLRun's merge; ``merge: by_step`` gives an object by step name); steps with
    none receive the request body. A failed step's error handler (its own, else the graph's) receives an
    ``ErrorEvent``, and its output answers the request; a step's own handler with ``before`` (MLRun's) gives
    its output to the steps after the failed one instead, and the flow goes on. The server answers requests
    about itself (health, metadata) by its routes before a flow sees them, so probes work on a flow as on a
    router graph.
    """

    def __init__(
        self,
        nodes: dict[str, FlowNode],
        levels: list[list[str]],
        responder: str,
        error_handler: Step | None = None,
    ) -> None:
        self._nodes = nodes
        self._levels = levels
        self._responder = responder
        self._error_handler = error_handler

    def wrap_steps(self, wrap: Callable[[str, Step], Step]) -> None:
        """Replace each step (and error handler) by ``wrap(name, step)``: tracing puts a span around each."""
        for name, node in self._nodes.items():
            node.step = wrap(name, node.step)
            if node.on_error is not None:
                node.on_error = wrap(f"{name}_on_error", node.on_error)
        if self._error_handler is not None:
            self._error_handler = wrap("error_handler", self._error_handler)

    async def handle(self, event: Event) -> Reply:
        body = None
        try:
            body = flow_body(event.body)
            return value_reply(await self._run(body, event))
        except Answered as answered:
            return value_reply(answered.answer)
        except StepFailed as failure:
            return await self._answer_failure(failure, body, event)
        except V2ServeError as exc:
            return error_reply(exc)

    async def _run(self, body: Any, event: Event) -> Any:
        results: dict[str, Any] = {}
        for level in self._levels:
            outputs = await asyncio.gather(*(self._run_node(name, body, results, event) for name in level))
            results.update(zip(level, outputs, strict=True))
        return results[self._responder]

    async def _run_node(self, name: str, request_body: Any, results: dict[str, Any], event: Event) -> Any:
        node = self._nodes[name]
        if not node.after:
            body = request_body
        elif len(node.after) == 1:
            body = results[node.after[0]]
        elif node.merge == "by_step":
            body = {parent: results[parent] for parent in node.after}
        else:
            body = [results[parent] for parent in node.after]
        given = get_path(body, node.input_path, f"step {name!r}") if node.input_path else body
        try:
            result = await node.step.run(given, event)
        except Exception as exc:
            error = _as_step_error(name, exc)
            if node.on_error is None:
                raise StepFailed(name, error, exc) from exc
            try:
                answer = await node.on_error.run(ErrorEvent(name, error, request_body, event, exc), event)
            except Exception as handler_exc:
                raise StepFailed(f"{name}_on_error", _as_step_error(f"{name}_on_error", handler_exc)) from exc
            if node.continue_after_error:
                return answer
            raise Answered(answer) from exc
        if node.result_path:
            body = copy.copy(body) if isinstance(body, dict) else {}
            set_path(body, node.result_path, result)
            return body
        return result

    async def _answer_failure(self, failure: StepFailed, request_body: Any, event: Event) -> Reply:
        if self._error_handler is None:
            return error_reply(failure.error)
        try:
            return value_reply(
                await self._error_handler.run(
                    ErrorEvent(failure.step, failure.error, request_body, event, failure.cause), event
                )
            )
        except Exception as exc:
            return error_reply(_as_step_error("error_handler", exc))


def flow_body(body: Body) -> Any:
    """What a flow's first steps receive, by the content type, as MLRun decides it: JSON (or no content type)
    is parsed; ``text/*`` is a str; another type (``image/png``) stays bytes. A body with no content type
    that is not JSON reaches the steps as it is (text as a str, else bytes), as MLRun passes it; a body
    that says it is JSON and is not is a 400."""
    if body.is_decoded:
        return body.json()
    media = (body.content_type or "").split(";", 1)[0].strip().lower()
    if media in ("json", JSON_CONTENT_TYPE) or media.endswith("+json") or not len(body):
        return body.json() if len(body) else loads(b"")
    if not media:
        try:
            return body.json()
        except InvalidRequest:
            return _text_or_bytes(bytes(body.raw))
    if media.startswith("text/"):
        try:
            return bytes(body.raw).decode()
        except UnicodeDecodeError:
            raise InvalidRequest(f"a {media} body must be UTF-8") from None
    return bytes(body.raw)


def _text_or_bytes(raw: bytes) -> str | bytes:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def _as_step_error(step: str, exc: Exception) -> V2ServeError:
    """The failure as a V2ServeError whose message names the step; unexpected exceptions become 500s."""
    if isinstance(exc, V2ServeError):
        # A copy: the same exception object may be shared (the jobs of one batch), so it is never renamed.
        error = copy.copy(exc)
        error.message = f"step {step!r} failed: {exc.message}"
        error.args = (error.message,)
        return error
    logger.exception("step %r raised", step)
    return InferenceError(f"step {step!r} failed: {type(exc).__name__}: {exc}")
