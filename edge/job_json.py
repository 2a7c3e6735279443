"""geomesh.v1.Job -> the job JSON Harmony's clients read (links absolute, paging and actions included)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC
from typing import Any
from urllib.parse import urlencode

from google.protobuf.timestamp_pb2 import Timestamp

from geomesh.v1 import scheduler_pb2

# The actions a user may take in each state, as Harmony links them.
_ACTIONS = {
    "running": ("canceler", "pauser"),
    "running_with_errors": ("canceler", "pauser"),
    "previewing": ("canceler", "pauser", "preview-skipper"),
    "paused": ("canceler", "resumer"),
}
_ACTION_LINKS = {
    "canceler": ("cancel", "Cancels the job."),
    "pauser": ("pause", "Pauses the job."),
    "resumer": ("resume", "Resumes the job."),
    "preview-skipper": ("skip-preview", "Skips preview and runs the job."),
}
COMPLETE = ("successful", "complete_with_errors")


def timestamp(value: Timestamp) -> str:
    """Harmony's form: 2020-11-18T15:48:19.761Z."""
    return value.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def absolute(root: str, href: str) -> str:
    return root + href if href.startswith("/") else href


def data_link(root: str, link: scheduler_pb2.JobLink) -> dict[str, Any]:
    out: dict[str, Any] = {"href": absolute(root, link.href), "title": link.title, "type": link.type, "rel": link.rel}
    if link.HasField("bbox"):
        out["bbox"] = [link.bbox.west, link.bbox.south, link.bbox.east, link.bbox.north]
    if link.HasField("temporal"):
        out["temporal"] = {
            key: timestamp(getattr(link.temporal, key)) for key in ("start", "end") if link.temporal.HasField(key)
        }
    return out


def job_json(job: scheduler_pb2.Job, root: str, *, page: int = 1, limit: int | None = None, listing: bool = False) -> dict[str, Any]:
    job_url = f"{root}/jobs/{job.job_id}"
    links: list[dict[str, Any]] = []
    if not listing:
        if job.status in COMPLETE:
            links.append({"href": f"{root}/stac/{job.job_id}/", "title": "STAC catalog", "rel": "stac-catalog-json", "type": "application/json"})
        for rel in _ACTIONS.get(job.status, ()):
            action, title = _ACTION_LINKS[rel]
            links.append({"href": f"{job_url}/{action}", "title": title, "rel": rel, "type": "application/json"})
        links.extend(data_link(root, link) for link in job.links)
        links.extend(paging_links(job_url, page, limit, job.link_count, title="Job Status"))
    else:
        links.append({"href": job_url, "title": "Job Status", "rel": "self", "type": "application/json"})
    out: dict[str, Any] = {
        "username": job.username,
        "status": job.status,
        "message": job.message,
        "progress": job.progress,
        "createdAt": timestamp(job.created_at),
        "updatedAt": timestamp(job.updated_at),
        "links": links,
        "labels": list(job.labels),
        "request": job.request,
        "numInputGranules": job.num_input_granules,
        "jobID": job.job_id,
    }
    if job.HasField("data_expiration"):  # none for outputs in the user's own bucket (destinationUrl)
        out["dataExpiration"] = timestamp(job.data_expiration)
    if job.errors:
        out["errors"] = [{"url": error.url, "message": error.message} for error in job.errors]
    return out


def paging_links(
    url: str, page: int, limit: int | None, total: int, *, title: str = "The current page",
    query: Mapping[str, str | list[str]] | None = None,
) -> list[dict[str, Any]]:
    """self, and first/prev/next/last when there is more than one page, each link keeping query's parameters."""
    query = query or {}
    pages = max(1, math.ceil(total / limit)) if limit else 1

    def link(rel: str, number: int, text: str) -> dict[str, Any]:
        params = {**query, "page": number, "limit": limit} if limit else dict(query)
        return {"href": f"{url}?{urlencode(params, doseq=True)}" if params else url, "title": text, "rel": rel, "type": "application/json"}

    links = []
    if page > 1:
        links += [link("first", 1, "The first page"), link("prev", page - 1, "The previous page")]
    links.append(link("self", page, title))
    if page < pages:
        links += [link("next", page + 1, "The next page"), link("last", pages, "The last page")]
    return links
