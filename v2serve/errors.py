"""The v2serve error tree.

Every failure that reaches a client is one of these. Each class carries the HTTP status it maps to and
whether retrying the same request later may succeed; transports read those class attributes and render
the error once (HTTP: ``{"error": message}`` with the status; streams: an error record; Nuclio: a Response).

    V2ServeError (500)
    ├── InvalidRequest (400)             malformed JSON, wrong shape or datatype, unknown input, ...
    ├── Unauthorized (401)               the repository API's bearer token is missing or wrong
    ├── Forbidden (403)                  a request asks for something the operator's policy refuses
    ├── NotFound (404)
    │   ├── ModelNotFound (404)          unknown model or version; names the available ones
    │   │   └── ModelVersionNotFound     the model is there, the version is not
    │   └── OperationNotFound (404)      unknown path or custom operation
    ├── MethodNotAllowed (405)
    ├── Conflict (409)                   the request cannot be honoured as the server runs (several workers)
    ├── PayloadTooLarge (413)
    ├── InferenceError (500)             the model itself raised
    ├── ModelLoadFailed (500)            a load through the repository failed; what served before serves on
    ├── NotImplementedOperation (501)    e.g. explain on a model without an explainer
    ├── UpstreamError (502)              a data_url's server answered with an error or a redirect
    ├── DeadlineExceeded (504)           the request's timeout passed before its answer was ready
    └── Unavailable (503, retriable)
        ├── ModelNotReady (503)          loading, failed or unloaded
        └── ServerOverloaded (503)       a queue is full
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from http import HTTPStatus
from typing import ClassVar


class V2ServeError(Exception):
    """Base of every error v2serve reports to a client."""

    status_code: ClassVar[int] = HTTPStatus.INTERNAL_SERVER_ERROR
    retriable: ClassVar[bool] = False

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidRequest(V2ServeError):
    status_code = HTTPStatus.BAD_REQUEST


class Unauthorized(V2ServeError):
    """The route needs a bearer token the request did not give."""

    status_code = HTTPStatus.UNAUTHORIZED

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"www-authenticate": "Bearer"})


class Forbidden(V2ServeError):
    status_code = HTTPStatus.FORBIDDEN


class NotFound(V2ServeError):
    status_code = HTTPStatus.NOT_FOUND


class ModelNotFound(NotFound):
    pass


class ModelVersionNotFound(ModelNotFound):
    """The model exists, the version named does not."""


class OperationNotFound(NotFound):
    pass


class MethodNotAllowed(V2ServeError):
    status_code = HTTPStatus.METHOD_NOT_ALLOWED


class Conflict(V2ServeError):
    status_code = HTTPStatus.CONFLICT


class PayloadTooLarge(V2ServeError):
    status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class InferenceError(V2ServeError):
    status_code = HTTPStatus.INTERNAL_SERVER_ERROR


class ModelLoadFailed(V2ServeError):
    """A model could not be loaded from the repository; whatever served before keeps serving."""

    status_code = HTTPStatus.INTERNAL_SERVER_ERROR


class NotImplementedOperation(V2ServeError):
    status_code = HTTPStatus.NOT_IMPLEMENTED


class UpstreamError(V2ServeError):
    """A server that a request's data_url named answered with an error, or with a redirect (never followed)."""

    status_code = HTTPStatus.BAD_GATEWAY


class DeadlineExceeded(V2ServeError):
    status_code = HTTPStatus.GATEWAY_TIMEOUT


class Unavailable(V2ServeError):
    status_code = HTTPStatus.SERVICE_UNAVAILABLE
    retriable = True

    def __init__(self, message: str, *, retry_after_s: int = 1, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"retry-after": str(retry_after_s), **(headers or {})})


class ModelNotReady(Unavailable):
    pass


class ServerOverloaded(Unavailable):
    pass


def did_you_mean(key: str, valid: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the valid name closest to a misspelt ``key``, or nothing: the tail of a
    message refusing an unknown setting."""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def install_hint(extra: str) -> str:
    """How to install an optional part: from the package index, or from a checkout."""
    return f"pip install 'v2serve[{extra}]' (from a checkout: pip install -e '.[{extra}]')"


_BY_STATUS: dict[int, type[V2ServeError]] = {}


def error_with_status(status: int) -> type[V2ServeError]:
    """An error class answering ``status``, for an error whose status a model chose itself (a TorchServe
    handler's ``PredictionException(message, 418)``): 4xx is the request's fault, the rest the server's."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        base: type[V2ServeError] = InvalidRequest if 400 <= status < 500 else V2ServeError
        cls = _BY_STATUS[status] = type(f"StatusError{status}", (base,), {"status_code": status})
    return cls
