"""Running a TorchServe handler unchanged: its code loaded from its archive, its ``context``, its ``data``.

The handler library is TorchServe's own ``ts`` package (the ``torchserve`` extra): handlers subclass
``ts.torch_handler.base_handler.BaseHandler``, raise ``ts.utils.util.PredictionException`` and call
``ts.handler_utils.utils.send_intermediate_predict_response``, and each of those behaves as it does in
TorchServe because it is TorchServe's code; only the worker around it (the Java frontend and the socket
protocol) is replaced. The ``context`` is ``ts.context.Context`` itself.

A TorchServe worker is a process of its own, with one handler instance. Here several instances of a model
run as threads of one process, so each instance gets its own handler object and its own context (a
handler keeps per-request state in ``self.context``), and the modules an archive ships (``handler.py``,
``model.py``, ``utils.py``) are imported under names private to that archive: two archives that each ship
a ``model.py`` do not share one.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import logging
import struct
import sys
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from v2serve.errors import InferenceError, V2ServeError, error_with_status
from v2serve.models.imports import import_file_as
from v2serve.models.torchserve.archive import Manifest, ModelConfig

logger = logging.getLogger("v2serve.torchserve")

# Loading a handler puts its folder first on sys.path and takes modules out of sys.modules: process-wide
# state, so one load at a time.
_IMPORTING = threading.Lock()
_PRIVATE_PREFIX = "_v2serve_handler_"


@dataclass(frozen=True, slots=True)
class Parameter:
    """One parameter of a request as TorchServe's frontend hands it on: the body (named ``body``), or one
    field of a form, with its content type."""

    name: str
    value: bytes
    content_type: str = ""


@dataclass(slots=True, eq=False)
class HandlerRequest:
    """One request for a handler: its parameters, and where its intermediate answers go when the handler
    streams (``send_intermediate_predict_response``): called from the handler's thread."""

    parameters: Sequence[Parameter]
    url_path: str = ""
    on_intermediate: Callable[[HandlerAnswer], None] | None = None
    envelope: str | None = None
    """TorchServe's request envelope (``kserve``: the body's ``instances`` are the handler's rows and its
    answers come back as ``{"predictions": [...]}``), as TorchServe's ``service_envelope`` applies it."""

    def data(self) -> dict[str, Any]:
        """The request as a handler's ``data`` holds it: each parameter by name, JSON parsed, text decoded,
        anything else bytes (as TorchServe's worker decodes them)."""
        return {parameter.name: _decoded(parameter) for parameter in self.parameters}


class HandlerAnswer(bytes):
    """One request's answer: its bytes, with the status, content type and headers the handler set. A
    ``bytes``, so that a front-end that knows nothing of TorchServe (v2 infer) sends it as a BYTES value."""

    status: int
    headers: dict[str, str]
    content_type: str

    @classmethod
    def of(cls, payload: bytes, status: int, content_type: str, headers: dict[str, str]) -> HandlerAnswer:
        answer = cls(payload)
        answer.status, answer.content_type, answer.headers = status, content_type, headers
        return answer


def _decoded(parameter: Parameter) -> Any:
    # TorchServe compares the whole header, so that "application/json; charset=utf-8" stays bytes: here the
    # media type decides.
    media = parameter.content_type.split(";", 1)[0].strip().lower()
    if media == "application/json":
        try:
            return _json_as_torchserve_reads_it(parameter.value)
        except ValueError:
            return parameter.value  # TorchServe forwards what does not parse as it is
    if media.startswith("text"):
        try:
            return parameter.value.decode("utf-8")
        except UnicodeDecodeError:
            return parameter.value
    return parameter.value


