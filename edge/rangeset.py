"""OGC API - Coverages rangeset parameters (query string or form fields) -> a DataRequest.

Parameter names are case-insensitive, as in Harmony (granuleId, granuleid and granuleID all work).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyproj
from pyproj.exceptions import CRSError

from geomesh.errors import RequestValidationError
from geomesh.model import parse_datetime
from geomesh.v1 import request_pb2, types_pb2

# Canonical spelling of every parameter the rangeset accepts, keyed by its lower-case form.
PARAMETERS = {
    name.lower(): name
    for name in (
        "subset", "granuleId", "granuleName", "format", "outputCrs", "interpolation", "scaleExtent",
        "scaleSize", "width", "height", "maxResults", "forceAsync", "ignoreErrors", "skipPreview",
        "label", "variable", "subsettingCrs", "destinationUrl",
    )
}
# gdalwarp's resampling names, as the gdal transformer knows them ("nearest" is near).
INTERPOLATIONS = (
    "near", "nearest", "bilinear", "cubic", "cubicspline", "lanczos", "average", "mode", "min", "max", "med", "q1", "q3",
)
# The largest output width or height in pixels (the transformer also caps the whole grid).
MAX_SIDE = 32768
_SUBSET = re.compile(r"^\s*(?P<dim>[A-Za-z_][\w.-]*)\s*\((?P<body>.*)\)\s*$", re.S)
_BOOLEANS = {"true": True, "false": False}
# What to send instead of an empty value, for the parameters that may not be empty.
_EMPTY_FIXES = {
    "granuleId": "give one or more granule concept ids (comma-separated), or leave the parameter out to use every granule",
    "granuleName": "give one or more granule names (comma-separated, * and ? as wildcards), or leave the parameter out",
    "variable": "name one or more variables (comma-separated), or put them in the path instead of parameter_vars",
    "subset": "use dimension(min:max), e.g. lat(-45.75:-9), lon(110:156) or time(\"2020-01-01T00:00:00Z\":*), "
    "or leave the parameter out",
}
# lat/lon subsets are read as WGS84 degrees; these are the ways to say so.
_WGS84 = {
    "epsg:4326", "crs:84", "crs84", "http://www.opengis.net/def/crs/epsg/0/4326",
    "http://www.opengis.net/def/crs/ogc/1.3/crs84",
}


@dataclass
class RangesetParameters:
    """The raw values, each name holding every value given (repeats and comma lists alike)."""

    values: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> RangesetParameters:
        values: dict[str, list[str]] = {}
        for key, value in pairs:
            if not key:  # "?&granuleid=..." leaves an empty key behind
                continue
            name = PARAMETERS.get(key.lower())
            if name is None:
                raise RequestValidationError(
                    f"Unknown query parameter '{key}'. Valid parameters are: {', '.join(sorted(PARAMETERS.values()))}"
                )
            values.setdefault(name, []).append(value)
        return cls(values)

    def listed(self, name: str) -> list[str]:
        """Every value of a repeatable, comma-separable parameter."""
        return [part.strip() for value in self.values.get(name, []) for part in value.split(",") if part.strip()]

    def refuse_empty(self, name: str, fix: str) -> None:
        """A parameter given with nothing in it: a client that meant some value and lost it, which
        must not silently become no value (e.g. `granuleId=` a job over the whole collection)."""
        for value in self.values.get(name, []):
            if not value.replace(",", "").strip():
                raise RequestValidationError(f'query parameter "{name}" is given with an empty value: {fix}')

    def single(self, name: str) -> str | None:
        given = self.values.get(name, [])
        if len(given) > 1:
            raise RequestValidationError(f'query parameter "{name}" may be given only once')
        return given[0] if given else None


def build_request(params: RangesetParameters, collection: str, variable_path: str) -> request_pb2.DataRequest:
    """Validate every parameter and build the DataRequest (user and ids are set by the caller)."""
    request = request_pb2.DataRequest(collection=collection)
    for name, fix in _EMPTY_FIXES.items():
        params.refuse_empty(name, fix)
    request.variables.extend(_variables(variable_path, params))
    request.granule_ids.extend(params.listed("granuleId"))
    request.granule_names.extend(params.listed("granuleName"))
    request.labels.extend(params.listed("label"))
    _apply_subsets(request, params.values.get("subset", []))
    subsetting_crs = params.single("subsettingCrs")
    if subsetting_crs is not None and subsetting_crs.strip().lower() not in _WGS84:
        raise RequestValidationError(
            f'query parameter "subsettingCrs" value "{subsetting_crs}" is not supported: subsets are read as '
            "WGS84 longitude/latitude degrees (EPSG:4326 or CRS84)"
        )
    output = request.output
    output.format = (params.single("format") or "").strip()
    if output.format and not re.fullmatch(r"[\w.+-]+/[\w.+-]+", output.format):
        raise RequestValidationError(f'query parameter "format" must be a media type such as image/tiff, not "{output.format}"')
    output.crs = _output_crs(params)
    output.interpolation = _interpolation(params)
    output.scale_extent.extend(_scale_extent(params))
    output.scale_size.extend(_scale_size(params))
    for name in ("width", "height"):
        value = _integer(params, name, minimum=1, maximum=MAX_SIDE)
        if value is not None:
            setattr(output, name, value)
    if output.scale_size and (output.HasField("width") or output.HasField("height")):
        # Either one settles the grid once the extent is known, so one would silently lose: refuse (the seed says Harmony does).
        raise RequestValidationError(
            'query parameters "scaleSize" and "width"/"height" cannot both be given: scaleSize sets the pixel size, '
            "width and height set the pixel count"
        )
    max_results = _integer(params, "maxResults", minimum=1)
    if max_results is not None:
        request.max_results = max_results
    request.force_async = _boolean(params, "forceAsync") or False
    ignore_errors = _boolean(params, "ignoreErrors")
    if ignore_errors is not None:
        request.ignore_errors = ignore_errors
    request.skip_preview = _boolean(params, "skipPreview") or False
    request.destination_url = _destination_url(params)
    return request


def _destination_url(params: RangesetParameters) -> str:
    """Harmony's destinationUrl: one s3://bucket[/prefix] the job's outputs are written to."""
    url = (params.single("destinationUrl") or "").strip()
    if not url:
        return ""
    if not url.lower().startswith("s3://"):
        raise RequestValidationError(f"Invalid destinationUrl '{url}', must start with s3://")
    if ",s3://" in url.lower():
        raise RequestValidationError(f"Invalid destinationUrl '{url}', only one S3 location is allowed.")
    if not url[5:].split("/", 1)[0]:
        raise RequestValidationError("Invalid destinationUrl, no S3 bucket is provided.")
    return url


def _variables(variable_path: str, params: RangesetParameters) -> list[str]:
    if variable_path == "parameter_vars":
        names = params.listed("variable")
        if not names:
            raise RequestValidationError(
                'Value "parameter_vars" in path must be used with the "variable" query parameter (or form field)'
            )
    else:
        if params.values.get("variable"):
            raise RequestValidationError(
                'The "variable" parameter may only be used when the path names the variable "parameter_vars"'
            )
        names = [name.strip() for name in variable_path.split(",") if name.strip()]
    if not names:
        raise RequestValidationError("The path must name a variable, a comma-separated list of variables, or all")
    return [] if "all" in names else list(dict.fromkeys(names))


def _apply_subsets(request: request_pb2.DataRequest, subsets: list[str]) -> None:
    seen: set[str] = set()
    lat = lon = None
    for text in subsets:
        match = _SUBSET.match(text)
        if not match or match["body"].count(":") < 1:
            raise RequestValidationError(
                f'query parameter "subset" value "{text}" could not be parsed: '
                'use dimension(min:max), e.g. lat(-45.75:-9), lon(110:156) or time("2020-01-01T00:00:00Z":"2020-01-02T00:00:00Z")'
            )
        dim = match["dim"].lower() if match["dim"].lower() in ("lat", "lon", "time") else match["dim"]
        if dim in seen:
            raise RequestValidationError(f'query parameter "subset" names the dimension "{dim}" more than once')
        seen.add(dim)
        if dim == "time":
            request.temporal.CopyFrom(_time_range(text, match["body"]))
            continue
        low, high = _numeric_range(text, dim, match["body"])
        if dim == "lat":
            lat = _checked(text, dim, low, high, -90.0, 90.0)
        elif dim == "lon":
            lon = _checked(text, dim, low, high, -180.0, 180.0)
        else:
            subset = types_pb2.DimensionSubset(name=dim)
            if low is not None:
                subset.min = low
            if high is not None:
                subset.max = high
            request.dimensions.append(subset)
    if lat or lon:
        south, north = lat or (-90.0, 90.0)
        west, east = lon or (-180.0, 180.0)
        request.bbox.CopyFrom(types_pb2.BBox(west=west, south=south, east=east, north=north))


def _split_range(text: str, body: str) -> tuple[str, str]:
    # Times hold colons too: split on the colon outside quotes.
    depth, index = False, -1
    for i, char in enumerate(body):
        if char == '"':
            depth = not depth
        elif char == ":" and not depth:
            if index >= 0:
                index = -2
                break
            index = i
    if index < 0:
        raise RequestValidationError(
            f'query parameter "subset" value "{text}" could not be parsed: expected exactly one ":" between min and max'
        )
    return body[:index].strip(), body[index + 1 :].strip()


def _numeric_range(text: str, dim: str, body: str) -> tuple[float | None, float | None]:
    def number(part: str, which: str) -> float | None:
        if part == "*":
            return None
        try:
            value = float(part.strip('"'))
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise RequestValidationError(
                f'query parameter "subset" value "{text}" could not be parsed: the {which} of "{dim}" must be a number or *'
            )
        return value

    low, high = _split_range(text, body)
    return number(low, "minimum"), number(high, "maximum")


def _checked(text: str, dim: str, low: float | None, high: float | None, lo: float, hi: float) -> tuple[float, float]:
    low = lo if low is None else low
    high = hi if high is None else high
    if not (lo <= low <= hi and lo <= high <= hi):
        raise RequestValidationError(f'query parameter "subset" value "{text}": "{dim}" values must be between {lo:g} and {hi:g}')
    if low > high:
        raise RequestValidationError(
            f'query parameter "subset" value "{text}": the minimum of "{dim}" must not be greater than its maximum'
        )
    return low, high


def _time_range(text: str, body: str) -> types_pb2.TimeRange:
    result = types_pb2.TimeRange()
    for which, part in zip(("start", "end"), _split_range(text, body), strict=True):
        if part == "*":
            continue
        try:
            getattr(result, which).FromDatetime(parse_datetime(part.strip('"')))
        except ValueError:
            raise RequestValidationError(
                f'query parameter "subset" value "{text}" could not be parsed: the {which} time must be an RFC 3339 '
                'date-time in double quotes, e.g. "2020-01-16T02:00:00.000Z", or *'
            ) from None
    if result.HasField("start") and result.HasField("end") and result.start.ToDatetime() > result.end.ToDatetime():
        raise RequestValidationError(f'query parameter "subset" value "{text}": the start time is after the end time')
    return result


def _numbers(params: RangesetParameters, name: str, count: int) -> list[float]:
    value = params.single(name)
    if value is None:
        return []
    try:
        numbers = [float(part) for part in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != count or not all(math.isfinite(n) for n in numbers):
        raise RequestValidationError(f'query parameter "{name}" must be {count} comma-separated numbers')
    return numbers


def _integer(params: RangesetParameters, name: str, minimum: int, maximum: int = 2**31 - 1) -> int | None:
    value = params.single(name)
    return None if value is None else parse_integer(name, value, minimum, maximum)


def _output_crs(params: RangesetParameters) -> str:
    text = (params.single("outputCrs") or "").strip()
    if text:
        try:
            crs = pyproj.CRS.from_user_input(text)
        except CRSError:
            raise RequestValidationError(
                'query parameter "crs/outputCrs" could not be parsed.  Try an EPSG code or Proj4 string.'
            ) from None
        # A grid needs horizontal axes: GDAL cannot warp to a geocentric (x, y, z) CRS and failed with a 500.
        if not (crs.is_geographic or crs.is_projected):
            raise RequestValidationError(
                f'query parameter "outputCrs" value "{text}" is a {crs.type_name}: use a geographic or projected CRS, '
                "e.g. an EPSG code or Proj4 string"
            )
    return text


def _interpolation(params: RangesetParameters) -> str:
    text = (params.single("interpolation") or "").strip()
    if text and text.lower() not in INTERPOLATIONS:
        raise RequestValidationError(
            f'query parameter "interpolation" value "{text}" is not supported; use one of: ' + ", ".join(INTERPOLATIONS)
        )
    return text.lower()


def _scale_extent(params: RangesetParameters) -> list[float]:
    extent = _numbers(params, "scaleExtent", 4)
    if extent and not (extent[0] < extent[2] and extent[1] < extent[3]):
        raise RequestValidationError(
            'query parameter "scaleExtent" must be xmin,ymin,xmax,ymax with xmin less than xmax and ymin less than ymax'
        )
    return extent


def _scale_size(params: RangesetParameters) -> list[float]:
    size = _numbers(params, "scaleSize", 2)
    if size and not all(value > 0 for value in size):
        raise RequestValidationError('query parameter "scaleSize" must be x,y with both sizes greater than 0')
    return size


def parse_integer(name: str, value: str, minimum: int, maximum: int) -> int:
    """A whole-number query parameter, with Harmony's wording when it is out of range."""
    try:
        number = int(value)
    except ValueError:
        raise RequestValidationError(f'query parameter "{name}" should be integer') from None
    if number < minimum:
        raise RequestValidationError(f'query parameter "{name}" should be >= {minimum}')
    if number > maximum:
        raise RequestValidationError(f'query parameter "{name}" should be <= {maximum}')
    return number


def _boolean(params: RangesetParameters, name: str) -> bool | None:
    value = params.single(name)
    if value is None:
        return None
    if value.lower() not in _BOOLEANS:
        raise RequestValidationError(f'query parameter "{name}" should be boolean (true or false)')
    return _BOOLEANS[value.lower()]
