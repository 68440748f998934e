"""v2serve's errors as gRPC status codes, the same decisions as the HTTP statuses they stand for."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from v2serve.errors import Unavailable, V2ServeError

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(exc: V2ServeError) -> grpc.StatusCode:
    return _CODES.get(int(exc.status_code), grpc.StatusCode.INTERNAL)


def rich_status(exc: V2ServeError) -> grpc.Status:
    """The error as a gRPC status; a retriable one (503) carries google.rpc.RetryInfo with its delay, and
    every one its message. Clients that read only the code and details still get both."""
    code = status_code(exc)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=exc.message)
    if isinstance(exc, Unavailable):
        seconds = int(exc.headers.get("retry-after", "1"))
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
        status.details.add().Pack(retry)
    return rpc_status.to_status(status)
