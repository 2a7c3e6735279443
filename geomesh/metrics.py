"""Prometheus metrics shared by every service (one registry per process, labelled by service)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RPC_HANDLED = Counter(
    "geomesh_grpc_server_handled_total",
    "gRPC calls completed by a geomesh server, by final status code.",
    ["service", "method", "code"],
)
RPC_SECONDS = Histogram(
    "geomesh_grpc_server_handling_seconds",
    "Time to complete a gRPC call (streams: until the last message).",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HTTP_HANDLED = Counter(
    "geomesh_http_requests_total",
    "HTTP requests answered by the edge, by route and status.",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "geomesh_http_request_seconds",
    "Time to answer an HTTP request at the edge (streamed bodies: until the last byte).",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
OUTPUT_BYTES = Counter(
    "geomesh_output_bytes_total",
    "Bytes of transformed output streamed, by service.",
    ["service"],
)