@dataclass
class LoadedHandler:
    """One instance of an archive's handler: its entry point and its own ``ts`` context."""

    entry_point: Callable[[Any, Any], Any]
    context: Any
    model_name: str
    module_name: str
    may_stream: bool = True
    """The handler's code names ``send_intermediate_predict_response`` (see ``may_stream``)."""

    def close(self) -> None:
        if self.module_name.startswith(_PRIVATE_PREFIX):
            sys.modules.pop(self.module_name, None)

    def run(
        self, requests: Sequence[HandlerRequest], ids: Sequence[str], headers: Sequence[Mapping[str, str]],
        explain: bool,
    ) -> list[HandlerAnswer]:  # fmt: skip
        """``handle(data, context)`` on one batch, answered as TorchServe's worker answers it."""
        from ts.context import RequestProcessor
        from ts.utils.util import PredictionException

        context = self.context
        context.request_ids = dict(enumerate(ids))
        context.request_processor = [
            RequestProcessor(_request_headers(request, header, explain))
            for request, header in zip(requests, headers, strict=True)
        ]
        if context.metrics is not None:
            context.metrics.request_ids = context.request_ids
        context.cl_socket = _IntermediateSocket(requests)
        entry_point = self.entry_point
        if requests[0].envelope is not None:
            entry_point = _envelope(requests[0].envelope)(entry_point).handle
        try:
            returned = entry_point([request.data() for request in requests], context)
        except MemoryError:
            logger.error("model %r: out of memory", self.model_name, exc_info=True)
            raise error_with_status(507)("Out of resources") from None
        except PredictionException as exc:
            raise error_with_status(_status(exc.error_code))(str(exc.message)) from exc
        except V2ServeError:
            raise
        except Exception as exc:
            # Logged here, with its traceback, as TorchServe's worker logs it: the client gets the message only.
            logger.warning("model %r: the handler failed", self.model_name, exc_info=True)
            if "CUDA" in str(exc):
                raise error_with_status(507)(f"Out of resources: {exc}") from exc
            raise InferenceError(f"Prediction failed: {type(exc).__name__}: {exc}") from exc
        finally:
            context.cl_socket = None
        if not isinstance(returned, list):
            raise InferenceError(
                f"Invalid model predict output: the handler of {self.model_name!r} returned a "
                f"{type(returned).__name__}, not a list with one answer per request"
            )
        if len(returned) != len(requests):
            raise InferenceError(
                f"number of batch response mismatched: the handler of {self.model_name!r} answered "
                f"{len(returned)} times for {len(requests)} requests"
            )
        return [_answer(value, context, index) for index, value in enumerate(returned)]


def _envelope(name: str) -> Any:
    if name != "kserve":
        raise error_with_status(400)(f"unknown request envelope {name!r}")
    from ts.torch_handler.request_envelope.kserve import KServeEnvelope

    return KServeEnvelope


def _status(code: Any) -> int:
    return code if isinstance(code, int) and 400 <= code <= 599 else 500


def _request_headers(request: HandlerRequest, headers: Mapping[str, str], explain: bool) -> dict[str, Any]:
    """What ``context.get_request_header`` reads, as TorchServe fills it: each parameter's content type
    under its name, then the request's headers, ``explain`` and ``url_path``."""
    merged: dict[str, Any] = _CaseInsensitive(
        {parameter.name: {"content-type": parameter.content_type} for parameter in request.parameters}
    )
    merged.update(headers)
    merged["explain"] = str(explain)
    merged["url_path"] = request.url_path
    return merged


class _CaseInsensitive(dict[str, Any]):
    """Header names arrive lower-cased (HTTP/2 and ASGI both do so), while handlers written for TorchServe ask
    for ``Content-Type``: a lookup in any case finds it."""

    def get(self, key: Any, default: Any = None) -> Any:
        if super().__contains__(key):
            return super().get(key)
        return super().get(key.lower(), default) if isinstance(key, str) else default

    def __getitem__(self, key: Any) -> Any:
        if super().__contains__(key) or not isinstance(key, str):
            return super().__getitem__(key)
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key) or (isinstance(key, str) and super().__contains__(key.lower()))


