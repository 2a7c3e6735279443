"""One error hierarchy for every service, mapped once to HTTP, OGC/Harmony JSON, WMS and gRPC."""

from __future__ import annotations

import logging

import grpc

log = logging.getLogger(__name__)

# gRPC trailing metadata: the error class, so a client rebuilds the same error, whether trying
# again later may succeed, and when (for callers that do not read the class, e.g. in other languages).
ERROR_KIND_KEY = "geomesh-error-kind"
RETRY_KEY = "geomesh-retry"  # "transient" or "permanent"
RETRY_AFTER_KEY = "geomesh-retry-after"  # seconds


class GeomeshError(Exception):
    """Base of every error a user may see. The message says what is wrong and how to fix it.

    `transient` errors (a service or data host unavailable, slow or overloaded) may pass when tried
    again later, after `retry_after` seconds if given; every other error is permanent: the same
    request fails the same way, so it is never retried.
    """

    http_status = 500
    grpc_status = grpc.StatusCode.INTERNAL
    ogc_code = "harmony.ServerError"
    wms_code = "NoApplicableCode"
    transient = False
    default_retry_after: float | None = None

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after if retry_after is not None else self.default_retry_after

    @property
    def description(self) -> str:
        """Harmony prefixes every error description with "Error: "."""
        return f"Error: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"code": self.ogc_code, "description": self.description}


class RequestValidationError(GeomeshError):
    http_status = 400
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    ogc_code = "harmony.RequestValidationError"
    wms_code = "InvalidParameterValue"


class UnauthorizedError(GeomeshError):
    http_status = 401
    grpc_status = grpc.StatusCode.UNAUTHENTICATED
    ogc_code = "harmony.UnauthorizedError"


class ForbiddenError(GeomeshError):
    http_status = 403
    grpc_status = grpc.StatusCode.PERMISSION_DENIED
    ogc_code = "harmony.ForbiddenError"


class NotFoundError(GeomeshError):
    http_status = 404
    grpc_status = grpc.StatusCode.NOT_FOUND
    ogc_code = "harmony.NotFoundError"
    wms_code = "LayerNotDefined"


class ConflictError(GeomeshError):
    http_status = 409
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    ogc_code = "harmony.ConflictError"


class GoneError(GeomeshError):
    """Something that existed and is no more, e.g. a job's outputs past their data expiration."""

    http_status = 410
    grpc_status = grpc.StatusCode.NOT_FOUND
    ogc_code = "harmony.NotFoundError"


class PayloadTooLargeError(GeomeshError):
    http_status = 413
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    ogc_code = "harmony.RequestValidationError"


class UnsupportedOperationError(GeomeshError):
    """The request is well formed but no service can do it (Harmony answers 422)."""

    http_status = 422
    grpc_status = grpc.StatusCode.UNIMPLEMENTED
    ogc_code = "harmony.UnsupportedOperation"


class TooManyRequestsError(GeomeshError):
    """More requests than geomesh admits at once (from this user, or in all): try again shortly."""

    http_status = 429
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    ogc_code = "harmony.TooManyRequestsError"
    transient = True
    default_retry_after = 1.0


class ServiceUnavailableError(GeomeshError):
    http_status = 503
    grpc_status = grpc.StatusCode.UNAVAILABLE
    ogc_code = "harmony.ServiceUnavailableError"
    transient = True
    default_retry_after = 5.0


class BadGatewayError(GeomeshError):
    """A data host (or store) answered with a server error or not at all: worth retrying later."""

    http_status = 502
    grpc_status = grpc.StatusCode.UNAVAILABLE
    ogc_code = "harmony.ServerError"
    transient = True


class GatewayTimeoutError(GeomeshError):
    """A data host (or store) did not answer in time: worth retrying later."""

    http_status = 504
    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED
    ogc_code = "harmony.ServerError"
    transient = True


class TransformError(GeomeshError):
    """A transformer could not process a granule (bad or unreadable input data)."""

    http_status = 500
    grpc_status = grpc.StatusCode.INTERNAL
    ogc_code = "harmony.ServerError"


_KINDS: dict[str, type[GeomeshError]] = {
    cls.__name__: cls
    for cls in (
        GeomeshError,
        RequestValidationError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        ConflictError,
        GoneError,
        PayloadTooLargeError,
        UnsupportedOperationError,
        TooManyRequestsError,
        ServiceUnavailableError,
        BadGatewayError,
        GatewayTimeoutError,
        TransformError,
    )
}

# Errors that reach us without our metadata: a peer that is down, a deadline, a cancel.
_BY_GRPC_STATUS: dict[grpc.StatusCode, type[GeomeshError]] = {
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: ServiceUnavailableError,
    grpc.StatusCode.INVALID_ARGUMENT: RequestValidationError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
}


def grpc_trailers(error: GeomeshError) -> tuple[tuple[str, str], ...]:
    trailers = [(ERROR_KIND_KEY, type(error).__name__), (RETRY_KEY, "transient" if error.transient else "permanent")]
    if error.retry_after is not None:
        trailers.append((RETRY_AFTER_KEY, f"{error.retry_after:g}"))
    return tuple(trailers)


def from_rpc_error(error: grpc.RpcError) -> GeomeshError:
    """Rebuild the GeomeshError a peer raised (or the closest one for a transport failure).

    A transport failure's details name internal addresses: they are logged, never passed on.
    """
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(code)
    trailers = dict((error.trailing_metadata() if hasattr(error, "trailing_metadata") else None) or ())
    kind = trailers.get(ERROR_KIND_KEY)
    if kind in _KINDS:
        retry_after = trailers.get(RETRY_AFTER_KEY)
        return _KINDS[kind](details, retry_after=float(retry_after) if retry_after else None)
    cls = _BY_GRPC_STATUS.get(code, GeomeshError)
    if cls is ServiceUnavailableError:
        log.warning("a geomesh service did not answer (%s): %s", code.name, details)
        return cls("A geomesh service is unavailable right now; try again shortly.")
    return cls(details)
