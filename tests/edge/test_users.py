"""Users own their jobs: others get 404 on every route, admins see everything, no credentials get 401
(before any body is read); the users file holds argon2 hashes and is reread when it changes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from edge.app import create_app
from edge.auth import PUBLIC_ROUTES, UsersSource
from geomesh import users
from geomesh.settings import EdgeSettings
from geomesh.users import UserRecord, UsersFile
from tests.conftest import ATL08, HARMONY_EXAMPLE, Mesh
from tests.edge.test_jobs import call, wait_for
from tests.loopback import serve_app

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


# -- authentication before the handler runs -------------------------------------------------------

async def test_only_the_public_routes_answer_without_credentials(secured: Mesh) -> None:
    coverages = secured.coverages().removeprefix(secured.url)
    public = ["/", coverages, f"{coverages}/", f"{coverages}/api", f"{coverages}/conformance/",
              f"{coverages}/collections", f"{coverages}/collections/all"]
    for path in public:
        assert (await call("GET", secured.url + path)).status_code == 200, path
    data = f"/data/granules/{HARMONY_EXAMPLE}/"
    for path in (data, "/no/such/page", "/jobs", "/capabilities?collectionId=x", f"{coverages}/collections/all/coverage/rangeset"):
        response = await call("GET", secured.url + path)
        assert response.status_code == 401, path
        assert response.json()["code"] == "harmony.UnauthorizedError"


def test_every_public_route_is_a_route_of_the_edge() -> None:
    registered = {resource.canonical for resource in create_app(EdgeSettings(port=0)).router.resources()}
    assert PUBLIC_ROUTES <= registered


async def test_metrics_are_for_admins(secured: Mesh) -> None:
    assert (await call("GET", f"{secured.url}/metrics")).status_code == 401
    assert (await call("GET", f"{secured.url}/metrics", headers=ALICE)).status_code == 403
    scraped = await call("GET", f"{secured.url}/metrics", headers=ROOT)
    assert scraped.status_code == 200 and "geomesh_http_requests_total" in scraped.text


async def test_granule_files_are_served_to_users_only(secured: Mesh) -> None:
    job = await call("GET", f"{secured.rangeset(ATL08)}?maxResults=1", headers=ALICE)  # a direct download
    href = next(link["href"] for link in job.json()["links"] if link["rel"] == "data")
    assert "/data/" in href
    assert (await call("GET", href)).status_code == 401
    response = await call("GET", href, headers=ALICE)
    assert response.status_code == 200 and response.content.startswith(b"\x89HDF")


async def _exchange(url: str, data: bytes, *, then: bytes = b"", wait: float = 10) -> tuple[bytes, bytes]:
    """Send raw bytes; the first line of the answer, then (after sending `then`) the rest until the server closes."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(data)
        await writer.drain()
        first = await asyncio.wait_for(reader.readline(), wait)
        writer.write(then)
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), wait)  # to the end: the server hangs up
        return first, rest
    finally:
        writer.close()


