"""One settings object for the whole server, read once from ``V2SERVE_*`` environment variables.

Nested settings use ``__`` in their variable names: ``V2SERVE_HTTP__PORT=9000``. The CLI maps its flags onto
these fields; nothing else reads the environment.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_max_connections() -> int:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # no resource module (Windows)
        return 1024
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(16, min(4096, soft // 2))


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
    """On SIGTERM, how long in-flight requests may take to finish before the server exits anyway (those
    still running then are answered 503)."""

    header_timeout_s: float = Field(10.0, gt=0)
    """A request's headers must arrive whole within this many seconds of the connection (or of the
    request's first byte on a kept-alive one); slower clients are answered 408 and disconnected."""

    body_timeout_s: float = Field(30.0, gt=0)
    """A request body may stall this long between two chunks before the client is answered 408 and
    disconnected (and what it sent so far freed)."""

    keep_alive_timeout_s: float = Field(5.0, gt=0)
    """An idle kept-alive connection is closed after this long."""

    max_connections: int = Field(default_factory=lambda: default_max_connections(), ge=1)
    """Open connections at most; a further one is answered 503 and closed at once. By default half the
    process's file descriptor limit (at most 4096), so that models and files always have descriptors left."""

    peers_dir: str | None = None
    """Set by ``serve --workers N``: the folder where the workers answer each other's metrics, so that a
    scrape of any one reports the totals of all (see ``metrics/peers.py``)."""
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

    read_threads: int = Field(8, ge=1)
    """Reads at once per filesystem without async support (local files, memory), on threads of their own
    (never the model threads); as many reads abandoned at their time-out may still be stuck before that
    protocol answers 503. http(s) and async stores (s3, gcs) are read on the event loop instead."""

    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """fsspec options per protocol (credentials, endpoint_url, ...), e.g. {"s3": {"endpoint_url": ...}}."""

    model_cache_dir: str = "~/.cache/v2serve/models"
    """Where model artifacts named by URL (s3://, https://, ...) are downloaded, keyed by URL."""

    revalidate_artifacts: bool = False
    """On load, ask the store for a cached artifact's version tag and download it again if it changed;
    off: a cached artifact is used without contacting the store."""


