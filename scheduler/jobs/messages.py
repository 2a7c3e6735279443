"""Job store rows -> geomesh.v1.Job messages."""

from __future__ import annotations

from collections.abc import Callable

from geomesh.model import BBox, TimeRange
from geomesh.v1 import scheduler_pb2
from scheduler.jobs.models import LinkRow
from scheduler.jobs.store import JobView


def job_message(view: JobView, href: Callable[[str], str] | None = None) -> scheduler_pb2.Job:
    """`href` rewrites each data link's href (Harmony's linktype=s3); None keeps them as stored."""
    job = view.job
    message = scheduler_pb2.Job(
        job_id=job.job_id,
        username=job.username,
        status=job.status,
        message=job.message,
        progress=job.progress,
        request=job.request_url,
        num_input_granules=job.num_input_granules,
        labels=view.labels,
        links=[link_message(link, href) for link in view.links],
        link_count=view.link_count,
        errors=[scheduler_pb2.JobError(url=error.url, message=error.message) for error in view.errors],
    )
    message.created_at.FromDatetime(job.created_at)
    message.updated_at.FromDatetime(job.updated_at)
    if job.destination_url is None:  # outputs in the user's own bucket never expire
        message.data_expiration.FromDatetime(job.data_expiration)
    return message


def link_message(link: LinkRow, href: Callable[[str], str] | None = None) -> scheduler_pb2.JobLink:
    message = scheduler_pb2.JobLink(href=href(link.href) if href else link.href, title=link.title, type=link.type, rel="data")
    if link.bbox:
        message.bbox.CopyFrom(BBox(*link.bbox).to_proto())
    if link.time_start or link.time_end:
        message.temporal.CopyFrom(TimeRange(link.time_start, link.time_end).to_proto())
    return message
