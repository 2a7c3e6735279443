"""Users own their jobs: others get 404 on every route, admins see everything, no credentials get 401."""

from __future__ import annotations

from tests.conftest import Mesh
from tests.edge.test_jobs import call, wait_for

ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
ROOT = {"Authorization": "Bearer root-token"}


async def alice_job(secured: Mesh) -> dict:
    response = await call("GET", f"{secured.rangeset()}?maxResults=2&label=mine", headers=ALICE)
    assert response.status_code == 303, response.text
    return await wait_for(secured, response.json()["jobID"], headers=ALICE)


async def test_requests_without_valid_credentials_get_401(secured: Mesh) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Token x"}, {"Authorization": "Basic !!"}):
        response = await call("GET", f"{secured.url}/jobs", headers=headers)
        assert response.status_code == 401, headers
        assert "Bearer" in response.headers["WWW-Authenticate"]
        assert response.json()["code"] == "harmony.UnauthorizedError" or response.json()["description"]
    assert (await call("GET", f"{secured.rangeset()}?maxResults=2")).status_code == 401
    assert (await call("GET", f"{secured.url}/jobs", auth=("alice", "wrong"))).status_code == 401


async def test_basic_credentials_work_too(secured: Mesh) -> None:
    response = await call("GET", f"{secured.url}/jobs", auth=("alice", "wonderland"))
    assert response.status_code == 200


async def test_other_users_get_404_on_every_route_and_admins_see_all(secured: Mesh) -> None:
    job = await alice_job(secured)
    job_id = job["jobID"]
    assert job["username"] == "alice"
    result = next(link["href"] for link in job["links"] if link["rel"] == "data")
    assert (await call("GET", result, headers=ALICE)).status_code == 200

    routes = [
        ("GET", f"/jobs/{job_id}"),
        *[(method, f"/jobs/{job_id}/{action}") for method in ("GET", "POST") for action in ("cancel", "pause", "resume", "skip-preview")],
        ("PUT", f"/labels?jobID={job_id}&label=stolen"),
        ("DELETE", f"/labels?jobID={job_id}&label=mine"),
        ("GET", result.removeprefix(secured.url)),
        ("GET", f"/stac/{job_id}/"),
        ("GET", f"/stac/{job_id}/0"),
    ]
    for method, path in routes:
        response = await call(method, secured.url + path, headers=BOB)
        assert response.status_code == 404, (method, path, response.status_code)
        assert job_id in response.json()["description"]
    statuses = (await call("POST", f"{secured.url}/jobs/status", json={"jobIDs": [job_id]}, headers=BOB)).json()
    assert statuses == {"jobStatuses": [], "notFoundJobIDs": [job_id]}
    listed = (await call("GET", f"{secured.url}/jobs", headers=BOB)).json()
    assert job_id not in [j["jobID"] for j in listed["jobs"]]

    assert (await call("GET", f"{secured.url}/jobs/{job_id}", headers=ROOT)).json()["username"] == "alice"
    everyone = (await call("GET", f"{secured.url}/jobs?limit=10000", headers=ROOT)).json()
    assert job_id in [j["jobID"] for j in everyone["jobs"]]
    assert (await call("GET", f"{secured.url}/jobs/{job_id}", headers=ALICE)).json()["labels"] == ["mine"]


async def test_credentials_that_are_not_utf8_get_401(secured: Mesh) -> None:
    """aiohttp keeps undecodable header bytes as surrogates, which a token compare could not encode (a 500)."""
    for value in (b"Bearer \xff\xfe", b"Basic \xff"):
        response = await call("GET", f"{secured.url}/jobs", headers={"Authorization": value})
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "harmony.UnauthorizedError"
    wms = await call("GET", f"{secured.url}/C1233800302-EEDTEST/wms?SERVICE=WMS&REQUEST=GetCapabilities",
                     headers={"Authorization": b"Bearer \xff"})
    assert wms.status_code == 401 and b"ServiceExceptionReport" in wms.content
