"""Outputs on object storage (a real S3 server, SeaweedFS): redirects, streaming, linktype=s3,
destinationUrl, and outputs that expire; the same through harmony-py."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import rasterio
import requests
from harmony import Client, Collection, Environment, Request
from sqlalchemy import update

from geomesh.s3 import BucketSettings
from scheduler.jobs.models import JobRow
from scheduler.jobs.store import JobStore, utcnow
from tests.conftest import (
    HARMONY_EXAMPLE,
    USERS,
    Mesh,
    new_bucket,
    running_mesh,
    s3_settings,
)
from tests.edge.test_jobs import THREE_GRANULES, call, submit, wait_for
from tests.s3_server import S3Server


@pytest.fixture(scope="module")
def bucket(s3: S3Server) -> str:
    return new_bucket(s3)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def s3_mesh(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory, s3: S3Server, bucket: str) -> AsyncIterator[Mesh]:
    users = tmp_path_factory.mktemp("users") / "users.yml"
    users.write_text(USERS)
    scheduler = {
        "staging_url": f"s3://{bucket}/staging", "s3": s3_settings(s3),
        "reaper_interval_seconds": 0.2,
    }
    async with running_mesh(demo_dir, tmp_path_factory.mktemp("s3mesh"), scheduler=scheduler, edge={"users_file": users}) as mesh:
        yield mesh


ALICE = {"Authorization": "Bearer alice-token"}


async def _job(mesh: Mesh, query: str = THREE_GRANULES, **options: Any) -> dict[str, Any]:
    return await wait_for(mesh, await submit(mesh, query, headers=ALICE), headers=ALICE, **options)


def _data_links(job: dict[str, Any]) -> list[str]:
    return [link["href"] for link in job["links"] if link["rel"] == "data"]


async def test_outputs_are_redirected_to_presigned_urls(s3_mesh: Mesh, s3: S3Server, bucket: str) -> None:
    job = await _job(s3_mesh)
    hrefs = _data_links(job)
    assert len(hrefs) == 3 and all(href.startswith(f"{s3_mesh.url}/service-results/{job['jobID']}/") for href in hrefs)
    for href in hrefs:
        redirect = await call("GET", href, headers=ALICE)
        assert redirect.status_code == 307, redirect.text
        assert redirect.headers["Cache-Control"] == "private"
        location = redirect.headers["Location"]
        assert location.startswith(f"{s3.endpoint_url}/{bucket}/staging/{job['jobID']}/")
        fetched = await call("GET", location)  # the client goes to the store itself, no geomesh credentials
        item, name = href.rsplit("/", 2)[-2:]
        stored = s3.client().get_object(Bucket=bucket, Key=f"staging/{job['jobID']}/{item}/{name}")["Body"].read()
        assert fetched.status_code == 200 and fetched.content == stored
        with rasterio.open(io.BytesIO(fetched.content)) as dataset:
            assert dataset.count == 4 and dataset.crs.to_epsg() == 4326
    # Another user's job is not there for them, redirect or not.
    assert (await call("GET", hrefs[0], headers={"Authorization": "Bearer bob-token"})).status_code == 404


async def test_linktype_s3_gives_the_objects_s3_urls(s3_mesh: Mesh, s3: S3Server, bucket: str) -> None:
    job = await _job(s3_mesh)
    listed = (await call("GET", f"{s3_mesh.url}/jobs/{job['jobID']}?linktype=s3", headers=ALICE)).json()
    s3_hrefs = _data_links(listed)
    assert len(s3_hrefs) == 3
    for href in s3_hrefs:
        assert href.startswith(f"s3://{bucket}/staging/{job['jobID']}/")
        key = href.removeprefix(f"s3://{bucket}/")
        assert s3.client().head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
    item = (await call("GET", f"{s3_mesh.url}/stac/{job['jobID']}/0?linktype=S3", headers=ALICE)).json()
    assert item["assets"]["data"]["href"] in s3_hrefs
    bad = await call("GET", f"{s3_mesh.url}/jobs/{job['jobID']}?linktype=ftp", headers=ALICE)
    assert (bad.status_code, bad.json()["description"]) == (400, "Error: Invalid linkType 'ftp' must be http, https, or s3")


async def test_harmony_py_downloads_through_the_redirects(s3_mesh: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALHOST_PORT", s3_mesh.url.rsplit(":", 1)[1])
    client = Client(env=Environment.LOCAL, token="alice-token", check_interval=0.1)
    try:
        job_id = await asyncio.to_thread(client.submit, Request(collection=Collection(id=HARMONY_EXAMPLE), max_results=2))
        await asyncio.to_thread(client.wait_for_processing, job_id)
        futures = await asyncio.to_thread(lambda: list(client.download_all(job_id, directory=str(tmp_path))))
        files = [await asyncio.to_thread(future.result) for future in futures]
    finally:
        client.executor.shutdown(wait=False)
    assert len(files) == 2
    for file in files:
        with rasterio.open(file) as dataset:
            assert dataset.count == 4


async def test_streamed_through_the_mesh_when_the_store_is_not_for_clients(
    demo_dir: Path, tmp_path: Path, s3: S3Server
) -> None:
    bucket = new_bucket(s3)
    scheduler = {"staging_url": f"s3://{bucket}", "s3": s3_settings(s3), "staging_redirect": False}
    async with running_mesh(demo_dir, tmp_path, scheduler=scheduler) as mesh:
        job = await wait_for(mesh, await submit(mesh, "maxResults=1&forceAsync=true"))
        [href] = _data_links(job)
        whole = await call("GET", href)
        assert whole.status_code == 200 and whole.headers["Content-Length"] == str(len(whole.content))
        tail = await call("GET", href, headers={"Range": "bytes=100-"})
        assert (tail.status_code, tail.content) == (206, whole.content[100:])
        assert tail.headers["Content-Range"] == f"bytes 100-{len(whole.content) - 1}/{len(whole.content)}"


async def test_destination_url_writes_outputs_to_the_users_bucket(s3_mesh: Mesh, s3: S3Server) -> None:
    theirs = new_bucket(s3)
    job = await _job(s3_mesh, f"maxResults=2&destinationUrl=s3://{theirs}/my/outputs")
    assert "dataExpiration" not in job  # the user's bucket, the user's to keep
    hrefs = _data_links(job)
    assert len(hrefs) == 2
    for href in hrefs:
        assert href.startswith(f"s3://{theirs}/my/outputs/{job['jobID']}/")
        body = s3.client().get_object(Bucket=theirs, Key=href.removeprefix(f"s3://{theirs}/"))["Body"].read()
        with rasterio.open(io.BytesIO(body)) as dataset:
            assert dataset.count == 4


@pytest.mark.parametrize(
    ("destination", "status", "words"),
    [
        ("s3://{readonly}/out", 400, "Do not have write permission to the specified S3 location: 's3://{readonly}/out'"),
        ("s3://no-such-bucket-here/out", 400, "The specified bucket 'no-such-bucket-here' does not exist."),
        ("gs://bucket/out", 400, "Invalid destinationUrl 'gs://bucket/out', must start with s3://"),
        ("s3://a/x,s3://b/y", 400, "only one S3 location is allowed"),
        ("s3:///x", 400, "no S3 bucket is provided"),
    ],
)
async def test_a_destination_that_cannot_be_written_is_refused_before_any_job(
    demo_dir: Path, tmp_path_factory: pytest.TempPathFactory, s3: S3Server, destination: str, status: int, words: str
) -> None:
    readonly = BucketSettings(access_key_id=s3.readonly_key_id, secret_access_key=s3.readonly_secret_key)
    scheduler = {"s3": s3_settings(s3, **{s3.readonly_bucket: readonly})}
    async with running_mesh(demo_dir, tmp_path_factory.mktemp("dest"), scheduler=scheduler) as mesh:
        url = destination.format(readonly=s3.readonly_bucket)
        response = await call("GET", f"{mesh.rangeset()}?maxResults=2&destinationUrl={url}")
        assert response.status_code == status, response.text
        assert words.format(readonly=s3.readonly_bucket) in response.json()["description"]
        assert (await call("GET", f"{mesh.url}/jobs")).json()["count"] == 0


async def test_expired_outputs_are_deleted_and_answer_410(s3_mesh: Mesh, s3: S3Server, bucket: str) -> None:
    job = await _job(s3_mesh, "maxResults=2")
    prefix = f"staging/{job['jobID']}/"
    assert len(s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])) == 2
    await _expire(s3_mesh, job["jobID"])
    for _ in range(200):  # the reaper runs every 0.2 s in this mesh
        if not s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents"):
            break
        await asyncio.sleep(0.05)
    assert s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents") is None
    gone = await call("GET", _data_links(job)[0], headers=ALICE)
    assert gone.status_code == 410
    assert gone.json()["description"].startswith("Error: The requested resource could not be found: the outputs of job")


async def test_expired_outputs_in_a_local_folder_are_deleted_too(demo_dir: Path, tmp_path: Path) -> None:
    async with running_mesh(demo_dir, tmp_path, scheduler={"reaper_interval_seconds": 0.2}) as mesh:
        job = await wait_for(mesh, await submit(mesh, "maxResults=2"))
        folder = mesh.staging_dir / job["jobID"]
        assert len([p for p in folder.rglob("*") if p.is_file()]) == 2
        linktype = await call("GET", f"{mesh.url}/jobs/{job['jobID']}?linktype=s3")
        assert linktype.status_code == 400 and "local folder" in linktype.json()["description"]
        await _expire(mesh, job["jobID"])
        for _ in range(200):
            if not folder.exists():
                break
            await asyncio.sleep(0.05)
        assert not folder.exists()
        assert (await call("GET", _data_links(job)[0])).status_code == 410


async def _expire(mesh: Mesh, job_id: str) -> None:
    """Thirty days later, as far as the job store can tell."""
    store = await JobStore.open(mesh.database_url)
    try:
        async with store.engine.begin() as connection:
            await connection.execute(update(JobRow).where(JobRow.job_id == job_id).values(data_expiration=utcnow()))
    finally:
        await store.close()


async def test_requests_follow_redirects_without_sending_geomesh_credentials_to_the_store(s3_mesh: Mesh) -> None:
    job = await _job(s3_mesh, "maxResults=1&forceAsync=true")
    [href] = _data_links(job)
    # requests drops the Authorization header when a redirect leaves the host:port, as S3 requires.
    response = await asyncio.to_thread(requests.get, href, headers=ALICE, timeout=30)
    assert response.status_code == 200 and response.history[0].status_code == 307
