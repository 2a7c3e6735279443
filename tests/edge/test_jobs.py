"""The seed notebook's asynchronous requests and Harmony's jobs API, over HTTP against a real mesh."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import pytest
import rasterio
import requests

from tests.conftest import ATL08, HARMONY_EXAMPLE, Mesh

THREE_GRANULES = 'subset=time("2020-01-16T02:00:00.000Z":"2020-01-16T07:00:00.000Z")'


async def call(method: str, url: str, **options: Any) -> requests.Response:
    options.setdefault("allow_redirects", False)
    return await asyncio.to_thread(requests.request, method, url, timeout=30, **options)


async def wait_for(
    mesh: Mesh, job_id: str, statuses: tuple[str, ...] = ("successful",), seconds: float = 30, **options: Any
) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = (await call("GET", f"{mesh.url}/jobs/{job_id}", **options)).json()
        if job["status"] in statuses:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']}")


async def submit(mesh: Mesh, query: str, collection: str = HARMONY_EXAMPLE, **options: Any) -> str:
    response = await call("GET", f"{mesh.rangeset(collection)}?{query}", **options)
    assert response.status_code == 303, response.text
    return response.headers["Location"].rsplit("/", 1)[1]


async def test_the_seed_three_granule_request_redirects_to_a_job_that_completes(mesh: Mesh) -> None:
    response = await call("GET", f"{mesh.rangeset()}?&{THREE_GRANULES}")
    assert response.status_code == 303
    job_id = response.json()["jobID"]
    assert response.headers["Location"] == f"{mesh.url}/jobs/{job_id}"
    first = response.json()
    assert (first["status"], first["progress"], first["message"]) == ("running", 0, "The job is being processed")
    assert {"rel": "canceler", "href": f"{mesh.url}/jobs/{job_id}/cancel", "title": "Cancels the job.", "type": "application/json"} in first["links"]

    job = await wait_for(mesh, job_id)
    assert set(job) >= {"username", "status", "message", "progress", "createdAt", "updatedAt", "dataExpiration",
                        "links", "labels", "request", "numInputGranules", "jobID"}
    assert (job["progress"], job["numInputGranules"], job["username"]) == (100, 3, "anonymous")
    assert job["request"].startswith(mesh.rangeset())
    data = [link for link in job["links"] if link["rel"] == "data"]
    assert sorted(link["title"] for link in data) == [
        "016_01_ff0000_africa.tif", "016_02_ff0000_antarctica.tif", "016_03_ff0000_asia_east.tif",
    ]
    for link in data:
        assert link["href"].startswith(f"{mesh.url}/service-results/{job_id}/")
        assert link["type"] == "image/tiff" and len(link["bbox"]) == 4
        assert link["temporal"]["start"].startswith("2020-01-16T")
        body = (await call("GET", link["href"])).content
        with rasterio.open(io.BytesIO(body)) as dataset:
            assert dataset.count == 4
    rels = [link["rel"] for link in job["links"]]
    assert "stac-catalog-json" in rels and "self" in rels and "canceler" not in rels


async def test_the_seed_max_results_request_says_how_it_was_limited(mesh: Mesh) -> None:
    response = await call("GET", f"{mesh.rangeset()}?&maxResults=2", allow_redirects=True)
    job = response.json()
    assert job["message"] == (
        "CMR query identified 177 granules, but the request has been limited to process only the first 2 granules "
        "because you requested 2 maxResults."
    )
    job = await wait_for(mesh, job["jobID"])
    assert job["numInputGranules"] == 2 and job["message"].startswith("CMR query identified 177 granules")
    assert len([link for link in job["links"] if link["rel"] == "data"]) == 2


async def test_no_matching_granules_is_a_400(mesh: Mesh) -> None:
    response = await call("GET", f"{mesh.rangeset()}?subset=time(\"1999-01-01T00:00:00Z\":\"1999-01-02T00:00:00Z\")")
    assert response.status_code == 400
    assert response.json()["description"] == "Error: No matching granules found."


async def test_atl08_no_processing_requests_list_the_granules_own_links(mesh: Mesh) -> None:
    response = await call("GET", mesh.rangeset(ATL08))
    assert response.status_code == 200
    job = response.json()
    assert (job["status"], job["progress"]) == ("successful", 100)
    assert job["message"] == f"Returning direct download links because no operations can be performed on {ATL08}."
    links = [link for link in job["links"] if link["rel"] == "data"]
    assert len(links) == job["numInputGranules"] > 1
    first = links[0]
    assert first["title"] == "G1229652687-NSIDC_TS1"
    assert first["href"].endswith("ATL08_20181014044639_02380101_002_01.h5")

    single = (await call("GET", f"{mesh.rangeset(ATL08)}?granuleID={first['title']}")).json()
    assert [link["href"] for link in single["links"] if link["rel"] == "data"] == [first["href"]]
    download = await call("GET", first["href"])
    assert download.status_code == 200 and download.content.startswith(b"\x89HDF\r\n\x1a\n")


async def test_a_post_gets_the_job_itself(mesh: Mesh) -> None:
    fields = [("forceAsync", "true"), ("granuleId", "G1233800343-EEDTEST"), ("label", "Survey")]
    response = await call("POST", mesh.rangeset(), files=[(name, (None, value)) for name, value in fields])
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "running" and job["labels"] == ["survey"]
    await wait_for(mesh, job["jobID"])
    bodiless = await call("POST", f"{mesh.rangeset()}?maxResults=2")  # everything in the query string
    assert bodiless.status_code == 200 and bodiless.json()["numInputGranules"] == 2


async def test_listing_paging_and_bulk_status(mesh: Mesh) -> None:
    ids = [await submit(mesh, f"maxResults=2&label=paging-{i}") for i in range(3)]
    listing = await call("GET", f"{mesh.url}/jobs?page=1&limit=2")
    body = listing.json()
    assert int(listing.headers["Harmony-Hits"]) == body["count"] >= 3
    assert len(body["jobs"]) == 2 and {link["rel"] for link in body["links"]} >= {"self", "next", "last"}
    labelled = (await call("GET", f"{mesh.url}/jobs?label=paging-1")).json()
    assert [job["jobID"] for job in labelled["jobs"]] == [ids[1]]

    job = await wait_for(mesh, ids[0])
    page2 = (await call("GET", f"{mesh.url}/jobs/{ids[0]}?page=2&limit=1")).json()
    data = [link for link in page2["links"] if link["rel"] == "data"]
    assert len(data) == 1 and data[0] not in [link for link in job["links"] if link["rel"] == "data"][:1]
    assert {link["rel"] for link in page2["links"]} >= {"first", "prev", "self"}

    unknown = "00000000-0000-4000-8000-000000000000"
    statuses = (await call("POST", f"{mesh.url}/jobs/status", json={"jobIDs": [ids[0], unknown]})).json()
    assert statuses == {
        "jobStatuses": [{"jobID": ids[0], "status": "successful", "progress": 100}],
        "notFoundJobIDs": [unknown],
    }
    bad = await call("POST", f"{mesh.url}/jobs/status", data="not json")
    assert bad.status_code == 400


async def test_cancel_pause_resume_and_illegal_moves(mesh: Mesh) -> None:
    job_id = await submit(mesh, "maxResults=40")
    paused = await call("GET", f"{mesh.url}/jobs/{job_id}/pause")
    assert paused.status_code == 302 and paused.headers["Location"] == f"{mesh.url}/jobs/{job_id}"
    job = (await call("GET", f"{mesh.url}/jobs/{job_id}")).json()
    assert job["status"] == "paused"
    assert {link["rel"] for link in job["links"]} >= {"canceler", "resumer"}
    again = await call("POST", f"{mesh.url}/jobs/{job_id}/pause")
    assert again.status_code == 409
    assert again.json()["description"] == "Error: Job status cannot be updated from paused to paused."
    skip = await call("GET", f"{mesh.url}/jobs/{job_id}/skip-preview")
    assert skip.status_code == 409 and "only a job that is previewing" in skip.json()["description"]
    assert (await call("POST", f"{mesh.url}/jobs/{job_id}/resume")).status_code == 302
    assert (await call("GET", f"{mesh.url}/jobs/{job_id}/cancel")).status_code == 302
    job = (await call("GET", f"{mesh.url}/jobs/{job_id}")).json()
    assert (job["status"], job["message"]) == ("canceled", "Canceled by user.")
    progress = job["progress"]
    await asyncio.sleep(0.3)
    assert (await call("GET", f"{mesh.url}/jobs/{job_id}")).json()["progress"] == progress  # no work after cancel
    assert (await call("GET", f"{mesh.url}/jobs/{job_id}/resume")).status_code == 409


async def test_labels_by_query_string_and_json_body(mesh: Mesh) -> None:
    job_id = await submit(mesh, "maxResults=2")
    added = await call("PUT", f"{mesh.url}/labels?jobID={job_id}&label=Alpha,beta")
    assert added.status_code == 201 and added.json()["label"] == ["alpha", "beta"]
    removed = await call("DELETE", f"{mesh.url}/labels", json={"jobID": [job_id], "label": ["alpha"]})
    assert removed.status_code == 204
    assert (await call("GET", f"{mesh.url}/jobs/{job_id}")).json()["labels"] == ["beta"]
    missing = await call("PUT", f"{mesh.url}/labels?jobID={job_id}")
    assert missing.status_code == 400


# Found by schemathesis (tests/edge/test_schemathesis.py): each of these bodies was a 500.
@pytest.mark.parametrize(
    ("method", "path", "content_type", "body"),
    [
        ("PUT", "/labels", "multipart/form-data", b"jobID=x&label=y"),  # no boundary
        ("DELETE", "/labels", "multipart/form-data", b"jobID=x&label=y"),
        ("POST", "/jobs/status", "application/json; charset=nope", b'{"jobIDs": []}'),
        ("POST", "/jobs/status", "application/json", b"[" * 100_000),  # deeper than Python's recursion limit
        ("POST", "/jobs/status", "application/json", b'{"jobIDs": ["\\ud800"]}'),  # a lone surrogate: not UTF-8
        ("PUT", "/labels", "application/json", b'{"jobID": ["00000000-0000-4000-8000-000000000000"], "label": "\\udfff"}'),
    ],
    ids=["labels no boundary", "unlabel no boundary", "unknown charset", "too deep", "surrogate job id", "surrogate label"],
)
async def test_unreadable_bodies_are_400s(mesh: Mesh, method: str, path: str, content_type: str, body: bytes) -> None:
    response = await call(method, f"{mesh.url}{path}", data=body, headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "harmony.RequestValidationError"


async def test_bad_job_ids_and_paging_values(mesh: Mesh) -> None:
    bad = await call("GET", f"{mesh.url}/jobs/not-a-uuid")
    assert bad.status_code == 400 and bad.json()["description"] == "Error: jobID not-a-uuid is in invalid format."
    missing = await call("GET", f"{mesh.url}/jobs/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    assert (await call("GET", f"{mesh.url}/jobs?page=0")).json()["description"] == 'Error: query parameter "page" should be >= 1'
    assert (await call("GET", f"{mesh.url}/jobs?limit=x")).status_code == 400
    result = await call("GET", f"{mesh.url}/service-results/00000000-0000-4000-8000-000000000000/1/x.tif")
    assert result.status_code == 404


async def test_job_work_is_visible_to_prometheus(mesh: Mesh) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    await wait_for(mesh, await submit(mesh, "maxResults=2"))
    families = {f.name: f for f in text_string_to_metric_families((await call("GET", f"{mesh.url}/metrics")).text)}
    finished = {
        (s.labels["service"], s.labels["outcome"]): s.value
        for s in families["geomesh_work_items_finished"].samples
        if s.name.endswith("_total")
    }
    assert finished["harmony/gdal", "successful"] >= 2
    # Every registry service's outcomes exist from the start, so rate() sees a first success.
    assert ("harmony/netcdf", "failed") in finished
    assert {"geomesh_work_items_queued", "geomesh_work_items_in_flight", "geomesh_work_item_seconds"} <= set(families)


@pytest.mark.parametrize(
    ("method", "path", "body", "depth"),
    [
        ("POST", "/jobs/status", b"[" * 100_000 + b"]" * 100_000, 100_000),
        ("POST", "/jobs/status", b'{"jobIDs": ' + b"[" * 200 + b"]" * 200 + b"}", 201),  # parseable, yet past the limit
        ("PUT", "/labels", b'{"jobID": ["00000000-0000-4000-8000-000000000000"], "label": ' + b'{"a": ' * 500 + b"1" + b"}" * 501,
         501),
    ],
    ids=["status 100000 deep", "status 201 deep", "labels 501 deep"],
)
async def test_json_bodies_nested_past_the_limit_are_400s_naming_it(
    mesh: Mesh, method: str, path: str, body: bytes, depth: int
) -> None:
    from geomesh.nesting import MAX_DEPTH

    response = await call(method, f"{mesh.url}{path}", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["description"] == (
        f"Error: The request body nests arrays and objects {depth} levels deep, beyond the limit of {MAX_DEPTH}: "
        'send JSON like {"jobIDs": ["<job id>", ...]} or {"jobID": [...], "label": [...]}'
    )
