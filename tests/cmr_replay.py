"""A local stand-in for NASA's CMR that answers from recorded exchanges, so tests need no network.

A request is answered only when a recording has the same method, path, query (order-insensitive),
multipart form fields (a multiset of name/value pairs) and CMR-Search-After header; anything else
gets a 404 whose JSON lists the closest recordings and how they differ, to make mismatches easy to fix.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import BodyPartReader, web

from tests.loopback import serve_app

__all__ = ["FIXTURES", "Recording", "fixtures_available", "load_recordings", "make_app", "replay_cmr"]

Pairs = tuple[tuple[str, str], ...]


def _fixtures_folder() -> Path:
    """GEOMESH_FIXTURES names the shared fixtures folder (holding cmr-uat/) or the recordings themselves."""
    override = os.environ.get("GEOMESH_FIXTURES")
    if override:
        base = Path(override)
        return base / "cmr-uat" if (base / "cmr-uat").is_dir() else base
    return Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cmr-uat"


FIXTURES = _fixtures_folder()
REPLAYED_HEADERS = ("content-type", "cmr-hits", "cmr-search-after")


def fixtures_available() -> bool:
    return FIXTURES.is_dir() and any(_is_recording(p) for p in FIXTURES.iterdir())


@dataclass(frozen=True)
class Recording:
    name: str  # file name, to point at it when debugging
    method: str
    path: str
    query: Pairs  # sorted
    form: Pairs | None  # sorted multipart fields; None when the request had no multipart body
    search_after: str | None  # the CMR-Search-After request header
    status: int
    headers: dict[str, str]  # response headers, lower-case names
    body: bytes

    @property
    def key(self) -> tuple[object, ...]:
        return (self.method, self.path, self.query, self.form, self.search_after)


def _is_recording(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix != ".md"


def parse_recording(name: str, text: str) -> Recording:
    """One file: request line, headers, `body: <escaped>`; blank line; status line, headers; blank line; body."""
    request, _, rest = text.partition("\n\n")
    response, _, body = rest.partition("\n\n")
    request_line, *request_lines = request.splitlines()
    method, _, target = request_line.partition(" ")
    url = urlsplit(target.strip())
    request_headers: dict[str, str] = {}
    raw_body: str | None = None
    for line in request_lines:
        field, _, value = line.partition(":")
        if field == "body":
            raw_body = json.loads('"' + value.strip() + '"')  # recorded with JSON string escapes
        else:
            request_headers[field.strip().lower()] = value.strip()
    form = None
    boundary = re.search(r"boundary=([^;\s]+)", request_headers.get("content-type", ""))
    if raw_body is not None and boundary:
        form = _sorted(_multipart_fields(raw_body, boundary.group(1).strip('"')))
    status_line, *response_lines = response.splitlines()
    headers = {}
    for line in response_lines:
        field, _, value = line.partition(":")
        headers[field.strip().lower()] = value.strip()
    return Recording(
        name=name,
        method=method.upper(),
        path=url.path,
        query=_sorted(parse_qsl(url.query, keep_blank_values=True)),
        form=form,
        search_after=request_headers.get("cmr-search-after"),
        status=int(status_line.split()[1]),
        headers={k: v for k, v in headers.items() if k in REPLAYED_HEADERS},
        body=body.rstrip("\n").encode(),
    )


def _multipart_fields(body: str, boundary: str) -> list[tuple[str, str]]:
    fields = []
    for part in body.split("--" + boundary)[1:]:
        if part.startswith("--"):  # the closing delimiter
            break
        head, _, value = part.removeprefix("\r\n").partition("\r\n\r\n")
        name = re.search(r'\bname="([^"]*)"', head)
        if name:
            fields.append((name.group(1), value.removesuffix("\r\n")))
    return fields


def _sorted(pairs: Any) -> Pairs:
    return tuple(sorted((str(k), str(v)) for k, v in pairs))


@lru_cache(maxsize=4)
def load_recordings(folder: Path = FIXTURES) -> tuple[Recording, ...]:
    """Every recording in the folder, in file-name order (the first of identical requests wins)."""
    files = sorted(p for p in folder.iterdir() if _is_recording(p))
    return tuple(parse_recording(p.name, p.read_text(encoding="utf-8")) for p in files)


async def _request_form(request: web.Request) -> Pairs | None:
    if request.content_type != "multipart/form-data":
        return None
    fields = []
    reader = await request.multipart()
    async for part in reader:
        if isinstance(part, BodyPartReader) and part.name is not None:
            fields.append((part.name, (await part.read(decode=True)).decode("utf-8")))
    return _sorted(fields)


def _closest(recordings: Iterable[Recording], key: tuple[Any, ...], count: int = 3) -> list[dict[str, Any]]:
    """The recordings that differ least from a request (same method and path first), with the differences."""
    method, path, query, form, search_after = key

    def pairs(query: Pairs, form: Pairs | None) -> Counter[str]:
        return Counter(f"query {k}={v}" for k, v in query) + Counter(f"form {k}={v}" for k, v in form or ())

    wanted = pairs(query, form)
    ranked = []
    for rec in recordings:
        have = pairs(rec.query, rec.form)
        missing, extra = wanted - have, have - wanted
        score = 1000 * ((rec.method, rec.path) != (method, path)) + 10 * (rec.search_after != search_after)
        ranked.append((score + missing.total() + extra.total(), rec, missing, extra))
    ranked.sort(key=lambda item: item[0])
    return [
        {
            "recording": rec.name,
            "request": f"{rec.method} {rec.path}",
            "search_after": rec.search_after,
            "only_in_request": sorted(missing.elements())[:10],
            "only_in_recording": sorted(extra.elements())[:10],
        }
        for _, rec, missing, extra in ranked[:count]
    ]


def make_app(recordings: tuple[Recording, ...]) -> web.Application:
    index: dict[tuple[object, ...], Recording] = {}
    for rec in recordings:
        index.setdefault(rec.key, rec)

    async def answer(request: web.Request) -> web.StreamResponse:
        form = await _request_form(request)
        key = (
            request.method,
            request.path,
            _sorted(request.query.items()),
            form,
            request.headers.get("CMR-Search-After"),
        )
        rec = index.get(key)
        if rec is None:
            closest = _closest(index.values(), key)
            hint = (
                f"closest is {closest[0]['recording']}: only in the request {closest[0]['only_in_request']}, "
                f"only in the recording {closest[0]['only_in_recording']}"
                if closest
                else "there are no recordings"
            )
            return web.json_response(
                {
                    "errors": [f"no recorded CMR exchange matches {request.method} {request.path}; {hint}"],
                    "closest": closest,
                },
                status=404,
            )
        return web.Response(status=rec.status, body=rec.body, headers=rec.headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


@asynccontextmanager
async def replay_cmr(folder: Path | None = None) -> AsyncIterator[str]:
    """Serve the recordings on 127.0.0.1 (a free port) and yield the root URL to give CmrCatalog."""
    async with serve_app(make_app(load_recordings(folder or FIXTURES))) as url:
        yield url
