"""The GRPCInferenceService over a ModelServer: the same registry, data plane and repository as HTTP.

Every RPC resolves the model as the HTTP routes do and runs through ``DataPlane.infer`` (or
``stream``), so a model answers the same, and is counted the same, over both. Errors abort the call with
the status code of their HTTP status (``status.py``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from v2serve.core.repository_api import RepositoryEndpoints
from v2serve.core.server_core import ServerCore
from v2serve.engine.registry import ModelEntry
from v2serve.errors import InvalidRequest, V2ServeError
from v2serve.event import Event
from v2serve.grpc.codec import decode_infer_request, encode_infer_response, parameters_of
from v2serve.grpc.generated import inference_pb2 as pb
from v2serve.grpc.status import rich_status
from v2serve.grpc.wire import SPLIT_FROM_BYTES, split_raw_contents
from v2serve.protocol.body import Body
from v2serve.protocol.decode import DecodedRequest
from v2serve.protocol.response import InferenceResult
from v2serve.protocol.schema import ModelSchema

logger = logging.getLogger("v2serve.grpc")

_MICROSECONDS = 1_000_000

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
"""The service as the proto declares it: its full name and its methods' messages and streaming."""


class InferenceService:
    """The v2 gRPC service; ``repository``: the repository API as the gRPC bind address allows it."""

    def __init__(self, core: ServerCore, repository: RepositoryEndpoints | None) -> None:
        self._core = core
        self._dataplane = core.dataplane
        self._repository = repository

    # ------------------------------------------------------------ health and metadata

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._core.readiness()["ready"])

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        entry = await self._entry(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self._core.model_readiness(entry)["ready"])

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return _parsed(self._core.server_metadata(), pb.ServerMetadataResponse())

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        entry = await self._entry(request.name, request.version, context)
        return _parsed(self._dataplane.model_metadata(entry), pb.ModelMetadataResponse())

    # ------------------------------------------------------------ inference

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any, raw_contents: list[memoryview] | None = None
    ) -> pb.ModelInferResponse:
        """``raw_contents``: the raw input contents, when they were taken from the wire apart from ``request``."""
        try:
            entry = self._core.resolve(request.model_name, request.model_version or None)
            result = await self._dataplane.infer(
                entry,
                _decoder(request, context, raw_contents),
                headers=_headers(context),
                event_id=request.id or None,
            )
        except V2ServeError as exc:
            await _abort(context, exc)
        raw = raw_contents is not None or bool(request.raw_input_contents)
        return result.encode(_raw_response if raw else _typed_response)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request in turn; a streaming model's items each become a response as they are produced. A
        failed request is an ``error_message`` response, and the stream goes on (Triton's behaviour)."""
        async for request in requests:
            try:
                entry = self._core.resolve(request.model_name, request.model_version or None)
                results = await self._dataplane.stream(
                    entry, _decoder(request, context), headers=_headers(context), event_id=request.id or None
                )
                try:
                    async for result in results:
                        encoded = result.encode(_raw_response if request.raw_input_contents else _typed_response)
                        yield pb.ModelStreamInferResponse(infer_response=encoded)
                finally:
                    await results.aclose()
            except V2ServeError as exc:
                yield pb.ModelStreamInferResponse(
                    error_message=exc.message, infer_response=pb.ModelInferResponse(id=request.id)
                )

    # ------------------------------------------------------------ statistics and the repository

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        if request.name:
            entry = await self._entry(request.name, request.version, context)
            statistics = self._dataplane.statistics(entry, every_version=not request.version)
        else:
            statistics = self._dataplane.statistics()
        return _parsed(statistics, pb.ModelStatisticsResponse())

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        repository = await self._repository_or_abort(context)
        try:
            index = await repository.index(_event(context, {"ready": request.ready}))
        except V2ServeError as exc:
            await _abort(context, exc)
        return _parsed({"models": index}, pb.RepositoryIndexResponse())

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        repository = await self._repository_or_abort(context)
        try:
            await repository.load(_event(context, {}), request.model_name)
        except V2ServeError as exc:
            await _abort(context, exc)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        repository = await self._repository_or_abort(context)
        parameters = parameters_of(request.parameters)
        try:
            await repository.unload(_event(context, {"parameters": parameters}), request.model_name, None)
        except V2ServeError as exc:
            await _abort(context, exc)
        return pb.RepositoryModelUnloadResponse()

    # ------------------------------------------------------------ helpers

    async def _entry(self, name: str, version: str, context: Any) -> ModelEntry:
        try:
            return self._core.resolve(name, version or None)
        except V2ServeError as exc:
            await _abort(context, exc)

    async def _repository_or_abort(self, context: Any) -> RepositoryEndpoints:
        if self._repository is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server has no model repository API")
        assert self._repository is not None  # abort raises
        return self._repository


M = TypeVar("M", bound=Message)


def _parsed(value: Any, message: M) -> M:
    """A JSON-shaped value (what the HTTP routes answer) into ``message``; fields it lacks are left out."""
    json_format.ParseDict(value, message, ignore_unknown_fields=True)
    return message


def _decoder(request: pb.ModelInferRequest, context: Any, raw_contents: list[memoryview] | None = None) -> Any:
    """The request's decoding; the client's deadline, when it set one and the request names no timeout,
    becomes the request's ``timeout`` so that a request still queued when it passes is dropped."""

    def decode(schema: ModelSchema) -> DecodedRequest:
        decoded = decode_infer_request(schema, request, raw_contents)
        remaining = context.time_remaining()
        if remaining is not None and "timeout" not in decoded.request.parameters:
            decoded.request.parameters["timeout"] = max(int(remaining * _MICROSECONDS), 1)
        return decoded

    return decode


def _raw_response(result: InferenceResult) -> pb.ModelInferResponse:
    return encode_infer_response(result, raw=True)


def _typed_response(result: InferenceResult) -> pb.ModelInferResponse:
    return encode_infer_response(result, raw=False)


def _headers(context: Any) -> dict[str, str]:
    return {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}


def _event(context: Any, body: dict[str, Any]) -> Event:
    return Event(body=Body.decoded(body), path="/grpc", method="POST", headers=_headers(context), trigger="grpc")


async def _abort(context: Any, exc: V2ServeError) -> NoReturn:
    await context.abort_with_status(rich_status(exc))
    raise InvalidRequest("unreachable: abort raises")  # pragma: no cover


def method_handlers(service: InferenceService) -> dict[str, grpc.RpcMethodHandler]:
    """Each RPC of the proto's service, bound to the method of ``service`` of the same name, with its
    messages' (de)serialisers: the table protoc's ``_grpc`` plugin would generate, read from the descriptor.

    Requests are parsed here, not by grpcio: a message that does not parse is the client's INVALID_ARGUMENT,
    where grpcio's own deserialiser would answer UNKNOWN and log it as the server's error.
    """
    handlers = {}
    for method in SERVICE.methods:
        request, response = getattr(pb, method.input_type.name), getattr(pb, method.output_type.name)
        serve = getattr(service, method.name)
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                partial(_parsing_each, serve, request), response_serializer=response.SerializeToString
            )
        elif not method.client_streaming and not method.server_streaming:
            parse = partial(_parsing_infer, serve) if method.name == "ModelInfer" else partial(_parsing, serve, request)
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                parse, response_serializer=response.SerializeToString
            )
        else:
            raise ValueError(f"{method.full_name}: only unary and bidirectional RPCs are served")
    return handlers


