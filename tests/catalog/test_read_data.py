"""ReadData: the bytes of files the embedded catalog serves, over a real gRPC server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from catalog.demo.atl08 import COLLECTION_ID as ATL08
from catalog.files import CHUNK_BYTES
from catalog.registry import Registry
from catalog.service import CatalogService
from geomesh.errors import NotFoundError, RequestValidationError
from geomesh.rpc import open_channel, rpc_errors, start_server
from geomesh.v1 import catalog_pb2, catalog_pb2_grpc
from tests.conftest import Mesh

FIRST_FILE = f"granules/{ATL08}/ATL08_20181014044639_02380101_002_01.h5"


async def read(stub: catalog_pb2_grpc.CatalogStub, path: str, offset: int = 0) -> tuple[int, list[bytes]]:
    size, chunks = -1, []
    with rpc_errors():
        async for message in stub.ReadData(catalog_pb2.ReadDataRequest(path=path, offset=offset)):
            if message.WhichOneof("item") == "size_bytes":
                assert size == -1 and not chunks, "the size comes first, once"
                size = message.size_bytes
            else:
                chunks.append(message.data)
    return size, chunks


@asynccontextmanager
async def catalog_stub(data_dir: Path | None) -> AsyncIterator[catalog_pb2_grpc.CatalogStub]:
    """A catalog on its own data folder (None: as with the CMR backend, which has none)."""
    service = CatalogService(backend=None, registry=Registry.load(), data_dir=data_dir)  # type: ignore[arg-type]
    running = await start_server(
        "catalog-files", lambda server: catalog_pb2_grpc.add_CatalogServicer_to_server(service, server),
        ["geomesh.v1.Catalog"], identity="catalog",
    )
    try:
        async with open_channel(running.address, "catalog") as channel:
            yield catalog_pb2_grpc.CatalogStub(channel)
    finally:
        await running.stop(grace=0)


async def test_reads_a_demo_granule_whole_and_from_an_offset(mesh: Mesh) -> None:
    expected = (mesh.data_dir / FIRST_FILE).read_bytes()
    async with open_channel(mesh.catalog_address, "catalog") as channel:
        stub = catalog_pb2_grpc.CatalogStub(channel)
        size, chunks = await read(stub, FIRST_FILE)
        assert size == len(expected) and b"".join(chunks) == expected
        size, chunks = await read(stub, FIRST_FILE, offset=1000)
        assert size == len(expected) and b"".join(chunks) == expected[1000:]
        size, chunks = await read(stub, FIRST_FILE, offset=len(expected))
        assert size == len(expected) and chunks == []


async def test_large_files_come_in_bounded_chunks(tmp_path: Path) -> None:
    content = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 3)  # two chunks and a bit
    (tmp_path / "granules").mkdir()
    (tmp_path / "granules" / "big.bin").write_bytes(content)
    async with catalog_stub(tmp_path) as stub:
        size, chunks = await read(stub, "granules/big.bin")
        assert size == len(content) and b"".join(chunks) == content
        assert [len(c) for c in chunks] == [CHUNK_BYTES, CHUNK_BYTES, 768]
        _, chunks = await read(stub, "granules/big.bin", offset=CHUNK_BYTES + 5)
        assert b"".join(chunks) == content[CHUNK_BYTES + 5:]


async def test_offsets_outside_the_file_are_invalid(mesh: Mesh) -> None:
    async with open_channel(mesh.catalog_address, "catalog") as channel:
        stub = catalog_pb2_grpc.CatalogStub(channel)
        with pytest.raises(RequestValidationError, match="must not be negative"):
            await read(stub, FIRST_FILE, offset=-1)
        with pytest.raises(RequestValidationError, match="beyond the end"):
            await read(stub, FIRST_FILE, offset=10**9)


async def test_only_files_below_the_public_folder_are_served(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "granules" / "C1").mkdir(parents=True)
    (data_dir / "granules" / "C1" / "ok.h5").write_bytes(b"ok")
    (data_dir / "catalog.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("secret")
    (data_dir / "granules" / "C1" / "escape.h5").symlink_to(tmp_path / "secret.txt")
    (data_dir / "granules" / "C1" / "inside.h5").symlink_to(data_dir / "granules" / "C1" / "ok.h5")
    async with catalog_stub(data_dir) as stub:
        assert (await read(stub, "granules/C1/ok.h5"))[1] == [b"ok"]
        assert (await read(stub, "granules/C1/inside.h5"))[1] == [b"ok"]  # a link that stays inside
        refused = [
            "granules/../../secret.txt", "granules/C1/../../../secret.txt", str(tmp_path / "secret.txt"),
            "/etc/hostname", "granules/C1/escape.h5", "catalog.json", "", "granules/C1",
        ]
        for path in refused:
            with pytest.raises(NotFoundError):
                await read(stub, path)
        with pytest.raises(NotFoundError, match="does not exist"):
            await read(stub, "granules/C1/missing.h5")


async def test_a_catalog_without_data_folder_serves_no_files() -> None:
    async with catalog_stub(None) as stub:
        with pytest.raises(NotFoundError, match="only by the embedded local catalog"):
            await read(stub, FIRST_FILE)
        with pytest.raises(grpc.RpcError) as raw:
            await anext(aiter(stub.ReadData(catalog_pb2.ReadDataRequest(path=FIRST_FILE))))
        assert raw.value.code() == grpc.StatusCode.NOT_FOUND
