"""R17 wiring: which notifications an access or a write calls for, and writing them.

The policy says which notification may apply (``Permit.notes``); this module turns notes into
:class:`Intent` values when the access happens and writes the Communications in the same
transaction as what triggered them: a write's own transaction, or the group commit that makes
a read's AuditEvents durable (so a read still costs one commit). The notifications are the
server's own work (INTERNAL): they are not audited as accesses.

"First access of the day" is decided under the store's write lock from the last notified day
kept per (patient, practitioner) (:meth:`StoreTransaction.notified_day`), so concurrent
workers never notify twice. A per-process memo of days already notified spares reads the
round trip once the day's notification is known to be written.

Decided here: an access notification carries the DMP labels of its AuditEvent except
INVISIBLE_PATIENT. Its text names no document, and R17 requires that the patient be told of
the access; the label is there to keep the document itself from the patient, not the fact
that the record was opened. For the same reason it names no AuditEvent: the event of an access
to an INVISIBLE_PATIENT document is hidden from the patient, and its id, read in vain, told
them so (the trail shows the events they may see). INVISIBLE_REPRESENTANTS_LEGAUX stays, so representatives do not
learn of accesses to documents hidden from them (R07).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fhir_server.access.decision import Note
from fhir_server.access.requester import AccessMode, Requester
from fhir_server.audit.balp import event_patients, hiding_codes
from fhir_server.audit.notifications import (
    notification_day,
    notification_for_access,
    notification_for_authorization,
    notification_for_deposit,
    notification_for_initial_consent,
    should_notify_access,
)
from fhir_server.search.extract import extract
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import versions
from fhir_server.store.base import StoreTransaction
from fhir_server.terminology import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    SYSTEM_DMP_CONFIDENTIALITY,
)

ACCESS_NOTES = frozenset(
    {Note.NOTIFY_IF_FIRST_ACCESS_OF_DAY, Note.NOTIFY_BRIS_DE_GLACE, Note.NOTIFY_CENTRE_15}
)


# The notifications about a Consent a practitioner wrote, by Intent event.
_CONSENT_NOTICES = {
    "authorization": notification_for_authorization,
    "initial-consent": notification_for_initial_consent,
}


@dataclass(frozen=True, slots=True)
class Intent:
    """A notification to write once its transaction is open."""

    event: str  # access | deposit | authorization | initial-consent
    patient_id: str
    requester: Requester
    when: datetime
    about: str | None = None
    labels: tuple[Mapping[str, str], ...] = ()
    title: str | None = None

    @property
    def first_of_day_only(self) -> bool:
        return self.event == "access" and self.requester.access_mode is AccessMode.NORMAL


class Notifier:
    def __init__(self, registry: SearchRegistry, base_url: str, clock: Callable[[], int]) -> None:
        self.registry = registry
        self.base_url = base_url
        self.clock = clock
        self._notified: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock() / 1_000_000, tz=UTC)

    # -- deciding ---------------------------------------------------------------------------

    def for_access(
        self, requester: Requester, notes: Iterable[str], events: Sequence[dict], when: datetime
    ) -> list[Intent]:
        """One intent per patient whose record was opened, when a note asks for it."""
        if not ACCESS_NOTES & set(notes):
            return []
        today = notification_day(when).isoformat()
        intents = []
        told_here: set[str] = set()
        for event in sorted(events, key=_hiding_count):
            labels = tuple(
                c
                for c in (event.get("meta") or {}).get("security") or []
                if not (
                    c.get("system") == SYSTEM_DMP_CONFIDENTIALITY
                    and c.get("code") == INVISIBLE_PATIENT
                )
            )
            hidden = _hidden_from_representatives(labels)
            for patient_id in event_patients(event):
                # One access, one notification: a search's results are split into events
                # by the labels that hide them (`balp._rest_event_entities`), the first
                # naming those hidden from nobody; it is the one told, as the patient and
                # the representatives see it in their trail.
                if patient_id in told_here:
                    continue
                told_here.add(patient_id)
                told = any(
                    self._notified.get((patient_id, key)) == today
                    for key in _told_keys(requester.subject_id, hidden)
                )
                if not should_notify_access(
                    requester, _day(today if told else None), notification_day(when)
                ):
                    continue
                if requester.access_mode is AccessMode.NORMAL and told:
                    continue
                # The access's AuditEvent is not named (`about`): one that read a document
                # invisible to the patient carries INVISIBLE_PATIENT, which the notification
                # drops, so the id it named answered the patient 404 where another access's
                # answers 200, telling them that something was kept from them (R14, R18). Not
                # naming it only for those would tell the same by its absence.
                intents.append(Intent("access", patient_id, requester, when, None, labels))
        return intents

    def for_write(
        self,
        requester: Requester,
        notes: Iterable[str],
        interaction: str,
        resource_type: str,
        resource_id: str,
        resource: dict | None,
        labels: Sequence[Mapping[str, str]],
        patients: Sequence[str],
        when: datetime,
    ) -> list[Intent]:
        notes = set(notes)
        intents: list[Intent] = []
        if (
            Note.NOTIFY_DOCUMENT_DEPOSITED in notes
            and interaction == "create"
            and resource_type == "DocumentReference"
            and resource is not None
            and not _invisible_to_patient(labels)
        ):
            for patient_id in patients:
                intents.append(
                    Intent(
                        "deposit",
                        patient_id,
                        requester,
                        when,
                        f"DocumentReference/{resource_id}",
                        tuple(labels),
                        document_title(resource),
                    )
                )
        if resource_type == "Consent":
            for note, event in (
                (Note.NOTIFY_AUTHORIZATION_RECORDED, "authorization"),
                (Note.NOTIFY_INITIAL_CONSENT_DECLARED, "initial-consent"),
            ):
                if note in notes:
                    intents.extend(
                        Intent(event, patient_id, requester, when, f"Consent/{resource_id}")
                        for patient_id in patients
                    )
        return intents

    # -- writing ----------------------------------------------------------------------------

    def apply(self, tx: StoreTransaction, intents: Iterable[Intent]) -> list[Intent]:
        """Write the notifications still due; returns those written."""
        written = []
        for intent in intents:
            if intent.event == "access":
                day = notification_day(intent.when).isoformat()
                hidden = _hidden_from_representatives(intent.labels)
                told = any(
                    tx.notified_day(intent.patient_id, key) == day
                    for key in _told_keys(intent.requester.subject_id, hidden)
                )
                if intent.first_of_day_only and told:
                    continue
                communication = notification_for_access(
                    intent.requester,
                    intent.patient_id,
                    intent.when,
                    server_base=self.base_url,
                    audit_event_reference=intent.about,
                    labels=intent.labels,
                )
                tx.set_notified_day(
                    intent.patient_id, _day_key(intent.requester.subject_id, hidden), day
                )
            elif intent.event == "deposit":
                communication = notification_for_deposit(
                    intent.requester,
                    intent.patient_id,
                    intent.when,
                    server_base=self.base_url,
                    document_reference=intent.about or "",
                    document_title=intent.title,
                    labels=intent.labels,
                )
            else:
                communication = _CONSENT_NOTICES[intent.event](
                    intent.requester,
                    intent.patient_id,
                    intent.when,
                    server_base=self.base_url,
                    consent_reference=intent.about,
                )
            self._store(tx, communication)
            written.append(intent)
        return written

    def remember(self, intents: Iterable[Intent]) -> None:
        """After a commit: these practitioners' accesses are notified for the day."""
        with self._lock:
            for intent in intents:
                if intent.event == "access":
                    hidden = _hidden_from_representatives(intent.labels)
                    key = (intent.patient_id, _day_key(intent.requester.subject_id, hidden))
                    self._notified[key] = notification_day(intent.when).isoformat()
            if len(self._notified) > 100_000:  # a memo, not a store: start again
                self._notified.clear()

    def _store(self, tx: StoreTransaction, communication: dict) -> None:
        resource_id = versions.new_id()
        communication["id"] = resource_id
        stored = versions.stamp(communication, resource_id, 1, self.clock())
        entries = extract(communication, self.registry)
        tx.write(versions.indexed_write(stored, communication, "POST", 0, entries))


