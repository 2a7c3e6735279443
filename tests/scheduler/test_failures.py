"""Granules a transformer cannot process: retried, then recorded by name while the others complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog.demo.generate import generate_demo
from tests.conftest import running_mesh
from tests.edge.test_jobs import THREE_GRANULES, call, submit, wait_for

# The seed's three-granule time range: africa, antarctica, asia_east.
BROKEN = "G1233800524-EEDTEST"
BROKEN_FILE = "016_02_ff0000_antarctica.tif"


@pytest.fixture
def broken_demo(tmp_path: Path) -> Path:
    data_dir = tmp_path / "demo"
    generate_demo(data_dir, granules=["G1233800479-EEDTEST", BROKEN, "G1233800525-EEDTEST"])
    broken = data_dir / "granules" / "C1233800302-EEDTEST" / BROKEN_FILE
    broken.write_bytes(broken.read_bytes()[:2000])  # a truncated download, as happens in the field
    return data_dir


async def test_a_granule_with_bad_data_is_named_at_once_and_the_job_completes_with_errors(
    broken_demo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_mesh(broken_demo, tmp_path / "work", scheduler={"max_attempts": 3}) as mesh:
        job = await wait_for(mesh, await submit(mesh, THREE_GRANULES), ("complete_with_errors", "failed"))
        assert (job["status"], job["progress"]) == ("complete_with_errors", 100)
        assert job["message"] == "The job has completed with errors. See the errors field for more details"
        attempts = [r for r in caplog.records if BROKEN in r.getMessage() and "attempt" in r.getMessage()]
        # Bad data fails the same way every time: a permanent error, not retried (transient ones are).
        assert len(attempts) == 1 and "will retry" not in attempts[0].getMessage()
        [error] = job["errors"]
        assert error["url"] == BROKEN and BROKEN in error["message"] and "016_02_ff0000_antarctica" in error["message"]
        assert sorted(link["title"] for link in job["links"] if link["rel"] == "data") == [
            "016_01_ff0000_africa.tif", "016_03_ff0000_asia_east.tif",
        ]

        strict = await wait_for(mesh, await submit(mesh, f"{THREE_GRANULES}&ignoreErrors=false"), ("failed",))
        assert BROKEN in strict["message"] and strict["progress"] < 100
        assert (await call("GET", f"{mesh.url}/stac/{strict['jobID']}/")).status_code == 409


async def test_a_job_resumes_on_a_mesh_restarted_with_new_transformer_addresses(demo_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"  # the job store and staging outlive both meshes
    async with running_mesh(demo_dir, work) as first:
        job_id = await submit(first, "maxResults=6")
        await call("GET", f"{first.url}/jobs/{job_id}/pause")
    async with running_mesh(demo_dir, work) as second:  # every service on new ports
        assert second.transformer_address != first.transformer_address
        assert (await call("GET", f"{second.url}/jobs/{job_id}/resume")).status_code == 302
        job = await wait_for(second, job_id, ("successful", "complete_with_errors", "failed"))
        assert (job["status"], job["numInputGranules"]) == ("successful", 6)
        assert len([link for link in job["links"] if link["rel"] == "data"]) == 6
