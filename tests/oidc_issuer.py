"""An OpenID Connect issuer for the tests: discovery and a JWKS on 127.0.0.1, RSA keys made here, real JWTs.

It stands in for Earthdata Login or any OIDC provider: the keys it publishes can change while it
runs (rotation), and it counts how often its key set is fetched.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.loopback import serve_app

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key, made once per test session for each name."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(name: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def algorithm_of(key: SigningKey) -> str:
    return "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"


def public_jwk(kid: str, key: SigningKey) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    return {**algorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": algorithm_of(key), "use": "sig"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A JWT signed by hand: HS256 with `secret`, or no signature at all (None), as an attacker would."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest() if secret is not None else b""
    return f"{signing_input}.{_b64(signature)}"


@dataclass
class Issuer:
    url: str = ""
    keys: dict[str, SigningKey] = field(default_factory=dict)  # kid -> private key, all published
    jwks_fetches: int = 0

    def publish(self, kid: str, key: SigningKey) -> None:
        self.keys[kid] = key

    def claims(self, **claims: Any) -> dict[str, Any]:
        """Valid claims for geomesh, changed by `claims` (None leaves one out)."""
        now = int(time.time())
        every = {"iss": self.url, "aud": "geomesh", "sub": "jane", "iat": now, "exp": now + 600, **claims}
        return {name: value for name, value in every.items() if value is not None}

    def token(self, kid: str = "k1", key: SigningKey | None = None, **claims: Any) -> str:
        """A real JWT signed with the published key `kid` (or `key`, published or not)."""
        key = key or self.keys[kid]
        return jwt.encode(self.claims(**claims), key, algorithm=algorithm_of(key), headers={"kid": kid})

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response({"issuer": self.url, "jwks_uri": f"{self.url}/keys", "id_token_signing_alg_values_supported": ["RS256"]})

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": [public_jwk(kid, key) for kid, key in self.keys.items()]})


@asynccontextmanager
async def serve_issuer() -> AsyncIterator[Issuer]:
    issuer = Issuer()
    issuer.publish("k1", rsa_key("k1"))
    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", issuer._discovery)
    app.router.add_get("/keys", issuer._jwks)
    async with serve_app(app) as url:
        issuer.url = url
        yield issuer
