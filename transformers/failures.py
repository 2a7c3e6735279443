"""A granule a transformer cannot process: what the client is told, and what the log keeps.

Library messages (GDAL, rasterio, netCDF-C, HDF5) name scratch files, private copies of remote
granules and /vsimem/ paths: the transformer's insides. So the client's error names the granule
and the problem only, and the library's message goes to the log at WARNING, for the operator.
"""

from __future__ import annotations

import logging

from geomesh.errors import TransformError

log = logging.getLogger(__name__)


def unprocessable(granule_id: str, problem: str, error: BaseException, source: object = "") -> TransformError:
    """TransformError("Cannot process granule <id>: <problem>."); the library's own message is logged,
    with the file or link read (`source`)."""
    log.warning("granule %s (%s): %s: %s: %s", granule_id, source, problem, type(error).__name__, error)
    return TransformError(f"Cannot process granule {granule_id}: {problem}.")
