"""The job store's tables (SQLAlchemy 2 declarative). Migrations in migrations/ must follow any change."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; SQLite stores them naive, PostgreSQL as timestamptz."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the job store: use UTC-aware datetimes")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    username: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    message: Mapped[str] = mapped_column(Text)
    # A message set at creation (e.g. a granule-limit notice) shown instead of the status default
    # while the job runs and once it succeeds.
    custom_message: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # When staged outputs are deleted, and when the reaper did so. Outputs written to the user's
    # own bucket (Harmony's destinationUrl, kept here) are theirs: never deleted.
    data_expiration: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    outputs_deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    destination_url: Mapped[str | None] = mapped_column(Text)
    # The registry service its items run on (e.g. harmony/gdal): queue depth is reported by it.
    service: Mapped[str | None] = mapped_column(String(255))
    request_url: Mapped[str] = mapped_column(Text)
    num_input_granules: Mapped[int] = mapped_column(Integer)
    ignore_errors: Mapped[bool] = mapped_column(Boolean, default=True)
    # The resolved geomesh.v1.DataRequest and catalog ServiceMatch: all a dispatcher needs to run the items.
    data_request: Mapped[bytes] = mapped_column(LargeBinary)
    service_match: Mapped[bytes | None] = mapped_column(LargeBinary)


class LabelRow(Base):
    __tablename__ = "job_labels"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), primary_key=True)
    label: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)


class WorkItemRow(Base):
    __tablename__ = "work_items"
    __table_args__ = (Index("ix_work_items_lease", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), index=True)
    granule: Mapped[bytes] = mapped_column(LargeBinary)  # geomesh.v1.Granule
    granule_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))      # ready, running, successful, failed, canceled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class LinkRow(Base):
    __tablename__ = "job_links"
    # One output per work item, whatever retries or scheduler restarts happen.
    __table_args__ = (UniqueConstraint("job_id", "href", name="uq_job_links_href"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), index=True)
    href: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(255))
    bbox: Mapped[list[float] | None] = mapped_column(JSON)
    time_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    time_end: Mapped[datetime | None] = mapped_column(UtcDateTime)


class LeaseRow(Base):
    """A named duty that one scheduler at a time performs (the reaper), held until expires_at."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ErrorRow(Base):
    __tablename__ = "job_errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.job_id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