async def _parsing(serve: Any, message: type[Message], raw: bytes, context: Any) -> Any:
    try:
        request = message.FromString(raw)
    except DecodeError:
        await _not_a_message(message, context)
    return await serve(request, context)


async def _parsing_infer(serve: Any, raw: bytes, context: Any) -> Any:
    """ModelInfer's request; a large one's raw contents are taken from the wire, not copied (``wire.py``)."""
    contents = None
    if len(raw) >= SPLIT_FROM_BYTES:
        split = split_raw_contents(raw)
        if split is not None:
            raw, contents = split
    try:
        request = pb.ModelInferRequest.FromString(raw)
    except DecodeError:
        await _not_a_message(pb.ModelInferRequest, context)
    return await serve(request, context, contents)


async def _parsing_each(
    serve: Any, message: type[Message], raws: AsyncIterator[bytes], context: Any
) -> AsyncIterator[Any]:
    async def requests() -> AsyncIterator[Message]:
        async for raw in raws:
            try:
                yield message.FromString(raw)
            except DecodeError:
                await _not_a_message(message, context)

    async for response in serve(requests(), context):
        yield response


async def _not_a_message(message: type[Message], context: Any) -> NoReturn:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {message.__name__} message")
    raise InvalidRequest("unreachable: abort raises")  # pragma: no cover