def _head(method: str, path: str, length: int, content_type: str, *extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: geomesh", f"Content-Type: {content_type}", f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_refused_post_is_answered_before_its_body_is_read(secured: Mesh) -> None:
    path = urlsplit(secured.rangeset()).path
    head = _head("POST", path, 15 * 1024 * 1024, "multipart/form-data; boundary=b")
    # 15 MiB announced, 1 KiB sent: the 401 comes anyway, and the connection is closed.
    first, rest = await _exchange(secured.url, head + b"--b\r\n" + b"x" * 1024)
    assert first.startswith(b"HTTP/1.1 401 "), first
    assert b"harmony.UnauthorizedError" in rest and b"Connection: close" in rest


async def test_with_credentials_the_body_is_waited_for(secured: Mesh) -> None:
    body = b'{"jobIDs": []}'
    head = _head("POST", "/jobs/status", len(body) + 100, "application/json", "Authorization: Bearer alice-token")
    parts = urlsplit(secured.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head + body)
        with pytest.raises(TimeoutError):  # the handler reads the body, which is not all there yet
            await asyncio.wait_for(reader.readline(), 0.3)
        writer.write(b" " * 100)
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()


async def test_expect_100_continue_is_answered_401_when_the_caller_may_not_send(secured: Mesh) -> None:
    body = b'{"jobIDs": []}'
    refused, rest = await _exchange(secured.url, _head("POST", "/jobs/status", 1 << 20, "application/json", "Expect: 100-continue"))
    assert refused.startswith(b"HTTP/1.1 401 ") and b"harmony.UnauthorizedError" in rest
    head = _head("POST", "/jobs/status", len(body), "application/json", "Expect: 100-continue",
                 "Authorization: Bearer alice-token", "Connection: close")
    go_on, rest = await _exchange(secured.url, head, then=body)
    assert go_on == b"HTTP/1.1 100 Continue\r\n", go_on
    assert b"HTTP/1.1 200 " in rest and b"jobStatuses" in rest


# -- the users file: argon2, hashed tokens, rereading -----------------------------------------------

def _basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


@pytest_asyncio.fixture(loop_scope="session")
async def hashed(mesh: Mesh, tmp_path: Path) -> AsyncIterator[tuple[Mesh, Path]]:
    """An edge whose users file holds argon2 password hashes and a token stored as its SHA-256."""
    path = tmp_path / "users.yml"
    users.save(path, UsersFile(users=[
        UserRecord(name="dora", password_hash=users.hash_password("explorer")),
        UserRecord(name="eve", token_sha256=[users.token_sha256("eve-long-random-token")], admin=True),
    ]))
    app = create_app(EdgeSettings(port=0, scheduler_address=mesh.scheduler_address, catalog_address=mesh.catalog_address, users_file=path))
    async with serve_app(app) as url:
        yield dataclasses.replace(mesh, url=url), path


async def test_argon2_passwords_and_hashed_tokens(hashed: tuple[Mesh, Path]) -> None:
    edge, _ = hashed
    assert (await call("GET", f"{edge.url}/jobs", headers=_basic("dora", "explorer"))).status_code == 200
    assert (await call("GET", f"{edge.url}/jobs", headers=_basic("dora", "explorer"))).status_code == 200  # remembered
    for headers in (_basic("dora", "wrong"), _basic("nobody", "explorer"), _basic("eve", "")):
        assert (await call("GET", f"{edge.url}/jobs", headers=headers)).status_code == 401, headers
    assert (await call("GET", f"{edge.url}/jobs", headers={"Authorization": "Bearer eve-long-random-token"})).status_code == 200
    digest = users.token_sha256("eve-long-random-token")
    assert (await call("GET", f"{edge.url}/jobs", headers={"Authorization": f"Bearer {digest}"})).status_code == 401


async def _until(condition: object, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the edge did not reread its users file"
        await asyncio.sleep(0.05)


async def test_the_users_file_is_reread_when_it_changes(hashed: tuple[Mesh, Path], caplog: pytest.LogCaptureFixture) -> None:
    edge, path = hashed

    async def status(headers: dict[str, str]) -> int:
        return (await call("GET", f"{edge.url}/jobs", headers=headers)).status_code

    frank = {"Authorization": "Bearer frank-token"}
    assert await status(frank) == 401
    listed = users.load(path)
    listed.users.append(UserRecord(name="frank", tokens=["frank-token"]))
    users.save(path, listed)

    async def frank_in() -> bool:
        return await status(frank) == 200

    await _until(frank_in)
    # dora's remembered password is forgotten with the hash it was checked against.
    assert await status(_basic("dora", "explorer")) == 200
    dora = users.load(path)
    dora.users[0].password_hash = users.hash_password("new password")
    users.save(path, dora)

    async def old_password_refused() -> bool:
        return await status(_basic("dora", "explorer")) == 401

    await _until(old_password_refused)
    assert await status(_basic("dora", "new password")) == 200

    caplog.set_level(logging.ERROR, logger="edge.auth")
    path.write_text("users: [{name: frank, tokens: [frank-token], color: blue}]")  # an unknown field

    async def error_logged() -> bool:
        return any("is not valid" in record.getMessage() for record in caplog.records)

    await _until(error_logged)
    assert await status(frank) == 200 and await status(_basic("dora", "new password")) == 200  # kept


def test_a_broken_users_file_is_reported_once_and_legacy_hashes_warned_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge.auth")
    path = tmp_path / "users.yml"
    path.write_text("users:\n  - name: old\n    password_sha256: " + "ab" * 32 + "\n")
    source = UsersSource(path)
    path.write_text("users: [not a user]\n")
    for _ in range(3):
        source.poll()
    path.write_text("users:\n  - name: old\n    password_sha256: " + "cd" * 32 + "\n    admin: true\n")
    source.poll()
    messages = [record.getMessage() for record in caplog.records]
    assert sum("is not valid" in message for message in messages) == 1
    legacy = [message for message in messages if "password_sha256" in message]
    assert len(legacy) == 1 and "old" in legacy[0] and "geomesh users passwd old" in legacy[0]
    assert source.users.users[0].admin  # the repaired file was read


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("users: [{name: a, tokens: [t]}, {name: a, tokens: [u]}]", "named more than once: a"),
        ("users: [{name: a, tokens: [t]}, {name: b, tokens: [t]}]", "more than one user"),
        ("users: [{name: a, password_hash: 5f4dcc3b5aa765d61d8327deb882cf99}]", "argon2 PHC string"),
        ("users: [{name: 'a:b', tokens: [t]}]", "may not contain ':'"),
        ("users: [{name: a, token: t}]", "token"),
    ],
)
def test_users_files_that_would_mislead_are_refused_naming_the_problem(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "users.yml"
    path.write_text(text)
    with pytest.raises(ValueError, match=words) as raised:
        users.load(path)
    assert str(path) in str(raised.value)

