"""The service registry: validation at start-up and service matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog.registry import Operations, Registry, RegistryError
from geomesh.errors import UnsupportedOperationError

TWO_SERVICES = """
services:
  - name: first
    collections: [C1-A]
    transformer: {addresses: ["${TEST_FIRST:-127.0.0.1:1}"]}
    capabilities:
      subsetting: {variable: true}
      output_formats: [image/tiff]
  - name: second
    collections: [C1-A, C2-B]
    maximum_sync_granules: 0
    transformer: {addresses: ["127.0.0.1:2,127.0.0.1:3"]}
    capabilities:
      subsetting: {bbox: true, variable: true, multiple_variable: true}
      output_formats: [image/png, image/tiff]
      reprojection: true
"""


def load(tmp_path: Path, text: str) -> Registry:
    path = tmp_path / "services.yml"
    path.write_text(text)
    return Registry.load(path)


def test_shipped_registry_is_valid() -> None:
    registry = Registry.load()
    assert [s.name for s in registry.for_collection("C1233800302-EEDTEST")] == ["harmony/gdal"]


def test_precedence_and_capability_matching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_FIRST", "10.0.0.1:9")
    registry = load(tmp_path, TWO_SERVICES)
    simple = registry.match("C1-A", Operations(variable_subset=True))
    assert simple and simple.service.name == "first" and simple.output_format == "image/tiff"
    assert simple.service.transformer.addresses == ["10.0.0.1:9"]
    bbox = registry.match("C1-A", Operations(bbox_subset=True))
    assert bbox and bbox.service.name == "second" and bbox.output_format == "image/png"
    assert bbox.service.transformer.addresses == ["127.0.0.1:2", "127.0.0.1:3"]
    accepted = registry.match("C1-A", Operations(accepted_formats=("image/*",)))
    assert accepted and accepted.output_format == "image/tiff"
    assert registry.match("C9-NONE", Operations()) is None


def test_unsupported_combination_is_named(tmp_path: Path) -> None:
    registry = load(tmp_path, TWO_SERVICES)
    with pytest.raises(UnsupportedOperationError) as caught:
        registry.match("C2-B", Operations(shape_subset=True, reprojection=True))
    assert caught.value.message == (
        "the requested combination of operations: shapefile subsetting and reprojection on C2-B is unsupported"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("services: [", "not valid YAML"),
        ("services:\n  - name: x\n    collections: []\n    transformer: {addresses: [a:1]}\n    capabilities: {output_formats: [a/b]}",
         "services.0.collections"),
        ("services:\n  - name: x\n    collections: [C]\n    transformer: {addresses: [nohost]}\n    capabilities: {output_formats: [a/b]}",
         "'nohost' is not host:port"),
        ("services:\n  - name: x\n    collections: [C]\n    transformer: {addresses: [a:1]}\n    capabilities: {output_formats: [a/b], colour: 1}",
         "services.0.capabilities.colour"),
        ("services:\n  - name: x\n    collections: [C]\n    transformer: {addresses: ['${NOT_SET_ANYWHERE}']}\n    capabilities: {output_formats: [a/b]}",
         "NOT_SET_ANYWHERE is not set"),
    ],
)
def test_invalid_registry_fails_naming_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RegistryError) as caught:
        load(tmp_path, text)
    assert message in str(caught.value)
    if "NOT_SET" not in message:
        assert "services.yml" in str(caught.value)
