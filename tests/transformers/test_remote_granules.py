"""Granules read by URL in every family: s3:// from a real S3 server, https from a data host that wants a token.

The caller's token reaches only the hosts configured for it; a host's refusal is a 403 naming it,
its failures and timeouts 502/504 naming granule and host.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import rasterio
import xarray as xr

from geomesh.errors import (
    BadGatewayError,
    ForbiddenError,
    GatewayTimeoutError,
    NotFoundError,
)
from geomesh.rpc import open_channel, rpc_errors
from geomesh.s3 import BucketSettings
from geomesh.settings import TransformerSettings
from geomesh.v1 import request_pb2, transformer_pb2, transformer_pb2_grpc, types_pb2
from tests.conftest import GLOBAL_GRANULE, new_bucket, s3_settings
from tests.data_host import DataHost, serve_data_host
from tests.s3_server import S3Server
from transformers.serving import TransformerServer

TOKEN = "caller-token"


@pytest.fixture(scope="module")
def demo_files(demo_dir: Path) -> dict[str, tuple[str, str]]:
    """One granule of each demo collection: (granule id, path below the data folder)."""
    catalog = json.loads((demo_dir / "catalog.json").read_text())
    first = {c["id"]: c["granules"][0] for c in catalog["collections"] if c["granules"]}
    wanted = {"gdal": "C1233800302-EEDTEST", "netcdf": "C1234088182-EEDTEST", "swath": "C1233860183-EEDTEST"}
    found = {family: (first[collection]["id"], first[collection]["links"][0]["href"]) for family, collection in wanted.items()}
    catalog_gdal = next(c for c in catalog["collections"] if c["id"] == wanted["gdal"])
    found["gdal"] = next((g["id"], g["links"][0]["href"]) for g in catalog_gdal["granules"] if g["id"] == GLOBAL_GRANULE)
    return found


@pytest.fixture(scope="module")
def granule_bucket(s3: S3Server, demo_dir: Path, demo_files: dict[str, tuple[str, str]]) -> str:
    bucket = new_bucket(s3)
    for _, relative in demo_files.values():
        s3.client().upload_file(str(demo_dir / relative), bucket, f"granules/{relative}")
    return bucket


@pytest_asyncio.fixture(loop_scope="session")
async def start(tmp_path: Path) -> AsyncIterator[Any]:
    """Start transformers of a family with settings of a test's choosing; all stopped afterwards."""
    started: list[TransformerServer] = []

    async def start_one(family: str, **settings: Any) -> transformer_pb2_grpc.TransformerStub:
        import importlib

        service = importlib.import_module(f"transformers.{family}.service")
        server = await service.serve(TransformerSettings(family=family, port=0, workers=2, scratch_dir=tmp_path, **settings))
        started.append(server)
        return server

    yield start_one
    for server in started:
        await server.stop(0)


def _item(granule_id: str, href: str, media_type: str, token: str = "") -> transformer_pb2.WorkItem:
    granule = types_pb2.Granule(id=granule_id, name=Path(href).stem, links=[types_pb2.DataLink(href=href)])
    return transformer_pb2.WorkItem(
        request_id="r1", granule=granule, output=request_pb2.OutputOptions(format=media_type), access_token=token
    )


async def _transform(server: TransformerServer, item: transformer_pb2.WorkItem) -> bytes:
    async with open_channel(server.address, "transformer") as channel:
        with rpc_errors():
            messages = [m async for m in transformer_pb2_grpc.TransformerStub(channel).Transform(item, timeout=60)]
    assert messages[0].WhichOneof("item") == "header"
    return b"".join(m.data for m in messages[1:])


FORMATS = {"gdal": "image/tiff", "netcdf": "application/x-netcdf4", "swath": "application/x-netcdf4"}


@pytest.mark.parametrize("family", ["gdal", "netcdf", "swath"])
async def test_every_family_reads_granules_from_s3(
    start: Any, s3: S3Server, demo_dir: Path, demo_files: dict[str, tuple[str, str]], granule_bucket: str, family: str,
    tmp_path: Path,
) -> None:
    granule_id, relative = demo_files[family]
    server = await start(family, s3=s3_settings(s3))
    local = await _transform(server, _item(granule_id, (demo_dir / relative).as_uri(), FORMATS[family]))
    remote = await _transform(server, _item(granule_id, f"s3://{granule_bucket}/granules/{relative}", FORMATS[family]))
    if family == "gdal":
        assert remote == local  # the same bytes, whatever the granule was read from
    else:
        _same_netcdf(remote, local, tmp_path)
    assert server.transformer is not None and server.transformer.scratch.files() == []  # copies are deleted


def _same_netcdf(first: bytes, second: bytes, folder: Path) -> None:
    (folder / "a.nc").write_bytes(first)
    (folder / "b.nc").write_bytes(second)
    with xr.open_dataset(folder / "a.nc") as a, xr.open_dataset(folder / "b.nc") as b:
        assert sorted(a.data_vars) == sorted(b.data_vars)
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values)


