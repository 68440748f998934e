"""Ingrain's inference API over the same models: text and image embeddings, health, model statistics.

``POST /infer_text`` and ``/embed_text`` (``{name, text, normalize, n_dims}`` to ``{"embeddings",
"processingTimeMs"}``), ``/infer_image`` and ``/embed_image`` (``image``: URLs or base64, with or without a
``data:`` prefix; ``image_download_headers``), ``/infer`` and ``/embed`` (text and images at once, computed
concurrently; ``{"textEmbeddings", "imageEmbeddings", "processingTimeMs"}``), ``/classify_image``, ``GET
/health`` and ``GET /metrics``. Fields are accepted in snake_case and in the camelCase of newer releases
(``nDims``). A request is one call of the data plane per modality, so it batches with every other request to
the same model, whatever API it came through; ``n_dims`` and ``normalize`` become request parameters that the
model's ``finalize`` applies (``models/embeddings.py``: truncate first, then normalise).

Image URLs are read under the ``data_url`` policy (``settings.data``: private addresses, size, time-out,
prefixes) with protocols of their own (``settings.ingrain.image_url_protocols``: public http(s) by default),
with the request's ``image_download_headers``. Errors are ``{"detail", "error"}`` (FastAPI's key,
which Ingrain's users read, and the one its Python client reads), with Ingrain's status codes: a model that
is not loaded is its 400, a body that is not what the route takes FastAPI's 422 (``detail`` lists where).

``/metrics`` is both Prometheus's and Ingrain's: a request whose ``Accept`` names ``text/plain`` or
OpenMetrics (every Prometheus scraper's does) gets the Prometheus text; one that names ``application/json``
gets Ingrain's ``{"modelStats": [...]}``; one that names neither gets Ingrain's on Ingrain's ports and
Prometheus's on the main port.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import numpy as np

from v2serve.core.routes import Handler, Route, errors_rendered
from v2serve.core.server_core import ServerCore
from v2serve.data.fetch import DataFetcher
from v2serve.engine.registry import ModelEntry
from v2serve.errors import InvalidRequest, ModelNotFound, V2ServeError
from v2serve.event import Event, Reply
from v2serve.metrics.server import PROMETHEUS_CONTENT_TYPE
from v2serve.models.embeddings import EMBEDDING, IMAGE, TEXT, EmbeddingModel
from v2serve.protocol.body import Body
from v2serve.protocol.decode import DecodedRequest
from v2serve.protocol.response import InferenceResult
from v2serve.protocol.types import InferenceRequest

INGRAIN_LISTENERS = frozenset({"ingrain", "ingrain-models"})
"""The listeners (ports) that are Ingrain's: their ``/metrics`` answers Ingrain's JSON by default."""
MAX_DOWNLOAD_HEADERS = 32
MAX_DOWNLOAD_HEADER_BYTES = 8192
REFUSED_DOWNLOAD_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
     "proxy-authorization", "proxy-authenticate", "proxy-connection", "expect"}
)  # fmt: skip
"""Headers a client may not pass to an image download: they would pick another virtual host than the one the
data policy approved, or change the request's framing or the connection (hop-by-hop headers)."""
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 9110's token: what a header name may be."""
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_ERRORS = (400, 403, 404, 413, 422, 500, 502, 503, 504)


class RequestValidationError(InvalidRequest):
    """A request body that is not what the route takes: FastAPI's 422 (Ingrain is a FastAPI app), whose
    ``detail`` lists each problem with its location."""

    status_code = HTTPStatus.UNPROCESSABLE_ENTITY

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.location = ["body"] if field is None else ["body", field]


def ingrain_error(exc: V2ServeError) -> Reply:
    """An error as Ingrain's users read it: ``detail`` (FastAPI's) and ``error`` (what its client reads)."""
    detail: Any = exc.message
    if isinstance(exc, RequestValidationError):
        detail = [{"type": "value_error", "loc": exc.location, "msg": exc.message}]
    reply = Reply.json({"detail": detail, "error": exc.message}, exc.status_code, dict(exc.headers))
    reply.error = exc
    return reply


