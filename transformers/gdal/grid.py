"""A map's pixel grid, and where its pixel centres fall in a source raster's CRS.

Projecting every pixel centre through PROJ costs 70-500 ns a point (5-30 ms for a 256x256
tile, more than the rest of a render), so the usual cases are made cheap: the same CRS needs no
projection; a projection that keeps columns and rows apart (geographic <-> Web Mercator, say)
needs one row and one column; anything else is projected on a lattice every _STEP pixels and
interpolated, and the lattice cells where that misses (seams, poles) are projected point by point."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyproj
from affine import Affine
from pyproj.exceptions import CRSError, ProjError

from geomesh.errors import RequestValidationError
from geomesh.model import BBox
from transformers.gdal.subset import _same_crs

# Lattice spacing in map pixels, and the largest interpolation error accepted, in map pixels.
_STEP = 8
_TOLERANCE = 0.125
# Maps this small, or thinner than two lattice cells, are projected point by point: it is cheap.
_EXACT_PIXELS = 4096

# WMS names that PROJ spells differently.
_WMS_CRS = {"CRS:84": "OGC:CRS84", "CRS:83": "OGC:CRS83", "CRS:27": "OGC:CRS27"}

# x and y of pixel centres in a source CRS, broadcasting to (height, width): shapes (1, width)
# and (height, 1) say that x depends on the column only and y on the row only.
Coordinates = tuple[np.ndarray, np.ndarray]
# A pyproj Transformer's transform: x and y arrays in, x and y arrays out.
Project = Callable[[np.ndarray, np.ndarray], Coordinates]


@lru_cache(maxsize=64)
def map_crs(text: str) -> str:
    """The WKT of the CRS a map request names, or RequestValidationError."""
    name = text.strip()
    try:
        return pyproj.CRS.from_user_input(_WMS_CRS.get(name.upper(), name)).to_wkt()
    except CRSError as error:
        raise RequestValidationError(f"The map's CRS {text!r} is not one geomesh can read: {error}") from None


@lru_cache(maxsize=256)
def _transformer(from_crs: str, to_crs: str) -> pyproj.Transformer:
    # always_xy: x is longitude/easting on both sides, whatever the CRS's own axis order.
    return pyproj.Transformer.from_crs(from_crs, to_crs, always_xy=True)


@dataclass(frozen=True, slots=True)
class MapGrid:
    """width x height pixels covering bounds (min_x, min_y, max_x, max_y, x first) in crs, north up."""

    crs: str  # WKT
    bounds: tuple[float, float, float, float]
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        min_x, min_y, max_x, max_y = self.bounds
        return Affine((max_x - min_x) / self.width, 0.0, min_x, 0.0, -(max_y - min_y) / self.height, max_y)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """x of each column's centre, y of each row's centre (top row first)."""
        min_x, min_y, max_x, max_y = self.bounds
        xs = min_x + (np.arange(self.width) + 0.5) * ((max_x - min_x) / self.width)
        ys = max_y - (np.arange(self.height) + 0.5) * ((max_y - min_y) / self.height)
        return xs, ys

    def wgs84_bounds(self) -> BBox:
        """The map's extent in WGS84 degrees (west > east when it crosses the antimeridian).

        The whole globe when an edge of the map lies off the Earth (a world map in Robinson, say):
        the extent is only used to skip granules and to label the output.
        """
        try:
            to_wgs84 = _transformer(self.crs, "EPSG:4326")
            west, south, east, north = to_wgs84.transform_bounds(*self.bounds, densify_pts=21)
        except ProjError:
            west = south = east = north = math.inf
        if not all(math.isfinite(value) for value in (west, south, east, north)):
            return BBox(-180.0, -90.0, 180.0, 90.0)
        return BBox(west, max(south, -90.0), east, min(north, 90.0))

    def source_coordinates(self, source_wkt: str) -> Coordinates:
        """Where every pixel centre of the map lies in the source CRS (non-finite where it has no image)."""
        xs, ys = self.centres()
        if _same_crs(self.crs, source_wkt):
            return xs[None, :], ys[:, None]
        project = _transformer(self.crs, source_wkt).transform
        probe_rows, probe_cols = _probe(self.height), _probe(self.width)
        if _separable(*project(*np.meshgrid(xs[probe_cols], ys[probe_rows]))):
            middle_x = np.full(self.height, xs[self.width // 2])
            middle_y = np.full(self.width, ys[self.height // 2])
            return project(xs, middle_y)[0][None, :], project(middle_x, ys)[1][:, None]
        if self.width * self.height <= _EXACT_PIXELS or min(self.width, self.height) < 2 * _STEP:
            return _exact(project, xs, ys)
        rows, cols = _knots(self.height), _knots(self.width)
        lattice_x, lattice_y = project(*np.meshgrid(xs[cols], ys[rows]))
        # Points with no image (off the projection's domain) are zeroed here, and their cells
        # projected exactly below.
        missing = ~(np.isfinite(lattice_x) & np.isfinite(lattice_y))
        lattice_x, lattice_y = np.where(missing, 0.0, lattice_x), np.where(missing, 0.0, lattice_y)
        row_cells, col_cells = _Segments(rows, self.height), _Segments(cols, self.width)
        source_x = row_cells.interpolate(col_cells.interpolate(lattice_x, axis=1), axis=0)
        source_y = row_cells.interpolate(col_cells.interpolate(lattice_y, axis=1), axis=0)
        rough = _rough_cells(project, xs, ys, rows, cols, source_x, source_y, lattice_x, lattice_y)
        rough |= missing[:-1, :-1] | missing[1:, :-1] | missing[:-1, 1:] | missing[1:, 1:]
        if rough.mean() > 0.5:
            return _exact(project, xs, ys)
        redo_rows, redo_cols = np.nonzero(rough[row_cells.cell][:, col_cells.cell])
        source_x[redo_rows, redo_cols], source_y[redo_rows, redo_cols] = project(xs[redo_cols], ys[redo_rows])
        return source_x, source_y


def _exact(project: Project, xs: np.ndarray, ys: np.ndarray) -> Coordinates:
    return project(*np.meshgrid(xs, ys))


def _knots(size: int) -> np.ndarray:
    """Lattice positions along one axis: every _STEP pixels, and the last pixel."""
    return np.unique(np.r_[np.arange(0, size, _STEP), size - 1])


def _probe(size: int) -> np.ndarray:
    """A few positions along an axis, ends included, to test the projection's shape on."""
    return np.unique(np.linspace(0, size - 1, 5).round().astype(np.intp))


