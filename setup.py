"""Generates the gRPC stubs from protos/ whenever the package is built or installed."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent.resolve()


def generate_stubs() -> None:
    import importlib.resources

    from grpc_tools import protoc  # build requirement, pinned in pyproject.toml

    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = ["protoc", "-Iprotos", f"-I{well_known}", "--python_out=.", "--pyi_out=.", "--grpc_python_out=.", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")


class BuildWithStubs(build_py):
    def run(self) -> None:
        generate_stubs()
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