class IngrainEndpoints:
    """The handlers of Ingrain's inference routes, over the server core."""

    def __init__(self, core: ServerCore, images: DataFetcher | None = None) -> None:
        """``images``: what reads image URLs (its own policy: public http(s) by default); None: the core's
        data_url reader."""
        self._core = core
        self._dataplane = core.dataplane
        self._image_reader = images if images is not None else core.data

    def routes(self) -> list[Route]:
        def post(path: str, handler: Handler, summary: str) -> Route:
            return Route("POST", path, in_ingrain_shape(handler), summary, errors=_ERRORS,
                         request_content=_REQUEST_CONTENT)  # fmt: skip

        return [
            Route("GET", "/health", self.health, "Liveness, Ingrain style", server_level=True),
            post("/infer_text", self.embed_text, "Text embeddings, Ingrain style"),
            post("/embed_text", self.embed_text, "Text embeddings, Ingrain style (newer name)"),
            post("/infer_image", self.embed_image, "Image embeddings, Ingrain style"),
            post("/embed_image", self.embed_image, "Image embeddings, Ingrain style (newer name)"),
            post("/infer", self.embed, "Text and image embeddings at once, Ingrain style"),
            post("/embed", self.embed, "Text and image embeddings at once, Ingrain style (newer name)"),
            post("/classify_image", self.classify_image, "Image class probabilities, Ingrain style"),
            Route("GET", "/metrics", self.metrics, "Prometheus metrics, or Ingrain's model statistics as JSON",
                  responses=_METRICS_RESPONSES, server_level=True, replaces=True),
        ]  # fmt: skip

    async def health(self, event: Event, params: Mapping[str, str]) -> Reply:
        server = "model" if event.listener == "ingrain-models" else "inference"
        return Reply.json({"message": f"The {server} server is running."})

    async def embed_text(self, event: Event, params: Mapping[str, str]) -> Reply:
        return await self._embed_one(event, TEXT)

    async def embed_image(self, event: Event, params: Mapping[str, str]) -> Reply:
        return await self._embed_one(event, IMAGE)

    async def embed(self, event: Event, params: Mapping[str, str]) -> Reply:
        started = time.perf_counter()
        request = IngrainRequest.parse(event.body)
        texts, images = request.items(TEXT), request.items(IMAGE)
        if texts is None and images is None:
            raise RequestValidationError("give 'text', 'image' or both")
        text_part = self._embed(request, TEXT, texts, event) if texts is not None else _nothing()
        image_part = self._embed(request, IMAGE, images, event) if images is not None else _nothing()
        text_embeddings, image_embeddings = await asyncio.gather(text_part, image_part)
        body: dict[str, Any] = {}
        if text_embeddings is not None:
            body["textEmbeddings"] = text_embeddings
        if image_embeddings is not None:
            body["imageEmbeddings"] = image_embeddings
        return Reply.json({**body, "processingTimeMs": _elapsed_ms(started)})

    async def classify_image(self, event: Event, params: Mapping[str, str]) -> Reply:
        started = time.perf_counter()
        request = IngrainRequest.parse(event.body)
        entry, model = self._embedder(request, IMAGE)
        images = await self._images(request.items(IMAGE, required=True) or [], request, model)
        probabilities = await self._dataplane.call(
            entry, "classify", {"images": images}, headers=event.headers, event_id=event.id
        )
        return Reply.json({"probabilities": probabilities, "processingTimeMs": _elapsed_ms(started)})

    async def metrics(self, event: Event, params: Mapping[str, str]) -> Reply:
        if not wants_ingrain_metrics(event):
            return Reply(200, await self._core.metrics_text(), PROMETHEUS_CONTENT_TYPE)
        statistics = await self._core.statistics_total()
        return Reply.json({"modelStats": [ingrain_model_stats(s) for s in statistics["model_stats"]]})

    # ------------------------------------------------------------ embedding

    async def _embed_one(self, event: Event, modality: str) -> Reply:
        started = time.perf_counter()
        request = IngrainRequest.parse(event.body)
        embeddings = await self._embed(request, modality, request.items(modality, required=True), event)
        return Reply.json({"embeddings": embeddings, "processingTimeMs": _elapsed_ms(started)})

    async def _embed(self, request: IngrainRequest, modality: str, values: list[Any] | None, event: Event) -> Any:
        entry, model = self._embedder(request, modality)
        items: list[Any] = values or []
        if modality == IMAGE:
            items = await self._images(items, request, model)
        inputs = {modality: _object_array(items)}
        parameters = request.parameters()

        def decode(schema: Any) -> DecodedRequest:
            return DecodedRequest(InferenceRequest([], None, parameters), inputs)

        result = await self._dataplane.infer(entry, decode, headers=event.headers, event_id=event.id)
        return result.encode(_embedding)

    def _embedder(self, request: IngrainRequest, modality: str) -> tuple[ModelEntry, EmbeddingModel]:
        name = request.name
        try:
            entry = self._core.resolve(name)
        except ModelNotFound as exc:
            # Ingrain's answer (a 400 telling to load the model), with what this server has.
            raise InvalidRequest(
                f"Model {name} with checkpoint {request.field('pretrained')} is not loaded. Load the model first "
                f"using /load_model on the model server. ({exc.message})"
            ) from None
        model = entry.model
        if not isinstance(model, EmbeddingModel):
            raise InvalidRequest(f"model {name!r} is not an embedding model")
        pretrained = request.field("pretrained")
        if pretrained is not None and pretrained != model.checkpoint and model.library != "sentence_transformers":
            # The checkpoint named is another one than the model serves (Ingrain ignores it for
            # sentence-transformers, whose name is the checkpoint).
            raise InvalidRequest(
                f"Model {name} with checkpoint {pretrained} is not loaded. Load the model first using /load_model "
                f"on the model server. ({name!r} serves checkpoint {model.checkpoint})"
            )
        if not model.embeds(modality):
            embeds = " and ".join(f"{served}s" for served in model.served_modalities())
            raise InvalidRequest(f"model {name!r} embeds {embeds}, not {modality}s")
        return entry, model

    async def _images(self, values: list[Any], request: IngrainRequest, model: EmbeddingModel) -> list[bytes]:
        limit = model.item_limit(IMAGE)
        if len(values) > limit:
            raise InvalidRequest(f"model {model.name!r} embeds at most {limit} images a request, not {len(values)}")
        headers = request.download_headers()
        return list(await asyncio.gather(*(self._image(i, value, headers) for i, value in enumerate(values))))

    async def _image(self, index: int, value: Any, headers: Mapping[str, str]) -> bytes:
        if not isinstance(value, str):
            raise InvalidRequest(
                f"image {index} of the request must be a URL or base64 text, not {type(value).__name__}"
            )
        if _is_url(value):
            if self._image_reader is None:
                raise InvalidRequest(f"image {index} of the request is a URL, and this server reads no URLs")
            try:
                return await self._image_reader.read(value, headers)
            except V2ServeError as exc:
                exc.message = f"image {index} of the request: {exc.message}"
                raise
        return _base64_image(index, value)


