"""The job store on SQLite and PostgreSQL: leases, exactly-once outputs, progress, states, owners."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import text, update

from geomesh.errors import ConflictError, GoneError, NotFoundError
from scheduler.jobs.models import JobRow
from scheduler.jobs.states import JobStatus
from scheduler.jobs.store import Caller, JobStore, NewJob, NewLink, utcnow

ALICE, BOB, ADMIN = Caller("alice"), Caller("bob"), Caller("root", admin=True)
LEASE = timedelta(seconds=30)


@pytest_asyncio.fixture
async def store(database_url: str) -> AsyncIterator[JobStore]:
    opened = await JobStore.open(database_url)
    try:
        yield opened
    finally:
        await opened.close()


async def new_job(store: JobStore, granules: int = 3, **options: object) -> str:
    work = [(f"G{i}", f"granule {i}".encode()) for i in range(granules)]
    fields = dict(username="alice", request_url="http://x/rangeset", data_request=b"request", service_match=b"match",
                  num_input_granules=granules, work=work)
    fields.update(options)
    view = await store.create_job(NewJob(**fields))  # type: ignore[arg-type]
    return view.job.job_id


def link(job_id: str, item_id: int) -> NewLink:
    return NewLink(href=f"/service-results/{job_id}/{item_id}/out.tif", title="out.tif", type="image/tiff", bbox=(0, 0, 1, 1))


async def test_migrations_create_the_schema_once(store: JobStore, database_url: str) -> None:
    again = await JobStore.open(database_url)  # a second scheduler starting on the same database
    async with again.engine.connect() as connection:
        revision = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    await again.close()
    assert revision == "0003"


async def test_items_run_once_each_and_the_job_succeeds(store: JobStore) -> None:
    job_id = await new_job(store)
    leases = await store.lease("a", 10, LEASE)
    assert sorted(lease.granule for lease in leases) == [b"granule 0", b"granule 1", b"granule 2"]
    assert await store.lease("b", 10, LEASE) == []  # all are leased
    progress = []
    for lease in leases:
        assert await store.complete("a", lease.item_id, link(job_id, lease.item_id))
        progress.append((await store.get_job(ALICE, job_id)).job.progress)
    assert progress == [33, 66, 100]
    view = await store.get_job(ALICE, job_id)
    assert (view.job.status, view.job.message, view.link_count) == (
        "successful", "The job has completed successfully", 3,
    )


async def test_an_expired_lease_moves_the_item_to_another_scheduler(store: JobStore) -> None:
    job_id = await new_job(store, granules=1)
    [first] = await store.lease("crashed", 1, timedelta(milliseconds=50))
    await asyncio.sleep(0.1)
    [second] = await store.lease("survivor", 1, LEASE)
    assert (second.item_id, second.attempts) == (first.item_id, 2)
    assert await store.complete("survivor", second.item_id, link(job_id, second.item_id))
    # The first scheduler was only slow: its late result is refused, the output recorded once.
    assert not await store.complete("crashed", first.item_id, link(job_id, first.item_id))
    view = await store.get_job(ALICE, job_id)
    assert (view.job.status, view.link_count) == ("successful", 1)


async def test_concurrent_leases_never_share_an_item(store: JobStore) -> None:
    await new_job(store, granules=40)
    batches = await asyncio.gather(*(store.lease(f"s{i}", 7, LEASE) for i in range(6)))
    leased = [lease.item_id for batch in batches for lease in batch]
    assert len(leased) == len(set(leased)) == 40


async def test_failures_retry_then_complete_with_errors(store: JobStore) -> None:
    job_id = await new_job(store, granules=2)
    first, second = await store.lease("a", 2, LEASE)
    assert await store.fail("a", first.item_id, url="G0", message="G0: boom", retry_at=store_now())
    [retried] = await store.lease("a", 2, LEASE)
    assert (retried.item_id, retried.attempts) == (first.item_id, 2)
    await store.fail("a", retried.item_id, url="G0", message="G0: boom again", retry_at=None)
    assert (await store.get_job(ALICE, job_id)).job.status == "running_with_errors"
    await store.complete("a", second.item_id, link(job_id, second.item_id))
    view = await store.get_job(ALICE, job_id)
    assert (view.job.status, view.job.progress) == ("complete_with_errors", 100)
    assert [(e.url, e.message) for e in view.errors] == [("G0", "G0: boom again")]


async def test_without_ignore_errors_the_first_failure_fails_the_job(store: JobStore) -> None:
    job_id = await new_job(store, granules=3, ignore_errors=False)
    leases = await store.lease("a", 3, LEASE)
    await store.fail("a", leases[0].item_id, url="G0", message="G0: unreadable", retry_at=None)
    view = await store.get_job(ALICE, job_id)
    assert (view.job.status, view.job.message) == ("failed", "G0: unreadable")
    assert not await store.complete("a", leases[1].item_id, link(job_id, leases[1].item_id))
    assert await store.lease("a", 3, LEASE) == []


async def test_state_machine_moves_and_conflicts(store: JobStore) -> None:
    job_id = await new_job(store, granules=2)
    await store.move(ALICE, job_id, JobStatus.PAUSED)
    assert await store.lease("a", 5, LEASE) == []  # paused jobs hand out no work
    with pytest.raises(ConflictError, match="Job status cannot be updated from paused to paused."):
        await store.move(ALICE, job_id, JobStatus.PAUSED)
    await store.move(ALICE, job_id, JobStatus.RUNNING)
    assert len(await store.lease("a", 5, LEASE)) == 2
    await store.move(ALICE, job_id, JobStatus.CANCELED)
    view = await store.get_job(ALICE, job_id)
    assert (view.job.status, view.job.message) == ("canceled", "Canceled by user.")
    assert await store.item_counts(job_id) == {"canceled": 2}
    with pytest.raises(ConflictError, match="from canceled to running"):
        await store.move(ALICE, job_id, JobStatus.RUNNING)


async def test_users_see_only_their_jobs_and_admins_see_all(store: JobStore) -> None:
    job_id = await new_job(store, labels=["Survey", " survey ", "b"])
    with pytest.raises(NotFoundError, match=f"Unable to find job {job_id}"):
        await store.get_job(BOB, job_id)
    with pytest.raises(NotFoundError):
        await store.move(BOB, job_id, JobStatus.CANCELED)
    with pytest.raises(NotFoundError):
        await store.update_labels(BOB, [job_id], ["x"], remove=False)
    assert (await store.get_job(ADMIN, job_id)).labels == ["b", "survey"]
    assert (await store.list_jobs(BOB, page=1, limit=10))[1] == 0
    assert (await store.list_jobs(ADMIN, page=1, limit=10))[1] == 1
    await store.update_labels(ALICE, [job_id], ["Later"], remove=False)
    await store.update_labels(ALICE, [job_id], ["b"], remove=True)
    views, total = await store.list_jobs(ALICE, page=1, limit=10, labels=["later"])
    assert total == 1 and views[0].labels == ["later", "survey"]


async def test_direct_download_jobs_are_complete_at_once(store: JobStore) -> None:
    links = [NewLink(href=f"/data/granules/x/{i}.h5", title=f"G{i}", type="application/x-hdf5") for i in range(3)]
    view = await store.create_job(
        NewJob(username="alice", request_url="u", data_request=b"r", service_match=None, num_input_granules=3,
               custom_message="Returning direct download links", links=links)
    )
    page = await store.get_job(ALICE, view.job.job_id, page=2, limit=2)
    assert (page.job.status, page.job.progress, page.link_count) == ("successful", 100, 3)
    assert [row.title for row in page.links] == ["G2"]


def store_now():  # type: ignore[no-untyped-def]
    from scheduler.jobs.store import utcnow

    return utcnow()


async def test_upgrading_from_the_first_revision_keeps_every_job(database_url: str) -> None:
    """A store made by an older geomesh (revision 0001) gains retention without losing a row."""
    from alembic import command
    from alembic.config import Config

    from scheduler.jobs.store import MIGRATIONS

    store = await JobStore.open(database_url)
    job_id = await new_job(store)
    [lease, *_] = await store.lease("a", 1, LEASE)
    await store.complete("a", lease.item_id, link(job_id, lease.item_id))

    def downgrade(connection: object) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")

    async with store.engine.begin() as connection:
        await connection.run_sync(downgrade)
    await store.close()
    upgraded = await JobStore.open(database_url)
    try:
        view = await upgraded.get_job(ALICE, job_id)
        assert (view.link_count, view.job.num_input_granules, view.job.destination_url) == (1, 3, None)
        assert (await upgraded.item_counts(job_id))["successful"] == 1
    finally:
        await upgraded.close()


async def test_one_scheduler_at_a_time_holds_a_lease_until_it_runs_out(store: JobStore) -> None:
    assert await store.take_lease("reaper", "a", timedelta(seconds=30))
    assert not await store.take_lease("reaper", "b", timedelta(seconds=30))
    assert await store.take_lease("reaper", "a", timedelta(milliseconds=1))  # the holder renews (shortly)
    await asyncio.sleep(0.01)  # the lease length itself is what is tested: it must run out
    assert await store.take_lease("reaper", "b", timedelta(seconds=30))
    assert not await store.take_lease("reaper", "a", timedelta(seconds=30))
    results = await asyncio.gather(*(store.take_lease("other", f"s{i}", LEASE) for i in range(5)))
    assert sorted(results) == [False] * 4 + [True]


async def test_expired_outputs_are_gone_and_listed_once_for_the_reaper(store: JobStore) -> None:
    job_id = await new_job(store, granules=1)
    [lease] = await store.lease("a", 1, LEASE)
    href = link(job_id, lease.item_id).href
    await store.complete("a", lease.item_id, link(job_id, lease.item_id))
    kept = await new_job(store, granules=1, destination_url="s3://mine/out")
    running = await new_job(store, granules=1)
    assert (await store.find_output(ALICE, job_id, href))[1].href == href
    assert await store.expired_jobs(10) == []

    async with store.engine.begin() as connection:  # thirty days later
        await connection.execute(update(JobRow).values(data_expiration=utcnow() - timedelta(days=1)))
    assert await store.expired_jobs(10) == [job_id]  # not the destinationUrl one, nor the one still running
    with pytest.raises(GoneError, match=f"the outputs of job {job_id} expired"):
        await store.find_output(ALICE, job_id, href)
    await store.outputs_deleted(job_id)
    assert await store.expired_jobs(10) == []
    assert {kept, running} & set(await store.expired_jobs(10)) == set()


def test_geomesh_migrate_makes_the_schema_for_schedulers_that_do_not(database_url: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geomesh.cli import main

    done = CliRunner().invoke(main, ["migrate"], env={"GEOMESH_SCHEDULER_DATABASE_URL": database_url})
    assert done.exit_code == 0, done.output
    assert "the job store is at the newest schema" in done.output and "password" not in done.output

    assert asyncio.run(schema_version(database_url)) == "0003"


async def schema_version(url: str) -> str:
    store = await JobStore.open(url, migrate=False)
    try:
        async with store.engine.connect() as connection:
            return str((await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one())
    finally:
        await store.close()


def test_migrations_run_at_once_take_turns_on_postgresql(tmp_path: Path) -> None:
    """Three `geomesh migrate` (say, a migration Job and two schedulers still migrating) on one new
    database: the advisory lock lets one make the schema and the others find it made."""
    import os
    import subprocess
    import sys

    from tests.conftest import _postgres_database

    databases = _postgres_database()
    url = next(databases)
    try:
        environment = {**os.environ, "GEOMESH_SCHEDULER_DATABASE_URL": url, "GEOMESH_SCHEDULER_DATA_DIR": str(tmp_path)}
        runs = [
            subprocess.Popen([sys.executable, "-m", "geomesh.cli", "migrate"], env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(3)
        ]
        outputs = [run.communicate(timeout=120)[0] for run in runs]
        assert [run.returncode for run in runs] == [0, 0, 0], outputs
        assert asyncio.run(schema_version(url)) == "0003"
    finally:
        databases.close()
