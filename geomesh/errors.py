"""One error hierarchy for every service, mapped once to HTTP, OGC/Harmony JSON, WMS and gRPC."""

from __future__ import annotations

import grpc

# gRPC trailing metadata key naming the error class, so a client can rebuild the same error.
ERROR_KIND_KEY = "geomesh-error-kind"


class GeomeshError(Exception):
    """Base of every error a user may see. The message says what is wrong and how to fix it."""

    http_status = 500
    grpc_status = grpc.StatusCode.INTERNAL
    ogc_code = "harmony.ServerError"
    wms_code = "NoApplicableCode"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

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


class ServiceUnavailableError(GeomeshError):
    http_status = 503
    grpc_status = grpc.StatusCode.UNAVAILABLE
    ogc_code = "harmony.ServiceUnavailableError"


class BadGatewayError(GeomeshError):
    """A data host (or store) answered with a server error or not at all: worth retrying later."""

    http_status = 502
    grpc_status = grpc.StatusCode.UNAVAILABLE
    ogc_code = "harmony.ServerError"


class GatewayTimeoutError(GeomeshError):
    """A data host (or store) did not answer in time: worth retrying later."""

    http_status = 504
    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED
    ogc_code = "harmony.ServerError"


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
    return ((ERROR_KIND_KEY, type(error).__name__),)


def from_rpc_error(error: grpc.RpcError) -> GeomeshError:
    """Rebuild the GeomeshError a peer raised (or the closest one for a transport failure)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(code)
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    kind = dict(trailers or ()).get(ERROR_KIND_KEY)
    if kind in _KINDS:
        return _KINDS[kind](details)
    cls = _BY_GRPC_STATUS.get(code, GeomeshError)
    if cls is ServiceUnavailableError:
        return cls(f"A geomesh service is unavailable ({code.name.lower()}): {details}. Try again shortly.")
    return cls(details)
