"""Bearer JWTs from an OpenID Connect issuer: a real one on 127.0.0.1 (tests/oidc_issuer.py) signing real tokens."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from harmony import Client, Collection, Environment, Request
from pydantic import ValidationError

from edge.app import create_app
from edge.oidc import OidcVerifier, TokenRefused
from geomesh.settings import EdgeSettings
from tests.conftest import HARMONY_EXAMPLE, USERS, Mesh
from tests.loopback import serve_app
from tests.oidc_issuer import Issuer, ec_key, forge, rsa_key, serve_issuer

ADMINS = {"oidc_admin_claim": "groups", "oidc_admin_values": ["geomesh-admins"]}


@pytest_asyncio.fixture(loop_scope="session")
async def issuer() -> AsyncIterator[Issuer]:
    async with serve_issuer() as running:
        yield running


@asynccontextmanager
async def oidc_edge(mesh: Mesh, issuer: Issuer, **settings: Any) -> AsyncIterator[Mesh]:
    options = {"oidc_issuer": issuer.url, "oidc_audience": ["geomesh"], **ADMINS, **settings}
    app = create_app(EdgeSettings(port=0, scheduler_address=mesh.scheduler_address, catalog_address=mesh.catalog_address, **options))
    async with serve_app(app) as url:
        yield dataclasses.replace(mesh, url=url)


@pytest_asyncio.fixture(loop_scope="session")
async def edge(mesh: Mesh, issuer: Issuer) -> AsyncIterator[Mesh]:
    async with oidc_edge(mesh, issuer) as running:
        yield running


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


async def get(url: str, token: str | None = None, **headers: str) -> Answer:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers, allow_redirects=False) as response:
        return Answer(response.status, dict(response.headers), await response.text())


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_valid_token_is_its_claimed_user_and_a_group_claim_makes_admins(edge: Mesh, issuer: Issuer) -> None:
    jane = issuer.token(sub="jane")
    made = await get(f"{edge.rangeset()}?maxResults=2&label=jwt", jane)
    assert made.status == 303, made.text
    job_id = made.json()["jobID"]
    job = await get(f"{edge.url}/jobs/{job_id}", jane)
    assert (job.status, job.json()["username"]) == (200, "jane")

    assert (await get(f"{edge.url}/jobs/{job_id}", issuer.token(sub="joe", groups=["staff"]))).status == 404
    admin = await get(f"{edge.url}/jobs/{job_id}", issuer.token(sub="ops", groups=["staff", "geomesh-admins"]))
    assert (admin.status, admin.json()["username"]) == (200, "jane")
    assert issuer.jwks_fetches == 1  # one fetch served every request


async def test_an_es256_token_of_a_published_ec_key_is_accepted(edge: Mesh, issuer: Issuer) -> None:
    issuer.publish("ec1", ec_key("ec1"))
    assert (await get(f"{edge.url}/jobs", issuer.token("ec1"))).status == 200


def _refused_tokens(issuer: Issuer) -> dict[str, tuple[str, str]]:
    """Case -> (token, what the description must say)."""
    now = int(time.time())
    claims = issuer.claims()
    public_pem = rsa_key("k1").public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    genuine = issuer.token()
    head, _, signature = genuine.split(".")
    tampered_body = forge({"alg": "RS256"}, {**claims, "sub": "root", "groups": ["geomesh-admins"]}, None).split(".")[1]
    return {
        "expired": (issuer.token(exp=now - 3600), f"the token expired at {iso(now - 3600)}"),
        "not yet valid": (issuer.token(nbf=now + 3600), f"the token is not valid before {iso(now + 3600)}"),
        "issued in the future": (issuer.token(iat=now + 3600), f"the token was issued in the future, at {iso(now + 3600)}"),
        "wrong audience": (issuer.token(aud="someone-else"), "the token's audience someone-else is not geomesh's (geomesh)"),
        "wrong issuer": (issuer.token(iss="https://idp.example.org"), f"the token's issuer https://idp.example.org is not geomesh's ({issuer.url})"),
        "unpublished key": (issuer.token("k9", rsa_key("k9")), "the token names key k9, which the issuer does not publish"),
        "another key under a published kid": (issuer.token("k1", rsa_key("intruder")), "the token's signature does not match the issuer's keys"),
        "tampered claims": (f"{head}.{tampered_body}.{signature}", "the token's signature does not match the issuer's keys"),
        "alg none": (forge({"alg": "none", "kid": "k1"}, claims, None), "the token is signed with none, which geomesh does not accept"),
        "HS256 with the public key": (
            forge({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims, public_pem), "the token is signed with HS256, which geomesh does not accept",
        ),
        "no exp": (issuer.token(exp=None), "the token has no exp claim"),
        "no iss": (issuer.token(iss=None), "the token has no iss claim"),
        "no user": (issuer.token(sub=None), "the token has no sub claim naming the user"),
    }


async def test_each_refused_token_is_a_401_saying_which_check_failed_without_the_token(edge: Mesh, issuer: Issuer) -> None:
    for case, (token, reason) in _refused_tokens(issuer).items():
        answer = await get(f"{edge.url}/jobs", token)
        assert answer.status == 401, (case, answer.text)
        assert answer.json()["code"] == "harmony.UnauthorizedError", case
        assert answer.json()["description"].startswith(f"Error: Bearer token refused: {reason}"), (case, answer.text)
        assert "Bearer" in answer.headers["WWW-Authenticate"]
        for piece in (token, *[part for part in token.split(".") if len(part) > 8]):
            assert piece not in answer.text and not any(piece in value for value in answer.headers.values()), case
    # A bearer token that is not a JWT is simply not a user's (no users file here).
    answer = await get(f"{edge.url}/jobs", "not.a-jwt.at-all")
    assert (answer.status, answer.json()["description"]) == (401, "Error: The credentials given are not valid")


async def test_a_rotated_key_is_fetched_when_a_token_names_it(mesh: Mesh, issuer: Issuer) -> None:
    async with oidc_edge(mesh, issuer, oidc_jwks_refetch_seconds=0.5) as edge:
        assert (await get(f"{edge.url}/jobs", issuer.token())).status == 200
        assert issuer.jwks_fetches == 1
        issuer.publish("k2", rsa_key("k2"))  # the issuer rotates: new tokens are signed with k2
        token = issuer.token("k2")
        deadline = time.monotonic() + 10
        while (answer := await get(f"{edge.url}/jobs", token)).status != 200:
            # Refused only while the last fetch is too recent to fetch again.
            assert answer.status == 401 and "names key k2" in answer.text, answer.text
            assert time.monotonic() < deadline, "the rotated key was never fetched"
            await asyncio.sleep(0.05)
        assert issuer.jwks_fetches == 2
        assert (await get(f"{edge.url}/jobs", issuer.token("k1"))).status == 200  # k1, still published and cached


async def test_made_up_key_ids_do_not_make_the_keys_be_fetched_again(mesh: Mesh, issuer: Issuer) -> None:
    async with oidc_edge(mesh, issuer, oidc_jwks_refetch_seconds=60) as edge:
        # Cold: requests arriving together share one fetch.
        answers = await asyncio.gather(*(get(f"{edge.url}/jobs", issuer.token()) for _ in range(10)))
        assert [a.status for a in answers] == [200] * 10 and issuer.jwks_fetches == 1
        flood = [issuer.token(f"random-{i}", rsa_key("k1")) for i in range(40)]
        answers = await asyncio.gather(*(get(f"{edge.url}/jobs", token) for token in flood))
        assert {a.status for a in answers} == {401}
        assert all("which the issuer does not publish" in a.text for a in answers)
        assert issuer.jwks_fetches == 1


async def test_an_unreachable_issuer_is_a_503_to_try_again(mesh: Mesh, issuer: Issuer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens there once closed
    async with oidc_edge(mesh, issuer, oidc_issuer=closed) as edge:
        for _ in range(2):  # the second within the refetch interval: answered without trying again
            answer = await get(f"{edge.url}/jobs", issuer.token())
            assert answer.status == 503, answer.text
            assert answer.json()["code"] == "harmony.ServiceUnavailableError" and "Retry-After" in answer.headers
            assert closed not in answer.text


async def test_users_file_and_issuer_together(mesh: Mesh, issuer: Issuer, tmp_path: Path) -> None:
    users_file = tmp_path / "users.yml"
    users_file.write_text(USERS)
    async with oidc_edge(mesh, issuer, users_file=users_file) as edge:
        assert (await get(f"{edge.url}/jobs", "alice-token")).status == 200
        assert (await get(f"{edge.url}/jobs", issuer.token())).status == 200
        assert (await get(f"{edge.url}/jobs", "nope")).status == 401
        assert (await get(f"{edge.url}/jobs", issuer.token(exp=int(time.time()) - 3600))).status == 401
        basic = "Basic " + base64.b64encode(b"alice:wonderland").decode()
        assert (await get(f"{edge.url}/jobs", Authorization=basic)).status == 200


async def test_earthdata_login_style_tokens_uid_claim_and_explicit_key_url(issuer: Issuer) -> None:
    """Earthdata Login publishes its keys at a fixed URL (no discovery) and names the user in `uid`."""
    settings = EdgeSettings(port=0, oidc_issuer="Earthdata Login", oidc_jwks_url=f"{issuer.url}/keys", oidc_user_claim="uid",
                            oidc_admin_claim="roles", oidc_admin_values=["admin"])
    verifier = OidcVerifier(settings)
    await verifier.keys.start()
    try:
        identity = await verifier.verify(issuer.token(iss="Earthdata Login", uid="edl_user", sub=None, aud=None))
        assert (identity.user, identity.admin) == ("edl_user", False)
        admin = await verifier.verify(issuer.token(iss="Earthdata Login", uid="boss", roles="reader admin"))
        assert (admin.user, admin.admin) == ("boss", True)
        with pytest.raises(TokenRefused, match="has no uid claim"):
            await verifier.verify(issuer.token(iss="Earthdata Login"))
    finally:
        await verifier.keys.close()


@pytest.fixture
def harmony_client(edge: Mesh, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    monkeypatch.setenv("LOCALHOST_PORT", edge.url.rsplit(":", 1)[1])
    harmony = Client(env=Environment.LOCAL, token=issuer.token(sub="harmony-user"), check_interval=0.1)
    yield harmony
    harmony.executor.shutdown(wait=False)


async def test_harmony_py_sends_the_jwt_as_its_bearer_token(harmony_client: Client) -> None:
    job_id = await asyncio.to_thread(harmony_client.submit, Request(collection=Collection(id=HARMONY_EXAMPLE), max_results=2))
    assert (await asyncio.to_thread(harmony_client.result_json, job_id))["username"] == "harmony-user"


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"oidc_issuer": "http://idp.example.org"}, "must be an https:// URL"),
        ({"oidc_issuer": "https://idp.example.org", "oidc_algorithms": "RS256,HS256"}, "must be some of"),
        ({"oidc_issuer": "https://idp.example.org", "oidc_algorithms": "none"}, "must be some of"),
        ({"oidc_issuer": "https://idp.example.org", "oidc_admin_claim": "groups"}, "go together"),
        ({"oidc_jwks_url": "https://idp.example.org/keys"}, "need oidc_issuer"),
        ({"oidc_issuer": "x", "oidc_jwks_url": "http://idp.example.org/keys"}, "must be an https:// URL"),
    ],
)
def test_unsafe_or_incomplete_oidc_settings_are_refused_at_start(settings: dict[str, str], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        EdgeSettings(port=0, **settings)


def test_oidc_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOMESH_EDGE_OIDC_ISSUER", "https://urs.earthdata.nasa.gov")
    monkeypatch.setenv("GEOMESH_EDGE_OIDC_AUDIENCE", "geomesh, harmony")
    monkeypatch.setenv("GEOMESH_EDGE_OIDC_ALGORITHMS", "RS256")
    settings = EdgeSettings()
    assert (settings.oidc_audience, settings.oidc_algorithms, settings.oidc_user_claim) == (["geomesh", "harmony"], ["RS256"], "sub")
