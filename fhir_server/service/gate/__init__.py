"""The access gate: scopes (R02), then the DMP policy, then the audit, on every interaction.

The service calls it at fixed points. It is split along one seam, facts apart from
decisions, so that each can be read, changed and tested alone:

- `facts` (`RecordFacts`): the one part that reads the store, and caches what it read (a
  patient's record: Patient, Consents, RelatedPersons; the patient a search designates;
  the credentials' bound patient; the documents behind a Binary).
- `port` (`Facts`): the interface the decisions ask their facts through.
- `common`, `reads`, `searches`, `writes`: the decisions. They turn a Permit's constraints
  into query clauses (invariant 2: pushed down, never filtered after), a Deny into an error
  plus an AuthZ-Consent AuditEvent, and return the Permit to the caller, who hands it on.
- `audit_hooks`: what a search or a write is audited and notified as (R16, R17).

`GateDecisions` is the gate over any facts (a test's dictionaries); `Gate` is the gate over
a store, the one the service is built with.
"""

from __future__ import annotations

from fhir_server.access.policy import DmpPolicy
from fhir_server.access.record import PatientRecord
from fhir_server.search.registry import SearchRegistry
from fhir_server.service.audit_trail import AuditTrail
from fhir_server.service.gate.audit_hooks import AuditHooks
from fhir_server.service.gate.common import INTERNAL_BINDING, INTERNAL_PERMIT, ReadPurpose
from fhir_server.service.gate.facts import RecordFacts
from fhir_server.service.gate.port import Facts
from fhir_server.service.gate.searches import SearchGate
from fhir_server.service.gate.writes import WriteGate
from fhir_server.store.base import ResourceStore


class GateDecisions(AuditHooks, WriteGate, SearchGate):
    """Every decision and audit hook of the gate, over the facts it is given."""


class Gate(GateDecisions):
    """The gate over a store: its facts are `RecordFacts` read from `store`."""

    facts: RecordFacts

    def __init__(
        self,
        store: ResourceStore,
        registry: SearchRegistry,
        policy: DmpPolicy,
        audit: AuditTrail,
        cursor_key: bytes,
    ) -> None:
        super().__init__(RecordFacts(store, cursor_key), registry, policy, audit)

    def judged_record(self, patient_id: str) -> tuple[PatientRecord | None, int | None]:
        return self.facts.record_and_epoch(patient_id)


__all__ = [
    "INTERNAL_BINDING",
    "INTERNAL_PERMIT",
    "Facts",
    "Gate",
    "GateDecisions",
    "ReadPurpose",
    "RecordFacts",
]