class IngrainRequest:
    """An Ingrain request body, checked: the fields of every inference route, in either spelling."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        name = fields.get("name")
        if not isinstance(name, str) or not name:
            raise RequestValidationError("'name' must be the model's name", "name")
        self.name = name
        self._download_headers = self._checked_download_headers()  # the body is checked before any model is

    @classmethod
    def parse(cls, body: Body) -> IngrainRequest:
        try:
            fields = body.json_object()
        except InvalidRequest as exc:
            raise RequestValidationError(exc.message) from None
        return cls(fields)

    def field(self, snake: str, camel: str | None = None) -> Any:
        value = self.fields.get(snake)
        return self.fields.get(camel) if value is None and camel is not None else value

    def items(self, modality: str, *, required: bool = False) -> list[Any] | None:
        """The texts or images: one value, or a list of them."""
        value = self.fields.get(modality)
        if value is None:
            if required:
                raise RequestValidationError(f"'{modality}' is required: one value or a list of them", modality)
            return None
        return value if isinstance(value, list) else [value]

    def parameters(self) -> dict[str, Any]:
        """``n_dims`` and ``normalize`` as the model's request parameters (checked by the model)."""
        parameters: dict[str, Any] = {}
        normalize = self.fields.get("normalize")
        if normalize is not None:
            parameters["normalize"] = normalize
        n_dims = self.field("n_dims", "nDims")
        if n_dims is not None:
            parameters["n_dims"] = n_dims
        return parameters

    def download_headers(self) -> dict[str, str]:
        return self._download_headers

    def _checked_download_headers(self) -> dict[str, str]:
        headers = self.field("image_download_headers", "imageDownloadHeaders")
        if headers is None:
            return {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise RequestValidationError(
                "image_download_headers must be an object of strings", "image_download_headers"
            )
        size = sum(len(k) + len(v) for k, v in headers.items())
        if len(headers) > MAX_DOWNLOAD_HEADERS or size > MAX_DOWNLOAD_HEADER_BYTES:
            raise InvalidRequest(
                f"image_download_headers takes at most {MAX_DOWNLOAD_HEADERS} headers and "
                f"{MAX_DOWNLOAD_HEADER_BYTES} bytes"
            )
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise InvalidRequest(f"image_download_headers: {name!r} is not a header name")
            if name.lower() in REFUSED_DOWNLOAD_HEADERS:
                raise InvalidRequest(
                    f"image_download_headers may not set {name!r}: the server decides the connection, host and framing"
                )
            if _CONTROL.search(value):
                raise InvalidRequest(f"image_download_headers: the value of {name!r} holds a control character")
        return {str(k): v for k, v in headers.items()}


def wants_ingrain_metrics(event: Event) -> bool:
    accept = event.headers.get("accept", "")
    if "text/plain" in accept or "openmetrics" in accept:
        return False
    return "application/json" in accept or event.listener in INGRAIN_LISTENERS


def ingrain_model_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    """One model's Triton statistics as Ingrain answers them (Triton's gRPC message as JSON: camelCase keys,
    64-bit integers as strings)."""
    return {
        "name": stats["name"],
        "version": stats["version"] or "1",
        "lastInference": str(stats["last_inference"]),
        "inferenceCount": str(stats["inference_count"]),
        "executionCount": str(stats["execution_count"]),
        "inferenceStats": {_camel(kind): _duration(value) for kind, value in stats["inference_stats"].items()},
        "batchStats": [
            {
                "batchSize": str(batch["batch_size"]),
                "computeInput": _duration(batch["compute_input"]),
                "computeInfer": _duration(batch["compute_infer"]),
                "computeOutput": _duration(batch["compute_output"]),
            }
            for batch in stats.get("batch_stats") or []
        ],
    }


def ingrain_routes(core: ServerCore, images: DataFetcher | None = None) -> list[Route]:
    return IngrainEndpoints(core, images).routes()


def _duration(value: Mapping[str, Any]) -> dict[str, str]:
    return {"count": str(value.get("count", 0)), "ns": str(value.get("ns", 0))}


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def in_ingrain_shape(handler: Handler) -> Handler:
    """``handler`` with its errors answered as Ingrain's are."""
    return errors_rendered(handler, ingrain_error)


def _is_url(value: str) -> bool:
    scheme, separator, _ = value[:16].partition("://")
    return bool(separator) and scheme.isalnum()


def _base64_image(index: int, value: str) -> bytes:
    if value.startswith("data:"):
        header, comma, value = value.partition(",")
        if not comma or not header.endswith(";base64"):
            raise InvalidRequest(f"image {index} of the request is a data: URL without ';base64,' data")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"image {index} of the request is neither a URL nor base64 data") from None


def _embedding(result: InferenceResult) -> np.ndarray:
    return next(output.array for output in result.outputs if output.name == EMBEDDING)


def _object_array(items: list[Any]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def _nothing() -> None:
    return None


_REQUEST_CONTENT = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "pretrained": {"type": ["string", "null"]},
                "text": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                "image": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                "normalize": {"type": ["boolean", "null"]},
                "n_dims": {"type": ["integer", "null"]},
                "image_download_headers": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            },
        }
    }
}
_METRICS_RESPONSES = {
    "200": {
        "description": "Prometheus text, or Ingrain's model statistics (Accept: application/json)",
        "content": {"text/plain": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}},
    }
}
