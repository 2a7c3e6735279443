"""Prints what the image's wheelhouse must hold, one requirement a line, from pyproject.toml.

The project's pinned dependencies, its build requirements (the geomesh wheel is built offline in the
builder stage, grpcio-tools generating the gRPC stubs), and the pip that installs them. Used by
build-offline.sh on the host (`pip download -r`) and by the Dockerfile's wheels stage; `--runtime`
prints only the dependencies, which the runtime stage installs before geomesh's own wheel. Needs
Python 3.11 or newer (tomllib).

    python3 deploy/docker/requirements.py [--runtime] [pyproject.toml] > requirements.txt
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

# The pip that installs the wheelhouse in both stages (run from its own wheel: no pip of the base's).
PIP = "pip==26.3"


def requirements(pyproject: Path, runtime: bool = False) -> list[str]:
    project = tomllib.loads(pyproject.read_text())
    dependencies: list[str] = project["project"]["dependencies"]
    if runtime:
        return list(dependencies)
    return [*project["build-system"]["requires"], *dependencies, PIP]


def main(argv: list[str]) -> int:
    runtime = "--runtime" in argv
    paths = [arg for arg in argv if arg != "--runtime"]
    path = Path(paths[0]) if paths else Path(__file__).resolve().parents[2] / "pyproject.toml"
    print("\n".join(requirements(path, runtime)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
