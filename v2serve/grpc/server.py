"""The gRPC server beside HTTP: a grpc.aio server on the event loop that serves HTTP, started once the models
are loaded (a Service of the HTTP app) and stopped, its calls drained, before they unload."""

from __future__ import annotations

import logging

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from v2serve.core.repository_api import RepositoryEndpoints
from v2serve.grpc.generated import inference_pb2 as pb
from v2serve.grpc.service import SERVICE, InferenceService, method_handlers
from v2serve.server import ModelServer, is_loopback

logger = logging.getLogger("v2serve.grpc")

SERVICE_NAME = SERVICE.full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class GrpcServer:
    """Serves ``inference.GRPCInferenceService``, the standard health service and reflection for ``server``
    on ``settings.grpc``'s address."""

    def __init__(self, server: ModelServer) -> None:
        self._model_server = server
        self._settings = server.settings.grpc
        self._grpc: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self.port: int | None = None
        """The port bound, once started (the one asked for, or the one the system chose for port 0)."""

    async def start(self) -> None:
        settings = self._settings
        limit = settings.max_message_bytes
        tracing = self._model_server.tracing
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # gRPC core closes connections beyond these at once: neither a flood of sockets nor idle
                # ones that never speak take the descriptors that HTTP and the models need.
                ("grpc.max_allowed_incoming_connections", settings.max_connections),
                ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_s * 1000)),
            ],
            interceptors=None if tracing is None else [tracing.grpc_interceptor()],
        )
        core = self._model_server.core
        host = settings.host or self._model_server.settings.http.host
        repository = core.repository
        if repository is not None:
            # Load and unload answer a server reachable beyond loopback only with a token, as over HTTP; what
            # decides is the address gRPC binds.
            repository = RepositoryEndpoints(
                repository.repository,
                self._model_server.settings.repository,
                reachable_beyond_loopback=not is_loopback(host),
                processes=self._model_server.settings.http.workers,
            )
        handlers = method_handlers(InferenceService(core, repository))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if settings.reflection:
            names = (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server, _reflection_pool())
        self.port = server.add_insecure_port(f"{_bracketed(host)}:{settings.port}")
        await server.start()
        self._grpc = server
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        logger.info("gRPC listening on %s:%s", host, self.port)

    async def stop(self) -> None:
        if self._grpc is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._grpc.stop(self._model_server.settings.http.graceful_timeout_s)
        self._grpc = None


def _reflection_pool() -> DescriptorPool:
    """The inference service's descriptor pool (its own: see generated/), with the health service added so
    that reflection describes both."""
    pool = pb.DESCRIPTOR.pool
    try:
        pool.FindFileByName(health_pb2.DESCRIPTOR.name)
    except KeyError:
        pool.AddSerializedFile(health_pb2.DESCRIPTOR.serialized_pb)
    return pool


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
