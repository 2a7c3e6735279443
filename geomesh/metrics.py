"""Prometheus metrics shared by every service (one registry per process, labelled by service)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    "HTTP requests answered by the edge, by route and status (499: the client left before the answer was sent).",
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
WORK_ITEMS_QUEUED = Gauge(
    "geomesh_work_items_queued",
    "Work items of running jobs waiting for a transformer (scale transformers on this).",
)
WORK_ITEMS_IN_FLIGHT = Gauge(
    "geomesh_work_items_in_flight",
    "Work items this scheduler is running now.",
)
WORK_ITEMS_FINISHED = Counter(
    "geomesh_work_items_finished_total",
    "Work item attempts ended by this scheduler: successful, retried, failed, lost (another scheduler took the lease), "
    "or waiting (no transformer reachable: tried again later, the attempt not counted).",
    ["outcome"],
)
WORK_ITEM_SECONDS = Histogram(
    "geomesh_work_item_seconds",
    "Time from lease to staged output for one work item.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
