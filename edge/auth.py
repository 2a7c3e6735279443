"""Who is calling: a user from the Authorization header (bearer token or basic credentials).

Users come from a YAML file (GEOMESH_EDGE_USERS_FILE):

    users:
      - name: alice
        tokens: [a-long-random-token]
        password_sha256: <hex sha256 of the password>   # for basic credentials, optional
      - name: ops
        tokens: [another-token]
        admin: true                                     # sees and controls every job

Without a file the edge runs single-user: every request belongs to `default_user`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from edge.clients import SETTINGS
from geomesh.errors import UnauthorizedError
from geomesh.v1 import scheduler_pb2

# The WWW-Authenticate value of a 401: the two schemes a client may use.
CHALLENGE = 'Bearer realm="geomesh", Basic realm="geomesh"'


class UserRecord(BaseModel):
    name: str = Field(min_length=1)
    tokens: list[str] = Field(default_factory=list)
    password_sha256: str | None = None
    admin: bool = False


class UsersFile(BaseModel):
    users: list[UserRecord]


@dataclass(frozen=True)
class Caller:
    user: str
    admin: bool = False

    def to_proto(self) -> scheduler_pb2.Caller:
        return scheduler_pb2.Caller(user=self.user, admin=self.admin)


class Authenticator:
    def __init__(self, users: list[UserRecord] | None, default_user: str) -> None:
        self._users = users
        self._default = Caller(default_user)

    @classmethod
    def from_file(cls, path: Path | None, default_user: str) -> Authenticator:
        if path is None:
            return cls(None, default_user)
        try:
            parsed = UsersFile.model_validate(yaml.safe_load(path.read_text()))
        except (OSError, yaml.YAMLError, ValidationError) as error:
            raise ValueError(f"users file {path} is not valid: {error}") from error
        return cls(parsed.users, default_user)

    def authenticate(self, authorization: str | None) -> Caller:
        if self._users is None:
            return self._default
        if not authorization:
            raise UnauthorizedError("Authorization required: send a bearer token or basic credentials")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            user = self._by_token(credentials.strip())
        elif scheme.lower() == "basic":
            user = self._by_password(credentials.strip())
        else:
            raise UnauthorizedError(f"Unsupported authorization scheme {scheme}: use Bearer or Basic")
        if user is None:
            raise UnauthorizedError("The credentials given are not valid")
        return Caller(user.name, user.admin)

    def _by_token(self, token: str) -> UserRecord | None:
        # aiohttp keeps header bytes that are not UTF-8 as surrogates: compare the bytes as sent.
        given = token.encode("utf-8", "surrogateescape")
        for user in self._users or []:
            # Compare every token, in constant time, so timing does not leak which one nearly matched.
            if any(hmac.compare_digest(given, known.encode()) for known in user.tokens):
                return user
        return None

    def _by_password(self, encoded: str) -> UserRecord | None:
        try:
            name, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
            raise UnauthorizedError("Basic credentials must be base64 of user:password") from None
        digest = hashlib.sha256(password.encode()).hexdigest()
        for user in self._users or []:
            if user.name == name and user.password_sha256 and hmac.compare_digest(digest, user.password_sha256.lower()):
                return user
        return None


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
CALLER = web.RequestKey("caller", Caller)


def caller(request: web.Request) -> Caller:
    """The authenticated caller of this request (401 when the credentials are missing or wrong)."""
    if CALLER not in request:
        request[CALLER] = request.app[AUTHENTICATOR].authenticate(request.headers.get("Authorization"))
    return request[CALLER]


def bearer_token(request: web.Request) -> str:
    """The caller's bearer token, to be sent on to the data hosts configured for it; "" if none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def install(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[AUTHENTICATOR] = Authenticator.from_file(settings.users_file, settings.default_user)
