"""The embedded local catalog's file format: what the demo generator writes and the catalog reads."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class LinkRecord(BaseModel):
    href: str                      # file:// URL or path for local data, http(s)/s3 elsewhere
    type: str = ""                 # media type, e.g. image/tiff
    title: str = ""


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
