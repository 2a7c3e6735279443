"""The gRPC plane trusts nobody by default: callers prove a mesh identity (mutual TLS or the mesh
secret), each service answers only the identities that may call it, and the scheduler takes the
user a request acts for only from the edge. Through the generated stubs, as any caller would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from geomesh.identity import MeshError, MeshSettings, make_certificates
from geomesh.rpc import RunningServer, open_channel, start_server
from geomesh.settings import TransformerSettings
from geomesh.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    request_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    transformer_pb2,
    transformer_pb2_grpc,
    types_pb2,
)
from tests.conftest import Mesh

ADMIN = scheduler_pb2.Caller(user="x", admin=True)


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


async def test_a_caller_without_credentials_is_refused_by_every_service(mesh: Mesh) -> None:
    for address, call in (
        (mesh.scheduler_address, lambda ch: scheduler_pb2_grpc.SchedulerStub(ch).ListJobs(scheduler_pb2.ListJobsRequest(caller=ADMIN))),
        (mesh.catalog_address, lambda ch: catalog_pb2_grpc.CatalogStub(ch).GetCollection(catalog_pb2.GetCollectionRequest(collection="x"))),
        (mesh.transformer_address, lambda ch: transformer_pb2_grpc.TransformerStub(ch).Describe(transformer_pb2.DescribeRequest())),
    ):
        async with grpc.aio.insecure_channel(address) as channel:
            assert await _code(call(channel)) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_self_declared_admin_cannot_list_or_take_others_jobs(mesh: Mesh) -> None:
    """Only the edge sets who a request acts for; any other identity is refused by the scheduler."""
    for identity in ("scheduler", "catalog", "transformer", "somebody"):
        async with open_channel(mesh.scheduler_address, "scheduler", identity=identity) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            assert await _code(stub.ListJobs(scheduler_pb2.ListJobsRequest(caller=ADMIN))) == grpc.StatusCode.PERMISSION_DENIED
            request = request_pb2.DataRequest(user="alice", collection="C1233800302-EEDTEST", force_async=True)
            with pytest.raises(grpc.RpcError) as caught:
                [message async for message in stub.Execute(request)]
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert f"{identity} may not call the scheduler; its callers are edge" in (caught.value.details() or "")


async def test_a_forged_credential_is_refused(mesh: Mesh) -> None:
    metadata = (("x-geomesh-service", "edge:" + "0" * 64),)
    async with grpc.aio.insecure_channel(mesh.scheduler_address) as channel:
        call = scheduler_pb2_grpc.SchedulerStub(channel).ListJobs(scheduler_pb2.ListJobsRequest(caller=ADMIN), metadata=metadata)
        assert await _code(call) == grpc.StatusCode.UNAUTHENTICATED
    wrong = MeshSettings(secret="another mesh's secret")
    async with open_channel(mesh.scheduler_address, "scheduler", mesh=wrong) as channel:
        assert await _code(scheduler_pb2_grpc.SchedulerStub(channel).ListJobs(scheduler_pb2.ListJobsRequest(caller=ADMIN))) == (
            grpc.StatusCode.UNAUTHENTICATED
        )


async def test_transformers_answer_only_the_scheduler_and_read_only_allowed_links(mesh: Mesh, tmp_path: Path) -> None:
    async with open_channel(mesh.transformer_address, "transformer", identity="edge") as channel:
        assert await _code(transformer_pb2_grpc.TransformerStub(channel).Describe(transformer_pb2.DescribeRequest())) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    from transformers.gdal.service import serve

    allowed = tmp_path / "granules"
    allowed.mkdir()
    (tmp_path / "secret.tif").write_bytes(b"not for you")
    (allowed / "escape.tif").symlink_to(tmp_path / "secret.tif")
    server = await serve(TransformerSettings(port=0, allowed_urls=[allowed.as_uri() + "/", "https://data.example.org/ok/"]))
    try:
        async with open_channel(server.address, "transformer") as channel:
            stub = transformer_pb2_grpc.TransformerStub(channel)
            for href in (
                "file:///etc/passwd", "/etc/passwd", (allowed / "escape.tif").as_uri(), f"{allowed.as_uri()}/../secret.tif",
                "/vsicurl/http://169.254.169.254/latest/meta-data", "https://data.example.org/okay/x.tif",
                "http://127.0.0.1:1/x.tif", "s3://any-bucket/x.tif",
            ):
                item = transformer_pb2.WorkItem(
                    request_id="r", granule=types_pb2.Granule(id="G1", links=[types_pb2.DataLink(href=href)]),
                    output=request_pb2.OutputOptions(format="image/tiff"),
                )
                with pytest.raises(grpc.RpcError) as caught:
                    [message async for message in stub.Transform(item)]
                assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, href
                assert "outside the locations this transformer may read" in (caught.value.details() or "")
                assert href not in (caught.value.details() or "")
    finally:
        await server.stop(0)


async def test_reflection_is_off_unless_enabled(mesh: Mesh) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with open_channel(mesh.catalog_address, "catalog") as channel:
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        with pytest.raises(grpc.RpcError) as caught:
            [response async for response in stream]
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_service_without_an_identity_refuses_to_start() -> None:
    with pytest.raises(MeshError, match="GEOMESH_MESH_TLS_DIR"):
        MeshSettings(secret=None, tls_dir=None, insecure=False, _env_file=None).credentials("edge")  # type: ignore[call-arg]


# -- mutual TLS ------------------------------------------------------------------------------------


class _Catalog(catalog_pb2_grpc.CatalogServicer):
    async def GetCollection(self, request: catalog_pb2.GetCollectionRequest, context: grpc.aio.ServicerContext) -> types_pb2.Collection:
        return types_pb2.Collection(id="answered")


@pytest_asyncio.fixture(loop_scope="session")
async def tls_catalog(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, Path]]:
    folder = tmp_path / "certs"
    make_certificates(folder, ("edge", "scheduler", "catalog", "transformer", "ops"))
    server = await start_server(
        "catalog", lambda s: catalog_pb2_grpc.add_CatalogServicer_to_server(_Catalog(), s), ["geomesh.v1.Catalog"],
        identity="catalog", mesh=MeshSettings(tls_dir=folder),
    )
    yield server, folder
    await server.stop(0)


def _get(channel: grpc.aio.Channel) -> object:
    return catalog_pb2_grpc.CatalogStub(channel).GetCollection(catalog_pb2.GetCollectionRequest(collection="c"), timeout=5)


async def test_mutual_tls_admits_the_callers_and_no_one_else(tls_catalog: tuple[RunningServer, Path], tmp_path: Path) -> None:
    server, folder = tls_catalog
    tls = MeshSettings(tls_dir=folder)
    for identity in ("edge", "scheduler"):
        async with open_channel(server.address, "catalog", identity=identity, mesh=tls) as channel:
            assert (await _get(channel)).id == "answered"  # type: ignore[attr-defined]
    async with open_channel(server.address, "catalog", identity="transformer", mesh=tls) as channel:
        assert await _code(_get(channel)) == grpc.StatusCode.PERMISSION_DENIED
    async with open_channel(server.address, "catalog", identity="ops", mesh=tls) as channel:
        assert await _code(_get(channel)) == grpc.StatusCode.PERMISSION_DENIED  # until allowed:
    allowed = MeshSettings(tls_dir=folder, extra_callers={"catalog": ["ops"]})
    extra = await start_server(
        "catalog", lambda s: catalog_pb2_grpc.add_CatalogServicer_to_server(_Catalog(), s), ["geomesh.v1.Catalog"],
        identity="catalog", mesh=allowed,
    )
    try:
        async with open_channel(extra.address, "catalog", identity="ops", mesh=allowed) as channel:
            assert (await _get(channel)).id == "answered"  # type: ignore[attr-defined]
    finally:
        await extra.stop(0)

    # No client certificate, or one from another CA: the handshake itself fails.
    async with grpc.aio.secure_channel(
        server.address, grpc.ssl_channel_credentials((folder / "ca.pem").read_bytes()),
        options=[("grpc.ssl_target_name_override", "catalog")],
    ) as channel:
        assert await _code(_get(channel)) == grpc.StatusCode.UNAVAILABLE
    strangers = tmp_path / "strangers"
    make_certificates(strangers, ("edge",))
    async with open_channel(server.address, "catalog", identity="edge", mesh=MeshSettings(tls_dir=strangers)) as channel:
        assert await _code(_get(channel)) == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.insecure_channel(server.address) as channel:
        assert await _code(_get(channel)) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_checks_it_reached_the_service_it_meant(tls_catalog: tuple[RunningServer, Path]) -> None:
    """The catalog's certificate does not pass for a scheduler's, whatever address answers."""
    server, folder = tls_catalog
    async with open_channel(server.address, "scheduler", identity="edge", mesh=MeshSettings(tls_dir=folder)) as channel:
        assert await _code(_get(channel)) == grpc.StatusCode.UNAVAILABLE


def test_certificates_are_kept_private(tmp_path: Path) -> None:
    written = make_certificates(tmp_path / "c", ("edge",))
    modes = {path.name: path.stat().st_mode & 0o777 for path in written}
    assert modes == {"ca.key": 0o600, "ca.pem": 0o644, "edge.key": 0o600, "edge.pem": 0o644}
    again = make_certificates(tmp_path / "c", ("ops",))  # the CA is kept: new identities join the same mesh
    assert [path.name for path in again] == ["ops.key", "ops.pem"]
