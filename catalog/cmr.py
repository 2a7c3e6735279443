"""NASA's Common Metadata Repository (CMR) as a catalog backend.

Talks to CMR's search API the way Harmony does (same endpoints, parameters and paging), so that
collections, variables and granules come from CMR instead of the embedded local catalog.
Every failure is turned into a geomesh error: no aiohttp exception leaves this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import aiohttp

from catalog.backend import GranuleQuery, GranuleSearch
from catalog.models import CollectionRecord, GranuleRecord, LinkRecord, VariableRecord
from geomesh.errors import (
    GeomeshError,
    NotFoundError,
    RequestValidationError,
    ServiceUnavailableError,
)
from geomesh.model import parse_datetime

__all__ = ["CmrCatalog"]

# A collection concept id: "C", digits, "-", provider id (e.g. C1233800302-EEDTEST).
COLLECTION_ID = re.compile(r"^C\d+-[A-Za-z0-9_]+$")
WHOLE_WORLD = (-180.0, -90.0, 180.0, 90.0)
MAX_PAGE_SIZE = 2000  # CMR's upper bound for page_size
VARIABLES_PATH = "/search/variables.umm_json_v1_9_0"
Form = list[tuple[str, str]]
BBoxTuple = tuple[float, float, float, float]


@dataclass(frozen=True)
class _Page:
    entries: list[dict[str, Any]]
    hits: int
    search_after: str | None


class CmrCatalog:
    """A CatalogBackend backed by CMR's search API (UAT by default)."""

    def __init__(
        self,
        root_url: str = "https://cmr.uat.earthdata.nasa.gov",
        *,
        token: str | None = None,
        page_size: int = 2000,
        timeout: float = 30,
    ) -> None:
        self.root_url = root_url.rstrip("/")
        self.page_size = max(1, min(int(page_size), MAX_PAGE_SIZE))
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = {"Accept": "application/json", "Client-Id": "geomesh"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Create the HTTP session now (it is otherwise created on first use, inside the running loop)."""
        self._client()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- CatalogBackend --------------------------------------------------------------------------

    async def get_collection(self, collection: str) -> CollectionRecord:
        entry = await self._collection_entry(collection)
        try:
            return CollectionRecord(
                id=entry["id"],
                short_name=entry.get("short_name", ""),
                version=str(entry.get("version_id", "")),
                title=entry.get("title") or entry.get("dataset_id") or "",
                summary=entry.get("summary", ""),
                provider=entry.get("data_center", ""),
                time_start=_optional_time(entry.get("time_start")),
                time_end=_optional_time(entry.get("time_end")),
                bbox=_spatial_extent(entry),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise self._unexpected("collection", exc) from exc

    async def list_variables(self, collection_id: str) -> list[VariableRecord]:
        entry = await self._collection_entry(collection_id)
        ids = [str(i) for i in (entry.get("associations") or {}).get("variables", [])]
        variables: list[VariableRecord] = []
        for start in range(0, len(ids), MAX_PAGE_SIZE):  # one request per 2000 ids: no paging needed
            form = [("concept_id", i) for i in ids[start : start + MAX_PAGE_SIZE]]
            form.append(("page_size", str(MAX_PAGE_SIZE)))
            document, _ = await self._call("POST", VARIABLES_PATH, form=form)
            try:
                variables.extend(_variable(item) for item in document.get("items", []))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise self._unexpected("variable", exc) from exc
        return variables

    async def search_granules(self, query: GranuleQuery) -> GranuleSearch:
        """Fetches the first page now (it carries the total), the rest lazily while iterating."""
        collection_id = query.collection_id
        if not COLLECTION_ID.match(collection_id):
            collection_id = (await self.get_collection(collection_id)).id
        page_size = min(self.page_size, query.limit) if query.limit > 0 else self.page_size
        form = _granule_form(query, collection_id, page_size)
        first = await self._granule_page(form, None)
        return GranuleSearch(first.hits, self._granules(form, first, page_size, query.limit))

    # -- internals -------------------------------------------------------------------------------

    async def _collection_entry(self, collection: str) -> dict[str, Any]:
        collection = collection.strip()
        if not collection:
            raise RequestValidationError(
                "A collection concept id (e.g. C1233800302-EEDTEST) or short name is required."
            )
        # The same query forms as Harmony: by concept id, or the newest revision of a short name.
        if COLLECTION_ID.match(collection):
            params = [("concept_id", collection), ("page_size", "100"), ("include_non_operational", "true")]
        else:
            params = [
                ("short_name", collection),
                ("page_size", "100"),
                ("sort_key", "-revisionDate"),
                ("include_non_operational", "true"),
            ]
        document, _ = await self._call("GET", "/search/collections.json", params=params)
        entries = _feed_entries(document)
        if not entries:
            raise NotFoundError(
                f"{collection} must be a CMR collection concept id or short name, and CMR at {self.root_url} "
                "has no such collection (or it is not visible with the credentials given)."
            )
        return entries[0]

    async def _granules(self, form: Form, page: _Page, page_size: int, limit: int) -> AsyncIterator[GranuleRecord]:
        count = 0
        while True:
            for entry in page.entries:
                yield self._granule(entry)
                count += 1
                if 0 < limit <= count:
                    return
            # A short page, the total reached or no cursor: nothing more to ask for.
            if len(page.entries) < page_size or count >= page.hits or not page.search_after:
                return
            page = await self._granule_page(form, page.search_after)

    async def _granule_page(self, form: Form, search_after: str | None) -> _Page:
        headers = {"CMR-Search-After": search_after} if search_after else None
        document, response_headers = await self._call("POST", "/search/granules.json", form=form, headers=headers)
        entries = _feed_entries(document)
        try:
            hits = int(response_headers.get("CMR-Hits", len(entries)))
        except ValueError:
            hits = len(entries)
        return _Page(entries, hits, response_headers.get("CMR-Search-After"))

    def _granule(self, entry: Mapping[str, Any]) -> GranuleRecord:
        try:
            return _granule(entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise self._unexpected("granule", exc) from exc

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Form | None = None,
        form: Form | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[Any, Mapping[str, str]]:
        """One CMR request: the JSON document and the response headers, or a geomesh error."""
        # Granule and variable searches go as multipart: long id lists do not fit in a URL.
        data = aiohttp.FormData(form, default_to_multipart=True) if form is not None else None
        try:
            request = self._client().request(method, self.root_url + path, params=params, data=data, headers=headers)
            async with request as response:
                body = await response.read()
                status, response_headers = response.status, response.headers
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ServiceUnavailableError(
                f"CMR at {self.root_url} is unreachable ({reason}). Try again later."
            ) from exc
        if status >= 500 or status == 429:
            raise ServiceUnavailableError(
                f"CMR at {self.root_url} is unavailable (HTTP {status}: {_error_text(body)}). Try again later."
            )
        if status >= 400:
            raise RequestValidationError(f"CMR rejected the search (HTTP {status}): {_error_text(body)}")
        try:
            return json.loads(body), response_headers
        except ValueError as exc:
            raise GeomeshError(f"CMR at {self.root_url} answered {path} with a body that is not JSON.") from exc

    def _unexpected(self, what: str, exc: Exception) -> GeomeshError:
        return GeomeshError(f"CMR at {self.root_url} answered with {what} metadata geomesh cannot read ({exc!r}).")


# -- request building ------------------------------------------------------------------------------


def _granule_form(query: GranuleQuery, collection_id: str, page_size: int) -> Form:
    """The multipart fields of a granule search, named and formatted as CMR (and Harmony) expect."""
    form: Form = [("page_size", str(page_size))]
    if query.temporal is not None and (query.temporal.start or query.temporal.end):
        form.append(("temporal", f"{_cmr_time(query.temporal.start)},{_cmr_time(query.temporal.end)}"))
    if query.bbox is not None:
        box = query.bbox
        form.append(("bounding_box", ",".join(_number(v) for v in (box.west, box.south, box.east, box.north))))
    form.extend(("concept_id", granule_id) for granule_id in query.granule_ids)
    form.extend(("readable_granule_name", name) for name in query.granule_names)
    form.append(("collection_concept_id", collection_id))
    if any("*" in name or "?" in name for name in query.granule_names):
        form.append(("options[readable_granule_name][pattern]", "true"))
    return form


def _cmr_time(value: datetime | None) -> str:
    """ISO 8601 UTC with milliseconds (e.g. 2020-01-02T00:00:00.000Z); an open end is empty."""
    if value is None:
        return ""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _number(value: float) -> str:
    """Shortest decimal text for a coordinate: 17.0 -> "17", -20.1 -> "-20.1"."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


# -- response reading ------------------------------------------------------------------------------


def _feed_entries(document: Any) -> list[dict[str, Any]]:
    try:
        return list(document["feed"].get("entry") or [])
    except (KeyError, TypeError, AttributeError):
        return []


def _error_text(body: bytes) -> str:
    """CMR's `{"errors": [...]}` as one line, or the start of whatever else it sent."""
    try:
        errors = json.loads(body).get("errors")
    except (ValueError, AttributeError):
        errors = None
    if isinstance(errors, list) and errors:
        return "; ".join(e if isinstance(e, str) else json.dumps(e) for e in errors)
    return body.decode("utf-8", "replace").strip()[:500] or "no details"


def _optional_time(text: str | None) -> datetime | None:
    return parse_datetime(text) if text else None


def _variable(item: Mapping[str, Any]) -> VariableRecord:
    umm = item["umm"]
    return VariableRecord(
        id=item["meta"]["concept-id"],
        name=umm["Name"],
        long_name=umm.get("LongName") or "",
        description=umm.get("Definition") or "",
        dimensions=[d["Name"] for d in umm.get("Dimensions") or []],
        units=umm.get("Units") or "",
    )


def _granule(entry: Mapping[str, Any]) -> GranuleRecord:
    granule_id = entry["id"]
    # Granules without a time range are rare; fall back rather than drop them.
    start = _optional_time(entry.get("time_start") or entry.get("time_end") or entry.get("updated"))
    if start is None:
        raise ValueError(f"granule {granule_id} has no time")
    end = _optional_time(entry.get("time_end")) or start
    links = [
        LinkRecord(href=link["href"], type=link.get("type") or "", title=granule_id)
        for link in entry.get("links") or []
        # Inherited links are the collection's own (landing pages, whole-collection data), not this file.
        if str(link.get("rel", "")).endswith("/data#") and not link.get("inherited")
    ]
    return GranuleRecord(
        id=granule_id,
        name=entry.get("producer_granule_id") or entry.get("title") or granule_id,
        time_start=start,
        time_end=end,
        bbox=_spatial_extent(entry),
        links=links,
    )


def _spatial_extent(entry: Mapping[str, Any]) -> BBoxTuple:
    """West, south, east, north of CMR's spatial fields: boxes, else polygons/lines/points, else the world."""
    boxes = [_box(text) for text in entry.get("boxes") or []]
    if boxes:
        return _union(boxes)
    rings: list[str] = [ring for polygon in entry.get("polygons") or [] for ring in polygon]
    rings += list(entry.get("lines") or []) + list(entry.get("points") or [])
    lats: list[float] = []
    lons: list[float] = []
    for ring in rings:  # CMR writes "lat lon lat lon ..."
        numbers = [float(n) for n in ring.split()]
        lats += numbers[0::2]
        lons += numbers[1::2]
    if lats and lons:
        return (min(lons), min(lats), max(lons), max(lats))
    return WHOLE_WORLD


def _box(text: str) -> BBoxTuple:
    south, west, north, east = (float(n) for n in text.split())  # CMR writes "S W N E"
    return (west, south, east, north)


def _union(boxes: Iterable[BBoxTuple]) -> BBoxTuple:
    """The union of boxes; one crossing the antimeridian (west > east) stays as is when alone."""
    boxes = list(boxes)
    if len(boxes) == 1:
        return boxes[0]
    south = min(b[1] for b in boxes)
    north = max(b[3] for b in boxes)
    if any(b[0] > b[2] for b in boxes):  # mixing antimeridian boxes: keep every longitude
        return (-180.0, south, 180.0, north)
    return (min(b[0] for b in boxes), south, max(b[2] for b in boxes), north)
