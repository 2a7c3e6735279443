"""The job store: jobs, their work items, output links and errors, in SQLite or PostgreSQL.

Every change that moves a job (an item done or failed, cancel, pause, resume) locks the job row
first, so concurrent dispatchers, even in several schedulers, agree on progress and final state.
Work items are leased with an expiry: a scheduler that dies leaves leases that simply run out.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import Update, and_, delete, event, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as SqlTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from geomesh.errors import (
    ConflictError,
    GeomeshError,
    GoneError,
    NotFoundError,
    RequestValidationError,
    ServiceUnavailableError,
)
from scheduler.jobs.models import (
    Base,
    ErrorRow,
    JobRow,
    LabelRow,
    LeaseRow,
    LinkRow,
    WorkItemRow,
)
from scheduler.jobs.states import (
    ACTIVE,
    DEFAULT_MESSAGES,
    TERMINAL,
    JobStatus,
    check_move,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection, CursorResult, Result
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")
DATA_RETENTION = timedelta(days=30)


def outage(error: BaseException) -> GeomeshError | None:
    """The job store's database unreachable or failing (restarting, its disk full): a 503 to callers."""
    # Errors of the database itself (gone, restarting, full), not of our statements or data.
    database = isinstance(error, DBAPIError) and not isinstance(error, (IntegrityError, DataError, ProgrammingError))
    if database or isinstance(error, (OperationalError, InterfaceError, SqlTimeoutError, OSError)):
        log.warning("the job store failed: %s", error)
        return ServiceUnavailableError("The job store is unavailable right now; try again shortly.", retry_after=5)
    return None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Caller:
    user: str
    admin: bool = False


@dataclass
class NewLink:
    href: str
    title: str
    type: str
    bbox: tuple[float, float, float, float] | None = None
    time_start: datetime | None = None
    time_end: datetime | None = None


@dataclass
class NewJob:
    username: str
    request_url: str
    data_request: bytes
    service_match: bytes | None
    num_input_granules: int
    ignore_errors: bool = True
    labels: Sequence[str] = ()
    custom_message: str | None = None
    # (granule id, serialized geomesh.v1.Granule) for each item to transform...
    work: Sequence[tuple[str, bytes]] = ()
    # ...or, for a direct-download job, the links that answer it at once.
    links: Sequence[NewLink] = ()
    # Outputs go to the user's bucket (Harmony's destinationUrl) and are never deleted by geomesh.
    destination_url: str | None = None
    service: str | None = None  # the registry service that runs the items


@dataclass
class JobView:
    job: JobRow
    labels: list[str] = field(default_factory=list)
    errors: list[ErrorRow] = field(default_factory=list)
    links: list[LinkRow] = field(default_factory=list)
    link_count: int = 0


@dataclass(frozen=True)
class Lease:
    item_id: int
    job_id: str
    granule: bytes
    attempts: int
    data_request: bytes
    service_match: bytes | None  # None only for direct-download jobs, which have no work items
    service: str  # the registry service that runs it ("unknown" for jobs made before migration 0003)