def document_title(document: Mapping) -> str | None:
    """What the patient would call the document: its description, title or type."""
    if document.get("description"):
        return str(document["description"])
    for content in document.get("content") or []:
        title = (content.get("attachment") or {}).get("title")
        if title:
            return str(title)
    kind = document.get("type") or {}
    if kind.get("text"):
        return str(kind["text"])
    for coding in kind.get("coding") or []:
        if coding.get("display"):
            return str(coding["display"])
    return None


# The first access of the day is told once per audience (R07, R17): a notification hidden
# from the representatives (an access to an INVISIBLE_REPRESENTANTS_LEGAUX document) is
# remembered apart, so that the day's first access they may see is told to them too. Counted
# once for everyone, a parent was told of no access on a day whose first one was hidden from
# them, while their trail showed the later ones: they learnt that something kept from them had
# been read. An access hidden from them is not told once any access was told that day.
_HIDDEN_FROM_REPRESENTATIVES_DAY = "#hidden-from-representatives"


def _hidden_from_representatives(labels: Iterable[Mapping[str, str]]) -> bool:
    return any(
        c.get("system") == SYSTEM_DMP_CONFIDENTIALITY
        and c.get("code") == INVISIBLE_REPRESENTANTS_LEGAUX
        for c in labels
    )


def _day_key(practitioner_id: str, hidden: bool) -> str:
    """The key of the practitioner's last notified day for a notification (hidden or not from
    the representatives)."""
    return practitioner_id + _HIDDEN_FROM_REPRESENTATIVES_DAY if hidden else practitioner_id


def _told_keys(practitioner_id: str, hidden: bool) -> tuple[str, ...]:
    """The keys whose day, if today, mean the access was told today: any notification covers
    one hidden from the representatives; only one they see covers one they may see."""
    if hidden:
        return (practitioner_id, _day_key(practitioner_id, True))
    return (practitioner_id,)


def _invisible_to_patient(labels: Iterable[Mapping[str, str]]) -> bool:
    return any(
        c.get("system") == SYSTEM_DMP_CONFIDENTIALITY and c.get("code") == INVISIBLE_PATIENT
        for c in labels
    )


def _day(iso: str | None):
    from datetime import date

    return date.fromisoformat(iso) if iso else None


def _hiding_count(event: dict) -> int:
    """How many of the labels that hide an event from a patient or a representative it
    carries: of one access's events, the one hiding from fewest is told (`for_access`)."""
    return len(hiding_codes((event.get("meta") or {}).get("security") or []))