def _answer(value: Any, context: Any, index: int) -> HandlerAnswer:
    """One answer as TorchServe's worker encodes it: bytes as they are, text as UTF-8, a tensor as
    ``torch.save`` writes it, anything else as JSON (indented as TorchServe indents it)."""
    headers = dict(context.get_response_headers(index))
    content_type = headers.pop("content-type", None)
    status, _ = context.get_response_status(index)
    if isinstance(value, bytes | bytearray):
        payload, default_type = bytes(value), "application/octet-stream"
    elif isinstance(value, str):
        payload, default_type = value.encode("utf-8"), "text/plain; charset=utf-8"
    elif type(value).__module__ == "torch" and type(value).__name__ == "Tensor":
        import torch

        buffer = io.BytesIO()
        torch.save(value, buffer)
        payload, default_type = buffer.getvalue(), "application/octet-stream"
    else:
        try:
            payload = _json_as_torchserve_writes_it(value)
        except (TypeError, ValueError) as exc:
            raise InferenceError(
                f"Unsupported model output data type: {type(value).__name__} cannot be sent as JSON ({exc})"
            ) from None
        default_type = "application/json"
    return HandlerAnswer.of(payload, status or 200, content_type or default_type, headers)


def _json_as_torchserve_reads_it(text: bytes) -> Any:
    """``json.loads(text)``, as TorchServe's worker parses a JSON body, read by orjson where the two agree.

    orjson refuses what only json accepts (NaN, lone surrogates, UTF-16, ``1e400``), which json then reads.
    The one thing orjson reads differently is an integer beyond 64 bits: a float for orjson, exact for json.
    Such a number is a run of 19 digits or more that starts a token; the text goes to json when it holds one.
    (json's scanner takes 12 µs on a row of 64 floats, orjson 1 µs.)"""
    if _LONG_INTEGER not in b" " + text.translate(_DIGIT_RUNS):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


# Digits become "0" and what continues a number's fraction or exponent "x", so that an integer token of 19
# digits or more (its sign or any delimiter before it becomes " ") is " " followed by nineteen "0"s.
_DIGIT_RUNS = bytes(
    ord("0") if byte in b"0123456789" else ord("x") if byte in b".eE+" else ord(" ") for byte in range(256)
)
_LONG_INTEGER = b" " + b"0" * 19


def _json_as_torchserve_writes_it(value: Any) -> bytes:
    """``json.dumps(value, indent=2)``, as TorchServe's worker encodes an answer, written by orjson when orjson
    writes the same bytes.

    It does not for some values, and each of them leaves a mark in orjson's bytes: non-ASCII text and DEL
    (json escapes them), NaN and infinities (orjson writes ``null``), floats under 1e-4 (``1e-05`` for json,
    ``0.00001`` for orjson) and exponents. Bytes with such a mark, and values orjson refuses (keys that are
    not strings, integers beyond 64 bits, subclasses, dataclasses and datetimes, which json refuses or writes
    its own way), are written by json. A mark may be innocent (``null`` for None): that costs only time.
    Checking for the marks costs well under a microsecond; json's own indenting is pure Python, 50 µs for
    ten floats, and comparing the two compact forms made json format every float.

    One difference remains: orjson writes an Enum member as its value and a UUID as its text, which
    TorchServe's worker cannot write at all (the request fails there)."""
    try:
        payload = orjson.dumps(value, option=_AS_JSON_DUMPS_INDENTS)
    except TypeError:  # orjson.JSONEncodeError: json decides, and says why
        pass
    else:
        if (
            payload.isascii()
            and b"\x7f" not in payload
            and b"null" not in payload
            and b"0.0000" not in payload
            and b"e-" not in payload
            and b"e+" not in payload
        ):
            return payload
    return json.dumps(value, indent=2).encode("utf-8")


_AS_JSON_DUMPS_INDENTS = (
    orjson.OPT_INDENT_2
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)


