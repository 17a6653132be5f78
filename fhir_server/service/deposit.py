"""What the transaction being stored deposits: its Binaries and its documents.

A transaction (an ITI-65, the ITI-41 mapping, any transaction Bundle) writes a Binary and
the DocumentReference owning it (`service.ownership`) one entry after the other; while it is
stored, the ownership checks and the audit hooks need to know the other half of the
deposit before the store holds it. The Bundle's processing sets it here for the duration
of its write transaction (`deposit`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from fhir_server.service.context import bound

# The ids of the Binaries the transaction being stored deposits with a document of its own.
_deposit: ContextVar[frozenset[str]] = ContextVar("binary_deposit", default=frozenset())
# The DocumentReferences that transaction writes, by id (the owners of those Binaries).
_deposit_documents: ContextVar[Mapping[str, dict]] = ContextVar(
    "deposit_documents", default=MappingProxyType({})
)


def bundle_documents(entries: list[Any]) -> dict[str, dict]:
    """The DocumentReferences a transaction creates or updates, by their final id."""
    return {
        str(entry.resource["id"]): entry.resource
        for entry in entries
        if entry.method in ("POST", "PUT")
        and isinstance(entry.resource, dict)
        and entry.resource.get("resourceType") == "DocumentReference"
        and entry.resource.get("id")
    }


@contextmanager
def deposit(
    binary_ids: frozenset[str], documents: Mapping[str, dict] = MappingProxyType({})
) -> Iterator[None]:
    """Within the block, `binary_ids` are Binaries of the deposit being stored, and
    `documents` the DocumentReferences it writes (`bundle_documents`)."""
    with bound((_deposit, binary_ids), (_deposit_documents, documents)):
        yield


def deposited_document(document_id: str) -> dict | None:
    """The DocumentReference `document_id` as the transaction being stored writes it, if it
    writes it: a Binary's write is audited under its owner before the store holds it, when
    the Bundle lists the Binary first."""
    return _deposit_documents.get().get(document_id)


def deposited_binaries() -> frozenset[str]:
    """The ids of the Binaries the transaction being stored deposits with a document."""
    return _deposit.get()
