"""The service registry (services.yml): which service does what for which collections.

Validated at start-up into typed models, failing fast with the file and field named.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from geomesh.errors import UnsupportedOperationError

_ENV = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class RegistryError(ValueError):
    """services.yml is missing, unreadable or invalid; the message names the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Subsetting(_Strict):
    bbox: bool = False
    variable: bool = False
    multiple_variable: bool = False
    shape: bool = False
    temporal: bool = False
    dimension: bool = False


class Capabilities(_Strict):
    subsetting: Subsetting = Field(default_factory=Subsetting)
    output_formats: list[str] = Field(min_length=1)
    reprojection: bool = False
    concatenation: bool = False
    # geomesh's own key: the service's transformer draws WMS maps (Render).
    maps: bool = False


class Transformer(_Strict):
    addresses: list[str] = Field(min_length=1)

    @field_validator("addresses")
    @classmethod
    def _split_and_check(cls, value: list[str]) -> list[str]:
        # One entry may expand (from the environment) to a comma-separated list of replicas.
        addresses = [a.strip() for entry in value for a in entry.split(",") if a.strip()]
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{address!r} is not host:port")
        return addresses


class ServiceConfig(_Strict):
    name: str
    collections: list[str] = Field(min_length=1)
    maximum_sync_granules: int = Field(default=1, ge=0)
    transformer: Transformer
    capabilities: Capabilities


class RegistryFile(_Strict):
    services: list[ServiceConfig]


@dataclass(frozen=True)
class Operations:
    """What a request asks a service to do (time only selects granules, so it is not listed)."""

    variable_subset: bool = False
    multiple_variables: bool = False
    bbox_subset: bool = False
    shape_subset: bool = False
    dimension_subset: bool = False
    reprojection: bool = False
    output_format: str = ""
    accepted_formats: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        names = [
            ("variable subsetting", self.variable_subset),
            ("spatial subsetting", self.bbox_subset),
            ("shapefile subsetting", self.shape_subset),
            ("dimension subsetting", self.dimension_subset),
            ("reprojection", self.reprojection),
            (f"reformatting to {self.output_format}", bool(self.output_format)),
        ]
        return [name for name, wanted in names if wanted]


@dataclass(frozen=True)
class Match:
    service: ServiceConfig
    output_format: str


class Registry:
    def __init__(self, services: list[ServiceConfig]) -> None:
        self.services = services

    @classmethod
    def load(cls, path: Path | None = None) -> Registry:
        source = path or importlib.resources.files("catalog") / "services.yml"
        try:
            text = source.read_text()
        except OSError as error:
            raise RegistryError(f"{source}: cannot read the service registry: {error}") from None
        try:
            raw = yaml.safe_load(_expand_env(text))
            return cls(RegistryFile.model_validate(raw).services)
        except yaml.YAMLError as error:
            raise RegistryError(f"{source}: not valid YAML: {error}") from None
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}" for issue in error.errors()
            )
            raise RegistryError(f"{source}: invalid service registry: {problems}") from None

    def for_collection(self, collection_id: str) -> list[ServiceConfig]:
        return [s for s in self.services if collection_id in s.collections]

    def match(self, collection_id: str, operations: Operations) -> Match | None:
        """The first service (by precedence) able to do every operation; None if none handles the collection."""
        candidates = self.for_collection(collection_id)
        if not candidates:
            return None
        capable = [s for s in candidates if _can_do(s.capabilities, operations)]
        for service in capable:
            output_format = _choose_format(service.capabilities.output_formats, operations)
            if output_format:
                return Match(service, output_format)
        if capable and not operations.output_format:  # only the Accept header could not be met
            formats = sorted({f for s in capable for f in s.capabilities.output_formats})
            raise UnsupportedOperationError(
                f"none of the accepted formats ({', '.join(operations.accepted_formats)}) can be produced for "
                f"{collection_id}; supported formats are: {', '.join(formats)}"
            )
        message = (
            f"the requested combination of operations: {' and '.join(operations.describe())} on {collection_id} "
            "is unsupported"
        )
        if capable and operations.output_format:  # everything but the format could be done: say which formats
            formats = sorted({f for s in capable for f in s.capabilities.output_formats})
            message += f"; supported output formats are: {', '.join(formats)}"
        raise UnsupportedOperationError(message)


def _can_do(capabilities: Capabilities, operations: Operations) -> bool:
    subsetting = capabilities.subsetting
    return not (
        (operations.variable_subset and not subsetting.variable)
        or (operations.multiple_variables and not subsetting.multiple_variable)
        or (operations.bbox_subset and not subsetting.bbox)
        or (operations.shape_subset and not subsetting.shape)
        or (operations.dimension_subset and not subsetting.dimension)
        or (operations.reprojection and not capabilities.reprojection)
    )


def _choose_format(supported: list[str], operations: Operations) -> str | None:
    if operations.output_format:
        return operations.output_format if operations.output_format in supported else None
    for accepted in operations.accepted_formats:
        if accepted in ("*/*", ""):
            return supported[0]
        if accepted.endswith("/*"):
            family = accepted[:-1]
            found = next((f for f in supported if f.startswith(family)), None)
            if found:
                return found
        elif accepted in supported:
            return accepted
    return None if operations.accepted_formats else supported[0]


def _expand_env(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        value = os.environ.get(match["name"])
        if value is None:
            if match["default"] is None:
                raise RegistryError(f"environment variable {match['name']} is not set and has no default")
            return match["default"]
        return value

    return _ENV.sub(replace, text)
