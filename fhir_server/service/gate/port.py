"""What the gate's decisions ask of the world: the facts port.

The decision modules of the gate (`reads`, `searches`, `writes`, `audit_hooks`) judge on
facts and never read the store: every fact comes through this interface. `facts.RecordFacts`
answers it from the store, with its caches; a test answers it from a few dictionaries, so a
decision can be checked without a store (`tests/unit/test_gate_decisions.py`), and a new
rule is written against the facts it needs rather than against store queries.

Only the value types a store hands back are named here (for annotations), never the
`ResourceStore` port itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from fhir_server.access.policy import DmpPolicy
from fhir_server.access.record import PatientRecord
from fhir_server.access.requester import Requester
from fhir_server.search.query import Node
from fhir_server.search.registry import SearchRegistry
from fhir_server.service.existence_check import Closed

if TYPE_CHECKING:
    from fhir_server.store.base import StoredResource


class Facts(Protocol):
    """The facts a decision of the gate may ask for."""

    def record(self, patient_id: str) -> PatientRecord | None:
        """One patient's record (Patient, Consents, RelatedPersons interpreted), or None
        when there is no such patient."""
        ...

    def patients_matching(self, where: Node) -> list[str]:
        """The ids of (at most two) Patients matching a designating clause (an INS)."""
        ...

    def acting_for(self, requester: Requester) -> str | None:
        """The patient a patient or a representative acts for, if known."""
        ...

    def designated_patient(self, resource_type: str, where: Node) -> tuple[bool, str | None]:
        """(a patient was designated by the criteria, its id if exactly one is known): R04."""
        ...

    def remember_designated(
        self, resource_type: str, where: Node, found: tuple[bool, str | None]
    ) -> None:
        """`where` designates what `found` says (a constrained query, as its original)."""
        ...

    def bound_patient(self, requester: Requester) -> tuple[bool, str | None]:
        """(the credentials are bound to a patient, that Patient's id): `access.binding`."""
        ...

    def current(self, resource_type: str, resource_id: str) -> StoredResource | None:
        """The current version of a resource (a deletion's tombstone too), or None."""
        ...

    def content(self, stored: StoredResource) -> dict:
        """What a version shows; for a deletion, the last version that had content."""
        ...

    def internal_search(
        self, resource_type: str, where: Node, count: int | None
    ) -> list[tuple[str, str, bytes]]:
        """The first `count` matches (None: all) as (type, id, body), with no access
        constraint."""
        ...

    def binary_documents(self, binary_id: str, binary: dict) -> list[dict]:
        """The documents a Binary version is judged by (`access.ownership`)."""
        ...

    def closed(self, patient_id: str) -> Closed:
        """When and how a closed record was closed, for the TD0.2 existence check."""
        ...

    def check_message(
        self, policy: DmpPolicy, requester: Requester, message: dict, record: PatientRecord | None
    ) -> None:
        """Raise when `requester` may not send `message` (`service.messaging`), which needs
        the message answered and the attachments; complete the message otherwise."""
        ...

    def received_on_read(
        self,
        registry: SearchRegistry,
        clock: Callable[[], int],
        requester: Requester,
        stored: StoredResource,
        record: PatientRecord | None,
    ) -> StoredResource | None:
        """The message's new version when this read is a recipient's first (it sets
        ``received``), else None."""
        ...
