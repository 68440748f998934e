"""TorchServe's routes for a model served from its archive (``TorchServeArchive``): the request handed to
the handler as TorchServe's frontend hands it, and the handler's answer sent back as TorchServe sends it.

What the handler gets: the body as parameter ``body`` (any method, an empty body included), or each field
of a form (``curl -F``; ``curl -d``'s urlencoded form too) as a parameter of its name, each with its content
type, which decides how the handler's ``data`` holds it. What comes back: the handler's bytes with the
status, content type and headers it set, and ``x-request-id``; a handler that calls
``send_intermediate_predict_response`` is answered with chunked transfer, each intermediate answer a chunk
as soon as the handler sends it, the handler's return value the last.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncGenerator

import numpy as np

from v2serve.core.dataplane import DataPlane
from v2serve.engine.registry import ModelEntry
from v2serve.event import Event, Reply
from v2serve.frontends.forms import form_parts, is_form, urlencoded_fields
from v2serve.models.torchserve import INPUT, HandlerAnswer, HandlerRequest, Parameter
from v2serve.protocol.decode import DecodedRequest
from v2serve.protocol.ids import new_request_id
from v2serve.protocol.jsonio import dumps
from v2serve.protocol.media import JSON_CONTENT_TYPE
from v2serve.protocol.response import InferenceResult
from v2serve.protocol.types import InferenceRequest, RequestInput

logger = logging.getLogger("v2serve.torchserve")

_URLENCODED = "application/x-www-form-urlencoded"


def handler_parameters(event: Event) -> list[Parameter]:
    body = event.body
    content_type = body.content_type or ""
    if body.is_decoded:  # a transport decoded the JSON already
        return [Parameter("body", dumps(body.json()), JSON_CONTENT_TYPE)]
    raw = bytes(body.raw)
    if is_form(content_type):
        return [Parameter(part.name, part.content, part.content_type) for part in form_parts(raw, content_type)]
    if content_type.split(";", 1)[0].strip().lower() == _URLENCODED:
        return [Parameter(name, value) for name, value in urlencoded_fields(raw)]
    return [Parameter("body", raw, content_type)]


async def archive_answer(
    dataplane: DataPlane, entry: ModelEntry, event: Event, *, explain: bool, envelope: str | None = None
) -> Reply:
    """The handler's answer to one request: a plain reply, or a chunked one when the handler streams.
    ``envelope``: TorchServe's request envelope to apply (``kserve`` on KServe v1's routes)."""
    # One id for the handler's context.get_request_id and the x-request-id of a plain or a streamed answer.
    request_id = event.id or new_request_id()
    if not getattr(entry.model, "may_stream", True):
        return await _answer_when_returned(dataplane, entry, event, request_id, explain, envelope)
    loop = asyncio.get_running_loop()
    intermediates = _Intermediates(loop)
    request = HandlerRequest(handler_parameters(event), on_intermediate=intermediates.send, envelope=envelope)
    infer = asyncio.ensure_future(
        dataplane.infer(
            entry,
            lambda schema: _one_request(request),
            explain=explain,
            headers=event.headers,
            event_id=request_id,
        )
    )
    infer.add_done_callback(intermediates.wake)
    try:
        await intermediates.wait(infer)
    except BaseException:
        infer.cancel()
        raise
    first = intermediates.take()
    if first is None:
        return infer.result().encode(_rendered)  # the usual case: one answer; raises the request's error
    reply = _reply(first, request_id)
    reply.stream = _rest(intermediates, infer, entry.name)
    return reply


async def _answer_when_returned(
    dataplane: DataPlane, entry: ModelEntry, event: Event, request_id: str, explain: bool, envelope: str | None
) -> Reply:
    """The answer of a handler whose code never names ``send_intermediate_predict_response``: the request
    awaits its inference itself. (Racing a task of the inference against the first intermediate answer
    cost a seventh of the request's instructions on the loop.) Should the handler send intermediate answers
    after all, through code the check at load did not see, they are kept and sent, chunked, ahead of its
    return value: everything arrives, only not as it comes."""
    sent: list[HandlerAnswer] = []  # appended to by the handler's thread, read once its inference returned
    request = HandlerRequest(handler_parameters(event), on_intermediate=sent.append, envelope=envelope)
    result = await dataplane.infer(
        entry, lambda schema: _one_request(request), explain=explain, headers=event.headers, event_id=request_id
    )
    if not sent:
        return result.encode(_rendered)
    logger.warning(
        "model %r sent intermediate answers from code read at load as not streaming; they went out when it returned",
        entry.name,
    )
    reply = _reply(sent[0], request_id)
    reply.stream = _chunks([*sent[1:], _answer_of(result)])
    return reply


async def _chunks(answers: list[HandlerAnswer]) -> AsyncGenerator[bytes, None]:
    for answer in answers:
        yield bytes(answer)


def _one_request(request: HandlerRequest) -> DecodedRequest:
    rows = np.empty(1, dtype=object)
    rows[0] = request
    return DecodedRequest(InferenceRequest([RequestInput(INPUT, [1], "BYTES")]), {INPUT: rows}, lone=True)


def _answer_of(result: InferenceResult) -> HandlerAnswer:
    answer: HandlerAnswer = result.outputs[0].array.reshape(-1)[0]  # what TorchServeArchive.predict makes
    return answer


def _rendered(result: InferenceResult) -> Reply:
    return _reply(_answer_of(result), result.id)


def _reply(answer: HandlerAnswer, request_id: str) -> Reply:
    return Reply(answer.status, bytes(answer), answer.content_type, {**answer.headers, "x-request-id": request_id})


async def _rest(
    intermediates: _Intermediates, infer: asyncio.Future[InferenceResult], model: str
) -> AsyncGenerator[bytes, None]:
    try:
        while True:
            await intermediates.wait(infer)
            answer = intermediates.take()
            if answer is not None:
                yield bytes(answer)
                continue
            try:
                result = infer.result()
            except Exception as exc:  # the status is sent: the stream can only end
                logger.warning("model %r failed after its stream began: %s", model, exc)
                return
            yield bytes(_answer_of(result))
            return
    finally:
        infer.cancel()


class _Intermediates:
    """The intermediate answers of one request, handed over from the handler's thread to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._answers: collections.deque[HandlerAnswer] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def send(self, answer: HandlerAnswer) -> None:
        """From the handler's thread; delivered on the loop in the order sent, before the handler's return
        value (whose delivery the same thread schedules after)."""
        self._loop.call_soon_threadsafe(self._put, answer)

    def _put(self, answer: HandlerAnswer) -> None:
        self._answers.append(answer)
        self.wake()

    def wake(self, *_: object) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, infer: asyncio.Future[InferenceResult]) -> None:
        """Until an intermediate answer is there or the handler has returned."""
        while not self._answers and not infer.done():
            self._waiter = self._loop.create_future()
            await self._waiter

    def take(self) -> HandlerAnswer | None:
        return self._answers.popleft() if self._answers else None
