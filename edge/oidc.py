"""Bearer tokens that are JWTs, verified against an OpenID Connect issuer's published keys (its JWKS).

The keys are fetched with aiohttp (never blocking the event loop), from `oidc_jwks_url` or the
`jwks_uri` of `<issuer>/.well-known/openid-configuration`, and kept `oidc_jwks_cache_seconds`.
A token naming a key the cache lacks (the issuer rotated its keys) makes the keys be fetched
again, but at most once every `oidc_jwks_refetch_seconds`: tokens with made-up key ids cannot make
geomesh hammer the issuer. Every refusal says which check failed; none repeats the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import jwt

from geomesh.errors import ServiceUnavailableError, UnauthorizedError
from geomesh.settings import EdgeSettings, secure_url

log = logging.getLogger(__name__)

FETCH_TIMEOUT = aiohttp.ClientTimeout(total=10)
MAX_DOCUMENT_BYTES = 1 << 20
_SHOWN = 80  # at most this many characters of a claim value appear in an error


class TokenRefused(UnauthorizedError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"Bearer token refused: {reason}")


@dataclass(frozen=True)
class Identity:
    user: str
    admin: bool


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments whose first is a JSON header with an `alg`: worth verifying as a JWT."""
    if token.count(".") != 2:
        return False
    try:
        return "alg" in jwt.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError):  # ValueError: undecodable header bytes kept as surrogates
        return False


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _time(value: Any) -> str:
    try:
        return datetime.fromtimestamp(int(value), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return _shown(value)


class KeySet:
    """The issuer's signing keys by key id, fetched on demand and rate-limited."""

    def __init__(self, settings: EdgeSettings) -> None:
        assert settings.oidc_issuer is not None
        self._issuer = settings.oidc_issuer
        self._jwks_url = settings.oidc_jwks_url
        self._cache_seconds = settings.oidc_jwks_cache_seconds
        self._refetch_seconds = settings.oidc_jwks_refetch_seconds
        self._session: aiohttp.ClientSession | None = None
        self._keys: dict[str | None, dict[str, Any]] | None = None
        self._fetched_at = -float("inf")   # monotonic time of the keys in hand
        self._attempted_at = -float("inf")  # monotonic time of the last fetch, good or not
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=FETCH_TIMEOUT)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def key(self, kid: str | None) -> dict[str, Any]:
        """The JWK the token names, fetching the keys when none are in hand, they are old, or the
        kid is unknown, unless the last fetch was less than `oidc_jwks_refetch_seconds` ago."""
        keys = self._keys
        stale = time.monotonic() - self._fetched_at >= self._cache_seconds
        if keys is None or stale or kid not in keys:
            keys = await self._refresh(kid)
        if kid in keys:
            return keys[kid]
        if kid is None:
            raise TokenRefused("the token names no key (kid) and the issuer publishes several")
        raise TokenRefused(f"the token names key {_shown(kid)}, which the issuer does not publish")

    async def _refresh(self, kid: str | None) -> dict[str | None, dict[str, Any]]:
        async with self._lock:
            # Another request may have fetched while this one waited for the lock.
            keys = self._keys
            fresh = keys is not None and time.monotonic() - self._fetched_at < self._cache_seconds
            if keys is not None and fresh and kid in keys:
                return keys
            wait = self._attempted_at + self._refetch_seconds - time.monotonic()
            if wait > 0:
                if keys is None:
                    raise ServiceUnavailableError(
                        "geomesh could not fetch its OpenID Connect issuer's keys; try again shortly", retry_after=wait
                    )
                return keys
            self._attempted_at = time.monotonic()
            self.fetches += 1
            try:
                keys = self._keys = await self._fetch()
                self._fetched_at = time.monotonic()
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
                log.error("could not fetch the keys of OpenID Connect issuer %s: %s", self._issuer, error)
                if keys is None:
                    raise ServiceUnavailableError(
                        "geomesh could not fetch its OpenID Connect issuer's keys; try again shortly",
                        retry_after=self._refetch_seconds,
                    ) from None
            return keys  # the previous keys when the issuer could not be reached

    async def _fetch(self) -> dict[str | None, dict[str, Any]]:
        if self._jwks_url is None:
            discovery = await self._get_json(self._issuer.rstrip("/") + "/.well-known/openid-configuration")
            if discovery.get("issuer") != self._issuer:
                raise ValueError(f"its discovery document names issuer {discovery.get('issuer')!r}, not {self._issuer!r}")
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise ValueError("its discovery document has no jwks_uri")
            self._jwks_url = secure_url(jwks_uri)
        document = await self._get_json(self._jwks_url)
        keys: dict[str | None, dict[str, Any]] = {}
        published = document.get("keys")
        if not isinstance(published, list):
            raise ValueError(f"{self._jwks_url} is not a JWK set")
        for jwk in published:
            # Only public signing keys: a symmetric key published for all to see signs nothing.
            if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC", "OKP") or jwk.get("use", "sig") != "sig":
                continue
            kid = jwk.get("kid")
            keys[kid if isinstance(kid, str) else None] = jwk
        if len(keys) == 1:
            keys.setdefault(None, next(iter(keys.values())))  # a token without kid may use the only key
        log.info("OpenID Connect issuer %s publishes %d signing keys", self._issuer, len(published))
        return keys

    async def _get_json(self, url: str) -> dict[str, Any]:
        assert self._session is not None, "KeySet.start() was not called"
        async with self._session.get(url, headers={"Accept": "application/json"}) as response:
            if response.status != 200:
                raise ValueError(f"{url} answered {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(1 << 16):
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ValueError(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError(f"{url} did not send a JSON object")
        return document


class OidcVerifier:
    def __init__(self, settings: EdgeSettings) -> None:
        assert settings.oidc_issuer is not None
        self.keys = KeySet(settings)
        self._issuer = settings.oidc_issuer
        self._audience = settings.oidc_audience
        self._algorithms = settings.oidc_algorithms
        self._leeway = settings.oidc_leeway_seconds
        self._user_claim = settings.oidc_user_claim
        self._admin_claim = settings.oidc_admin_claim
        self._admin_values = frozenset(settings.oidc_admin_values)
        if not self._audience:
            log.warning("GEOMESH_EDGE_OIDC_AUDIENCE is not set: tokens of %s are accepted whatever their audience", self._issuer)

    async def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError):
            raise TokenRefused("the token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise TokenRefused(
                f"the token is signed with {_shown(alg)}, which geomesh does not accept (it accepts {', '.join(self._algorithms)})"
            )
        kid = header.get("kid")
        jwk = await self.keys.key(kid if isinstance(kid, str) else None)
        if jwk.get("alg", alg) != alg:
            raise TokenRefused(f"the token is signed with {alg}, but the issuer's key {_shown(kid)} is for {_shown(jwk['alg'])}")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError:
            raise TokenRefused(f"the token is signed with {alg}, which the issuer's key {_shown(kid)} cannot verify") from None
        claims = self._claims(token, key, alg)
        return Identity(self._user(claims), self._admin(claims))

    def _claims(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token, key=key, algorithms=[alg], issuer=self._issuer, audience=self._audience or None, leeway=self._leeway,
                options={"require": ["exp", "iss"], "verify_aud": bool(self._audience)},
            )
        except jwt.InvalidTokenError as error:
            raise TokenRefused(self._reason(error, _unverified(token))) from None

    def _reason(self, error: jwt.InvalidTokenError, claims: Mapping[str, Any]) -> str:
        # The claims are only read to say what was wrong: PyJWT has already refused the token.
        if isinstance(error, jwt.InvalidSignatureError):
            return "the token's signature does not match the issuer's keys"
        if isinstance(error, jwt.ExpiredSignatureError):
            return f"the token expired at {_time(claims.get('exp'))}"
        if isinstance(error, jwt.ImmatureSignatureError):
            nbf = claims.get("nbf")
            if isinstance(nbf, int | float) and nbf > time.time() + self._leeway:
                return f"the token is not valid before {_time(nbf)}"
            return f"the token was issued in the future, at {_time(claims.get('iat'))}"
        if isinstance(error, jwt.MissingRequiredClaimError):
            return f"the token has no {error.claim} claim"
        if isinstance(error, jwt.InvalidAudienceError):
            return f"the token's audience {_shown(claims.get('aud'))} is not geomesh's ({', '.join(self._audience)})"
        if isinstance(error, jwt.InvalidIssuerError):
            return f"the token's issuer {_shown(claims.get('iss'))} is not geomesh's ({self._issuer})"
        if isinstance(error, jwt.InvalidIssuedAtError):
            return "the token's iat claim is not a time"
        return "the token is not a well-formed JWT"

    def _user(self, claims: Mapping[str, Any]) -> str:
        user = claims.get(self._user_claim)
        if not isinstance(user, str) or not user:
            raise TokenRefused(f"the token has no {self._user_claim} claim naming the user")
        return user

    def _admin(self, claims: Mapping[str, Any]) -> bool:
        if self._admin_claim is None:
            return False
        value = claims.get(self._admin_claim)
        if isinstance(value, str):
            values = {value, *value.split()}  # one value, or space-separated ones as in "scope"
        elif isinstance(value, list):
            values = {item for item in value if isinstance(item, str)}
        else:
            return False
        return not self._admin_values.isdisjoint(values)


def _unverified(token: str) -> dict[str, Any]:
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
