"""Jobs over granules on a remote data host: the caller's token goes with every read, and a host's
short failures are retried until the job completes."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import USERS, running_mesh
from tests.data_host import serve_data_host
from tests.edge.test_jobs import THREE_GRANULES, call, submit, wait_for

ALICE = {"Authorization": "Bearer alice-token"}


async def test_a_job_reads_every_granule_with_the_callers_token(demo_dir: Path, tmp_path: Path) -> None:
    users = tmp_path / "users.yml"
    users.write_text(USERS)
    # The data host wants alice's token itself, as a DAAC wants the user's Earthdata Login token.
    async with serve_data_host(demo_dir, token="alice-token") as host:
        async with running_mesh(
            demo_dir, tmp_path / "work",
            catalog={"data_url": host.url}, transformer={"token_hosts": ["127.0.0.1"]}, edge={"users_file": users},
        ) as mesh:
            job = await wait_for(mesh, await submit(mesh, THREE_GRANULES, headers=ALICE), headers=ALICE)
            assert (job["status"], job["progress"]) == ("successful", 100)
            assert host.seen and set(host.seen) == {"Bearer alice-token"}

            host.seen.clear()  # bob's token is bob's: the host refuses him, by name, and the job says so
            bob = {"Authorization": "Bearer bob-token"}
            failed = await wait_for(mesh, await submit(mesh, THREE_GRANULES, headers=bob), ("failed",), headers=bob)
            assert "The data host 127.0.0.1 refused granule" in failed["message"]
            assert set(host.seen) == {"Bearer bob-token"}

            synchronous = await call("GET", f"{mesh.rangeset()}?granuleId=G1233800343-EEDTEST", headers=bob)
            assert synchronous.status_code == 403 and "refused granule G1233800343-EEDTEST" in synchronous.text


async def test_a_hosts_short_failures_are_retried_and_lose_nothing(demo_dir: Path, tmp_path: Path) -> None:
    # GDAL itself tries each read 3 times: 4 failures outlast the first attempt of an item.
    async with serve_data_host(demo_dir, failures=4) as host:
        async with running_mesh(
            demo_dir, tmp_path / "work", catalog={"data_url": host.url}, scheduler={"max_attempts": 3},
        ) as mesh:
            job = await wait_for(mesh, await submit(mesh, THREE_GRANULES))
            assert (job["status"], job.get("errors")) == ("successful", None)
            assert len([link for link in job["links"] if link["rel"] == "data"]) == 3
            assert host.failures == 0
