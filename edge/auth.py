"""Who is calling: a user from the Authorization header, checked before any handler runs.

Two sources of users, either or both configured:
- the users file (GEOMESH_EDGE_USERS_FILE, format in geomesh/users.py): bearer tokens and basic
  credentials (argon2 password hashes), reread when the file changes;
- an OpenID Connect issuer (GEOMESH_EDGE_OIDC_*, see edge/oidc.py): bearer tokens that are JWTs.
Without either the edge runs single-user: every request belongs to `default_user`.

With users configured, `middleware` authenticates every request before its handler runs, and so
before any byte of its body is read (a refused request with a body is answered and its connection
closed; `Expect: 100-continue` gets the 401 instead of the 100). Only PUBLIC_ROUTES, which tell
nothing about anyone's data, answer without credentials: the edge's root, and each collection's
OGC landing page, /api, /conformance and /collections (the collection's variables). /metrics is an
admin's (edge/app.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from edge.api.common import COVERAGES
from edge.clients import SETTINGS
from edge.errors import error_response
from edge.oidc import OidcVerifier, looks_like_jwt
from geomesh import logs
from geomesh import users as users_file
from geomesh.errors import GeomeshError, UnauthorizedError
from geomesh.settings import EdgeSettings
from geomesh.users import UserRecord, UsersFile
from geomesh.v1 import scheduler_pb2

log = logging.getLogger(__name__)

_COLLECTION = "/{collectionId}/" + COVERAGES
# Route patterns (as registered) that need no credentials; a trailing slash is a route of its own.
PUBLIC_ROUTES = frozenset(
    {"/", "/health", "/readiness"}
    | {_COLLECTION + page + slash for page in ("", "/api", "/conformance", "/collections") for slash in ("", "/")}
    | {_COLLECTION + "/collections/{variableId}"}
)
RELOAD_SECONDS = 1.0  # how often the users file's size and time are looked at
PASSWORD_CHECKS = 2  # argon2 checks at once (each takes ~64 MiB and a core for a fraction of a second)
_REMEMBERED = 1024  # verified basic credentials remembered, so each request does not pay argon2 again


@dataclass(frozen=True)
class Caller:
    user: str
    admin: bool = False

    def to_proto(self) -> scheduler_pb2.Caller:
        return scheduler_pb2.Caller(user=self.user, admin=self.admin)


class UsersSource:
    """The users file as last read successfully; `poll` rereads it when its size, time or inode change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned: set[str] = set()
        self._signature = self._stat()
        self._apply(users_file.load(path))  # at start an invalid file is fatal

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _apply(self, parsed: UsersFile) -> None:
        for user in parsed.users:
            if user.password_sha256 and user.name not in self._warned:
                self._warned.add(user.name)
                log.warning("user %s's password is stored as an unsalted SHA-256 (password_sha256), fast to reverse: "
                            "run `geomesh users passwd %s` to store an argon2 hash instead", user.name, user.name)
        self.users = parsed
        self.tokens = [(digest, user) for user in parsed.users for digest in user.token_digests()]

    def poll(self) -> None:
        """Blocking (a stat, and a read when the file changed): run it off the event loop."""
        signature = self._stat()
        if signature == self._signature:
            return
        self._signature = signature
        try:
            parsed = users_file.load(self.path)
        except ValueError as error:  # logged once per change of the file
            log.error("%s; the users read before are kept", error)
            return
        self._apply(parsed)
        log.info("users file %s reread: %d users", self.path, len(parsed.users))

    def by_token(self, token: str) -> UserRecord | None:
        # aiohttp keeps header bytes that are not UTF-8 as surrogates: hash the bytes as sent.
        given = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for digest, user in self.tokens:  # every one, in constant time: timing tells nothing
            if hmac.compare_digest(given, digest):
                found = user
        return found


