"""AuditEvents are written by the server only and never changed, through any door (R16),
with answers that tell nothing about which events exist (R18).

An update, patch or delete of an AuditEvent, conditional or not, alone or as a Bundle entry,
is refused with 405 before anything else is looked at: before the event is read, its
If-Match compared or conditional criteria searched. Judged after those, the answer varied
with the event (405 for one the requester is shown, 404 or 204 for one hidden from them or
missing, 412 on an If-Match, 403 when the criteria were a search they may not make): an
oracle of which events exist, and not the 405 R16 promises. The refusal is traced in the
trail of the patients of the event the id names, if any, with that event's labels, so that
it is hidden from whom the event is hidden from (R07, R14).

A client's create of an AuditEvent is refused (403, `DmpPolicy.decide_write`) whatever its
If-None-Exist criteria would find: they are not searched, so the create is no door to read
the event they match (`refused_create`).
"""

from __future__ import annotations

from fhir_server.access.constraints import compartment_of
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.balp import security_labels_of
from fhir_server.errors import error
from fhir_server.service.gate import Gate
from fhir_server.store.base import ResourceStore, StoreTransaction

AUDIT_EVENT = "AuditEvent"
# The interactions that would change an event (`service.interaction.Kind` values).
CHANGES = frozenset({"update", "patch", "delete"})


def refuse_change(
    gate: Gate,
    store: ResourceStore,
    requester: Requester,
    resource_type: str | None,
    interaction: str,
    resource_id: str | None,
    tx: StoreTransaction | None = None,
) -> None:
    """Raise the 405 of a change of an AuditEvent (module docstring), audited; return for
    any other type or interaction. `interaction`: the interaction's code; `resource_id`:
    the id it names (None: a conditional one); `tx`: the open transaction of a transaction
    Bundle's entry."""
    if resource_type != AUDIT_EVENT or interaction not in CHANGES:
        return
    event = None
    if resource_id:
        stored = (tx or store).read(AUDIT_EVENT, resource_id)
        event = stored.json() if stored is not None and not stored.deleted else None
    gate.audit.refusal(
        requester,
        interaction,
        sorted(compartment_of(event)) if event else [],
        "R16",
        resource_type=AUDIT_EVENT,
        labels=security_labels_of(event) if event else (),
    )
    raise error(
        405, "not-supported", "AuditEvents are never updated or deleted", details_code="R16"
    )


def refused_create(requester: Requester, resource_type: str) -> bool:
    """Whether a create of `resource_type` by `requester` is refused whatever it holds: its
    If-None-Exist criteria are then not searched (module docstring)."""
    return resource_type == AUDIT_EVENT and requester.kind is not ActorKind.INTERNAL
