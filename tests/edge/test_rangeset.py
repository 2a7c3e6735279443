"""Rangeset parameter parsing, without servers."""

from __future__ import annotations

import pytest

from edge.rangeset import RangesetParameters, build_request
from geomesh.errors import RequestValidationError


def parse(pairs: list[tuple[str, str]], variable: str = "all"):
    return build_request(RangesetParameters.from_pairs(pairs), "C1-TEST", variable)


def test_names_are_case_insensitive_and_lists_split() -> None:
    request = parse([("granuleid", "G1,G2"), ("GRANULEID", "G3"), ("granuleName", "a*"), ("", "")])
    assert list(request.granule_ids) == ["G1", "G2", "G3"]
    assert list(request.granule_names) == ["a*"]


def test_open_ended_subsets() -> None:
    request = parse([("subset", "lat(*:10)"), ("subset", 'time("2020-01-01T00:00:00Z":*)'), ("subset", "depth(0:100)")])
    assert (request.bbox.west, request.bbox.south, request.bbox.east, request.bbox.north) == (-180, -90, 180, 10)
    assert request.temporal.HasField("start") and not request.temporal.HasField("end")
    assert request.dimensions[0].name == "depth" and request.dimensions[0].max == 100


def test_variables_from_path_and_parameter_vars() -> None:
    assert list(parse([], "all").variables) == []
    assert list(parse([], "red_var,blue_var,red_var").variables) == ["red_var", "blue_var"]
    assert list(parse([("variable", "a"), ("variable", "b,c")], "parameter_vars").variables) == ["a", "b", "c"]


def test_output_options() -> None:
    request = parse([("format", "image/png"), ("width", "10"), ("scaleExtent", "0,1,2,3"), ("forceAsync", "TRUE"),
                     ("maxResults", "2")])
    assert request.output.format == "image/png" and request.output.width == 10
    assert list(request.output.scale_extent) == [0, 1, 2, 3]
    assert request.force_async and request.max_results == 2
    assert not request.output.HasField("height")


@pytest.mark.parametrize(
    ("pairs", "variable", "message"),
    [
        ([("subset", "lat(1:2:3)")], "all", 'expected exactly one ":"'),
        ([("subset", "lon(-200:0)")], "all", '"lon" values must be between -180 and 180'),
        ([("subset", "lat(0:1)"), ("subset", "lat(2:3)")], "all", 'names the dimension "lat" more than once'),
        ([("subset", 'time("2020-02-01T00:00:00Z":"2020-01-01T00:00:00Z")')], "all", "start time is after the end time"),
        ([("width", "0")], "all", 'query parameter "width" should be >= 1'),
        ([("height", "x")], "all", 'query parameter "height" should be integer'),
        ([("scaleSize", "1")], "all", 'query parameter "scaleSize" must be 2 comma-separated numbers'),
        ([("forceAsync", "yes")], "all", 'query parameter "forceAsync" should be boolean'),
        ([("format", "tiff")], "all", "must be a media type"),
        ([("format", "image/png"), ("format", "image/tiff")], "all", "may be given only once"),
        ([], "parameter_vars", 'must be used with the "variable" query parameter'),
        ([("variable", "a")], "red_var", '"variable" parameter may only be used'),
        ([("colour", "red")], "all", "Unknown query parameter 'colour'"),
        ([("subsettingCrs", "EPSG:3857")], "all", '"subsettingCrs" value "EPSG:3857" is not supported'),
        # Geocentric outputs were a 500 from GDAL in the transformers (found while fuzzing the API).
        ([("outputCrs", "EPSG:4978")], "all", '"outputCrs" value "EPSG:4978" is a Geocentric CRS'),
        ([("outputCrs", "+proj=geocent")], "all", "is a Geocentric CRS: use a geographic or projected CRS"),
        ([("outputCrs", "EPSG:5773")], "all", '"outputCrs" value "EPSG:5773" is a Vertical CRS'),
    ],
)
def test_invalid_parameters_say_what_is_wrong(pairs: list[tuple[str, str]], variable: str, message: str) -> None:
    with pytest.raises(RequestValidationError, match=None) as caught:
        parse(pairs, variable)
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("pairs", "variable", "name", "fix"),
    [
        # Was a job over the whole collection.
        ([("granuleid", "")], "all", "granuleId", "leave the parameter out to use every granule"),
        ([("granuleId", " , ")], "all", "granuleId", "give one or more granule concept ids"),
        ([("granuleId", "G1"), ("granuleId", "")], "all", "granuleId", "comma-separated"),
        ([("granuleName", "")], "all", "granuleName", "wildcards"),
        ([("subset", "")], "all", "subset", "use dimension(min:max)"),
        ([("subset", "lat(0:1)"), ("subset", " ")], "all", "subset", "use dimension(min:max)"),
        ([("variable", "")], "parameter_vars", "variable", "name one or more variables"),
        ([("variable", ",")], "parameter_vars", "variable", "or put them in the path"),
    ],
)
def test_empty_values_are_refused_not_dropped(pairs: list[tuple[str, str]], variable: str, name: str, fix: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse(pairs, variable)
    assert caught.value.message.startswith(f'query parameter "{name}" is given with an empty value: ')
    assert fix in caught.value.message


def test_a_list_with_an_empty_item_keeps_the_others() -> None:
    assert list(parse([("granuleId", "G1,,G2,")]).granule_ids) == ["G1", "G2"]
