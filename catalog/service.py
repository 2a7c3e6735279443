"""The Catalog gRPC service: metadata from the local catalog or CMR, and service matching."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import grpc

from catalog.backend import CatalogBackend, GranuleQuery
from catalog.files import DataFolder
from catalog.models import CollectionRecord, GranuleRecord, VariableRecord
from catalog.registry import Operations, Registry, ServiceConfig
from geomesh.errors import NotFoundError, RequestValidationError
from geomesh.model import BBox, TimeRange, optional_bbox, optional_time
from geomesh.rpc import RunningServer, start_server
from geomesh.settings import CatalogSettings
from geomesh.shapes import GEOJSON, parse_shape
from geomesh.v1 import catalog_pb2, catalog_pb2_grpc, request_pb2, types_pb2

# Initial metadata of a Capabilities answer from CMR: the URL below which its concept ids resolve.


class CatalogService(catalog_pb2_grpc.CatalogServicer):
    def __init__(self, backend: CatalogBackend, registry: Registry, data_dir: Path | None = None) -> None:
        self.backend = backend
        self.registry = registry
        # The folder of the embedded catalog's own files; None with CMR, whose links point elsewhere.
        self.files = DataFolder(data_dir) if data_dir is not None else None

    async def GetCollection(self, request: catalog_pb2.GetCollectionRequest, context: grpc.aio.ServicerContext) -> types_pb2.Collection:
        return collection_to_proto(await self.backend.get_collection(request.collection))

    async def ListVariables(self, request: catalog_pb2.ListVariablesRequest, context: grpc.aio.ServicerContext) -> catalog_pb2.ListVariablesResponse:
        variables = await self.backend.list_variables(request.collection_id)
        return catalog_pb2.ListVariablesResponse(variables=[variable_to_proto(v) for v in variables])

    async def SearchGranules(
        self, request: catalog_pb2.SearchGranulesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[catalog_pb2.SearchGranulesResponse]:
        query = GranuleQuery(
            collection_id=request.collection_id,
            bbox=optional_bbox(request),
            temporal=optional_time(request),
            granule_ids=tuple(request.granule_ids),
            granule_names=tuple(request.granule_names),
            limit=request.limit,
            shape=parse_shape(request.shape_geojson, GEOJSON).geometry if request.shape_geojson else None,
        )
        search = await self.backend.search_granules(query)
        yield catalog_pb2.SearchGranulesResponse(hits=search.hits)
        async for granule in search.granules:
            yield catalog_pb2.SearchGranulesResponse(granule=granule_to_proto(granule, request.collection_id))

    async def MatchService(self, request: request_pb2.DataRequest, context: grpc.aio.ServicerContext) -> catalog_pb2.ServiceMatch:
        collection = await self.backend.get_collection(request.collection)
        match = self.registry.match(collection.id, operations_of(request))
        if match is None:
            return catalog_pb2.ServiceMatch(
                direct_download_message=(
                    f"Returning direct download links because no operations can be performed on {collection.id}."
                )
            )
        return catalog_pb2.ServiceMatch(service=service_to_proto(match.service), output_format=match.output_format)

    async def Capabilities(self, request: catalog_pb2.GetCollectionRequest, context: grpc.aio.ServicerContext) -> catalog_pb2.CollectionCapabilities:
        collection = await self.backend.get_collection(request.collection)
        # Concept ids resolve at CMR only when CMR is the source: say where, so the edge can link them.
        cmr_root = getattr(self.backend, "root_url", None)
        services = [service_to_proto(s) for s in self.registry.for_collection(collection.id)]
        combined = catalog_pb2.ServiceCapabilities()
        for service in services:
            for field in ("bbox_subset", "variable_subset", "multiple_variable", "shape_subset", "temporal_subset",
                          "dimension_subset", "reprojection", "concatenation"):
                setattr(combined, field, getattr(combined, field) or getattr(service.capabilities, field))
            combined.output_formats.extend(f for f in service.capabilities.output_formats if f not in combined.output_formats)
        return catalog_pb2.CollectionCapabilities(
            collection=collection_to_proto(collection),
            variables=[variable_to_proto(v) for v in collection.variables or await self.backend.list_variables(collection.id)],
            services=services,
            combined=combined,
            concepts_url=f"{cmr_root}/search/concepts" if isinstance(cmr_root, str) else "",
        )

    async def ReadData(
        self, request: catalog_pb2.ReadDataRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[catalog_pb2.ReadDataResponse]:
        if self.files is None:
            raise NotFoundError(
                f"No file {request.path} here: files under /data/ are served only by the embedded local catalog, "
                "and this catalog reads CMR"
            )
        if request.offset < 0:
            raise RequestValidationError(f"The offset {request.offset} must not be negative")
        async with self.files.open(request.path) as opened:
            # The size comes first even when the offset is past it, so that a caller can say
            # how large the file is (HTTP's 416 answer does).
            yield catalog_pb2.ReadDataResponse(size_bytes=opened.size)
            if request.offset > opened.size:
                raise RequestValidationError(
                    f"The offset {request.offset} is beyond the end of {request.path} ({opened.size} bytes)"
                )
            async for chunk in opened.chunks(request.offset):
                yield catalog_pb2.ReadDataResponse(data=chunk)

    async def ListServices(
        self, request: catalog_pb2.ListServicesRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ListServicesResponse:
        return catalog_pb2.ListServicesResponse(services=[service_to_proto(s) for s in self.registry.services])


def operations_of(request: request_pb2.DataRequest) -> Operations:
    output = request.output
    regrid = bool(output.scale_extent or output.scale_size or output.HasField("width") or output.HasField("height"))
    return Operations(
        variable_subset=bool(request.variables),
        multiple_variables=len(request.variables) > 1,
        bbox_subset=request.HasField("bbox"),
        shape_subset=request.HasField("shape"),
        dimension_subset=bool(request.dimensions),
        reprojection=bool(output.crs) or regrid or bool(output.interpolation),
        output_format=output.format,
        accepted_formats=tuple(output.accepted_formats),
    )


def _time_range(start: datetime | None, end: datetime | None) -> types_pb2.TimeRange:
    return TimeRange(start, end).to_proto()


def collection_to_proto(record: CollectionRecord) -> types_pb2.Collection:
    return types_pb2.Collection(
        id=record.id,
        short_name=record.short_name,
        version=record.version,
        title=record.title,
        summary=record.summary,
        provider=record.provider,
        temporal=_time_range(record.time_start, record.time_end),
        bbox=BBox(*record.bbox).to_proto(),
    )


def variable_to_proto(record: VariableRecord) -> types_pb2.Variable:
    return types_pb2.Variable(
        id=record.id,
        name=record.name,
        long_name=record.long_name,
        description=record.description,
        dimensions=record.dimensions,
        units=record.units,
    )


def granule_to_proto(record: GranuleRecord, collection_id: str) -> types_pb2.Granule:
    return types_pb2.Granule(
        id=record.id,
        name=record.name,
        collection_id=collection_id,
        bbox=BBox(*record.bbox).to_proto(),
        temporal=_time_range(record.time_start, record.time_end),
        links=[types_pb2.DataLink(href=link.href, media_type=link.type, title=link.title) for link in record.links],
    )


def service_to_proto(service: ServiceConfig) -> catalog_pb2.Service:
    capabilities = service.capabilities
    subsetting = capabilities.subsetting
    return catalog_pb2.Service(
        name=service.name,
        addresses=service.transformer.addresses,
        maximum_sync_granules=service.maximum_sync_granules,
        capabilities=catalog_pb2.ServiceCapabilities(
            bbox_subset=subsetting.bbox,
            variable_subset=subsetting.variable,
            multiple_variable=subsetting.multiple_variable,
            shape_subset=subsetting.shape,
            temporal_subset=subsetting.temporal,
            dimension_subset=subsetting.dimension,
            reprojection=capabilities.reprojection,
            concatenation=capabilities.concatenation,
            output_formats=capabilities.output_formats,
            maps=capabilities.maps,
        ),
    )


def open_backend(settings: CatalogSettings) -> CatalogBackend:
    if settings.backend == "cmr":
        from catalog.cmr import CmrCatalog

        return CmrCatalog(settings.cmr_url, token=settings.cmr_token)
    from catalog.local import LocalCatalog

    return LocalCatalog.from_file(settings.data_dir / "catalog.json", settings.data_url)


async def serve(settings: CatalogSettings, backend: CatalogBackend | None = None) -> RunningServer:
    """Start the Catalog service; the registry is validated first so a bad services.yml fails fast."""
    registry = Registry.load(settings.services_file)
    backend = backend or open_backend(settings)
    data_dir = settings.data_dir if settings.backend == "local" else None
    service = CatalogService(backend, registry, data_dir)
    running = await start_server(
        "catalog",
        lambda server: catalog_pb2_grpc.add_CatalogServicer_to_server(service, server),
        [catalog_pb2.DESCRIPTOR.services_by_name["Catalog"].full_name],
        host=settings.host,
        port=settings.port,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        identity="catalog",
        mesh=settings.mesh,
    )
    running.on_stop.append(backend.close)
    return running
