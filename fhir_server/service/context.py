"""What the audit needs to know about the request being served, set by the face."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestInfo:
    request_id: str | None = None
    raw_query: bytes | None = None  # method + path + query string (or POST body)
    client_address: str | None = None
    # Facts computed once per request (a patient's record), dropped on any write.
    memo: dict | None = field(default=None, compare=False)


# The default carries no memo (calls outside a request compute every time), so sharing it is safe.
current_request: ContextVar[RequestInfo] = ContextVar("current_request", default=RequestInfo())  # noqa: B039


def request_memo() -> dict | None:
    return current_request.get().memo


def forget_request_facts() -> None:
    memo = current_request.get().memo
    if memo:
        memo.clear()
