"""`geomesh jobs|status|wait|download` against a real mesh, on a job over three granules."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import pty
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import rasterio
import requests
from click.testing import CliRunner, Result

from edge.app import create_app
from geomesh.cli import main
from geomesh.jobs_cli import Client, _file_names
from geomesh.settings import EdgeSettings
from tests.conftest import HARMONY_EXAMPLE, Mesh
from tests.loopback import serve_app

THREE_GRANULES = 'subset=time("2020-01-16T02:00:00.000Z":"2020-01-16T07:00:00.000Z")'


# Credentials a developer may have exported must not leak into the tests.
CLEAN_ENV = {"GEOMESH_URL": None, "GEOMESH_TOKEN": None, "GEOMESH_USER": None, "GEOMESH_PASSWORD": None}


async def geomesh(mesh: Mesh, *args: str) -> Result:
    # In a thread: the mesh serves from this test's event loop.
    return await asyncio.to_thread(CliRunner(env=CLEAN_ENV).invoke, main, [*args, "--url", mesh.url])


def run_in_terminal(*args: str) -> tuple[int, str]:
    """Run the real `geomesh` command with a pseudo-terminal as its output, as a person would see it."""
    leader, follower = pty.openpty()
    env = {name: value for name, value in os.environ.items() if name not in CLEAN_ENV}
    process = subprocess.Popen(
        [sys.executable, "-m", "geomesh.cli", *args], stdin=follower, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    output = bytearray()
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not data:
            break
        output += data
    os.close(leader)
    return process.wait(timeout=30), output.decode()


def create_job(mesh: Mesh, query: str = THREE_GRANULES, headers: dict[str, str] | None = None) -> str:
    response = requests.get(
        f"{mesh.coverages(HARMONY_EXAMPLE)}/collections/all/coverage/rangeset?{query}",
        allow_redirects=False,
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 303, response.text
    return response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def job_id(mesh: Mesh) -> str:
    """A finished job: `wait` follows it to the end first."""
    job_id = await asyncio.to_thread(create_job, mesh)
    result = await geomesh(mesh, "wait", job_id, "--interval", "0.1", "--timeout", "60")
    assert result.exit_code == 0, result.output
    assert f"job {job_id} successful (100%)" in result.output
    return job_id


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


async def test_wait_draws_its_bar_to_100_in_a_terminal(mesh: Mesh, job_id: str) -> None:
    code, output = await asyncio.to_thread(run_in_terminal, "wait", job_id, "--url", mesh.url, "--interval", "0.1")
    assert code == 0, output
    assert re.search(rf"job {job_id}  \[#+\]  100%", output), output
    assert "successful (100%)" in output


async def test_status(mesh: Mesh, job_id: str) -> None:
    result = await geomesh(mesh, "status", job_id)
    assert result.exit_code == 0, result.output
    assert "status    successful (100%)" in result.output
    assert "granules  3" in result.output
    assert "data      3 links" in result.output
    assert "errors    0" in result.output

    result = await geomesh(mesh, "status", job_id, "--json")
    job = json.loads(result.output)
    assert job["jobID"] == job_id and job["status"] == "successful"


async def test_jobs_lists_it(mesh: Mesh, job_id: str) -> None:
    result = await geomesh(mesh, "jobs", "--limit", "10000")
    assert result.exit_code == 0, result.output
    cells = next(line for line in result.output.splitlines() if line.startswith(job_id)).split()
    assert cells[1:3] == ["successful", "100%"] and cells[4] == "3"
    hits = int(re.search(r"page 1 of 1, (\d+) jobs", result.output).group(1))
    assert hits >= 1

    result = await geomesh(mesh, "jobs", "--limit", "1", "--page", str(hits))
    assert f"page {hits} of {hits}, {hits} jobs" in result.output


async def test_data_links_are_followed_across_pages(mesh: Mesh, job_id: str) -> None:
    def links_one_per_page() -> list[str]:
        client = Client(mesh.url, None, None, None)
        first_page = client.get_json(f"jobs/{job_id}", params={"limit": 1})
        assert len([link for link in first_page["links"] if link["rel"] == "data"]) == 1
        return [link["href"] for link in client.data_links(first_page)]

    hrefs = await asyncio.to_thread(links_one_per_page)
    assert len(set(hrefs)) == 3 and all(href.startswith(f"{mesh.url}/service-results/{job_id}/") for href in hrefs)


async def test_download_then_skip(mesh: Mesh, job_id: str, downloads: Path) -> None:
    result = await geomesh(mesh, "download", job_id, str(downloads))
    assert result.exit_code == 0, result.output
    assert re.search(r"3 files \(3 downloaded, 0 skipped\), \d+ bytes in [\d.]+ s", result.output)
    files = sorted(downloads.iterdir())
    assert [path.suffix for path in files] == [".tif"] * 3
    for path in files:
        with rasterio.open(path) as dataset:
            assert dataset.count == 4

    result = await geomesh(mesh, "download", job_id, str(downloads))
    assert result.exit_code == 0, result.output
    assert "3 files (0 downloaded, 3 skipped), 0 bytes" in result.output
    assert sorted(downloads.iterdir()) == files


async def test_download_resumes_a_partial_file(mesh: Mesh, job_id: str, downloads: Path, tmp_path: Path) -> None:
    if not any(downloads.iterdir()):
        assert (await geomesh(mesh, "download", job_id, str(downloads))).exit_code == 0
    fresh = sorted(downloads.iterdir())
    first = fresh[0]
    (tmp_path / f"{first.name}.part").write_bytes(first.read_bytes()[:1000])

    result = await geomesh(mesh, "download", job_id, str(tmp_path))
    assert result.exit_code == 0, result.output
    assert f"{first.name}: resuming at byte 1000" in result.output
    total = sum(path.stat().st_size for path in fresh)
    assert f"3 downloaded, 0 skipped), {total - 1000} bytes" in result.output
    assert [path.name for path in sorted(tmp_path.iterdir())] == [path.name for path in fresh]
    for path in fresh:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()


async def test_overwrite_downloads_again(mesh: Mesh, job_id: str, tmp_path: Path) -> None:
    assert (await geomesh(mesh, "download", job_id, str(tmp_path))).exit_code == 0
    first = sorted(tmp_path.iterdir())[0]
    first.write_bytes(b"not a tiff")
    result = await geomesh(mesh, "download", job_id, str(tmp_path), "--overwrite")
    assert "3 files (3 downloaded, 0 skipped)" in result.output
    with rasterio.open(first) as dataset:
        assert dataset.count == 4


async def test_download_settles_a_complete_or_too_long_part(mesh: Mesh, job_id: str, downloads: Path, tmp_path: Path) -> None:
    if not any(downloads.iterdir()):
        assert (await geomesh(mesh, "download", job_id, str(downloads))).exit_code == 0
    complete, too_long, absent = sorted(downloads.iterdir())
    (tmp_path / f"{complete.name}.part").write_bytes(complete.read_bytes())
    (tmp_path / f"{too_long.name}.part").write_bytes(too_long.read_bytes() + b"extra")

    result = await geomesh(mesh, "download", job_id, str(tmp_path))
    assert result.exit_code == 0, result.output
    # The complete part is only renamed; the other two come whole.
    assert f"{too_long.stat().st_size + absent.stat().st_size} bytes" in result.output
    for path in (complete, too_long, absent):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()
    assert not list(tmp_path.glob("*.part"))


@pytest_asyncio.fixture(loop_scope="session")
async def secured(mesh: Mesh, tmp_path: Path) -> AsyncIterator[Mesh]:
    """A second edge on the same mesh that requires credentials."""
    users = tmp_path / "users.yml"
    users.write_text(
        f"users:\n  - name: carol\n    tokens: [carol-token]\n"
        f"    password_sha256: {hashlib.sha256(b'secret').hexdigest()}\n"
    )
    settings = EdgeSettings(port=0, scheduler_address=mesh.scheduler_address, catalog_address=mesh.catalog_address, users_file=users)
    async with serve_app(create_app(settings)) as url:
        yield dataclasses.replace(mesh, url=url)


async def test_credentials_and_labels(secured: Mesh, tmp_path: Path) -> None:
    label = f"cli-{uuid.uuid4().hex[:8]}"
    job_id = await asyncio.to_thread(
        create_job, secured, f"maxResults=2&label={label}", {"Authorization": "Bearer carol-token"}
    )
    result = await geomesh(secured, "jobs")
    assert result.exit_code == 1 and "Authorization required" in result.output

    result = await geomesh(secured, "wait", job_id, "--token", "carol-token", "--interval", "0.1", "--timeout", "60")
    assert result.exit_code == 0, result.output
    result = await geomesh(secured, "jobs", "--label", label, "--label", "no-such-label", "--user", "carol", "--password", "secret")
    assert result.output.splitlines()[1].startswith(job_id)
    assert "page 1 of 1, 1 jobs" in result.output
    # Data links are on the edge itself, so the token goes along with the downloads.
    result = await geomesh(secured, "download", job_id, str(tmp_path / "out"), "--token", "carol-token")
    assert "2 files (2 downloaded, 0 skipped)" in result.output


@pytest.mark.parametrize("command", ["status", "wait", "download"])
async def test_unknown_job(mesh: Mesh, command: str) -> None:
    unknown = str(uuid.uuid4())
    result = await geomesh(mesh, command, unknown)
    assert result.exit_code == 1
    assert unknown in result.output and "Traceback" not in result.output


def test_unreachable_edge() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the command runs
    result = CliRunner(env=CLEAN_ENV).invoke(main, ["jobs", "--url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert f"cannot connect to http://127.0.0.1:{port} (Connection refused)" in result.output


def test_file_names_are_safe_and_unique() -> None:
    hrefs = [
        "http://h/service-results/j/1/a%20b.tif",
        "http://h/service-results/j/2/a%20b.tif",
        "http://h/data/..%2F..%2Fetc%2Fpasswd",
        "http://h/data/",
    ]
    assert _file_names(hrefs) == ["a_b.tif", "a_b-2.tif", "_.._etc_passwd", "data"]
