"""OpenTelemetry tracing, the ``otel`` extra: off by default, and then nothing here is imported or called.

When ``settings.tracing.enabled``, ``Tracing`` is plugged in where the server is composed, never on the
request path itself:

- every request handled (HTTP, the streams, Nuclio) and every gRPC call is a span, continuing the W3C
  ``traceparent`` of the request's headers, the Kafka message's headers or the gRPC metadata;
- the model's observations (``ModelRecorder``: decode, queue, predict, encode) become its child spans, with
  the timings the statistics record anyway; a batch's execution, shared by several requests, is recorded on
  the statistics only;
- each step of a flow graph is a child span;
- ``data_url`` fetches over http(s) send the request's ``traceparent`` on.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from v2serve.event import Event, Reply
from v2serve.graph.steps import Step
from v2serve.metrics.model import ModelRecorder
from v2serve.settings import TracingSettings

Handle = Callable[[Event], Awaitable[Reply]]


class Tracing:
    """The tracer of one server, and the wrappers that add its spans."""

    def __init__(self, settings: TracingSettings) -> None:
        from opentelemetry import propagate, trace

        self._trace = trace
        self._propagate = propagate
        self.provider = trace.get_tracer_provider() if settings.exporter == "global" else _provider(settings)
        self.tracer = self.provider.get_tracer("v2serve")

    # ------------------------------------------------------------ spans around requests

    @contextmanager
    def request_span(self, name: str, carrier: Mapping[str, str], attributes: Mapping[str, Any]) -> Iterator[Any]:
        """A server span for one request, continuing the trace ``carrier`` (its headers) names."""
        parent = self._propagate.extract(carrier)
        kind = self._trace.SpanKind.SERVER
        with self.tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes) as span:
            yield span

    def traced_handle(self, handle: Handle) -> Handle:
        """``handle`` (ModelServer's), each event in a span named after its method and path."""

        async def traced(event: Event) -> Reply:
            attributes = {"http.request.method": event.method, "url.path": event.path, "v2serve.trigger": event.trigger}
            with self.request_span(f"{event.method} {event.path}", event.headers, attributes) as span:
                reply = await handle(event)
                span.set_attribute("http.response.status_code", int(reply.status))
                if reply.status >= 500:
                    span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
                return reply

        return traced

    def traced_step(self, name: str, step: Step) -> Step:
        return _TracedStep(name, step, self)

    def inject(self, headers: dict[str, str]) -> None:
        """Add the current trace context (``traceparent``) to outgoing ``headers``."""
        self._propagate.inject(headers)

    # ------------------------------------------------------------ the model's observations as spans

    def recorder(self, name: str, version: str | None) -> ModelRecorder:
        return _TracingRecorder(name, version, self)

    def child_span(self, name: str, ns: int, attributes: Mapping[str, Any]) -> None:
        """A finished span of ``ns`` nanoseconds, ending now, under the current request's span (none when
        the observation belongs to no single request, as a batch's execution)."""
        if not self._trace.get_current_span().get_span_context().is_valid:
            return
        end = time.time_ns()
        span = self.tracer.start_span(name, start_time=end - ns, attributes=attributes)
        span.end(end_time=end)

    # ------------------------------------------------------------ gRPC

    def grpc_interceptor(self) -> Any:
        """A grpc.aio server interceptor that puts each unary call in a server span (grpc is imported here:
        only a server with gRPC on asks for it)."""
        import grpc

        tracing = self

        class TracingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
            async def intercept_service(self, continuation: Any, details: Any) -> Any:
                handler = await continuation(details)
                if handler is None or handler.unary_unary is None:
                    return handler
                behaviour = handler.unary_unary
                metadata = {key: value for key, value in details.invocation_metadata or () if isinstance(value, str)}

                async def traced(request: Any, context: Any) -> Any:
                    attributes = {"rpc.system": "grpc", "rpc.method": details.method}
                    with tracing.request_span(details.method.lstrip("/"), metadata, attributes):
                        return await behaviour(request, context)

                return grpc.unary_unary_rpc_method_handler(
                    traced,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )

        return TracingInterceptor()


class _TracingRecorder(ModelRecorder):
    """A model's recorder that also makes each observation a child span of the request it belongs to."""

    __slots__ = ("_attributes", "_tracing")

    def __init__(self, name: str, version: str | None, tracing: Tracing) -> None:
        super().__init__(name, version)
        self._tracing = tracing
        self._attributes = {"v2serve.model": name, "v2serve.model_version": version or ""}

    def queued(self, ns: int) -> None:
        super().queued(ns)
        self._tracing.child_span("queue", ns, self._attributes)

    def decoded(self, ns: int) -> None:
        super().decoded(ns)
        self._tracing.child_span("decode", ns, self._attributes)

    def executed(self, ns: int, requests: int) -> None:
        super().executed(ns, requests)
        if requests == 1:
            self._tracing.child_span("predict", ns, self._attributes)

    def encoded(self, ns: int) -> None:
        super().encoded(ns)
        self._tracing.child_span("encode", ns, self._attributes)


class _TracedStep:
    def __init__(self, name: str, step: Step, tracing: Tracing) -> None:
        self.name = step.name
        self._span_name = f"step {name}"
        self._step = step
        self._tracing = tracing

    async def run(self, body: Any, event: Event) -> Any:
        tracer = self._tracing.tracer
        with tracer.start_as_current_span(self._span_name, attributes={"v2serve.step": self.name}):
            return await self._step.run(body, event)


def _provider(settings: TracingSettings) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    if settings.exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint)))
    return provider
