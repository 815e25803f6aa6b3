"""The error codes of the OCI Distribution Specification, on both sides of the wire.

A registry answers a failed request with ``{"errors": [{"code", "message", "detail"}]}`` and a status that
belongs to the code. The server raises DistributionError; the client turns such a body back into a
RegistryError.
"""

from __future__ import annotations

import json
from typing import Any

# code -> (HTTP status, the spec's default message)
ERROR_CODES: dict[str, tuple[int, str]] = {
    "BLOB_UNKNOWN": (404, "blob unknown to registry"),
    "BLOB_UPLOAD_INVALID": (400, "blob upload invalid"),
    "BLOB_UPLOAD_UNKNOWN": (404, "blob upload unknown to registry"),
    "DIGEST_INVALID": (400, "provided digest did not match uploaded content"),
    "MANIFEST_BLOB_UNKNOWN": (400, "manifest references a manifest or blob unknown to registry"),
    "MANIFEST_INVALID": (400, "manifest invalid"),
    "MANIFEST_UNKNOWN": (404, "manifest unknown"),
    "NAME_INVALID": (400, "invalid repository name"),
    "NAME_UNKNOWN": (404, "repository name not known to registry"),
    "SIZE_INVALID": (400, "provided length did not match content length"),
    "UNAUTHORIZED": (401, "authentication required"),
    "DENIED": (403, "requested access to the resource is denied"),
    "UNSUPPORTED": (405, "the operation is unsupported"),
    "RANGE": (416, "requested range not satisfiable"),
    "TOOMANYREQUESTS": (429, "too many requests"),
    # Not in the spec; Docker's distribution answers a bad ?n= with it.
    "PAGINATION_NUMBER_INVALID": (400, "invalid number of results requested"),
}
_CODES_WITHOUT_BODY = {401: "UNAUTHORIZED", 403: "DENIED", 429: "TOOMANYREQUESTS"}


class DistributionError(Exception):
    """A request the registry refuses, with its spec error code (server side)."""

    def __init__(self, code: str, message: str | None = None, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        status, default_message = ERROR_CODES[code]
        super().__init__(message or default_message)
        self.code = code
        self.status = status
        self.message = message or default_message
        self.detail = detail
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return json.dumps({"errors": [error]}).encode()


class RegistryError(RuntimeError):
    """A registry refused or failed a client request; ``code`` is the registry's error code when it sent one
    (``MANIFEST_UNKNOWN``, ``DENIED``, ...), ``status`` the HTTP status (0 when no response came)."""

    def __init__(self, message: str, *, code: str = "", status: int = 0, detail: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.detail = detail

    @classmethod
    def from_response(cls, status: int, body: bytes, what: str) -> RegistryError:
        """The error a response carries; ``what`` names the request for responses without an error body.
        The message reads like Docker's: ``manifest unknown: manifest unknown``."""
        try:
            errors = json.loads(body).get("errors") or []
            first = errors[0]
            code, message = str(first.get("code", "")), str(first.get("message", ""))
        except (ValueError, AttributeError, IndexError, TypeError):
            # No error body (a HEAD request, a proxy's page): the status alone may still say what happened.
            code = _CODES_WITHOUT_BODY.get(status)
            if code is not None:
                return cls(f"{code.lower()}: {ERROR_CODES[code][1]}", code=code, status=status)
            text = body.decode(errors="replace").strip()[:200]
            return cls(f"{what}: unexpected status {status}{': ' + text if text else ''}", status=status)
        words = code.lower().replace("_", " ")
        return cls(f"{words}: {message}" if message else words, code=code, status=status,
                   detail=first.get("detail"))
