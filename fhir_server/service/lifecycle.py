"""The record's lifecycle (R03): opposition before creation, closure, reopening, retention.

The status lives on the Patient, in the record-status extension (open | opposed | closed);
the access policy reads it from there and refuses reads and deposits of opposed and closed
records. These functions are the server's own work (INTERNAL requester), used by the
`fhir-server record` commands; the health insurer's or an administration system may set the
same extension through an ordinary Patient update.

Decided here:
- A closure may carry its motive and reason (`resources.record_closure`, TD0.2's
  dmp-fermeture), stored on the Patient; reopening removes them.
- The closure date is not stored separately: it is the lastUpdated of the Patient version
  that closed the record, found in the Patient's history (the first version of the current
  run of `closed` versions). Updating a closed Patient (an address) does not restart the
  clock; reopening and closing again does.
- Retention: ten calendar years after the closure date (29 February counts as 28 February),
  the purge removes every version of every resource in the patient's compartment, the
  Patient itself, and the Binaries of its DocumentReferences: current rows, history and index
  entries (`StoreTransaction.purge`). AuditEvents are kept (R03, R16), so the hash chain still
  verifies. The purge finds compartment resources by scanning type histories, so resources
  deleted before the purge go too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime

from fhir_server.access.constraints import compartment_of, reference_target
from fhir_server.access.record import INS_SYSTEMS
from fhir_server.access.requester import INTERNAL
from fhir_server.errors import error
from fhir_server.resources import record_closure
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.resources.record_closure import Closure
from fhir_server.search.query import Everything, SearchQuery
from fhir_server.store.base import ResourceStore, StoredResource
from fhir_server.terminology import EXT_RECORD_STATUS, RECORD_CLOSED, RECORD_OPEN, RECORD_OPPOSED

RETENTION_YEARS = 10
INS_NIR_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
_PURGE_BATCH = 200


def record_status(patient: dict) -> str:
    for extension in patient.get("extension") or []:
        if extension.get("url") == EXT_RECORD_STATUS:
            return str(extension.get("valueCode"))
    return RECORD_OPEN


def with_status(patient: dict, status: str, closure: Closure | None = None) -> dict:
    """A copy of the Patient with the record-status extension set to `status`, and the
    closure (`resources.record_closure`) it was closed for; a record that is not closed
    carries none."""
    extensions = [e for e in patient.get("extension") or [] if e.get("url") != EXT_RECORD_STATUS]
    extensions.append({"url": EXT_RECORD_STATUS, "valueCode": status})
    return record_closure.with_closure(
        {**patient, "extension": extensions}, closure if status == RECORD_CLOSED else None
    )


def set_status(
    service, patient_id: str, status: str, closure: Closure | None = None
) -> StoredResource:
    current = service.store.read("Patient", patient_id)
    if current is None or current.deleted:
        raise error(404, "not-found", f"Patient/{patient_id} is not known")
    patient = current.json()
    if record_status(patient) == status and (
        closure is None or record_closure.closure_of(patient) == closure
    ):
        return current
    patient.pop("meta", None)
    written = with_status(patient, status, closure or record_closure.closure_of(patient))
    return service.update(INTERNAL, "Patient", patient_id, written).stored


def close_record(service, patient_id: str, closure: Closure | None = None) -> StoredResource:
    """Close the record, for `closure` (its motive and reason; None: none recorded). Closing
    a closed record with another closure records it, the closure date unchanged."""
    if closure is not None:
        problems = record_closure.check(closure)
        if problems:
            raise error(400, "value", "; ".join(problems))
    return set_status(service, patient_id, RECORD_CLOSED, closure)


def reopen_record(service, patient_id: str) -> StoredResource:
    current = service.store.read("Patient", patient_id)
    if current is not None and record_status(current.json()) == RECORD_OPPOSED:
        raise error(
            409,
            "business-rule",
            "the patient opposed the creation of their record; it is not reopened",
        )
    return set_status(service, patient_id, RECORD_OPEN)


def oppose_creation(
    service,
    ins: str,
    *,
    ins_system: str = INS_NIR_SYSTEM,
    family: str | None = None,
    given: str | None = None,
    gender: str | None = None,
    birth_date: str | None = None,
) -> StoredResource:
    """Record a patient's opposition to the creation of their record (opt-out, R03).

    A Patient carrying only the identity and the status `opposed`, so that a later deposit or
    read for this INS is refused with `record-opposed`. If a record already exists it is not
    turned into an opposition (that would be a closure): 409.
    """
    if ins_system not in INS_SYSTEMS:
        raise error(400, "value", f"{ins_system} is not an INS identifier system")
    found = service.find(INTERNAL, "Patient", [("identifier", f"{ins_system}|{ins}")])
    if found:
        if record_status(found[0].json()) == RECORD_OPPOSED:
            return found[0]
        raise error(
            409,
            "duplicate",
            f"a record exists for this INS (Patient/{found[0].id}); close it instead",
        )
    patient: dict = {
        "resourceType": "Patient",
        "identifier": [{"system": ins_system, "value": ins}],
    }
    if family or given:
        patient["name"] = [
            {k: v for k, v in (("family", family), ("given", [given] if given else None)) if v}
        ]
    if gender:
        patient["gender"] = gender
    if birth_date:
        patient["birthDate"] = birth_date
    return service.create(INTERNAL, "Patient", with_status(patient, RECORD_OPPOSED)).stored


def closed_since(store: ResourceStore, patient_id: str) -> datetime | None:
    """When the record was closed, from the Patient's history; None when it is not closed."""
    closed_at: int | None = None
    cursor = None
    while True:
        page = store.history("Patient", patient_id, since=None, count=100, cursor=cursor)
        for entry in page.entries:  # newest first
            version = entry.resource
            if version.deleted or record_status(version.json()) != RECORD_CLOSED:
                return _instant(closed_at)
            closed_at = version.last_updated
        cursor = page.next_cursor
        if cursor is None:
            return _instant(closed_at)


