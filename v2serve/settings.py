"""One settings object for the whole server, read once from ``V2SERVE_*`` environment variables.

Nested settings use ``__`` in their variable names: ``V2SERVE_HTTP__PORT=9000``. The CLI maps its flags onto
these fields; nothing else reads the environment.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class HTTPSettings(BaseModel):
    host: str = "127.0.0.1"
    """Address to bind; 127.0.0.1 by default so that nothing is exposed unless asked."""

    port: int = 8080
    """TCP port of the HTTP server."""

    workers: int = Field(1, ge=1)
    """Server processes sharing the port; each loads every model."""

    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1)
    """Larger request bodies are refused with 413 before they are read in full."""

    graceful_timeout_s: float = 30.0
    """On SIGTERM, how long in-flight requests may take to finish before the server exits anyway."""

    access_log: bool = False
    """Log one line per request (off by default: it costs throughput)."""


class DataSettings(BaseModel):
    """What requests may read through ``data_url``, and where model artifacts are cached.

    Nothing here can be set by a request. By default no ``data_url`` is readable at all.
    """

    protocols: list[str] = Field(default_factory=lambda: ["file"])
    """fsspec protocols a data_url may use, e.g. ["file", "s3", "https"]."""

    data_root: str | None = None
    """Local data_url paths must lie under this directory (after resolving symlinks); none: no local paths."""

    allowed_prefixes: list[str] = Field(default_factory=list)
    """When set, a data_url must start with one of these, e.g. ["s3://features/", "https://data.example/"]."""

    allow_private_addresses: bool = False
    """Let http(s) data_urls reach loopback, private and link-local addresses (cloud metadata included)."""

    max_bytes: int = Field(64 * 1024 * 1024, ge=1)
    """Larger objects are refused with 413, from their size before they are read when the store tells it."""

    timeout_s: float = Field(30.0, gt=0)
    """A data_url read that takes longer fails with 504."""

    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """fsspec options per protocol (credentials, endpoint_url, ...), e.g. {"s3": {"endpoint_url": ...}}."""

    model_cache_dir: str = "~/.cache/v2serve/models"
    """Where model artifacts named by URL (s3://, https://, ...) are downloaded, keyed by URL."""

    revalidate_artifacts: bool = False
    """On load, ask the store for a cached artifact's version tag and download it again if it changed;
    off: a cached artifact is used without contacting the store."""


class Settings(BaseSettings):
    """Server settings. Every field can be set as ``V2SERVE_<FIELD>`` (nested: ``V2SERVE_HTTP__PORT``)."""

    model_config = SettingsConfigDict(env_prefix="V2SERVE_", env_nested_delimiter="__", extra="ignore")

    server_name: str = "v2serve"
    """Name reported by the server metadata endpoint."""

    models: list[str] = Field(default_factory=list)
    """Targets to serve: import paths 'module:Class' / 'file.py:Class', or model directories."""

    predict_threads: int = Field(default_factory=lambda: min(32, (os.cpu_count() or 1) + 4), ge=1)
    """Size of the thread pool in which sync model code (load, predict, ...) runs."""

    load_in_background: bool = False
    """Start serving before the models are loaded; they answer 503 with Retry-After until ready."""

    debug: bool = False
    """Include tracebacks in the error messages of failed predictions."""

    http: HTTPSettings = Field(default_factory=HTTPSettings)
    data: DataSettings = Field(default_factory=DataSettings)
