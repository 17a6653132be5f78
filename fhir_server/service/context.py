"""What the audit needs to know about the request being served, set by the face."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class RequestInfo:
    request_id: str | None = None
    raw_query: bytes | None = None  # method + path + query string (or POST body)
    client_address: str | None = None
    # Facts computed once per request (a patient's record), dropped on any write.
    memo: dict | None = field(default=None, compare=False)
    # The emergency accesses told of during this request (R17: one access, one notification;
    # `AuditTrail.access`), kept across its writes; None outside a request: each call told.
    told: set | None = field(default=None, compare=False)


# The default carries no memo (calls outside a request compute every time), so sharing it is safe.
current_request: ContextVar[RequestInfo] = ContextVar("current_request", default=RequestInfo())  # noqa: B039


def request_memo() -> dict | None:
    return current_request.get().memo


def forget_request_facts() -> None:
    memo = current_request.get().memo
    if memo:
        memo.clear()


@contextmanager
def facts_scope() -> Iterator[None]:
    """A memo for the duration of one read-only interaction, when the face set none.

    The REST face gives every request a memo; a caller without one (the XDS face, in-process
    callers) would otherwise have the gate fetch the record's epoch and resolve a designating
    chain again for the query, each include and the audit of the same search. Nothing is
    written inside the scope but the audit, so the facts cannot change under it.
    """
    info = current_request.get()
    if info.memo is not None:
        yield
        return
    token = current_request.set(replace(info, memo={}))
    try:
        yield
    finally:
        current_request.reset(token)


@contextmanager
def bound(*values: tuple[ContextVar, object]) -> Iterator[None]:
    """Within the block, each (variable, value) pair holds: what a transaction being
    written tells the checks it runs (`service.deposit`, `documents.registry`)."""
    tokens = [(variable, variable.set(value)) for variable, value in values]
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)
