"""The error base both services raise, and the one place it becomes a response.

    HTTPError                      status + short public message
     ├── BadRequest          400
     ├── Unauthorized        401   (adds WWW-Authenticate)
     ├── Forbidden           403
     ├── NotFound            404
     ├── MethodNotAllowed    405
     ├── Conflict            409
     ├── PreconditionFailed  412
     ├── PayloadTooLarge     413
     ├── UnsupportedMedia    415
     ├── RangeNotSatisfiable 416
     ├── BadGateway          502
     ├── Unavailable         503   (adds Retry-After)
     └── GatewayTimeout      504

Each service subclasses these with its own messages; foreign exceptions are
translated where they enter (the store, the HTTP client), never here.
"""

from __future__ import annotations

from collections.abc import Mapping


class HTTPError(Exception):
    status = 500
    message = "internal error"

    def __init__(self, message: str | None = None, *, headers: Mapping[str, str] | None = None):
        self.public_message = message or self.message
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.public_message)


class BadRequest(HTTPError):
    status = 400
    message = "bad request"


class Unauthorized(HTTPError):
    status = 401
    message = "missing or invalid credentials"

    def __init__(self, message: str | None = None):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(HTTPError):
    status = 403
    message = "forbidden"


class NotFound(HTTPError):
    status = 404
    message = "not found"


class MethodNotAllowed(HTTPError):
    status = 405
    message = "method not allowed"


class Conflict(HTTPError):
    status = 409
    message = "conflict"


class PreconditionFailed(HTTPError):
    status = 412
    message = "precondition failed"


class PayloadTooLarge(HTTPError):
    status = 413
    message = "payload too large"


class URITooLong(HTTPError):
    status = 414
    message = "URL too long"


class HeadersTooLarge(HTTPError):
    status = 431
    message = "request headers too large"


class UnsupportedMedia(HTTPError):
    status = 415
    message = "unsupported media type"


class RangeNotSatisfiable(HTTPError):
    status = 416
    message = "range not satisfiable"

    def __init__(self, size: int):
        super().__init__(headers={"Content-Range": f"bytes */{size}"})


class TooManyRequests(HTTPError):
    status = 429
    message = "too many new images from this client; retry shortly"

    def __init__(self, message: str | None = None, *, retry_after: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class BadGateway(HTTPError):
    status = 502
    message = "upstream unreachable"


class Unavailable(HTTPError):
    status = 503
    message = "service unavailable"

    def __init__(self, message: str | None = None, *, retry_after: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class GatewayTimeout(HTTPError):
    status = 504
    message = "upstream timeout"


def error_body(error: HTTPError) -> bytes:
    """The body every error response carries: one short line of text."""
    return (error.public_message + "\n").encode()
