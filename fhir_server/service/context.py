"""What the audit needs to know about the request being served, set by the face."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestInfo:
    request_id: str | None = None
    raw_query: bytes | None = None  # method + path + query string (or POST body)
    client_address: str | None = None


# RequestInfo is frozen, so sharing the default instance is safe.
current_request: ContextVar[RequestInfo] = ContextVar("current_request", default=RequestInfo())  # noqa: B039
