"""Secure messaging wired into the gate: checking a message before it is stored, and
setting ``received`` when a recipient first opens it.

Who may read a message is the policy's business (``access.policy``: sender and recipients,
and the patient's representatives within R07, as query constraints so that searches and
totals hide the rest). This module adds what needs the store: the message being answered
(``inResponseTo``) must be one the author can read, attachments must be DocumentReferences of
the same record that the author can read, and a message about a labelled document carries
that document's DMP labels in ``meta.security`` (so R07/R14 hide the message wherever they
hide the document).

Decided here: ``received`` is set when a recipient (or a representative for the patient
recipient) opens the message with a read; listing messages with a search does not count.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from fhir_server.access.constraints import compartment_of, reference_target
from fhir_server.access.decision import Permit
from fhir_server.access.policy import DmpPolicy
from fhir_server.access.record import PatientRecord
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.balp import DataEntity
from fhir_server.audit.messaging import (
    category_codes,
    mark_received,
    may_read_message,
    validate_message,
    validate_reply,
)
from fhir_server.audit.notifications import CATEGORY_MESSAGE
from fhir_server.errors import FhirError, Issue
from fhir_server.search.extract import extract, sort_values
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import versions
from fhir_server.store.base import ResourceStore, StoredResource, VersionConflict, VersionWrite
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY


def check_message(
    store: ResourceStore,
    policy: DmpPolicy,
    requester: Requester,
    message: dict,
    record: PatientRecord | None,
) -> None:
    """Raise a FhirError when `requester` may not send `message`; add its documents' labels.

    `message` is changed in place (``meta.security``) before it is stored.
    """
    if requester.kind is ActorKind.INTERNAL:
        return
    represented = (
        [record.patient_id]
        if record is not None
        and requester.kind is ActorKind.REPRESENTATIVE
        and requester.subject_id in record.representatives
        else []
    )
    issues = validate_message(
        requester,
        message,
        represented_patients=represented,
        representatives_of_patient=record.representatives if record is not None else None,
    )
    _raise(issues)
    reps = record.representatives if record is not None else frozenset()
    minor = bool(record and record.minor)
    for i, ref in enumerate(message.get("inResponseTo") or []):
        target = reference_target(ref.get("reference"))
        original = store.read(*target) if target else None
        if (
            original is None
            or original.deleted
            or not may_read_message(requester, original.json(), reps, minor)
        ):
            _raise(
                [
                    Issue(
                        "error",
                        "not-found",
                        f"{ref.get('reference')} is not known",
                        (f"Communication.inResponseTo[{i}]",),
                    )
                ],
                404,
            )
        # R07: a representative answers as the patient they act for.
        as_participant = (
            {**message, "sender": {"reference": f"Patient/{represented[0]}"}}
            if represented
            else message
        )
        _raise(validate_reply(as_participant, original.json()))
    labels: list[dict] = []
    for i, payload in enumerate(message.get("payload") or []):
        target = reference_target((payload.get("contentReference") or {}).get("reference"))
        if target is None:
            continue
        document = store.read(*target)
        readable = (
            document is not None
            and not document.deleted
            and record is not None
            and record.patient_id in compartment_of(document.json())
            and isinstance(
                policy.decide_read(requester, "DocumentReference", document.json(), record), Permit
            )
        )
        if not readable:
            _raise(
                [
                    Issue(
                        "error",
                        "not-found",
                        f"{target[0]}/{target[1]} is not known",
                        (f"Communication.payload[{i}]",),
                    )
                ],
                404,
            )
        labels += [
            dict(c)
            for c in DataEntity.from_resource(document.json()).security_labels
            if c.get("system") == SYSTEM_DMP_CONFIDENTIALITY
        ]
    if labels:
        meta = message.setdefault("meta", {})
        security = meta.setdefault("security", [])
        for label in labels:
            if not any(
                c.get("system") == label["system"] and c.get("code") == label["code"]
                for c in security
            ):
                security.append(
                    {k: label[k] for k in ("system", "code", "display") if label.get(k)}
                )


def received_on_read(
    store: ResourceStore,
    registry: SearchRegistry,
    clock: Callable[[], int],
    requester: Requester,
    stored: StoredResource,
    record: PatientRecord | None,
) -> StoredResource | None:
    """The new version with ``received`` set when this read is a recipient's first; else None."""
    message = stored.json()
    if CATEGORY_MESSAGE not in category_codes(message) or message.get("received"):
        return None
    represents = (
        [record.patient_id]
        if record is not None
        and requester.kind is ActorKind.REPRESENTATIVE
        and requester.subject_id in record.representatives
        else []
    )
    now = datetime.fromtimestamp(clock() / 1_000_000, tz=UTC)
    updated = mark_received(message, now, reader=requester, reader_represents=represents)
    if updated is None:
        return None
    try:
        with store.transaction() as tx:
            current = tx.read(stored.resource_type, stored.id)
            if current is None or current.version != stored.version:
                return None  # someone else's first read won
            new = versions.stamp(updated, stored.id, stored.version + 1, clock())
            entries = extract(updated, registry)
            shard = entries.compartment[0] if entries.compartment else ""
            tx.write(VersionWrite(new, "PUT", stored.version, entries, sort_values(entries), shard))
    except VersionConflict:
        return None
    return new


def _raise(issues: list[Issue], status: int | None = None) -> None:
    if not issues:
        return
    if status is None:
        status = 403 if any(issue.code == "forbidden" for issue in issues) else 400
    raise FhirError(status, issues)