class _IntermediateSocket:
    """Stands where TorchServe's worker socket stands for ``send_intermediate_predict_response``: the frame
    it is sent is decoded back into each request's answer, which goes to that request's listener."""

    def __init__(self, requests: Sequence[HandlerRequest]) -> None:
        self._requests = requests

    def sendall(self, frame: bytes) -> None:
        for index, answer in enumerate(decode_predict_response(frame)):
            listener = self._requests[index].on_intermediate if index < len(self._requests) else None
            if listener is not None:
                listener(answer)


def decode_predict_response(frame: bytes) -> list[HandlerAnswer]:
    """The answers in a frame of TorchServe's worker protocol (``ts.protocol.otf_message_handler``'s
    ``create_predict_response``), in request order."""
    reader = _Reader(frame)
    reader.number()  # the batch's code
    reader.chunk()  # and message
    answers = []
    while (size := reader.number()) != -1:
        reader.skip(size)  # the request id
        content_type = reader.chunk().decode()
        status = reader.number()
        reader.chunk()  # the reason phrase
        headers = {reader.chunk().decode(): reader.chunk().decode() for _ in range(reader.number())}
        headers.pop("content-type", None)
        answers.append(HandlerAnswer.of(reader.chunk(), status, content_type or "application/octet-stream", headers))
    return answers


class _Reader:
    def __init__(self, frame: bytes) -> None:
        self._frame = frame
        self._at = 0

    def number(self) -> int:
        (value,) = struct.unpack_from("!i", self._frame, self._at)
        self._at += 4
        return int(value)

    def skip(self, size: int) -> None:
        self._at += size

    def chunk(self) -> bytes:
        size = self.number()
        value = self._frame[self._at : self._at + size]
        self._at += size
        return value


# ---------------------------------------------------------------- loading


def load_handler(
    manifest: Manifest, config: ModelConfig, model_dir: Path, *, name: str, gpu_id: int | None, batch_size: int
) -> LoadedHandler:
    """Import the archive's handler and initialise one instance of it, as TorchServe's worker does: a
    ``module:function`` or a module with a ``handle`` function is a function handler (initialised by
    ``handle(None, context)``); otherwise the module's one class is instantiated and ``initialize``d.
    A handler name that is no file of the archive is one of TorchServe's default handlers
    (``image_classifier``, ``text_classifier``, ...)."""
    import ts
    from ts.context import Context

    context = Context(
        name, str(model_dir), manifest.document, batch_size, gpu_id, ts.__version__, True, _metrics(),
        config.document,
    )  # fmt: skip
    module_name, _, function_name = manifest.handler.partition(":")
    with _IMPORTING, _importing_from(model_dir):
        module = _handler_module(module_name, model_dir)
        function = getattr(module, function_name or "handle", None)
        if callable(function) and not inspect.isclass(function):
            function(None, context)
            return LoadedHandler(function, context, name, module.__name__, may_stream(model_dir, [module]))
        classes = [
            member for _, member in inspect.getmembers(module, inspect.isclass) if member.__module__ == module.__name__
        ]
        if len(classes) != 1:
            raise ValueError(
                f"handler {manifest.handler!r} must define one class or a handle(data, context) function; "
                f"it defines {len(classes)} classes"
            )
        service: Any = classes[0]()
        if not callable(getattr(service, "handle", None)):
            raise ValueError(f"handler class {classes[0].__name__} has no handle method")
        service.initialize(context)
        hierarchy = [sys.modules.get(cls.__module__) for cls in type(service).__mro__]
        streams = may_stream(model_dir, [module, *(m for m in hierarchy if m is not None)])
        return LoadedHandler(service.handle, context, name, module.__name__, streams)


_STREAMING_CALL = b"send_intermediate_predict_response"
_MAX_SCANNED_FILES = 1000
_MAX_SCANNED_BYTES = 16 * 1024 * 1024