class GrpcSettings(BaseModel):
    """The v2 gRPC service beside HTTP (the ``grpc`` extra), off unless a port is given."""

    port: int | None = Field(None, ge=0, le=65535)
    """Port of the gRPC service (Triton's is 8001, KServe's 8081); None: no gRPC."""
    host: str | None = None
    """Address to bind; None: the HTTP host."""
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1)
    """Larger messages are refused with RESOURCE_EXHAUSTED, both ways."""
    reflection: bool = True
    """Serve gRPC server reflection (grpcurl and other tools list the services with it)."""
    max_connections: int = Field(default_factory=lambda: max(8, default_max_connections() // 2), ge=1)
    """Open gRPC connections at most; a further one is closed at once (the client sees UNAVAILABLE and
    retries). By default a quarter of the file descriptor limit: with HTTP's half, a flood of idle sockets
    on either port leaves descriptors for the other, for models and for files."""
    handshake_timeout_s: float = Field(10.0, gt=0)
    """A connection that has not finished the HTTP/2 handshake by then is closed (an idle socket holds a
    descriptor)."""


class TracingSettings(BaseModel):
    """OpenTelemetry tracing (the ``otel`` extra): a span per request, with decode, queue, predict, encode
    and graph steps as children; W3C ``traceparent`` read from HTTP headers, gRPC metadata and Kafka headers,
    and sent on with ``data_url`` fetches. Off: nothing of OpenTelemetry is imported."""

    enabled: bool = False
    exporter: Literal["otlp", "console", "global"] = "otlp"
    """``otlp``: OTLP over HTTP to ``endpoint``; ``console``: printed; ``global``: the tracer provider the
    process already set (``opentelemetry-instrument``, a test's in-memory exporter)."""
    endpoint: str | None = None
    """The OTLP/HTTP traces endpoint; None: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or the exporter's default
    (http://localhost:4318/v1/traces)."""
    service_name: str = "v2serve"


class FrontendSettings(BaseModel):
    """The APIs served beside v2 on the same port (each a route list over the same models)."""

    torchserve: bool = True
    """TorchServe's inference API: /ping, /predictions/{model}, /explanations/{model}."""
    kserve_v1: bool = True
    """KServe's v1 protocol: /v1/models, /v1/models/{model}:predict and :explain."""
    docs: bool = True
    """Interactive API docs (Swagger UI) at /v2/docs, on the OpenAPI document of every front-end that is on."""


class IngrainSettings(BaseModel):
    """Ingrain's inference and model APIs (``frontends/ingrain*.py``), on the main port and optionally on
    Ingrain's own two ports, where its clients look by default."""

    enabled: bool = True
    """Serve Ingrain's routes (/health, /infer_text, /embed_text, /load_model, ...) on every port."""
    inference_port: int | None = Field(None, ge=0, le=65535)
    """Also listen here (Ingrain's is 8686); there, /metrics answers Ingrain's JSON by default."""
    model_port: int | None = Field(None, ge=0, le=65535)
    """Also listen here (Ingrain's model server's is 8687)."""
    max_loaded_models: int = Field(8, ge=1)
    """Models loaded through Ingrain's load routes that stay loaded; beyond it, the least recently used goes."""
    image_url_protocols: list[str] = Field(default_factory=lambda: ["http", "https"])
    """What an image URL on Ingrain's routes may use. Unlike ``data.protocols`` (where no URL is read until
    the operator says which), image URLs are what Ingrain's API is for, so public http(s) ones are read by
    default; everything else of the data policy holds (no private, loopback or link-local address unless
    ``data.allow_private_addresses``, redirects refused, the size cap, the time-out, ``allowed_prefixes``)."""


class HubSettings(BaseModel):
    """Models by name from the Hugging Face hub (Ingrain's load routes, its catalogue). Off by default: with
    it on, a request that names a model makes the server download weights (and a tokenizer's files) from the
    internet and run them; the operator says which organisations or repositories may be fetched."""

    enabled: bool = False
    endpoint: str = "https://huggingface.co"
    """The hub to fetch from (a mirror, or a local hub); its address is held to the data policy's rule on
    private addresses (``data.allow_private_addresses``)."""
    allow: list[str] = Field(default_factory=list)
    """Organisations (``intfloat``) or repositories (``intfloat/e5-small-v2``) that may be fetched; ``*``: any.
    Empty: none."""
    revisions: dict[str, str] = Field(default_factory=dict)
    """Pinned revisions (a commit or tag) by repository; others are fetched at their default branch's head."""
    max_bytes: int = Field(2 * 1024**3, ge=1)
    """The most a repository's files may weigh together, checked before anything is downloaded."""
    cache_dir: str | None = None
    """Where downloads are kept (the Hugging Face cache layout); None: huggingface_hub's own default."""
    progress_interval_s: float = Field(10.0, gt=0)
    """How often a download in progress logs the bytes it has and its rate."""


class TorchServeSettings(BaseModel):
    """TorchServe's management and metrics APIs, each on a port of its own as TorchServe serves them (its
    inference API is on the main port: ``frontends.torchserve``)."""

    management_port: int | None = Field(None, ge=0, le=65535)
    """Listen here for TorchServe's management API (TorchServe's is 8081): register, list, describe, scale,
    set-default, unregister, under the repository API's rules. None: not served."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Listen here for ``GET /metrics`` alone, Prometheus text (TorchServe's is 8082). None: not served."""
    model_store: str | None = None
    """Where ``POST /models?url=<file>.mar`` finds archives (TorchServe's ``--model-store``); None: the
    repository's root."""


class RepositorySettings(BaseModel):
    """The model repository extension: index, load and unload models while the server runs."""

    root: str | None = None
    """Directory of model directories (``<root>/<model>/model-settings.json``, or one subdirectory per
    version); ``load`` reads from here. None: only the models the server started with (they can be unloaded)."""

    enabled: bool = True
    """False removes the repository routes altogether."""

    token: str | None = None
    """When set, the repository routes need ``Authorization: Bearer <token>``; the others never do."""


class RetrySettings(BaseModel):
    """How a stream message whose answer is a retriable error (a model still loading, a full queue) is
    tried again before its error record is written: jittered, doubling back-off."""

    attempts: int = Field(5, ge=0)
    """Further tries after the first; 0: write the error record at once."""

    backoff_s: float = Field(0.2, gt=0)
    """The first wait; each next one doubles, up to ``max_backoff_s``, jittered to between half and all."""

    max_backoff_s: float = Field(5.0, gt=0)


class KafkaSettings(BaseModel):
    """The Kafka consumer: off until ``bootstrap_servers`` is set.

    Requests are read from ``input_topics`` as consumer group ``group_id``; each gets exactly one record on
    ``output_topic`` (its result) or ``error_topic`` (its error), and its offset is committed only after that
    record is acknowledged by the broker.
    """

    bootstrap_servers: str | None = None
    """Comma-separated ``host:port`` list of brokers; none: no Kafka consumer."""

    input_topics: list[str] = Field(default_factory=lambda: ["v2serve-input"])
    output_topic: str = "v2serve-output"
    error_topic: str = "v2serve-errors"
    group_id: str = "v2serve"

    max_in_flight: int = Field(256, ge=1)
    """Messages being served at once; at the bound the consumer pauses its partitions."""

    commit_interval_ms: int = Field(200, ge=0)
    """How often finished offsets are committed (also on rebalance and at shutdown)."""

    auto_offset_reset: str = "earliest"
    """Where a group without a committed offset starts: earliest (nothing missed) or latest."""

    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""

    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    client_options: dict[str, Any] = Field(default_factory=dict)
    """Further aiokafka options for both the consumer and the producer (e.g. client_id)."""

    consumer_options: dict[str, Any] = Field(default_factory=dict)
    """Further AIOKafkaConsumer options (e.g. session_timeout_ms, max_partition_fetch_bytes)."""

    producer_options: dict[str, Any] = Field(default_factory=dict)
    """Further AIOKafkaProducer options (e.g. compression_type, max_request_size)."""

    retry: RetrySettings = Field(default_factory=RetrySettings)


class KinesisSettings(BaseModel):
    """The Kinesis consumer: off until ``input_stream`` is set."""

    input_stream: str | None = None
    output_stream: str = "v2serve-output"
    error_stream: str = "v2serve-errors"

    region_name: str | None = None
    endpoint_url: str | None = None
    """For a Kinesis-compatible server (localstack, moto)."""

    checkpoint_dir: str = "~/.cache/v2serve/kinesis"
    """Where the last served sequence number of each shard is kept, so that a restart resumes there (without
    a lease table: one consumer process per stream)."""

    lease_table: str | None = None
    """A DynamoDB table (created if absent) of shard leases and checkpoints, as the Kinesis Client Library
    keeps them: several consumer processes then split the stream's shards and take over a dead one's."""

    lease_duration_s: float = Field(10.0, gt=0)
    """A lease whose owner has not renewed it for this long may be taken (it renews every third of it)."""

    worker_id: str | None = None
    """This consumer's name in the lease table; by default host name and process id."""

    initial_position: str = "TRIM_HORIZON"
    """Where a shard without a checkpoint starts: TRIM_HORIZON (nothing missed) or LATEST."""

    max_in_flight: int = Field(256, ge=1)
    """Records being served at once, over all shards."""

    batch_size: int = Field(500, ge=1, le=10_000)
    """Records asked for per GetRecords call."""

    poll_interval_s: float = Field(1.0, gt=0)
    """Wait between reads of a shard that had nothing new (Kinesis allows 5 reads a second per shard)."""

    retry: RetrySettings = Field(default_factory=RetrySettings)


class Settings(BaseSettings):
    """Server settings. Every field can be set as ``V2SERVE_<FIELD>`` (nested: ``V2SERVE_HTTP__PORT``)."""

    model_config = SettingsConfigDict(env_prefix="V2SERVE_", env_nested_delimiter="__", extra="ignore")

    server_name: str = "v2serve"
    """Name reported by the server metadata endpoint."""

    models: list[str] = Field(default_factory=list)
    """Targets to serve: import paths 'module:Class' / 'file.py:Class', or model directories."""

    implementation_packages: list[str] = Field(default_factory=list)
    """Installed packages whose modules a model-settings.json ``implementation`` may name
    (``my_models.vision:Classifier``); otherwise only v2serve's own, the runtimes, and ``.py`` files inside
    the model's directory. Loading a model runs its code: see the README's trust model."""

    predict_threads: int = Field(default_factory=lambda: min(32, (os.cpu_count() or 1) + 4), ge=1)
    """Size of the thread pool in which sync model code (load, predict, ...) runs."""

    load_in_background: bool = False
    """Start serving before the models are loaded; they answer 503 with Retry-After until ready."""

    debug: bool = False
    """Include tracebacks in the error messages of failed predictions."""

    log_format: Literal["text", "json"] = "text"
    """Log lines as text or as one JSON object each; both carry the request id (x-request-id)."""

    http: HTTPSettings = Field(default_factory=lambda: HTTPSettings())
    data: DataSettings = Field(default_factory=lambda: DataSettings())
    repository: RepositorySettings = Field(default_factory=lambda: RepositorySettings())
    frontends: FrontendSettings = Field(default_factory=lambda: FrontendSettings())
    grpc: GrpcSettings = Field(default_factory=lambda: GrpcSettings())
    tracing: TracingSettings = Field(default_factory=lambda: TracingSettings())
    ingrain: IngrainSettings = Field(default_factory=lambda: IngrainSettings())
    torchserve: TorchServeSettings = Field(default_factory=lambda: TorchServeSettings())
    hub: HubSettings = Field(default_factory=lambda: HubSettings())
    kafka: KafkaSettings = Field(default_factory=lambda: KafkaSettings())
    kinesis: KinesisSettings = Field(default_factory=lambda: KinesisSettings())

    @property
    def model_store(self) -> str | None:
        """Where TorchServe archives named by file are found: ``torchserve.model_store``, else the repository."""
        return self.torchserve.model_store or self.repository.root
