"""Prometheus metrics of every service (one registry per process): the one list of their names.

Labels are bounded: routes as registered, RPC methods, status codes, service and family names,
and the targets of the address settings; never users, job ids or paths. Gauges that describe the
job store (queue depth, jobs by status) are reported by every scheduler alike: read them with max.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from prometheus_client import Counter, Gauge, Histogram, Info

try:
    VERSION = version("geomesh")
except PackageNotFoundError:  # run from a source tree that was not installed
    VERSION = "unknown"

# Seconds, from a map tile's milliseconds to a whole granule's minute.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

BUILD_INFO = Info("geomesh_build", "The geomesh release this process runs.")
BUILD_INFO.info({"version": VERSION})

RPC_HANDLED = Counter(
    "geomesh_grpc_server_handled_total",
    "gRPC calls completed by a geomesh server, by final status code.",
    ["service", "method", "code"],
)
RPC_SECONDS = Histogram(
    "geomesh_grpc_server_handling_seconds",
    "Time to complete a gRPC call (streams: until the last message).",
    ["service", "method"],
    buckets=LATENCY_BUCKETS,
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
    buckets=LATENCY_BUCKETS,
)
OUTPUT_BYTES = Counter(
    "geomesh_output_bytes_total",
    "Bytes of transformed output streamed, by service.",
    ["service"],
)
WORK_ITEMS_QUEUED = Gauge(
    "geomesh_work_items_queued",
    "Work items of running jobs waiting for a transformer, by registry service (the job store's count, the same in "
    "every scheduler: take the max; scale each transformer family on its services').",
    ["service"],
)
JOBS = Gauge(
    "geomesh_jobs",
    "Jobs in the job store by status (the same in every scheduler: take the max).",
    ["status"],
)
WORK_ITEMS_IN_FLIGHT = Gauge(
    "geomesh_work_items_in_flight",
    "Work items this scheduler is running now, by registry service.",
    ["service"],
)
WORK_ITEM_OUTCOMES = ("successful", "retried", "failed", "lost", "waiting")
WORK_ITEMS_FINISHED = Counter(
    "geomesh_work_items_finished_total",
    "Work item attempts ended by this scheduler: successful, retried, failed, lost (another scheduler took the lease), "
    "or waiting (no transformer reachable: tried again later, the attempt not counted).",
    ["service", "outcome"],
)
WORK_ITEM_SECONDS = Histogram(
    "geomesh_work_item_seconds",
    "Time from lease to staged output for one work item, by registry service.",
    ["service"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
GRPC_CLIENT_CALLS = Counter(
    "geomesh_grpc_client_calls_total",
    "gRPC calls this process made, by the service called, the address setting's target and the final code.",
    ["peer", "target", "method", "code"],
)
GRPC_CLIENT_SECONDS = Histogram(
    "geomesh_grpc_client_call_seconds",
    "Time this process waited for a gRPC call (streams: until the last message).",
    ["peer", "method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "geomesh_http_requests_in_flight", "HTTP requests the edge is answering now, by route (as registered).", ["route"]
)
TRANSFORMER_WORKERS = Gauge(
    "geomesh_transformer_workers", "Worker processes of a transformer, by family and pool (light, heavy).", ["family", "pool"]
)
TRANSFORMER_WORKERS_BUSY = Gauge(
    "geomesh_transformer_workers_busy", "Workers running an item now, by family and pool.", ["family", "pool"]
)
TRANSFORMER_QUEUED = Gauge(
    "geomesh_transformer_queued", "Items waiting for a worker, by family and pool.", ["family", "pool"]
)
TRANSFORMER_REFUSED = Counter(
    "geomesh_transformer_refused_total",
    "Items a transformer refused: queue_full (429), scratch_full (503), too_large (413: its output's size, or its "
    "worker's memory).",
    ["family", "reason"],
)
DB_CONNECTIONS = Gauge(
    "geomesh_db_connections", "The job store's connection pool: connections in use and idle.", ["state"]
)
STAGING_BYTES = Counter("geomesh_staging_bytes_total", "Bytes of job outputs written to staging.", ["backend"])
DEPENDENCY_UP = Gauge(
    "geomesh_dependency_up",
    "1 while this process reaches a dependency it needs (the scheduler: job_store), 0 while it does not.",
    ["dependency"],
)
STAGING_FREE_BYTES = Gauge(
    "geomesh_staging_free_bytes",
    "Free space where a scheduler stages outputs, by backend (only a local folder has a size: absent for S3).",
    ["backend"],
)
