"""What the Catalog service needs from a metadata source: the embedded local catalog or NASA's CMR."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from shapely.geometry.base import BaseGeometry

from catalog.models import CollectionRecord, GranuleRecord, VariableRecord
from geomesh.model import BBox, TimeRange


@dataclass(frozen=True)
class GranuleQuery:
    collection_id: str
    bbox: BBox | None = None
    temporal: TimeRange | None = None
    granule_ids: tuple[str, ...] = ()
    granule_names: tuple[str, ...] = ()  # may hold * and ? wildcards, like CMR's readable_granule_name
    limit: int = 0                       # 0: every match
    # A shape subset's polygon (WGS84), within `bbox`; the CMR adapter sends CMR only the bbox.
    shape: BaseGeometry | None = None


@dataclass
class GranuleSearch:
    """The total number of matches, and the granules themselves (at most `limit`), in catalog order."""

    hits: int
    granules: AsyncIterator[GranuleRecord] = field(repr=False)


class CatalogBackend(Protocol):
    async def get_collection(self, collection: str) -> CollectionRecord:
        """By concept id or short name; raises geomesh.errors.NotFoundError when there is none."""
        ...

    async def list_variables(self, collection_id: str) -> list[VariableRecord]: ...

    async def search_granules(self, query: GranuleQuery) -> GranuleSearch: ...

    async def close(self) -> None: ...
