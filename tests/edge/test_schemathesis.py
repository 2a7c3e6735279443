"""Every operation of the edge's OpenAPI document, fuzzed by schemathesis against a real `geomesh up`.

The in-process `mesh` lives on the pytest-asyncio session loop, which schemathesis' synchronous
requests cannot reach, so this module starts geomesh as its own process group on free loopback
ports. Checked: no answer is a 5xx, and each answer's status, media type and body are as documented.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from edge.api import openapi
from tests.conftest import GLOBAL_GRANULE, HARMONY_EXAMPLE
from tests.loopback import geomesh_up

EXAMPLES = 15  # per operation, valid and invalid cases together
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def edge_url(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`geomesh up` on the demo data; its jobs and outputs kept out of demo_dir."""
    # Fuzzed rangesets without granuleId become jobs over all 177 granules; two each keeps the
    # job paths exercised without the dispatcher eating the 2-core machine.
    with geomesh_up(demo_dir, tmp_path_factory.mktemp("schemathesis"), GEOMESH_SCHEDULER_MAX_GRANULES="2") as up:
        yield up.edge


@pytest.fixture(scope="module")
def api_schema(edge_url: str) -> BaseSchema:
    """The document as the edge serves it; the root paths (jobs, WMS, ...) name the server `/` themselves."""
    config = SchemathesisConfig.from_dict({"request-timeout": 30})
    return schemathesis.openapi.from_url(
        f"{edge_url}/{HARMONY_EXAMPLE}/ogc-api-coverages/1.0.0/api?f=json", config=config, timeout=30
    )


@pytest.fixture(scope="module")
def job_id(edge_url: str) -> str:
    """A successful one-granule job, so the job, STAC and download operations meet a real one."""
    rangeset = f"{edge_url}/{HARMONY_EXAMPLE}/ogc-api-coverages/1.0.0/collections/all/coverage/rangeset"
    response = requests.get(
        rangeset, params={"granuleId": GLOBAL_GRANULE, "forceAsync": "true"}, allow_redirects=False, timeout=30
    )
    assert response.status_code == 303, response.text
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    deadline = time.monotonic() + 30
    while requests.get(f"{edge_url}/jobs/{job_id}", timeout=30).json()["status"] != "successful":
        assert time.monotonic() < deadline, f"job {job_id} did not finish"
        time.sleep(0.1)
    return job_id


# From the file, so the tests are known before any mesh runs (test_openapi keeps it equal to the served one).
OPERATIONS = [
    (method.upper(), path)
    for path, item in openapi.load_document()["paths"].items()
    for method in item
    if method in ("get", "put", "post", "delete", "patch")
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_answers_as_documented(api_schema: BaseSchema, job_id: str, method: str, path: str) -> None:
    """Valid cases (on a real, finished job where a job is named) and invalid ones (anything goes)."""
    operation = api_schema[path][method]
    known = {"jobID": job_id} if "{jobID}" in path else None
    cases = operation.as_strategy(path_parameters=known) | operation.as_strategy(GenerationMode.NEGATIVE)

    # schemathesis.pytest.from_fixture would do this per operation, but it sets Function._nodeid, gone in pytest 9.
    @hypothesis.settings(
        max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    @hypothesis.given(case=cases)
    def fuzz(case: Case) -> None:
        case.call_and_validate(checks=CHECKS, allow_redirects=False)

    fuzz()