def _whole(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Run a writing transaction to its end even if the caller is cancelled (a scheduler stopping):
    cut short, it would leave its connection inside a transaction, holding SQLite's write lock."""

    @functools.wraps(method)
    async def whole(self: JobStore, *args: Any, **kwargs: Any) -> T:
        task = asyncio.ensure_future(method(self, *args, **kwargs))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        return await asyncio.shield(task)

    return whole


def normalize_labels(labels: Sequence[str]) -> list[str]:
    """As Harmony stores them: trimmed, lower case, no empties, no repeats."""
    cleaned = [label.strip().lower() for label in labels]
    for label in cleaned:
        if len(label) > 255:
            raise RequestValidationError(f"Labels must be at most 255 characters long: {label[:40]}...")
    return list(dict.fromkeys(label for label in cleaned if label))


class JobStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._writing: set[asyncio.Future[Any]] = set()

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> JobStore:
        """Connect, and bring the schema to the newest migration unless told not to (`geomesh migrate`
        did, e.g. as a Kubernetes Job before the schedulers start)."""
        engine = create_async_engine(url, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            _serialize_sqlite_writers(engine)
        if migrate:
            async with engine.begin() as connection:
                await _migrate(connection)
        return cls(engine)

    async def ping(self) -> None:
        """A round trip to the database (raises when it cannot be reached): a connection checked out of
        the pool, which pings it first (pool_pre_ping). No statement, so no transaction: on SQLite
        every transaction begins IMMEDIATE, taking the write lock."""
        async with self.engine.connect():
            pass

    async def close(self) -> None:
        await asyncio.gather(*self._writing, return_exceptions=True)
        await self.engine.dispose()

    # -- creating and reading jobs ------------------------------------------------------------

    @_whole
    async def create_job(self, new: NewJob) -> JobView:
        now = utcnow()
        direct = not new.work
        status = JobStatus.SUCCESSFUL if direct else JobStatus.RUNNING
        job = JobRow(
            job_id=str(uuid.uuid4()),
            username=new.username,
            status=status.value,
            message=new.custom_message or DEFAULT_MESSAGES[status],
            custom_message=new.custom_message,
            progress=100 if direct else 0,
            created_at=now,
            updated_at=now,
            data_expiration=now + DATA_RETENTION,
            destination_url=new.destination_url,
            service=new.service,
            request_url=new.request_url,
            num_input_granules=new.num_input_granules,
            ignore_errors=new.ignore_errors,
            data_request=new.data_request,
            service_match=new.service_match,
        )
        labels = normalize_labels(new.labels)
        async with self._sessions.begin() as session:
            session.add(job)
            await session.flush()
            session.add_all(LabelRow(job_id=job.job_id, label=label) for label in labels)
            session.add_all(
                WorkItemRow(
                    job_id=job.job_id, granule=granule, granule_id=granule_id, status="ready", attempts=0,
                    next_attempt_at=now,
                )
                for granule_id, granule in new.work
            )
            session.add_all(LinkRow(**_link_values(job.job_id, link)) for link in new.links)
        return JobView(job, labels, [], [], len(new.links))

    async def get_job(self, caller: Caller, job_id: str, *, page: int = 1, limit: int = 2000) -> JobView:
        async with self._sessions() as session:
            job = await self._visible_job(session, caller, job_id)
            links = (
                await session.scalars(
                    select(LinkRow).where(LinkRow.job_id == job_id).order_by(LinkRow.id).offset((page - 1) * limit).limit(limit)
                )
            ).all()
            count = await session.scalar(select(func.count()).select_from(LinkRow).where(LinkRow.job_id == job_id))
            errors = (await session.scalars(select(ErrorRow).where(ErrorRow.job_id == job_id).order_by(ErrorRow.id))).all()
            labels = (await _labels(session, [job_id])).get(job_id, [])
            return JobView(job, labels, list(errors), list(links), count or 0)

    async def list_jobs(
        self, caller: Caller, *, page: int, limit: int, labels: Sequence[str] = ()
    ) -> tuple[list[JobView], int]:
        query = select(JobRow)
        if not caller.admin:
            query = query.where(JobRow.username == caller.user)
        wanted = normalize_labels(labels)
        if wanted:
            query = query.where(JobRow.job_id.in_(select(LabelRow.job_id).where(LabelRow.label.in_(wanted))))
        async with self._sessions() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
            jobs = (
                await session.scalars(
                    query.order_by(JobRow.created_at.desc(), JobRow.job_id).offset((page - 1) * limit).limit(limit)
                )
            ).all()
            labels_by_job = await _labels(session, [job.job_id for job in jobs])
            return [JobView(job, labels_by_job.get(job.job_id, [])) for job in jobs], total

    async def find_jobs(self, caller: Caller, job_ids: Sequence[str]) -> list[JobRow]:
        query = select(JobRow).where(JobRow.job_id.in_(list(job_ids)))
        if not caller.admin:
            query = query.where(JobRow.username == caller.user)
        async with self._sessions() as session:
            return list((await session.scalars(query)).all())

    async def find_output(self, caller: Caller, job_id: str, href: str) -> tuple[JobRow, LinkRow]:
        """A job's output link, if the caller may see the job; GoneError once its outputs expired."""
        async with self._sessions() as session:
            job = await self._visible_job(session, caller, job_id)
            link = await session.scalar(select(LinkRow).where(LinkRow.job_id == job_id, LinkRow.href == href))
            if link is None:
                raise NotFoundError(f"Job {job_id} has no output {href}")
            if job.destination_url is None and (job.outputs_deleted_at is not None or job.data_expiration <= utcnow()):
                raise GoneError(
                    f"The requested resource could not be found: the outputs of job {job_id} expired on "
                    f"{job.data_expiration.isoformat(timespec='seconds')} and were deleted. Submit the request again "
                    "to get them."
                )
            return job, link

    # -- user actions -------------------------------------------------------------------------

    @_whole
    async def move(self, caller: Caller, job_id: str, new: JobStatus, *, only_from: JobStatus | None = None) -> JobRow:
        """Cancel, pause or resume (running or running_with_errors, as the job's errors say)."""
        async with self._sessions.begin() as session:
            job = await self._visible_job(session, caller, job_id, lock=True)
            current = JobStatus(job.status)
            if only_from is not None and current is not only_from:
                raise ConflictError(f"Job status is {current.value}: only a job that is {only_from.value} can do that.")
            if new is JobStatus.RUNNING and current in (JobStatus.PAUSED, JobStatus.PREVIEWING):
                has_errors = await session.scalar(select(func.count()).select_from(ErrorRow).where(ErrorRow.job_id == job_id))
                new = JobStatus.RUNNING_WITH_ERRORS if has_errors else JobStatus.RUNNING
            check_move(current, new)
            _set_status(job, new)
            if new is JobStatus.CANCELED:
                await _cancel_open_items(session, job_id)
            elif new in ACTIVE:
                await _settle(session, job)  # everything may have finished while it was paused
            return job

    @_whole
    async def update_labels(self, caller: Caller, job_ids: Sequence[str], labels: Sequence[str], *, remove: bool) -> list[str]:
        cleaned = normalize_labels(labels)
        if not cleaned:
            raise RequestValidationError("Give at least one non-empty label")
        async with self._sessions.begin() as session:
            for job_id in job_ids:
                await self._visible_job(session, caller, job_id)
            if remove:
                await session.execute(
                    delete(LabelRow).where(LabelRow.job_id.in_(list(job_ids)), LabelRow.label.in_(cleaned))
                )
            else:
                existing = set(
                    (await session.execute(select(LabelRow.job_id, LabelRow.label).where(LabelRow.job_id.in_(list(job_ids)))))
                )
                session.add_all(
                    LabelRow(job_id=job_id, label=label)
                    for job_id in dict.fromkeys(job_ids)
                    for label in cleaned
                    if (job_id, label) not in existing
                )
        return cleaned

    # -- the dispatcher's side ----------------------------------------------------------------

    @_whole
    async def lease(self, owner: str, limit: int, lease_for: timedelta) -> list[Lease]:
        """Take up to `limit` items that are ready, or whose previous lease ran out."""
        now = utcnow()
        async with self._sessions.begin() as session:
            candidates = (
                select(WorkItemRow.id)
                .join(JobRow, JobRow.job_id == WorkItemRow.job_id)
                .where(JobRow.status.in_([s.value for s in ACTIVE]))
                .where(
                    or_(
                        and_(WorkItemRow.status == "ready", WorkItemRow.next_attempt_at <= now),
                        and_(WorkItemRow.status == "running", WorkItemRow.lease_expires_at < now),
                    )
                )
                .order_by(WorkItemRow.id)
                .limit(limit)
                .with_for_update(skip_locked=True, of=WorkItemRow)
            )
            ids = list((await session.scalars(candidates)).all())
            if not ids:
                return []
            await session.execute(
                update(WorkItemRow)
                .where(WorkItemRow.id.in_(ids))
                .values(status="running", lease_owner=owner, lease_expires_at=now + lease_for, attempts=WorkItemRow.attempts + 1)
            )
            rows = await session.execute(
                select(
                    WorkItemRow.id, WorkItemRow.job_id, WorkItemRow.granule, WorkItemRow.attempts, JobRow.data_request,
                    JobRow.service_match, func.coalesce(JobRow.service, "unknown"),
                )
                .join(JobRow, JobRow.job_id == WorkItemRow.job_id)
                .where(WorkItemRow.id.in_(ids))
                .order_by(WorkItemRow.id)
            )
            return [Lease(*row) for row in rows]

    @_whole
    async def renew(self, owner: str, item_ids: Sequence[int], lease_for: timedelta) -> None:
        if not item_ids:
            return
        async with self._sessions.begin() as session:
            await session.execute(_held(owner, item_ids).values(lease_expires_at=utcnow() + lease_for))

    async def complete(self, owner: str, item_id: int, link: NewLink) -> bool:
        """Record an item's output; False if the lease was lost (another scheduler owns the item now)."""
        return item_id in await self.complete_many(owner, [(item_id, link)])

    @_whole
    async def complete_many(self, owner: str, done: Sequence[tuple[int, NewLink]]) -> set[int]:
        """Record several items' outputs in one transaction; the ids whose lease owner still held."""
        links = dict(done)
        recorded: set[int] = set()
        async with self._sessions.begin() as session:
            rows = await session.execute(select(WorkItemRow.id, WorkItemRow.job_id).where(WorkItemRow.id.in_(list(links))))
            by_job: dict[str, list[int]] = {}
            for item_id, job_id in rows:
                by_job.setdefault(job_id, []).append(item_id)
            for job_id in sorted(by_job):  # one lock order for every batch: no deadlocks between schedulers
                job = await session.scalar(select(JobRow).where(JobRow.job_id == job_id).with_for_update())
                ended = await session.execute(
                    _held(owner, by_job[job_id]).values(status="successful", lease_owner=None).returning(WorkItemRow.id)
                )
                ids = set(ended.scalars())
                if ids:
                    # A crash between staging and commit re-runs an item: the same output, recorded once.
                    await session.execute(
                        _insert(session, LinkRow).on_conflict_do_nothing(), [_link_values(job_id, links[i]) for i in sorted(ids)]
                    )
                if job is not None:
                    await _settle(session, job)
                recorded |= ids
        return recorded

    @_whole
    async def fail(self, owner: str, item_id: int, *, url: str, message: str, retry_at: datetime | None) -> bool:
        """Retry the item later, or record the error (and fail the job unless it ignores errors)."""
        async with self._sessions.begin() as session:
            if retry_at is not None:
                result = _dml(await session.execute(_held(owner, [item_id]).values(status="ready", lease_owner=None, next_attempt_at=retry_at)))
                return result.rowcount == 1
            job = await self._end_lease(session, owner, item_id, status="failed")
            if job is None:
                return False
            session.add(ErrorRow(job_id=job.job_id, url=url, message=message))
            if not job.ignore_errors and JobStatus(job.status) not in TERMINAL:
                _set_status(job, JobStatus.FAILED, message)
                await _cancel_open_items(session, job.job_id)
                return True
            if job.status == JobStatus.RUNNING:
                _set_status(job, JobStatus.RUNNING_WITH_ERRORS)
            await _settle(session, job)
            return True

    @_whole
    async def release(self, owner: str, item_ids: Sequence[int], *, not_before: datetime | None = None) -> None:
        """Hand unfinished items back (pause, shutdown, no transformer reachable) without counting the
        attempt; none is leased again before not_before."""
        if not item_ids:
            return
        values: dict[str, Any] = dict(status="ready", lease_owner=None, attempts=WorkItemRow.attempts - 1)
        if not_before is not None:
            values["next_attempt_at"] = not_before
        async with self._sessions.begin() as session:
            await session.execute(_held(owner, item_ids).values(**values))

    async def queued(self) -> dict[str, int]:
        """Items of active jobs waiting for a dispatcher, by the registry service that runs them."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(JobRow.service, func.count())
                .select_from(WorkItemRow)
                .join(JobRow, JobRow.job_id == WorkItemRow.job_id)
                .where(JobRow.status.in_([s.value for s in ACTIVE]), WorkItemRow.status == "ready")
                .group_by(JobRow.service)
            )
            return {service or "unknown": count for service, count in rows}

    async def jobs_by_status(self) -> dict[str, int]:
        async with self._sessions() as session:
            rows = await session.execute(select(JobRow.status, func.count()).group_by(JobRow.status))
            return {status: count for status, count in rows}

    def connections(self) -> tuple[int, int]:
        """The connection pool now: (in use, idle)."""
        pool = self.engine.pool
        checked_out = getattr(pool, "checkedout", lambda: 0)()
        checked_in = getattr(pool, "checkedin", lambda: 0)()
        return int(checked_out), int(checked_in)

    async def item_counts(self, job_id: str) -> dict[str, int]:
        async with self._sessions() as session:
            rows = await session.execute(
                select(WorkItemRow.status, func.count()).where(WorkItemRow.job_id == job_id).group_by(WorkItemRow.status)
            )
            return dict(rows.all())

    # -- retention ------------------------------------------------------------------------------

    @_whole
    async def take_lease(self, name: str, owner: str, lease_for: timedelta) -> bool:
        """Hold the duty `name` for `lease_for` if nobody else holds it now (or owner already does)."""
        now = utcnow()
        async with self._sessions.begin() as session:
            held = await session.scalar(select(LeaseRow).where(LeaseRow.name == name).with_for_update())
            if held is None:
                await session.execute(
                    _insert(session, LeaseRow).on_conflict_do_nothing(),
                    [dict(name=name, owner=owner, expires_at=now + lease_for)],
                )
                held = await session.scalar(select(LeaseRow).where(LeaseRow.name == name).with_for_update())
                return held is not None and held.owner == owner
            if held.owner != owner and held.expires_at > now:
                return False
            held.owner, held.expires_at = owner, now + lease_for
            return True

    async def expired_jobs(self, limit: int) -> list[str]:
        """Finished jobs whose staged outputs are past their expiration and not yet deleted, oldest first."""
        async with self._sessions() as session:
            return list(
                (
                    await session.scalars(
                        select(JobRow.job_id)
                        .where(
                            JobRow.data_expiration <= utcnow(),
                            JobRow.outputs_deleted_at.is_(None),
                            JobRow.destination_url.is_(None),
                            JobRow.status.in_([s.value for s in TERMINAL]),
                        )
                        .order_by(JobRow.data_expiration)
                        .limit(limit)
                    )
                ).all()
            )

    @_whole
    async def outputs_deleted(self, job_id: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(update(JobRow).where(JobRow.job_id == job_id).values(outputs_deleted_at=utcnow()))

    # -- helpers --------------------------------------------------------------------------------

    async def _visible_job(self, session: AsyncSession, caller: Caller, job_id: str, *, lock: bool = False) -> JobRow:
        # Someone else's job is reported exactly like a missing one.
        query = select(JobRow).where(JobRow.job_id == job_id)
        if not caller.admin:
            query = query.where(JobRow.username == caller.user)
        job = await session.scalar(query.with_for_update() if lock else query)
        if job is None:
            raise NotFoundError(f"Unable to find job {job_id}")
        return job

    async def _end_lease(self, session: AsyncSession, owner: str, item_id: int, *, status: str) -> JobRow | None:
        """Lock the item's job, then end the item's lease if owner still holds it (None if not).
        Jobs are always locked before their items, the order cancel uses too."""
        job_id = await session.scalar(select(WorkItemRow.job_id).where(WorkItemRow.id == item_id))
        if job_id is None:
            return None
        job = await session.scalar(select(JobRow).where(JobRow.job_id == job_id).with_for_update())
        ended = _dml(await session.execute(_held(owner, [item_id]).values(status=status, lease_owner=None)))
        return job if ended.rowcount == 1 else None


def _held(owner: str, item_ids: Sequence[int]) -> Update:
    """An update of the items among item_ids that owner still holds a lease on."""
    return update(WorkItemRow).where(
        WorkItemRow.id.in_(list(item_ids)), WorkItemRow.lease_owner == owner, WorkItemRow.status == "running"
    )


def _dml(result: Result[Unpack[tuple[Any, ...]]]) -> CursorResult[Unpack[tuple[Any, ...]]]:
    """An UPDATE's result, which has a rowcount: AsyncSession.execute is typed as returning a plain
    Result for every statement, but for DML it returns a CursorResult (SQLAlchemy's docs say to cast)."""
    return cast("CursorResult[Unpack[tuple[Any, ...]]]", result)


def _link_values(job_id: str, link: NewLink) -> dict[str, object]:
    return dict(
        job_id=job_id, href=link.href, title=link.title, type=link.type,
        bbox=list(link.bbox) if link.bbox else None, time_start=link.time_start, time_end=link.time_end,
    )


def _insert(session: AsyncSession, table: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """INSERT with ON CONFLICT support, in the session's dialect."""
    dialect = session.get_bind().dialect.name
    return (postgresql_insert if dialect == "postgresql" else sqlite_insert)(table)


async def _cancel_open_items(session: AsyncSession, job_id: str) -> None:
    await session.execute(
        update(WorkItemRow)
        .where(WorkItemRow.job_id == job_id, WorkItemRow.status.in_(("ready", "running")))
        .values(status="canceled", lease_owner=None)
    )


def _set_status(job: JobRow, status: JobStatus, message: str | None = None) -> None:
    job.status = status.value
    custom = job.custom_message if status in (JobStatus.RUNNING, JobStatus.SUCCESSFUL) else None
    job.message = message or custom or DEFAULT_MESSAGES[status]
    if status in (JobStatus.SUCCESSFUL, JobStatus.COMPLETE_WITH_ERRORS):
        job.progress = 100
    job.updated_at = utcnow()


async def _settle(session: AsyncSession, job: JobRow) -> None:
    """Bring progress up to date and end the job once no item is left to run."""
    counts = dict(
        (
            await session.execute(
                select(WorkItemRow.status, func.count()).where(WorkItemRow.job_id == job.job_id).group_by(WorkItemRow.status)
            )
        ).all()
    )
    total = sum(counts.values())
    done = counts.get("successful", 0) + counts.get("failed", 0)
    job.updated_at = utcnow()
    if total:
        job.progress = max(job.progress, min(99, 100 * done // total))
    if JobStatus(job.status) not in ACTIVE or counts.get("ready", 0) or counts.get("running", 0):
        return
    failed = counts.get("failed", 0)
    if failed and failed == total:
        first = await session.scalar(select(ErrorRow.message).where(ErrorRow.job_id == job.job_id).order_by(ErrorRow.id))
        _set_status(job, JobStatus.FAILED, f"Every granule failed. The first error: {first}")
    elif failed:
        _set_status(job, JobStatus.COMPLETE_WITH_ERRORS)
    else:
        _set_status(job, JobStatus.SUCCESSFUL)


async def _labels(session: AsyncSession, job_ids: Sequence[str]) -> dict[str, list[str]]:
    rows = await session.execute(
        select(LabelRow.job_id, LabelRow.label).where(LabelRow.job_id.in_(list(job_ids))).order_by(LabelRow.label)
    )
    labels: dict[str, list[str]] = {}
    for job_id, label in rows:
        labels.setdefault(job_id, []).append(label)
    return labels


async def _migrate(connection: AsyncConnection) -> None:
    def upgrade(sync_connection: object) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = sync_connection
        command.upgrade(config, "head")

    if connection.dialect.name == "postgresql":
        # Schedulers starting together take turns migrating.
        await connection.execute(text("SELECT pg_advisory_xact_lock(4246)"))
    await connection.run_sync(upgrade)


def _serialize_sqlite_writers(engine: AsyncEngine) -> None:
    """SQLite: WAL for concurrent readers, and BEGIN IMMEDIATE so read-then-write transactions
    from several connections queue for the lock instead of failing with "database is locked"."""

    # dbapi_connection: the driver's connection as SQLAlchemy adapts it (aiosqlite's, here).
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, not by the driver
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
