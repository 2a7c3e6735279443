"""Operators' view of a request: one trace across edge, scheduler, catalog and transformer (W3C
trace context over HTTP and gRPC, exported over OTLP to a collector of the test's own), the
client's X-Request-Id on every hop and in the access log, JSON log lines with the request's ids,
and each service's own log level."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from geomesh import logs
from geomesh.settings import CatalogSettings, SchedulerSettings
from tests.conftest import Mesh
from tests.edge.test_jobs import call
from tests.loopback import up_ports

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: the spans every service exports, by service.name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []

    def Export(self, request: trace_service_pb2.ExportTraceServiceRequest, context: object) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                self.spans.extend((attributes["service.name"], span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    from concurrent import futures

    receiver = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, port
    server.stop(grace=None)


@pytest.mark.slow
def test_a_sync_request_is_one_trace_over_four_services_with_its_request_id(demo_dir: Path, collector: tuple[Collector, int]) -> None:
    receiver, collector_port = collector
    ports = up_ports()
    command = [sys.executable, "-m", "geomesh.cli", "up", "--data-dir", str(demo_dir)]
    command += [str(part) for option, port in ports.items() for part in (option, port)]
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("GEOMESH_", "OTEL_"))}
    environment |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans reach the collector soon after they end
    }
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("geomesh is up" in line for line in output) or process.poll() is not None, 90)
        assert any("geomesh is up" in line for line in output), "".join(output)
        url = (
            f"http://127.0.0.1:{ports['--port']}/C1233800302-EEDTEST/ogc-api-coverages/1.0.0/collections/blue_var/"
            "coverage/rangeset?granuleid=G1233800343-EEDTEST&subset=lat(0:20)&subset=lon(0:30)"
        )
        headers = {"traceparent": f"00-{TRACE_ID}-{PARENT}-01", "X-Request-Id": "notebook-cell-7"}
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            assert response.headers["X-Request-Id"] == "notebook-cell-7"
            response.read()

        def ours() -> dict[str, list]:
            found: dict[str, list] = {}
            for service, span in list(receiver.spans):
                if span.trace_id.hex() == TRACE_ID:
                    found.setdefault(service, []).append(span)
            return found

        services = {"geomesh-edge", "geomesh-scheduler", "geomesh-catalog", "geomesh-transformer-gdal"}
        wait_until(lambda: services <= ours().keys(), 30)
        spans = ours()
        by_id = {span.span_id: (service, span) for service, found in spans.items() for span in found}
        [edge] = [s for s in spans["geomesh-edge"] if s.kind == s.SPAN_KIND_SERVER]
        assert edge.parent_span_id.hex() == PARENT  # continues the client's trace
        # Every server span hangs from a client span of the service that called it, and carries the request id.
        callers = {"geomesh-scheduler": "geomesh-edge", "geomesh-catalog": "geomesh-scheduler", "geomesh-transformer-gdal": "geomesh-scheduler"}
        for service, caller in callers.items():
            served = [s for s in spans[service] if s.kind == s.SPAN_KIND_SERVER]
            assert served, service
            for span in served:
                parent_service, parent = by_id[span.parent_span_id]
                assert (parent_service, parent.kind) == (caller, parent.SPAN_KIND_CLIENT), (service, span.name)
                attributes = {a.key: a.value.string_value for a in span.attributes}
                assert attributes["geomesh.request_id"] == "notebook-cell-7", (service, span.name)
        assert {s.name for s in spans["geomesh-transformer-gdal"]} == {"transformer-gdal/Transform"}
        # The edge's access line names the request id.
        wait_until(lambda: any("notebook-cell-7" in line and "rangeset" in line for line in output), 10)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def wait_until(condition: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_json_log_lines_carry_the_service_and_the_current_ids() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        logs.configure("scheduler", "info", "json")
        root.handlers[0].stream = stream  # type: ignore[attr-defined]
        logging.getLogger("scheduler.dispatcher").debug("not at INFO")

        async def one_item() -> None:  # ids are per task: another task's lines do not carry them
            logs.request_id.set("r-1")
            logs.user.set("alice")
            logs.job_id.set("j-1")
            logging.getLogger("scheduler.dispatcher").warning("granule %s failed", "G1")

        asyncio.run(one_item())
        logging.getLogger("scheduler.reaper").info("no ids here")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first.keys() == {"time", "level", "service", "logger", "message", "request_id", "user", "job_id"}
    assert (first["level"], first["service"], first["logger"], first["message"]) == (
        "WARNING", "scheduler", "scheduler.dispatcher", "granule G1 failed",
    )
    assert (first["request_id"], first["user"], first["job_id"]) == ("r-1", "alice", "j-1")
    assert second.keys() == {"time", "level", "service", "logger", "message"}


def test_each_service_reads_its_own_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOMESH_SCHEDULER_LOG_LEVEL", "debug")
    monkeypatch.setenv("GEOMESH_LOG_FORMAT", "text")
    assert (SchedulerSettings().log_level, SchedulerSettings().log_format) == ("DEBUG", "text")
    assert CatalogSettings().log_level == "INFO"
    monkeypatch.setenv("GEOMESH_CATALOG_LOG_LEVEL", "chatty")
    with pytest.raises(ValueError, match="log_level"):
        CatalogSettings()


@pytest.mark.parametrize(("level", "listening"), [("WARNING", False), ("INFO", True)])
def test_a_served_catalog_logs_json_at_its_level(demo_dir: Path, level: str, listening: bool) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("GEOMESH_CATALOG_", "GEOMESH_LOG_"))}
    environment |= {"GEOMESH_CATALOG_PORT": str(port), "GEOMESH_CATALOG_DATA_DIR": str(demo_dir), "GEOMESH_CATALOG_LOG_LEVEL": level}
    process = subprocess.Popen(
        [sys.executable, "-m", "geomesh.cli", "serve", "catalog"], env=environment, stderr=subprocess.PIPE, text=True
    )
    try:
        def serving() -> bool:
            with socket.socket() as client:
                return process.poll() is not None or client.connect_ex(("127.0.0.1", port)) == 0

        wait_until(serving, 30)
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    lines = [json.loads(line) for line in errors.splitlines()]  # every line is JSON
    assert process.returncode == 0, errors
    assert all(line["service"] == "catalog" for line in lines)
    assert any(line["message"].startswith("catalog listening on") for line in lines) is listening, errors
    if not listening:
        assert all(line["level"] in ("WARNING", "ERROR", "CRITICAL") for line in lines), errors


async def test_request_ids_are_kept_when_usable_and_every_answer_is_logged(mesh: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="geomesh.access")
    kept = await call("GET", f"{mesh.rangeset()}?granuleId=G1233800343-EEDTEST&subset=lat(0:10)", headers={"X-Request-Id": "cell-3"})
    assert (kept.status_code, kept.headers["X-Request-Id"]) == (200, "cell-3")
    missing = await call("GET", mesh.url + "/jobs/" + str(uuid.uuid4()), headers={"X-Request-Id": "has spaces in it"})
    assert missing.status_code == 404
    made = missing.headers["X-Request-Id"]
    assert made != "has spaces in it" and str(uuid.UUID(made)) == made  # replaced by one of our own
    redirected = await call("GET", f"{mesh.rangeset()}?maxResults=1&forceAsync=true")
    assert redirected.status_code == 303 and redirected.headers["X-Request-Id"]

    def access(request_id: str) -> logging.LogRecord:
        [record] = [r for r in caplog.records if r.name == "geomesh.access" and getattr(r, "request_id", None) == request_id]
        return record

    wait = time.monotonic() + 5  # the access line is written once the answer is sent
    while not any(getattr(r, "request_id", None) == made for r in caplog.records):
        assert time.monotonic() < wait
        await asyncio.sleep(0.02)
    line = access("cell-3")
    assert (line.method, line.status, line.user) == ("GET", 200, "anonymous")  # type: ignore[attr-defined]
    assert line.bytes > 0 and line.duration_ms > 0  # type: ignore[attr-defined]
    assert '"GET /C1233800302-EEDTEST/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset?' in line.getMessage()
    assert access(made).status == 404  # type: ignore[attr-defined]


def test_a_span_ended_in_another_context_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """gRPC closes a server stream whose caller left from a copy of the call's context: the span ends
    there without 'Failed to detach context' errors (each one would look like a server fault)."""
    from opentelemetry import trace

    from geomesh import tracing

    before = trace.get_current_span()
    with tracing.current(tracing.server_span("scheduler/GetJob", {})) as span:
        assert trace.get_current_span() is span
    assert trace.get_current_span() is before  # ended where it began: what was current is again

    inside = tracing.current(tracing.server_span("scheduler/Execute", {"traceparent": f"00-{TRACE_ID}-{PARENT}-01"}))
    inside.__enter__()
    with caplog.at_level(logging.INFO):
        contextvars.copy_context().run(inside.__exit__, None, None, None)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