async def test_s3_keys_are_per_bucket(start: Any, s3: S3Server, demo_files: dict[str, tuple[str, str]], granule_bucket: str) -> None:
    granule_id, relative = demo_files["gdal"]
    # A key no other test read: GDAL caches what it read per process and URL, and a process has one
    # set of keys per bucket, so only tests running several transformers in one process can tell.
    s3.client().copy_object(Bucket=granule_bucket, Key="private/granule.tif", CopySource=f"{granule_bucket}/granules/{relative}")
    # The read-only identity may read only its own bucket: the granule bucket is refused, by name.
    refused = BucketSettings(access_key_id=s3.readonly_key_id, secret_access_key=s3.readonly_secret_key)
    server = await start("gdal", s3=s3_settings(s3, **{granule_bucket: refused}))
    with pytest.raises(ForbiddenError, match=f"Granule {granule_id} on {granule_bucket}: The S3 store refused access"):
        await _transform(server, _item(granule_id, f"s3://{granule_bucket}/private/granule.tif", "image/tiff"))
    allowed = await start("gdal", s3=s3_settings(s3))
    with pytest.raises(NotFoundError, match="does not exist"):
        await _transform(allowed, _item(granule_id, f"s3://{granule_bucket}/granules/missing.tif", "image/tiff"))


@pytest_asyncio.fixture(loop_scope="session")
async def data_host(demo_dir: Path) -> AsyncIterator[DataHost]:
    async with serve_data_host(demo_dir, token=TOKEN) as host:
        yield host


@pytest.mark.parametrize("family", ["gdal", "netcdf"])
async def test_the_callers_token_goes_to_the_hosts_configured_for_it(
    start: Any, data_host: DataHost, demo_dir: Path, demo_files: dict[str, tuple[str, str]], family: str
) -> None:
    granule_id, relative = demo_files[family]
    trusting = await start(family, token_hosts=["127.0.0.1"])
    output = await _transform(trusting, _item(granule_id, data_host.href(relative), FORMATS[family], TOKEN))
    assert output and set(data_host.seen) == {f"Bearer {TOKEN}"}
    if family == "gdal":
        local = await _transform(trusting, _item(granule_id, (demo_dir / relative).as_uri(), "image/tiff"))
        assert output == local

    data_host.seen.clear()
    wary = await start(family, token_hosts=["data.example.org", "*.earthdata.nasa.gov"])
    with pytest.raises(ForbiddenError) as refused:
        await _transform(wary, _item(granule_id, data_host.href(relative), FORMATS[family], TOKEN))
    assert f"The data host 127.0.0.1 refused granule {granule_id} (HTTP 401" in refused.value.message
    assert "GEOMESH_TRANSFORMER_TOKEN_HOSTS" in refused.value.message
    assert data_host.seen and set(data_host.seen) == {None}  # the token never left for a host not trusted

    with pytest.raises(ForbiddenError, match="your token was sent and refused"):
        await _transform(trusting, _item(granule_id, data_host.href(relative), FORMATS[family], "stolen-token"))


async def test_a_tokened_handle_is_not_lent_to_a_caller_without_the_token(
    start: Any, data_host: DataHost, demo_files: dict[str, tuple[str, str]]
) -> None:
    """The gdal family keeps datasets open between requests: never across callers' credentials."""
    granule_id, relative = demo_files["gdal"]
    server = await start("gdal", token_hosts=["127.0.0.1"])
    href = data_host.href(relative)
    assert await _transform(server, _item(granule_id, href, "image/tiff", TOKEN))
    with pytest.raises(ForbiddenError):
        await _transform(server, _item(granule_id, href, "image/tiff", "another-callers-token"))
    with pytest.raises(ForbiddenError):
        await _transform(server, _item(granule_id, href, "image/tiff"))


@pytest.mark.parametrize("family", ["gdal", "swath"])
async def test_a_failing_host_is_a_502_and_a_slow_one_a_504(
    start: Any, demo_dir: Path, demo_files: dict[str, tuple[str, str]], family: str
) -> None:
    granule_id, relative = demo_files[family]
    async with serve_data_host(demo_dir, failures=1000) as failing:
        server = await start(family)
        with pytest.raises(BadGatewayError, match=f"The data host 127.0.0.1 failed on granule {granule_id} \\(HTTP 503"):
            await _transform(server, _item(granule_id, failing.href(relative), FORMATS[family]))
    async with serve_data_host(demo_dir, delay=3) as slow:
        server = await start(family, http_timeout_seconds=1)
        with pytest.raises(GatewayTimeoutError, match=f"The data host 127.0.0.1 did not answer in time for granule {granule_id}"):
            await _transform(server, _item(granule_id, slow.href(relative), FORMATS[family]))


async def test_a_granule_larger_than_the_copy_limit_is_refused(
    start: Any, data_host: DataHost, demo_files: dict[str, tuple[str, str]]
) -> None:
    from geomesh.errors import UnsupportedOperationError

    granule_id, relative = demo_files["netcdf"]
    server = await start("netcdf", token_hosts=["127.0.0.1"], max_download_bytes=1000)
    with pytest.raises(UnsupportedOperationError, match="more than this transformer copies"):
        await _transform(server, _item(granule_id, data_host.href(relative), FORMATS["netcdf"], TOKEN))
    assert server.transformer is not None and server.transformer.scratch.files() == []


def test_gdal_reads_the_test_server_as_the_store_does(s3: S3Server, demo_dir: Path, demo_files: dict[str, tuple[str, str]], granule_bucket: str) -> None:
    """The S3 settings geomesh builds are the ones GDAL needs (checked without geomesh's own wrappers)."""
    _, relative = demo_files["gdal"]
    with s3.rasterio_env(), rasterio.open(f"/vsis3/{granule_bucket}/granules/{relative}") as remote:
        with rasterio.open(demo_dir / relative) as local:
            assert (remote.read(1, window=((0, 16), (0, 16))) == local.read(1, window=((0, 16), (0, 16)))).all()
