"""The embedded local catalog's file format: what the demo generator writes and the catalog reads."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlparse

from pydantic import BaseModel, Field


class LinkRecord(BaseModel):
    # Relative to the catalog's data URL (the data folder by default; GEOMESH_CATALOG_DATA_URL),
    # or absolute: a file:// URL or path, http(s) or s3; "/data/..." is served by geomesh itself.
    href: str
    type: str = ""                 # media type, e.g. image/tiff
    title: str = ""


def relative_href(path: Path, data_dir: Path) -> str:
    """A granule file's link as the catalog stores it: relative to the data folder, so the folder
    (or a bucket it was copied to) can be anywhere."""
    return Path(path).resolve().relative_to(Path(data_dir).resolve()).as_posix()


def resolved_href(href: str, data_url: str) -> str:
    """A stored link made absolute: relative ones against data_url (ending in "/")."""
    if urlparse(href).scheme or href.startswith("/"):
        return href
    return data_url + (href if data_url.startswith("s3:") else quote(href))  # S3 keys are not URL-encoded


class GranuleRecord(BaseModel):
    id: str                        # e.g. G1233800343-EEDTEST
    name: str                      # producer granule id, e.g. 001_00_7f00ff_global
    time_start: datetime
    time_end: datetime
    bbox: tuple[float, float, float, float]  # west, south, east, north (degrees)
    links: list[LinkRecord] = Field(default_factory=list)


class VariableRecord(BaseModel):
    id: str                        # e.g. V1233801716-EEDTEST
    name: str                      # e.g. blue_var
    long_name: str = ""
    description: str = ""          # e.g. "Blue channel"
    dimensions: list[str] = Field(default_factory=list)
    units: str = ""


class CollectionRecord(BaseModel):
    id: str                        # e.g. C1233800302-EEDTEST
    short_name: str
    version: str = "1"
    title: str = ""
    summary: str = ""
    provider: str = ""
    time_start: datetime | None = None
    time_end: datetime | None = None
    bbox: tuple[float, float, float, float] = (-180.0, -90.0, 180.0, 90.0)
    variables: list[VariableRecord] = Field(default_factory=list)
    granules: list[GranuleRecord] = Field(default_factory=list)


class CatalogFile(BaseModel):
    """`catalog.json` in the data folder."""

    collections: list[CollectionRecord]
