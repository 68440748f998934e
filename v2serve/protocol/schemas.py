"""The JSON bodies the server answers with, as types.

The router builds its replies as these TypedDicts, and the OpenAPI description is generated from them (and
from the request dataclasses in ``types``), so the description and the server cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import NotRequired, TypedDict


class ErrorBody(TypedDict):
    error: str


class ServerMetadata(TypedDict):
    name: str
    version: str
    extensions: list[str]


class Liveness(TypedDict):
    live: bool


class NotReadyModel(TypedDict):
    name: str
    state: str
    version: NotRequired[str]
    reason: NotRequired[str]


class Readiness(TypedDict):
    ready: bool
    models: NotRequired[list[NotReadyModel]]


class ModelList(TypedDict):
    models: list[str]


class TensorMetadata(TypedDict):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(TypedDict):
    name: str
    version: NotRequired[str]
    """The version this metadata describes (MLRun's field), when the model is versioned."""
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    versions: NotRequired[list[str]]
    parameters: NotRequired[dict[str, Any]]


class ModelReadiness(TypedDict):
    name: str
    ready: bool
    state: NotRequired[str]
    reason: NotRequired[str]
    last_load_error: NotRequired[str]


class ResponseOutput(TypedDict):
    name: str
    datatype: str
    shape: list[int]
    data: NotRequired[list[Any]]
    parameters: NotRequired[dict[str, Any]]


class InferenceResponse(TypedDict):
    model_name: str
    outputs: list[ResponseOutput]
    model_version: NotRequired[str]
    id: NotRequired[str]
    parameters: NotRequired[dict[str, Any]]


class Duration(TypedDict):
    count: int
    ns: int


class InferenceStats(TypedDict):
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


class ModelStatistics(TypedDict):
    name: str
    version: str
    last_inference: int
    inference_count: int
    execution_count: int
    inference_stats: InferenceStats
    batch_stats: list[Any]


class StatisticsBody(TypedDict):
    model_stats: list[ModelStatistics]


class RepositoryIndexEntry(TypedDict):
    name: str
    state: str
    version: NotRequired[str]
    reason: NotRequired[str]


class RepositoryIndexRequest(TypedDict, total=False):
    ready: bool


class RepositoryModelRequest(TypedDict, total=False):
    parameters: dict[str, Any]
