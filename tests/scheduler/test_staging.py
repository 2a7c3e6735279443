"""Both staging backends keep one contract: streamed in, whole or not at all, read back in ranges, deleted by job.

The S3 backend runs against a real S3 server (SeaweedFS), never a mock.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from geomesh.errors import NotFoundError, RequestValidationError
from geomesh.s3 import BucketSettings, S3Clients, S3Settings
from scheduler.staging import StagedKey, Staging, Stagings, open_staging
from scheduler.staging.s3 import PART_BYTES
from tests.conftest import new_bucket, s3_settings
from tests.s3_server import S3Server


@pytest.fixture(params=["local", "s3"])
def staging(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Staging]:
    if request.param == "local":
        yield open_staging((tmp_path / "staging").as_uri(), S3Clients(S3Settings()))
        return
    server: S3Server = request.getfixturevalue("s3")
    yield open_staging(f"s3://{new_bucket(server)}/outputs", S3Clients(s3_settings(server)))


def _key(name: str = "out.tif") -> StagedKey:
    return StagedKey.of(str(uuid.uuid4()), 7, name)


async def _stage(staging: Staging, key: StagedKey, chunks: list[bytes]) -> None:
    async with staging.writer(key, "image/tiff") as out:
        for chunk in chunks:
            await out.write(chunk)


async def _read(staging: Staging, key: StagedKey, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in staging.read(key, offset, length)])


async def test_an_output_streams_in_and_reads_back_in_ranges(staging: Staging) -> None:
    # Larger than one S3 part: a multipart upload of two parts, one part in memory at a time.
    body = os.urandom(PART_BYTES + 12345)
    key = _key()
    await _stage(staging, key, [body[i : i + 256 * 1024] for i in range(0, len(body), 256 * 1024)])
    assert await staging.size(key) == len(body)
    assert await _read(staging, key) == body
    assert await _read(staging, key, 1000) == body[1000:]
    assert await _read(staging, key, PART_BYTES - 10, 20) == body[PART_BYTES - 10 : PART_BYTES + 10]
    assert await _read(staging, key, len(body)) == b""
    with pytest.raises(RequestValidationError, match="outside the file"):
        await _read(staging, key, len(body) + 1)


async def test_a_small_output_and_an_empty_one(staging: Staging) -> None:
    small, empty = _key("small.png"), _key("empty.bin")
    await _stage(staging, small, [b"tiny"])
    await _stage(staging, empty, [])
    assert (await _read(staging, small), await staging.size(empty)) == (b"tiny", 0)


async def test_an_output_that_fails_mid_stream_is_never_visible(staging: Staging) -> None:
    key = _key()
    with pytest.raises(ConnectionError):
        async with staging.writer(key, "image/tiff") as out:
            await out.write(os.urandom(PART_BYTES + 1))  # the first part is already uploaded
            raise ConnectionError("the transformer went away")
    with pytest.raises(NotFoundError, match="no longer staged"):
        await staging.size(key)


async def test_outputs_are_deleted_job_by_job(staging: Staging) -> None:
    kept, gone = _key(), _key()
    others = [StagedKey.of(gone.job_id, item, f"{item}.tif") for item in range(3)]
    for key in (kept, gone, *others):
        await _stage(staging, key, [b"x"])
    assert await staging.delete_job(gone.job_id) == 4
    for key in (gone, *others):
        with pytest.raises(NotFoundError):
            await staging.size(key)
    assert await _read(staging, kept) == b"x"
    assert await staging.delete_job(gone.job_id) == 0


async def test_keys_cannot_leave_the_staging_area() -> None:
    for job_id, item, name in (("../x", 1, "a.tif"), ("job", "1/..", "a.tif"), ("job", 1, "../a"), ("job", 1, ".hidden")):
        with pytest.raises(NotFoundError):
            StagedKey.of(job_id, item, name)
    key = StagedKey.of("4f1c", 3, "a+b.tif")
    assert key.href == "/service-results/4f1c/3/a%2Bb.tif" and StagedKey.from_href(key.href) == key
    assert StagedKey.from_href("https://elsewhere/x") is None


async def test_s3_outputs_have_s3_urls_and_presigned_ones_clients_can_fetch(s3: S3Server) -> None:
    bucket = new_bucket(s3)
    staging = open_staging(f"s3://{bucket}/run-1/", S3Clients(s3_settings(s3)))
    key = _key("granule_subsetted.tif")
    await _stage(staging, key, [b"GeoTIFF bytes"])
    assert staging.s3_url(key) == f"s3://{bucket}/run-1/{key.job_id}/7/granule_subsetted.tif"
    url = await staging.presigned_url(key, 600, "image/tiff")
    assert url is not None
    whole = requests.get(url, timeout=10)
    assert (whole.status_code, whole.content, whole.headers["Content-Type"]) == (200, b"GeoTIFF bytes", "image/tiff")
    assert 'filename="granule_subsetted.tif"' in whole.headers["Content-Disposition"]
    tail = requests.get(url, headers={"Range": "bytes=8-"}, timeout=10)
    assert (tail.status_code, tail.content) == (206, b"bytes")
    assert requests.get(url.replace("Signature=", "Signature=0"), timeout=10).status_code == 403


async def test_presigned_urls_use_the_endpoint_clients_reach(s3: S3Server) -> None:
    bucket = new_bucket(s3)
    public = "http://objects.example.org:9000"
    settings = s3_settings(s3, **{bucket: BucketSettings(public_endpoint_url=public)})
    staging = open_staging(f"s3://{bucket}", S3Clients(settings))
    url = await staging.presigned_url(_key(), 60, "image/tiff")
    assert url is not None and url.startswith(f"{public}/{bucket}/")


async def test_a_destination_geomesh_cannot_write_to_is_refused_with_the_reason(s3: S3Server) -> None:
    writable, own = new_bucket(s3), new_bucket(s3)
    stagings = Stagings(open_staging(f"s3://{own}/staging", S3Clients(s3_settings(s3))), S3Clients(s3_settings(s3)))
    await stagings.for_destination(f"s3://{writable}/mine").check_writable()
    with pytest.raises(RequestValidationError, match=f"The specified bucket 'no-such-{writable}' does not exist"):
        await stagings.for_destination(f"s3://no-such-{writable}/x").check_writable()
    readonly = S3Clients(
        s3_settings(s3, **{s3.readonly_bucket: BucketSettings(access_key_id=s3.readonly_key_id, secret_access_key=s3.readonly_secret_key)})
    )
    with pytest.raises(RequestValidationError, match="Do not have write permission to the specified S3 location"):
        await Stagings(stagings.default, readonly).for_destination(f"s3://{s3.readonly_bucket}/out").check_writable()
    with pytest.raises(RequestValidationError, match="must start with s3://"):
        stagings.for_destination("gs://bucket/x")
    with pytest.raises(RequestValidationError, match="that bucket holds geomesh's own staging"):
        stagings.for_destination(f"s3://{own}/elsewhere")
    assert stagings.for_destination("") is stagings.default
