"""When storage fails: the job store's database gone is a 503 with Retry-After on every jobs route,
and a staging disk that fills up ends the job with the error recorded instead of leaving it running."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import POSTGRES_ADMIN_URL, _postgres_database, running_mesh
from tests.edge.test_jobs import call, submit, wait_for


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_database()


async def test_a_job_store_outage_is_a_503_with_retry_after(demo_dir: Path, tmp_path: Path, postgres_url: str) -> None:
    async with running_mesh(demo_dir, tmp_path, scheduler={"database_url": postgres_url}) as mesh:
        job_id = await submit(mesh, "maxResults=2")
        await wait_for(mesh, job_id)
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:  # the database goes away under the scheduler
            await admin.execute(f'DROP DATABASE "{postgres_url.rsplit("/", 1)[1]}" WITH (FORCE)')
        finally:
            await admin.close()
        for path in ("/jobs", f"/jobs/{job_id}", f"/jobs/{job_id}/pause"):
            response = await call("GET", mesh.url + path)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["Retry-After"] == "5"
            assert response.json() == {
                "code": "harmony.ServiceUnavailableError",
                "description": "Error: The job store is unavailable right now; try again shortly.",
            }


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB file system of the test's own (tmpfs), for staging: a few outputs fill it."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


async def test_a_full_staging_disk_ends_the_job_with_the_error_recorded(demo_dir: Path, tmp_path: Path, small_disk: Path) -> None:
    scheduler = {"staging_url": small_disk.as_uri(), "max_attempts": 2, "retry_delay_seconds": 0.05}
    async with running_mesh(demo_dir, tmp_path / "work", scheduler=scheduler) as mesh:
        job_id = await submit(mesh, "maxResults=12")  # tens to hundreds of KB each: some fit, the rest cannot
        job = await wait_for(mesh, job_id, ("successful", "complete_with_errors", "failed"), seconds=60)
        assert job["progress"] == 100 or job["status"] == "failed"
        errors = job["errors"]
        assert errors and all("The staging folder cannot take the output right now (No space left on device)" in e["message"] for e in errors)
        assert all(str(small_disk) not in e["message"] for e in errors)  # no internal paths
        staged = [link for link in job["links"] if link["rel"] == "data"]
        assert len(staged) + len(errors) == 12
        for link in staged:  # what fitted is whole and served
            assert (await call("GET", link["href"])).status_code == 200
