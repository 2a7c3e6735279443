"""Traces across the mesh: a span for every HTTP request the edge answers and every gRPC call
(client and server side), joined into one trace by W3C trace context (`traceparent`) in HTTP headers
and gRPC metadata, so one sync request is one trace over edge, scheduler, catalog and transformer.

Spans are exported over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, with the standard OTEL_* settings (service name
geomesh-<service> unless OTEL_SERVICE_NAME says otherwise); unset, no provider is installed and every
span is OpenTelemetry's no-op. The spans are made in geomesh's own interceptors (geomesh.rpc,
geomesh.balancer, the edge's middleware), which already see every call.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = ["HEADERS", "Span", "client_span", "configure", "current", "failed", "outgoing", "rpc_code", "server_span"]

tracer = trace.get_tracer("geomesh")
HEADERS = ("traceparent", "tracestate")  # W3C trace context


def configure(service: str) -> Any:
    """Export this process's spans when an OTLP endpoint is configured; returns the provider (to
    shut down at exit, flushing what is pending), or None when tracing is off."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or f"geomesh-{service}"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def server_span(name: str, carrier: Mapping[str, str], **attributes: Any) -> Span:
    """A span continuing the caller's trace, from its headers or metadata; `current` makes it the parent
    of what this process does for the call."""
    return tracer.start_span(name, context=propagate.extract(carrier), kind=SpanKind.SERVER, attributes=attributes)


@contextmanager
def current(span: Span) -> Iterator[Span]:
    """`span` as the current span (logs carry its trace id, outgoing calls its context), ended after."""
    previous = context.get_current()
    context.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        # Set back rather than reset a token: a stream that gRPC closes after its caller left ends
        # in another Context (a copy of this one), where resetting would fail.
        context.attach(previous)
        span.end()


def client_span(name: str, **attributes: Any) -> Span:
    """A span for an outgoing call, child of the current one; not made current (streams end it in
    another task's turn), so the caller passes it to `outgoing` and ends it."""
    return tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def outgoing(span: Span, metadata: Iterable[tuple[str, str]] = ()) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying `span` as the callee's parent."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return (*metadata, *carrier.items())


def failed(span: Span, description: str) -> None:
    span.set_status(Status(StatusCode.ERROR, description))


def rpc_code(span: Span, code: grpc.StatusCode) -> None:
    """A gRPC call's outcome on its span: an error unless OK or CANCELLED (a caller that left)."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
        failed(span, code.name)
