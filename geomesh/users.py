"""The users file: who may call the edge, with which credentials, and whether they are admins.

    users:
      - name: alice
        password_hash: $argon2id$v=19$m=65536,t=3,p=4$...   # basic credentials (`geomesh users passwd`)
        token_sha256: [<hex sha256 of a token>]              # bearer tokens, stored hashed
      - name: ops
        tokens: [a-long-random-token]                        # bearer tokens, stored as they are
        admin: true                                          # sees and controls every job

`password_sha256` (an unsalted SHA-256 of the password) is still read from older files, but fast
hashes are cheap to reverse: `geomesh users passwd NAME` replaces it with an argon2 hash. Tokens may
be stored as SHA-256 only because they are long and random (`geomesh users add --token` makes them).

Shared by the edge (edge/auth.py reads and watches the file) and `geomesh users` (which writes it).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import argon2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# RFC 9106's recommended second choice (argon2id, 64 MiB, 3 passes): argon2-cffi's default.
HASHER = argon2.PasswordHasher()


class UserRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    tokens: list[str] = Field(default_factory=list)
    token_sha256: list[str] = Field(default_factory=list)
    password_hash: str | None = None
    password_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    admin: bool = False

    @field_validator("name")
    @classmethod
    def _name_fits_basic_credentials(cls, name: str) -> str:
        if ":" in name or name != name.strip():
            raise ValueError(f"user name {name!r} may not contain ':' nor start or end with spaces")
        return name

    @field_validator("tokens")
    @classmethod
    def _tokens_not_empty(cls, tokens: list[str]) -> list[str]:
        if any(not token for token in tokens):
            raise ValueError("a token may not be empty")
        return tokens

    @field_validator("token_sha256")
    @classmethod
    def _hex_digests(cls, digests: list[str]) -> list[str]:
        for digest in digests:
            if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
                raise ValueError("each token_sha256 must be the 64 hex digits of a SHA-256")
        return [digest.lower() for digest in digests]

    @field_validator("password_hash")
    @classmethod
    def _argon2_phc(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("$argon2"):
            raise ValueError("password_hash must be an argon2 PHC string ($argon2id$...): make one with `geomesh users passwd`")
        return value

    @model_validator(mode="after")
    def _one_password(self) -> UserRecord:
        if self.password_hash and self.password_sha256:
            raise ValueError(f"user {self.name} has both password_hash and password_sha256: keep password_hash only")
        return self

    def token_digests(self) -> list[bytes]:
        """The SHA-256 of every token of this user, plain or stored hashed."""
        return [hashlib.sha256(token.encode()).digest() for token in self.tokens] + [bytes.fromhex(d) for d in self.token_sha256]


class UsersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[UserRecord] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> UsersFile:
        names = [user.name for user in self.users]
        if doubles := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"users named more than once: {', '.join(doubles)}")
        digests = [digest for user in self.users for digest in set(user.token_digests())]
        if len(digests) != len(set(digests)):
            raise ValueError("a token belongs to more than one user")
        return self

    def find(self, name: str) -> UserRecord | None:
        return next((user for user in self.users if user.name == name), None)


def load(path: Path) -> UsersFile:
    """Read and check the file; ValueError naming the file and what is wrong in it."""
    try:
        return UsersFile.model_validate(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise ValueError(f"users file {path} is not valid: {error}") from error


def save(path: Path, users: UsersFile) -> None:
    """Write the file atomically (a temporary file renamed over it), readable by its owner only."""
    document: dict[str, Any] = {"users": [user.model_dump(exclude_defaults=True) for user in users.users]}
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    folder = path.parent
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)  # mode 0600
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def password_matches(user: UserRecord, password: str) -> bool:
    """Blocking (argon2 takes tens of milliseconds and 64 MiB by design): run it off the event loop."""
    if user.password_hash:
        try:
            return HASHER.verify(user.password_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
    if user.password_sha256:
        return hmac.compare_digest(hashlib.sha256(password.encode()).hexdigest(), user.password_sha256.lower())
    return False


@functools.cache
def _nobodys_hash() -> str:
    return HASHER.hash(secrets.token_hex(16))


def burn_time(password: str) -> None:
    """As long as checking a password, for a name that has none: timing does not tell which names exist."""
    try:
        HASHER.verify(_nobodys_hash(), password)
    except argon2.exceptions.VerificationError:
        pass
