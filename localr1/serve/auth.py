"""`--api-key`: every route but /health needs `Authorization: Bearer KEY`, compared in constant
time so response times do not leak how much of a guess was right."""

from __future__ import annotations

import hmac

from localr1.serve.api_error import ApiError


def check_bearer(header: str | None, api_key: str | None) -> None:
    """ApiError 401 unless the Authorization header carries the key (no key: open)."""
    if api_key is None:
        return
    scheme, _, token = (header or "").partition(" ")
    # Starlette decodes header bytes as latin-1: back to the bytes the client sent, which for a
    # non-ASCII key are its UTF-8.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode("latin-1"), api_key.encode("utf-8", "surrogateescape")):
        raise ApiError(401, "a valid API key is needed: send 'Authorization: Bearer KEY'",
                       code="invalid_api_key")
