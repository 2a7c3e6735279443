"""Who is calling: every gRPC hop of the mesh is made by a service that proves its identity.

One of two ways, chosen by settings (`GEOMESH_MESH_*`, read by every service):

- **mutual TLS** (`GEOMESH_MESH_TLS_DIR`, as `geomesh certs` writes it): every server demands a
  client certificate signed by the mesh's CA; a certificate's DNS name is its holder's identity
  (`edge`, `scheduler`, `catalog`, `transformer`, or a tool's own name), and a client checks that
  the server it reached holds the identity it meant to reach, whatever the address.
- **a shared secret** (`GEOMESH_MESH_SECRET` or `_SECRET_FILE`), where TLS is off: every call
  carries `<identity>:<HMAC-SHA256(secret, identity)>`, which the server checks.

With neither, services refuse to start, unless `GEOMESH_MESH_INSECURE=true` says the network is
trusted. Health checks answer anyone (probes); reflection is off unless `GEOMESH_MESH_REFLECTION`.

Who may call whom is one table, CALLERS: the scheduler takes the user a request acts for from its
caller, so only the edge may call it; a tool that calls the scheduler directly authenticates as an
identity added for it in `GEOMESH_MESH_EXTRA_CALLERS` (e.g. `{"scheduler": ["ops"]}`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("edge", "scheduler", "catalog", "transformer")
CALLERS: dict[str, frozenset[str]] = {
    "scheduler": frozenset({"edge"}),
    "catalog": frozenset({"edge", "scheduler"}),
    "transformer": frozenset({"scheduler"}),
}
IDENTITY_KEY = "x-geomesh-service"  # the secret mode's credential, in each call's metadata


class MeshError(ValueError):
    """The mesh's security settings are missing or wrong: the service cannot start."""


class MeshSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GEOMESH_MESH_")

    # Mutual TLS: <tls_dir>/ca.pem, <tls_dir>/<identity>.pem and <identity>.key (see `geomesh certs`).
    tls_dir: Path | None = None
    secret: SecretStr | None = None
    secret_file: Path | None = None
    insecure: bool = False
    reflection: bool = False
    extra_callers: dict[str, list[str]] = {}

    def callers_of(self, service: str) -> frozenset[str]:
        return CALLERS.get(service, frozenset()) | frozenset(self.extra_callers.get(service, ()))

    def credentials(self, identity: str) -> Credentials:
        """This process's credentials, as `identity`; MeshError saying what to set when there are none."""
        if self.tls_dir is not None:
            return TlsCredentials(identity, self.tls_dir)
        secret = self._secret()
        if secret is not None:
            return SecretCredentials(identity, secret)
        if self.insecure:
            return Credentials(identity)
        raise MeshError(
            "The gRPC services need an identity: set GEOMESH_MESH_TLS_DIR to a folder made by `geomesh certs` "
            "(mutual TLS), or GEOMESH_MESH_SECRET (or _SECRET_FILE) to a secret every service shares; "
            "GEOMESH_MESH_INSECURE=true only on a network whose every host you trust."
        )

    def _secret(self) -> bytes | None:
        if self.secret is not None:
            return self.secret.get_secret_value().encode()
        if self.secret_file is not None:
            try:
                return self.secret_file.read_bytes().strip()
            except OSError as error:
                raise MeshError(f"GEOMESH_MESH_SECRET_FILE {self.secret_file} cannot be read: {error}") from None
        return None


@dataclass(frozen=True)
class Credentials:
    """No proof at all (GEOMESH_MESH_INSECURE): every caller is taken at its word."""

    identity: str
    checks = False  # whether servers can and do refuse callers

    def server_credentials(self) -> grpc.ServerCredentials | None:
        return None

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        return None

    def channel_options(self, peer: str) -> list[tuple[str, Any]]:
        return []

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        return []

    def caller_of(self, context: grpc.aio.ServicerContext) -> str | None:
        """Who made this call; None when it proves nothing."""
        return None


@dataclass(frozen=True)
class TlsCredentials(Credentials):
    folder: Path
    checks = True

    def _read(self, name: str) -> bytes:
        path = self.folder / name
        try:
            return path.read_bytes()
        except OSError as error:
            raise MeshError(
                f"{path} cannot be read ({error.strerror}): `geomesh certs {self.folder} --identity {self.identity}` makes it"
            ) from None

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self._read(f"{self.identity}.key"), self._read(f"{self.identity}.pem"))],
            root_certificates=self._read("ca.pem"),
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self._read("ca.pem"),
            private_key=self._read(f"{self.identity}.key"),
            certificate_chain=self._read(f"{self.identity}.pem"),
        )

    def channel_options(self, peer: str) -> list[tuple[str, Any]]:
        # The server must hold the identity we mean to reach, at whatever address it answers.
        return [("grpc.ssl_target_name_override", peer)]

    def caller_of(self, context: grpc.aio.ServicerContext) -> str | None:
        auth = context.auth_context() or {}
        names = auth.get("x509_subject_alternative_name") or auth.get("x509_common_name") or []
        return names[0].decode() if names else None


@dataclass(frozen=True)
class SecretCredentials(Credentials):
    secret: bytes
    checks = True

    def token(self, identity: str) -> str:
        return f"{identity}:{hmac.new(self.secret, identity.encode(), hashlib.sha256).hexdigest()}"

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        return _metadata_interceptors((IDENTITY_KEY, self.token(self.identity)))

    def caller_of(self, context: grpc.aio.ServicerContext) -> str | None:
        claimed = _claimed(context)
        if claimed is None or ":" not in claimed:
            return None
        identity = claimed.split(":", 1)[0]
        return identity if hmac.compare_digest(claimed, self.token(identity)) else None


def _claimed(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == IDENTITY_KEY:
            return value if isinstance(value, str) else None
    return None


class _WithMetadata:
    """Adds one metadata pair to every call of a kind (grpc.aio files an interceptor under its first kind only)."""

    def __init__(self, pair: tuple[str, str]) -> None:
        self.pair = pair

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self.pair)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnary(_WithMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_WithMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_WithMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStream(_WithMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def _metadata_interceptors(pair: tuple[str, str]) -> list[grpc.aio.ClientInterceptor]:
    return [kind(pair) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]


# -- `geomesh certs`: a local CA and one certificate per identity --------------------------------


def make_certificates(folder: Path, identities: Sequence[str] = SERVICES, days: int = 3650) -> list[Path]:
    """A CA (kept if the folder has one) and, for each identity, a key and a certificate naming it.

    Keys are written readable by their owner only. Returns the files written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key_path, ca_path = folder / "ca.key", folder / "ca.pem"
    written: list[Path] = []
    if ca_key_path.exists() and ca_path.exists():
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise MeshError(f"{ca_key_path} is not an elliptic-curve key made by `geomesh certs`")
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "geomesh mesh CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(ca_key, hashes.SHA256())
        )
        written += [_write_key(ca_key_path, ca_key), _write(ca_path, ca.public_bytes(serialization.Encoding.PEM))]
    for identity in identities:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(identity)]), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        written += [
            _write_key(folder / f"{identity}.key", key),
            _write(folder / f"{identity}.pem", certificate.public_bytes(serialization.Encoding.PEM)),
        ]
    return written


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    temporary = path.with_name(path.name + ".part")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    os.replace(temporary, path)
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return _write(path, pem, 0o600)
