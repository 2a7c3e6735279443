"""Log lines of every service: one JSON object a line (time, level, service, logger, message, and
the request id, user, job id and trace id of the work being logged), or plain text for a terminal
(GEOMESH_LOG_FORMAT=text), at each service's own level (GEOMESH_<SERVICE>_LOG_LEVEL).

The ids come from context variables that the edge (per HTTP request), every gRPC server (per call,
from its metadata) and the dispatcher (per work item) set, so any module's logger carries them.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any, Literal

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

REQUEST_ID_KEY = "x-request-id"  # the request id's gRPC metadata key (and, capitalized, HTTP header)
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
user: contextvars.ContextVar[str | None] = contextvars.ContextVar("user", default=None)
job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)

LogFormat = Literal["json", "text"]
_CONTEXT = ("request_id", "user", "job_id", "trace_id")


class _Context(logging.Filter):
    """Adds the service and the ids of the current request, job and trace to every record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        span = trace.get_current_span().get_span_context()
        current = {
            "request_id": request_id.get(),
            "user": user.get(),
            "job_id": job_id.get(),
            "trace_id": format(span.trace_id, "032x") if span.is_valid else None,
        }
        for key, value in current.items():  # ids given explicitly (`extra=`) win
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


class _Json(JsonFormatter):
    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # Ids that do not apply to this line are left out rather than written as null.
        return {key: value for key, value in log_data.items() if value is not None or key not in _CONTEXT}


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{key}={getattr(record, key)}" for key in _CONTEXT if getattr(record, key, None))
        line = super().format(record)
        return f"{line} [{ids}]" if ids else line


def configure(service: str, level: str, log_format: LogFormat = "json") -> None:
    """Every log line of this process to stderr, as `log_format` says, from `level` up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context(service))
    if log_format == "json":
        handler.setFormatter(
            _Json(
                "%(asctime)s %(levelname)s %(service)s %(name)s %(message)s " + " ".join(f"%({key})s" for key in _CONTEXT),
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(_Text(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
