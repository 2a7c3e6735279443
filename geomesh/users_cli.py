"""`geomesh users add|passwd|remove|list`: the edge's users file (format in geomesh/users.py).

Each change rewrites the file atomically, readable by its owner only; a running edge rereads it
within a second. Passwords are asked for without echo and stored as argon2 hashes; a token made by
`add --token` is printed once and stored as its SHA-256 only.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import click

from geomesh import users
from geomesh.users import UserRecord, UsersFile

_FILE = click.option(
    "--file", "path", type=click.Path(path_type=Path, dir_okay=False), required=True, envvar="GEOMESH_EDGE_USERS_FILE",
    show_envvar=True, help="The users file (created by `add` when missing).",
)


def _read(path: Path, must_exist: bool = True) -> UsersFile:
    if not path.exists():
        if must_exist:
            raise click.ClickException(f"{path} does not exist: make it with `geomesh users add NAME --file {path}`")
        return UsersFile()
    try:
        return users.load(path)
    except ValueError as error:
        raise click.ClickException(str(error)) from None


def _user(listed: UsersFile, name: str, path: Path) -> UserRecord:
    user = listed.find(name)
    if user is None:
        raise click.ClickException(f"{path} has no user {name}; users: {', '.join(u.name for u in listed.users) or 'none'}")
    return user


def _write(path: Path, listed: UsersFile) -> None:
    try:
        users.save(path, UsersFile.model_validate(listed.model_dump()))
    except ValueError as error:  # pydantic's ValidationError too: the change made the file invalid
        raise click.ClickException(str(error)) from None


@click.group("users")
def users_command() -> None:
    """The edge's users: who may call it, with which password or tokens, and who is an admin."""


@users_command.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="The user sees and controls every job.")
@click.option("--password", prompt=True, prompt_required=False, hide_input=True, confirmation_prompt=True,
              help="Give a password, asked for without echo.")
@click.option("--token", "make_token", is_flag=True, help="Make a random bearer token, printed once.")
@_FILE
def add(name: str, admin: bool, password: str | None, make_token: bool, path: Path) -> None:
    """Add user NAME, with a password (--password), a token (--token) or both."""
    listed = _read(path, must_exist=False)
    if listed.find(name) is not None:
        raise click.ClickException(f"{path} already has a user {name}: `geomesh users passwd {name}` changes the password")
    if password is None and not make_token:
        raise click.UsageError("give --password, --token or both: a user without either could never log in")
    token = secrets.token_urlsafe(32) if make_token else None
    try:
        record = UserRecord(
            name=name, admin=admin,
            password_hash=users.hash_password(password) if password is not None else None,
            token_sha256=[users.token_sha256(token)] if token else [],
        )
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    listed.users.append(record)
    _write(path, listed)
    click.echo(f"added {name}{' (admin)' if admin else ''} to {path}")
    if token:
        click.echo(f"bearer token (shown only now): {token}")


@users_command.command("passwd")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="Asked for without echo unless given.")
@_FILE
def passwd(name: str, password: str, path: Path) -> None:
    """Set NAME's password (stored as an argon2 hash, replacing any older SHA-256)."""
    listed = _read(path)
    user = _user(listed, name, path)
    user.password_hash, user.password_sha256 = users.hash_password(password), None
    _write(path, listed)
    click.echo(f"password of {name} changed in {path}")


@users_command.command("remove")
@click.argument("name")
@_FILE
def remove(name: str, path: Path) -> None:
    """Remove user NAME (the jobs NAME made stay, and admins still see them)."""
    listed = _read(path)
    listed.users.remove(_user(listed, name, path))
    _write(path, listed)
    click.echo(f"removed {name} from {path}")


@users_command.command("list")
@_FILE
def list_users(path: Path) -> None:
    """The users, whether each is an admin and which credentials each has (never the secrets)."""
    listed = _read(path)
    for user in listed.users:
        password = "argon2" if user.password_hash else "sha256 (legacy: run passwd)" if user.password_sha256 else "none"
        tokens = len(user.tokens) + len(user.token_sha256)
        click.echo(f"{user.name}\t{'admin' if user.admin else 'user'}\tpassword: {password}\ttokens: {tokens}")
