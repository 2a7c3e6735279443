"""The embedded local catalog: collections, variables and granules from a catalog.json file."""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import shapely

from catalog.backend import GranuleQuery, GranuleSearch
from catalog.models import (
    CatalogFile,
    CollectionRecord,
    GranuleRecord,
    VariableRecord,
    resolved_href,
)
from geomesh.errors import NotFoundError
from geomesh.model import BBox, TimeRange


class LocalCatalog:
    """Holds the whole catalog in memory: the demo has hundreds of granules, not millions."""

    def __init__(self, catalog: CatalogFile) -> None:
        self._by_id = {c.id: c for c in catalog.collections}
        self._by_short_name: dict[str, CollectionRecord] = {}
        for record in catalog.collections:  # the first of a short name wins, like CMR's newest-first
            self._by_short_name.setdefault(record.short_name, record)

    @classmethod
    def from_file(cls, path: Path, data_url: str | None = None) -> LocalCatalog:
        """Read catalog.json; its relative granule links resolve against data_url (None: its own folder)."""
        if not path.is_file():
            raise FileNotFoundError(f"catalog file {path} does not exist: run `geomesh demo` to generate the demo data")
        catalog = CatalogFile.model_validate_json(path.read_bytes())
        base = (data_url or path.parent.resolve().as_uri()).rstrip("/") + "/"
        for collection in catalog.collections:
            for granule in collection.granules:
                for link in granule.links:
                    link.href = resolved_href(link.href, base)
        return cls(catalog)

    @property
    def collections(self) -> list[CollectionRecord]:
        return list(self._by_id.values())

    async def get_collection(self, collection: str) -> CollectionRecord:
        record = self._by_id.get(collection) or self._by_short_name.get(collection)
        if record is None:
            raise NotFoundError(
                f"{collection} must be a collection short name or CMR collection concept ID known to this catalog"
            )
        return record

    async def list_variables(self, collection_id: str) -> list[VariableRecord]:
        return list((await self.get_collection(collection_id)).variables)

    async def search_granules(self, query: GranuleQuery) -> GranuleSearch:
        collection = await self.get_collection(query.collection_id)
        matches = [g for g in collection.granules if _matches(g, query)]
        limited = matches[: query.limit] if query.limit > 0 else matches
        return GranuleSearch(hits=len(matches), granules=_iterate(limited))

    async def close(self) -> None:
        return None


def _matches(granule: GranuleRecord, query: GranuleQuery) -> bool:
    if query.granule_ids and granule.id not in query.granule_ids:
        return False
    if query.granule_names and not any(fnmatch.fnmatchcase(granule.name, p) for p in query.granule_names):
        return False
    if query.bbox is not None and not query.bbox.intersects(BBox(*granule.bbox)):
        return False
    if query.temporal is not None and not query.temporal.intersects(TimeRange(granule.time_start, granule.time_end)):
        return False
    if query.shape is not None and not query.shape.intersects(shapely.box(*granule.bbox)):
        return False
    return True


async def _iterate(granules: Iterable[GranuleRecord]) -> AsyncIterator[GranuleRecord]:
    for granule in granules:
        yield granule
