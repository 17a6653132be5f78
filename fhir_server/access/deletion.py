"""Logically deleted documents are seen by their author only (issue #20, deliverable 3).

PDSm4DMP TD3.3c: a DMP document is deleted logically (it stays stored) by setting its status
to entered-in-error, and "seul l'auteur du document peut supprimer le document"; PDSm
(`st_maj.md`): a deleted entry "n'est plus retournée par la recherche de fiches" and is
answered as missing. So a deleted document is hidden, by the same constraint a search and a
read use (R18: as a missing one), from everyone but its author: the professional whose
IdNat_PS is its author, or the patient (or representative) who deposited it.
"""

from __future__ import annotations

from fhir_server.access.requester import ActorKind, Requester
from fhir_server.resources.document_state import DELETED_STATUS
from fhir_server.search.query import Node, Not, Or, ReferenceTest, TokenTest
from fhir_server.terminology import SYSTEM_IDNAT_PS

RULE = "R14"  # the document rules' family: who a document is hidden from


def visible_unless_deleted(requester: Requester) -> Node:
    """A DocumentReference constraint: not deleted, or authored by `requester`."""
    deleted = TokenTest("status", code=DELETED_STATUS, any_system=True)
    if requester.kind is ActorKind.PRACTITIONER:
        own: Node = TokenTest("author-identifier", SYSTEM_IDNAT_PS, requester.subject_id)
    elif requester.kind is ActorKind.PATIENT:
        own = ReferenceTest("author", "Patient", requester.subject_id)
    elif requester.kind is ActorKind.REPRESENTATIVE:
        own = ReferenceTest("author", "RelatedPerson", requester.subject_id)
    else:
        return Not(deleted)
    return Or((Not(deleted), own))


__all__ = ["RULE", "visible_unless_deleted"]