def may_stream(model_dir: Path, modules: Sequence[ModuleType]) -> bool:
    """Whether a handler may send intermediate answers: the archive's Python files, or the modules its class
    hierarchy comes from (TorchServe's own vLLM and TensorRT-LLM handlers stream), name
    ``send_intermediate_predict_response``. True when the archive holds too much to read. A handler that
    reaches it some other way still has its answers sent, only not as they come (see ``archive_answer``)."""
    files = [Path(file) for module in modules if (file := getattr(module, "__file__", None)) and file.endswith(".py")]
    for index, file in enumerate(model_dir.rglob("*.py")):
        if index >= _MAX_SCANNED_FILES:
            return True
        files.append(file)
    scanned = 0
    for file in files:
        try:
            if not file.is_file():  # a FIFO named x.py would block the read
                continue
            scanned += file.stat().st_size
            if scanned > _MAX_SCANNED_BYTES:  # checked before reading: nothing read costs more than the cap
                return True
            if _STREAMING_CALL in file.read_bytes():
                return True
        except OSError:
            continue
    return False


def _handler_module(module_name: str, model_dir: Path) -> ModuleType:
    stem = module_name.removesuffix(".py").split("/")[-1]
    file = model_dir / f"{stem}.py"
    if not file.is_file():
        try:
            return importlib.import_module(f"ts.torch_handler.{stem}")
        except ModuleNotFoundError:
            raise ValueError(
                f"handler {module_name!r} is neither a file of the archive nor one of TorchServe's default "
                "handlers (image_classifier, image_segmenter, object_detector, text_classifier)"
            ) from None
    # A name of its own, so that two archives' handler.py are two modules; LoadedHandler.close forgets it.
    return import_file_as(file, f"{_PRIVATE_PREFIX}{uuid.uuid4().hex}")


class _importing_from:
    """The archive's folder first on ``sys.path`` while its handler is imported and initialised (TorchServe
    runs a worker in that folder); afterwards the modules imported from it leave ``sys.modules`` (their
    objects keep them alive), so that the next archive's ``model.py`` is its own."""

    def __init__(self, folder: Path) -> None:
        self._folder = str(folder.resolve())

    def __enter__(self) -> None:
        self._before = set(sys.modules)
        sys.path.insert(0, self._folder)

    def __exit__(self, *exc: object) -> None:
        if self._folder in sys.path:
            sys.path.remove(self._folder)
        for name in set(sys.modules) - self._before:
            module = sys.modules[name]
            origin = getattr(module, "__file__", None) or ""
            if origin.startswith(self._folder + "/"):
                del sys.modules[name]


def _metrics() -> Any:
    """TorchServe's metrics cache, for the handler's ``context.metrics.add_*``. It reports each metric as a
    log line for TorchServe's frontend to collect: one INFO line per metric and request, which is kept out of
    the log here (the handler's own metrics are not exported yet)."""
    import ts
    import yaml
    from ts.metrics.caching_metric import CachingMetric
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    lines = logging.getLogger(CachingMetric.__module__)

    class QuietMetric(CachingMetric):  # type: ignore[misc]
        def emit_metrics(self, request_id: str, value: Any, dimension_string: str) -> None:
            # TorchServe's formats its line (with a hostname system call) before the logger drops it.
            if lines.isEnabledFor(logging.INFO):
                super().emit_metrics(request_id, value, dimension_string)

    class MetricsCache(MetricsCacheYamlImpl):  # type: ignore[misc]
        def _parse_yaml_file(self, config_file_path: str) -> None:
            # TorchServe's own leaves the file open.
            with open(config_file_path, encoding="utf-8") as file:
                self._parsed_file = yaml.safe_load(file)

        def add_metric_to_cache(self, *args: Any, **kwargs: Any) -> Any:
            metric = super().add_metric_to_cache(*args, **kwargs)
            metric.__class__ = QuietMetric
            return metric

    logging.getLogger("ts.metrics").setLevel(logging.WARNING)
    cache = MetricsCache(str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
    cache.initialize_cache()
    return cache
