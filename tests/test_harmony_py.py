"""NASA's own client, harmony-py, unchanged against geomesh: Client(env=Environment.LOCAL, token=...)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pystac
import pytest
import rasterio
from harmony import BBox, Client, Collection, Environment, Request
from harmony.request import AddLabelsRequest, DeleteLabelsRequest, JobsRequest
from pystac.stac_io import DefaultStacIO

from tests.conftest import HARMONY_EXAMPLE, Mesh

TOKEN = "alice-token"


@pytest.fixture
def client(secured: Mesh, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    # harmony-py's LOCAL environment is http://localhost:<LOCALHOST_PORT>, 3000 unless told otherwise.
    monkeypatch.setenv("LOCALHOST_PORT", secured.url.rsplit(":", 1)[1])
    harmony = Client(env=Environment.LOCAL, token=TOKEN, check_interval=0.1)
    yield harmony
    harmony.executor.shutdown(wait=False)


def seed_request(**options: object) -> Request:
    return Request(
        collection=Collection(id=HARMONY_EXAMPLE),
        spatial=BBox(-20, -60, 60, 40),
        temporal={"start": dt.datetime(2020, 1, 16, 2), "stop": dt.datetime(2020, 1, 16, 7)},
        variables=["red_var", "green_var"],
        **options,
    )


async def test_submit_wait_results_download_and_stac(client: Client, tmp_path: Path) -> None:
    job_id = await asyncio.to_thread(client.submit, seed_request())
    await asyncio.to_thread(client.wait_for_processing, job_id)
    status = await asyncio.to_thread(client.status, job_id)
    assert (status["status"], status["progress"], status["num_input_granules"]) == ("successful", 100, 3)

    urls = await asyncio.to_thread(lambda: list(client.result_urls(job_id)))
    assert len(urls) == 3 and all("/service-results/" in url for url in urls)
    futures = await asyncio.to_thread(lambda: list(client.download_all(job_id, directory=str(tmp_path))))
    files = [await asyncio.to_thread(future.result) for future in futures]
    for file in files:
        with rasterio.open(file) as dataset:
            assert dataset.count == 2  # red_var and green_var
            assert set(dataset.descriptions) == {"red_var", "green_var"}

    catalog_url = await asyncio.to_thread(client.stac_catalog_url, job_id)
    stac_io = DefaultStacIO(headers={"Authorization": f"Bearer {TOKEN}"})
    catalog = await asyncio.to_thread(pystac.Catalog.from_file, catalog_url, stac_io)
    items = await asyncio.to_thread(lambda: list(catalog.get_items()))
    assert sorted(item.assets["data"].href for item in items) == sorted(urls)


async def test_result_json_pages_and_labels(client: Client) -> None:
    job_id = await asyncio.to_thread(client.submit, Request(collection=Collection(id=HARMONY_EXAMPLE), max_results=3, labels=["Mine"]))
    await asyncio.to_thread(client.wait_for_processing, job_id)
    pages = await asyncio.to_thread(lambda: list(client._result_pages(job_id, limit=1, page=2)))
    assert [link["rel"] for link in pages[0]["links"] if link["rel"] == "data"] == ["data"]
    assert len(list(await asyncio.to_thread(lambda: list(client.result_urls(job_id, page=1, limit=2))))) == 2
    result = await asyncio.to_thread(client.result_json, job_id)
    assert sorted(result["labels"]) == ["harmony-py", "mine"]

    await asyncio.to_thread(client.submit, AddLabelsRequest(labels=["extra"], job_ids=[job_id]))
    listed = await asyncio.to_thread(client.submit, JobsRequest(labels=["extra"]))
    assert [job["jobID"] for job in listed["jobs"]] == [job_id]
    await asyncio.to_thread(client.submit, DeleteLabelsRequest(labels=["extra"], job_ids=[job_id]))
    assert "extra" not in (await asyncio.to_thread(client.result_json, job_id))["labels"]


async def test_pause_resume_and_cancel(client: Client) -> None:
    job_id = await asyncio.to_thread(client.submit, Request(collection=Collection(id=HARMONY_EXAMPLE), max_results=60))
    await asyncio.to_thread(client.pause, job_id)
    assert (await asyncio.to_thread(client.status, job_id))["status"] == "paused"
    await asyncio.to_thread(client.resume, job_id)
    assert (await asyncio.to_thread(client.status, job_id))["status"] in ("running", "successful")
    await asyncio.to_thread(client.cancel, job_id)
    assert (await asyncio.to_thread(client.status, job_id))["status"] == "canceled"
    with pytest.raises(Exception, match="Job status cannot be updated from canceled to paused"):
        await asyncio.to_thread(client.pause, job_id)
