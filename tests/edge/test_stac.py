"""A finished job's STAC catalog, read by pystac and validated by stac-pydantic's STAC 1.0 models."""

from __future__ import annotations

import asyncio

import pystac
import stac_pydantic

from tests.conftest import Mesh
from tests.edge.test_jobs import THREE_GRANULES, call, submit, wait_for


async def test_pystac_reads_the_catalog_of_the_seed_three_granule_job(mesh: Mesh) -> None:
    job = await wait_for(mesh, await submit(mesh, THREE_GRANULES))
    [url] = [link["href"] for link in job["links"] if link["rel"] == "stac-catalog-json"]
    catalog = await asyncio.to_thread(pystac.Catalog.from_file, url)
    items = await asyncio.to_thread(lambda: list(catalog.get_items()))
    assert catalog.id == job["jobID"] and len(items) == 3
    data = {link["href"]: link for link in job["links"] if link["rel"] == "data"}
    for item in items:
        stac_pydantic.Item.model_validate(item.to_dict())
        asset = item.assets["data"]
        link = data[asset.href]
        assert (asset.media_type, asset.roles) == ("image/tiff", ["data"])
        assert item.bbox == link["bbox"]
        assert item.common_metadata.start_datetime.isoformat().startswith("2020-01-16T")
    stac_pydantic.Catalog.model_validate(catalog.to_dict())


async def test_no_catalog_before_the_job_is_complete_or_past_its_items(mesh: Mesh) -> None:
    job_id = await submit(mesh, "maxResults=30")
    await call("GET", f"{mesh.url}/jobs/{job_id}/pause")
    response = await call("GET", f"{mesh.url}/stac/{job_id}/")
    assert response.status_code == 409 and "paused" in response.json()["description"]
    await call("GET", f"{mesh.url}/jobs/{job_id}/cancel")
    done = await wait_for(mesh, await submit(mesh, "maxResults=2"))
    assert (await call("GET", f"{mesh.url}/stac/{done['jobID']}/2")).status_code == 404