def _separable(lattice_x: np.ndarray, lattice_y: np.ndarray) -> bool:
    """Whether x is the same down every column and y the same along every row of a grid of points."""
    if not (np.isfinite(lattice_x).all() and np.isfinite(lattice_y).all()):
        return False
    tolerance = 1e-9 * max(np.ptp(lattice_x), np.ptp(lattice_y), 1e-12)
    return bool(
        np.abs(lattice_x - lattice_x[:1]).max() <= tolerance and np.abs(lattice_y - lattice_y[:, :1]).max() <= tolerance
    )


class _Segments:
    """For each pixel along an axis: the lattice cell it lies in and how far across (0..1).

    Bilinear interpolation is done with these in two passes, rather than with matrix products:
    small BLAS calls can take milliseconds on a busy machine (thread hand-offs).
    """

    def __init__(self, knots: np.ndarray, size: int) -> None:
        positions = np.arange(size)
        self.cell = np.clip(np.searchsorted(knots, positions, side="right") - 1, 0, len(knots) - 2)
        self.fraction = (positions - knots[self.cell]) / (knots[self.cell + 1] - knots[self.cell])

    def interpolate(self, values: np.ndarray, axis: int) -> np.ndarray:
        """values given at the knots along axis, to every pixel along it."""
        low = np.take(values, self.cell, axis=axis)
        high = np.take(values, self.cell + 1, axis=axis)
        fraction = self.fraction if axis == 1 else self.fraction[:, None]
        return low + (high - low) * fraction


def _rough_cells(
    project: Project,
    xs: np.ndarray,
    ys: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    source_x: np.ndarray,
    source_y: np.ndarray,
    lattice_x: np.ndarray,
    lattice_y: np.ndarray,
) -> np.ndarray:
    """Lattice cells where interpolation misses the exact position at the cell's centre by more
    than _TOLERANCE map pixels (across a seam such as the antimeridian, near a pole)."""
    middle_rows = (rows[:-1] + rows[1:]) // 2
    middle_cols = (cols[:-1] + cols[1:]) // 2
    exact_x, exact_y = project(*np.meshgrid(xs[middle_cols], ys[middle_rows]))
    centres = np.ix_(middle_rows, middle_cols)
    with np.errstate(invalid="ignore", divide="ignore"):
        error_x, error_y = source_x[centres] - exact_x, source_y[centres] - exact_y
        # Source units per map pixel across and down each cell (from its top and left edges):
        # solving with them turns the error into map pixels, whatever the source's units.
        lattices = (lattice_x, lattice_y)
        across_x, across_y = (np.diff(lattice, axis=1)[:-1] / np.diff(cols) for lattice in lattices)
        down_x, down_y = (np.diff(lattice, axis=0)[:, :-1] / np.diff(rows)[:, None] for lattice in lattices)
        determinant = across_x * down_y - across_y * down_x
        error_cols = (error_x * down_y - error_y * down_x) / determinant
        error_rows = (across_x * error_y - across_y * error_x) / determinant
        return ~(np.hypot(error_cols, error_rows) <= _TOLERANCE)  # NaN counts as rough
