"""From a user's DataRequest to a plan: the collection, resolved variables, the service, the granules."""

from __future__ import annotations

from dataclasses import dataclass

from geomesh.errors import RequestValidationError
from geomesh.v1 import catalog_pb2, catalog_pb2_grpc, request_pb2, transformer_pb2, types_pb2


@dataclass
class Plan:
    request: request_pb2.DataRequest   # collection as a concept id, variables as names
    match: catalog_pb2.ServiceMatch

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
        match = await self.catalog.MatchService(resolved, metadata=metadata)
        return Plan(resolved, match)

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
        self, request: request_pb2.DataRequest, limit: int, metadata: tuple
    ) -> tuple[int, list[types_pb2.Granule]]:
        """Total hits, and the first `limit` matching granules."""
        search = catalog_pb2.SearchGranulesRequest(
            collection_id=request.collection,
            granule_ids=request.granule_ids,
            granule_names=request.granule_names,
            limit=limit,
        )
        if request.HasField("bbox"):
            search.bbox.CopyFrom(request.bbox)
        if request.HasField("temporal"):
            search.temporal.CopyFrom(request.temporal)
        hits, granules = 0, []
        async for response in self.catalog.SearchGranules(search, metadata=metadata):
            if response.WhichOneof("item") == "hits":
                hits = response.hits
            else:
                granules.append(response.granule)
        return hits, granules


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