def retention_ends(closed: datetime) -> datetime:
    try:
        return closed.replace(year=closed.year + RETENTION_YEARS)
    except ValueError:  # 29 February
        return closed.replace(year=closed.year + RETENTION_YEARS, day=28)


@dataclass
class PurgeReport:
    patients: list[str] = field(default_factory=list)
    resources: int = 0


def purge_expired(service, now: datetime) -> PurgeReport:
    """The retention job: purge every record closed for ten years or more at `now`."""
    store = service.store
    expired = [
        patient_id
        for patient_id in _all_patient_ids(store, service.cursor_key)
        if (closed := closed_since(store, patient_id)) is not None and retention_ends(closed) <= now
    ]
    report = PurgeReport(patients=sorted(expired))
    if not expired:
        return report
    targets = sorted(_compartment_resources(store, set(expired)))
    for start in range(0, len(targets), _PURGE_BATCH):
        with store.transaction() as tx:
            for resource_type, resource_id in targets[start : start + _PURGE_BATCH]:
                tx.purge(resource_type, resource_id)
    report.resources = len(targets)
    return report


def _all_patient_ids(store: ResourceStore, cursor_key: bytes) -> Iterator[str]:
    query = SearchQuery("Patient", where=Everything(), count=1000)
    while True:
        page = store.search(query, cursor_key=cursor_key, cursor_binding="internal")
        yield from (row[1] for row in page.rows)
        if not page.next_cursor:
            return
        query = replace(query, cursor=page.next_cursor)


def _compartment_resources(store: ResourceStore, patients: set[str]) -> set[tuple[str, str]]:
    """Every (type, id) that was ever in one of these patients' compartments, plus Binaries."""
    found: set[tuple[str, str]] = set()
    for resource_type in SERVED_TYPES:
        if resource_type in ("AuditEvent", "Binary"):
            continue
        cursor = None
        while True:
            page = store.history(resource_type, None, since=None, count=1000, cursor=cursor)
            for entry in page.entries:
                version = entry.resource
                if version.deleted:
                    continue
                body = version.json()
                if compartment_of(body) & patients:
                    found.add((resource_type, version.id))
                    if resource_type == "DocumentReference":
                        for content in body.get("content") or []:
                            target = reference_target((content.get("attachment") or {}).get("url"))
                            if target and target[0] == "Binary":
                                found.add(target)
            cursor = page.next_cursor
            if cursor is None:
                break
    return found


def _instant(epoch_us: int | None) -> datetime | None:
    return None if epoch_us is None else datetime.fromtimestamp(epoch_us / 1_000_000, tz=UTC)


__all__ = [
    "close_record",
    "reopen_record",
    "oppose_creation",
    "purge_expired",
    "closed_since",
    "retention_ends",
    "PurgeReport",
    "date",
]
