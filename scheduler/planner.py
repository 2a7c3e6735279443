"""From a user's DataRequest to a plan: the collection, resolved variables, the service, the granules."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from geomesh.errors import RequestValidationError
from geomesh.model import BBox, optional_bbox
from geomesh.shapes import GEOJSON, parse_shape
from geomesh.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    request_pb2,
    transformer_pb2,
    types_pb2,
)


@dataclass
class Plan:
    request: request_pb2.DataRequest   # collection as a concept id, variables as names, a shape as GeoJSON
    match: catalog_pb2.ServiceMatch
    # Where granules are searched: the bbox, the shape's bounds, or both intersected (None: anywhere).
    area: BBox | None = None

    @property
    def direct_download(self) -> bool:
        return self.match.WhichOneof("result") == "direct_download_message"


class Planner:
    def __init__(self, catalog: catalog_pb2_grpc.CatalogStub) -> None:
        self.catalog = catalog

    async def plan(self, request: request_pb2.DataRequest, metadata: tuple) -> Plan:
        collection = await self.catalog.GetCollection(
            catalog_pb2.GetCollectionRequest(collection=request.collection), metadata=metadata
        )
        resolved = request_pb2.DataRequest()
        resolved.CopyFrom(request)
        resolved.collection = collection.id
        del resolved.variables[:]
        resolved.variables.extend(await self._resolve_variables(collection.id, list(request.variables), metadata))
        area = optional_bbox(resolved)
        if resolved.HasField("shape"):
            area = await _normalize_shape(resolved, area)
        match = await self.catalog.MatchService(resolved, metadata=metadata)
        return Plan(resolved, match, area)

    async def _resolve_variables(self, collection_id: str, requested: list[str], metadata: tuple) -> list[str]:
        """Requested names or concept ids to variable names; every unknown one is reported at once."""
        if not requested:
            return []
        response = await self.catalog.ListVariables(
            catalog_pb2.ListVariablesRequest(collection_id=collection_id), metadata=metadata
        )
        by_key = {key: v.name for v in response.variables for key in (v.name, v.id)}
        missing = [name for name in requested if name not in by_key]
        if missing:
            raise RequestValidationError(f"Coverages were not found for the provided variables: {', '.join(missing)}")
        return list(dict.fromkeys(by_key[name] for name in requested))

    async def search(
        self, request: request_pb2.DataRequest, limit: int, metadata: tuple, area: BBox | None = None
    ) -> tuple[int, list[types_pb2.Granule]]:
        """Total hits, and the first `limit` matching granules: in `area` if given (a plan's), else in the bbox."""
        search = catalog_pb2.SearchGranulesRequest(
            collection_id=request.collection,
            granule_ids=request.granule_ids,
            granule_names=request.granule_names,
            limit=limit,
        )
        area = area or optional_bbox(request)
        if area is not None:
            search.bbox.CopyFrom(area.to_proto())
        if request.HasField("temporal"):
            search.temporal.CopyFrom(request.temporal)
        if request.shape.content:  # a plan's: GeoJSON by now
            search.shape_geojson = request.shape.content
        hits, granules = 0, []
        async for response in self.catalog.SearchGranules(search, metadata=metadata):
            if response.WhichOneof("item") == "hits":
                hits = response.hits
            else:
                granules.append(response.granule)
        return hits, granules


async def _normalize_shape(request: request_pb2.DataRequest, bbox: BBox | None) -> BBox:
    """Check the upload now (a bad one fails before any job exists) and replace it by its GeoJSON in WGS84,
    as Harmony hands services GeoJSON whatever was uploaded; the search area is its bounds (within the bbox).

    The catalog then selects granules that intersect the shape itself within those bounds (CMR: its bounds).
    """
    upload = request.shape
    shape = await asyncio.to_thread(parse_shape, upload.content, upload.media_type, upload.file_name)
    request.shape.CopyFrom(types_pb2.Shape(content=shape.to_geojson(), media_type=GEOJSON, file_name=upload.file_name))
    area = BBox(*shape.bounds)
    if bbox is None:
        return area
    if bbox.west > bbox.east:  # crossing the antimeridian: the transformer says it cannot
        return bbox
    if not area.intersects(bbox):
        raise RequestValidationError(
            f"The shape ({area.west:g},{area.south:g},{area.east:g},{area.north:g}) and the requested bounding box "
            f"({bbox.west:g},{bbox.south:g},{bbox.east:g},{bbox.north:g}) do not overlap (west,south,east,north): "
            "nothing could be returned. Send a shape and subset=lat()/lon() that share an area, or only one of them."
        )
    return BBox(
        max(area.west, bbox.west), max(area.south, bbox.south), min(area.east, bbox.east), min(area.north, bbox.north)
    )


def work_item(
    request: request_pb2.DataRequest, granule: types_pb2.Granule, match: catalog_pb2.ServiceMatch, job_id: str = ""
) -> transformer_pb2.WorkItem:
    item = transformer_pb2.WorkItem(
        request_id=request.request_id,
        job_id=job_id,
        granule=granule,
        variables=request.variables,
        bbox=request.bbox if request.HasField("bbox") else None,
        temporal=request.temporal if request.HasField("temporal") else None,
        dimensions=request.dimensions,
        shape=request.shape if request.HasField("shape") else None,
        output=request.output,
        access_token=request.access_token,
    )
    item.output.format = match.output_format
    return item


def limit_message(hits: int, processed: int, max_results: int | None) -> str | None:
    """Harmony's notice when fewer granules are processed than the search found."""
    if processed >= hits:
        return None
    reason = (
        f"because you requested {max_results} maxResults."
        if max_results is not None and max_results <= processed
        else "because of system constraints."
    )
    return (
        f"CMR query identified {hits} granules, but the request has been limited to process only "
        f"the first {processed} granules {reason}"
    )