class Authenticator:
    def __init__(self, users: UsersSource | None, oidc: OidcVerifier | None, default_user: str) -> None:
        self.users = users
        self.oidc = oidc
        self.default = Caller(default_user)
        self._password_checks = asyncio.Semaphore(PASSWORD_CHECKS)
        self._remembered: OrderedDict[bytes, str] = OrderedDict()
        self._secret = os.urandom(32)  # keys the remembered credentials, which are never stored as given
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> Authenticator:
        users = UsersSource(settings.users_file) if settings.users_file is not None else None
        oidc = OidcVerifier(settings) if settings.oidc_issuer is not None else None
        return cls(users, oidc, settings.default_user)

    @property
    def configured(self) -> bool:
        return self.users is not None or self.oidc is not None

    async def start(self) -> None:
        if self.oidc is not None:
            await self.oidc.keys.start()
        if self.users is not None:
            self._watcher = asyncio.create_task(self._watch(self.users))

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self.oidc is not None:
            await self.oidc.keys.close()

    async def _watch(self, users: UsersSource) -> None:
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            try:
                await asyncio.to_thread(users.poll)
            except Exception:  # noqa: BLE001 - keep watching whatever happened to one look
                log.exception("could not look at users file %s", users.path)

    async def authenticate(self, authorization: str | None) -> Caller:
        if not self.configured:
            return self.default
        schemes = "a bearer token or basic credentials" if self.users is not None else "a bearer token"
        if not authorization:
            raise UnauthorizedError(f"Authorization required: send {schemes}")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return await self._by_token(credentials.strip())
        if scheme.lower() == "basic" and self.users is not None:
            user = await self._by_password(self.users, credentials.strip())
            if user is None:
                raise UnauthorizedError("The credentials given are not valid")
            return Caller(user.name, user.admin)
        raise UnauthorizedError(f"Unsupported authorization scheme {scheme}: send {schemes}")

    async def _by_token(self, token: str) -> Caller:
        user = self.users.by_token(token) if self.users is not None else None
        if user is not None:
            return Caller(user.name, user.admin)
        if self.oidc is not None and looks_like_jwt(token):
            identity = await self.oidc.verify(token)
            return Caller(identity.user, identity.admin)
        raise UnauthorizedError("The credentials given are not valid")

    async def _by_password(self, users: UsersSource, encoded: str) -> UserRecord | None:
        try:
            name, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
            raise UnauthorizedError("Basic credentials must be base64 of user:password") from None
        user = users.users.find(name)
        stored = (user.password_hash or user.password_sha256) if user is not None else None
        if user is None or stored is None:
            async with self._password_checks:
                await asyncio.to_thread(users_file.burn_time, password)
            return None
        remembered = hmac.new(self._secret, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        # Valid while the file holds the same hash: a changed password forgets the old one.
        if hmac.compare_digest(self._remembered.get(remembered, ""), stored):
            self._remembered.move_to_end(remembered)
            return user
        if user.password_hash:
            async with self._password_checks:
                matches = await asyncio.to_thread(users_file.password_matches, user, password)
        else:
            matches = users_file.password_matches(user, password)  # a fast legacy SHA-256
        if not matches:
            return None
        self._remembered[remembered] = stored
        while len(self._remembered) > _REMEMBERED:
            self._remembered.popitem(last=False)
        return user


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
CALLER = web.RequestKey("caller", Caller)
_REFUSAL = web.RequestKey("refusal", GeomeshError)
# Handlers that render errors their own way (WMS: XML exception reports), refusals included.
Renderer = Callable[[GeomeshError], web.Response]
RENDERERS = web.AppKey("error_renderers", dict)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def caller(request: web.Request) -> Caller:
    """The caller `middleware` authenticated (the default user when no users are configured)."""
    if CALLER in request:
        return request[CALLER]
    if not request.app[AUTHENTICATOR].configured:
        return request.app[AUTHENTICATOR].default
    raise RuntimeError(f"{request.path} is a public route: it has no caller")


def known_user(request: web.Request) -> str | None:
    """Who a request was answered for, for its log line: None for a public route or a refused caller."""
    if CALLER in request:
        return request[CALLER].user
    return None if request.app[AUTHENTICATOR].configured else request.app[AUTHENTICATOR].default.user


def bearer_token(request: web.Request) -> str:
    """The caller's bearer token, to be sent on to the data hosts configured for it; "" if none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _public(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in PUBLIC_ROUTES


async def _check(request: web.Request) -> GeomeshError | None:
    """Authenticate once per request (the expect handler may have already): the refusal, if any."""
    if CALLER not in request and _REFUSAL not in request:
        try:
            request[CALLER] = await request.app[AUTHENTICATOR].authenticate(request.headers.get("Authorization"))
            logs.user.set(request[CALLER].user)
        except GeomeshError as error:
            request[_REFUSAL] = error
    return request.get(_REFUSAL)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.app[AUTHENTICATOR].configured:
        logs.user.set(request.app[AUTHENTICATOR].default.user)
        return await handler(request)
    if _public(request):
        return await handler(request)
    refusal = await _check(request)
    if refusal is None:
        return await handler(request)
    render: Renderer = request.app[RENDERERS].get(request.match_info.handler, error_response)
    response = render(refusal)
    if request.body_exists and not request.content.is_eof():
        # Answer and hang up rather than let aiohttp read (and drop) a body nobody may send.
        response.force_close()  # says "Connection: close"
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
    return response


async def expect_handler(request: web.Request) -> None:
    """`Expect: 100-continue`: the body is asked for only from a caller who may send it; a refused
    one gets the middleware's 401 without having sent it."""
    if request.app[AUTHENTICATOR].configured and not _public(request) and await _check(request) is not None:
        return
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version == HttpVersion11:  # as aiohttp's own expect handler does
        if expect.lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


def checked(routes: Iterable[web.AbstractRouteDef]) -> list[web.AbstractRouteDef]:
    """The routes, with `expect_handler` answering their `Expect: 100-continue`."""
    return [
        web.RouteDef(route.method, route.path, route.handler, {"expect_handler": expect_handler, **route.kwargs})
        if isinstance(route, web.RouteDef) else route
        for route in routes
    ]


def renders_errors(app: web.Application, handler: Handler, render: Renderer) -> None:
    """Refusals of requests to `handler` are rendered by `render` (rather than as Harmony JSON)."""
    app[RENDERERS][handler] = render


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    authenticator = app[AUTHENTICATOR]
    await authenticator.start()
    yield
    await authenticator.close()


def install(app: web.Application) -> None:
    app[AUTHENTICATOR] = Authenticator.from_settings(app[SETTINGS])
    app[RENDERERS] = {}
    app.cleanup_ctx.append(_lifecycle)
