"""R17: telling the patient, as Communication resources in their record.

A notification is a Communication (status completed) with category ``notification`` in
:data:`SYSTEM_COMMUNICATION_CATEGORY` (also coded HL7 communication-category#notification so
generic clients recognise it), ``subject`` and ``recipient`` the patient, a readable French text
in ``payload.contentString`` and the structured facts in the complex extension
:data:`EXT_NOTIFICATION_FACT`. The patient (and, within R07, the representatives) find them with
an ordinary ``Communication?category=...|notification`` search.

Decided here:

- ``sender`` is the server itself (a logical Device reference carrying the server's base URL),
  not the practitioner: the practitioner did not write the text and must not become a
  participant who could read it back through the messaging rules. The practitioner is in the
  facts extension (IdNat_PS, name, profession, organization).
- ``about`` points at what the notification is about when it is a resource (the deposited
  DocumentReference, the Consent). An access notification names no AuditEvent
  (``service.notify``): the event of an access to a document invisible to the patient is
  hidden from them, and naming it told them that something was kept from them.
- ``meta.security`` carries the security labels of the document concerned, so that a deposit
  notification of an INVISIBLE_REPRESENTANTS_LEGAUX document is hidden from representatives by
  the same rule that hides the document (R07). Documents labelled INVISIBLE_PATIENT are not
  notified at all (:func:`should_notify_deposit`): the title would announce them before the
  medical announcement (R14).
- Times in the text are in Europe/Paris; ``sent`` and the facts are UTC instants.

Code system :data:`SYSTEM_COMMUNICATION_CATEGORY`
(https://dmp-server.fr/fhir/CodeSystem/communication-category):
``notification`` (the server tells the patient about an event of their record), ``message``
(secure messaging between a practitioner and a patient, :mod:`fhir_server.audit.messaging`) and
``closure`` (a message by which a professional closes its conversation,
:mod:`fhir_server.audit.conversations`).

Code system :data:`SYSTEM_NOTIFICATION_EVENT` (https://dmp-server.fr/fhir/CodeSystem/
notification-event): ``access`` (a practitioner opened the record), ``deposit`` (a document
was added), ``authorization`` (a practitioner recorded the patient's authorization for
themselves as a member of the care team), ``initial-consent`` (a practitioner declared they
collected the patient's initial consent to the care team's access, CE 15/10/2025).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from fhir_server.access.days import PATIENT_TIMEZONE
from fhir_server.access.requester import AccessMode, ActorKind, Requester
from fhir_server.terminology import (
    CANONICAL_BASE,
    INVISIBLE_PATIENT,
    SYSTEM_ACCESS_MODE,
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
    SYSTEM_PROFESSION,
    SYSTEM_RFC3986,
)

SYSTEM_COMMUNICATION_CATEGORY = f"{CANONICAL_BASE}/CodeSystem/communication-category"
SYSTEM_HL7_COMMUNICATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"
CATEGORY_NOTIFICATION = "notification"
CATEGORY_MESSAGE = "message"
SYSTEM_NOTIFICATION_EVENT = f"{CANONICAL_BASE}/CodeSystem/notification-event"
EXT_NOTIFICATION_FACT = f"{CANONICAL_BASE}/StructureDefinition/notification-fact"

# TRE_G15 professions as they read inside a French sentence.
PROFESSION_LABELS = {
    "10": "médecin",
    "21": "pharmacien",
    "26": "audioprothésiste",
    "28": "opticien-lunetier",
    "40": "chirurgien-dentiste",
    "50": "sage-femme",
    "60": "infirmier",
    "69": "infirmier psychiatrique",
    "70": "masseur-kinésithérapeute",
    "80": "pédicure-podologue",
    "91": "orthophoniste",
    "92": "orthoptiste",
    "94": "ergothérapeute",
    "95": "diététicien",
    "96": "psychomotricien",
    "98": "manipulateur d'électroradiologie médicale",
}

NOTIFICATION_CATEGORY = {
    "coding": [
        {
            "system": SYSTEM_COMMUNICATION_CATEGORY,
            "code": CATEGORY_NOTIFICATION,
            "display": "Notification",
        },
        {
            "system": SYSTEM_HL7_COMMUNICATION_CATEGORY,
            "code": "notification",
            "display": "Notification",
        },
    ]
}


# --- decisions ----------------------------------------------------------------------------------


def should_notify_access(
    requester: Requester, last_notified_day_for_this_practitioner: date | None, today: date
) -> bool:
    """Whether an access by ``requester`` to a record must be notified to the patient (R17).

    Normal mode: the first access of the day by this practitioner (``today`` is the patient's
    local day, :func:`notification_day`). Bris de glace and centre 15: every access. Patients,
    representatives, systems and the server: never. The caller records ``today`` as the
    practitioner's last notified day after any notification it sends for them (so a normal
    access after a bris de glace notified the same day is not notified twice).
    """
    if requester.kind != ActorKind.PRACTITIONER:
        return False
    if requester.access_mode in (AccessMode.BRIS_DE_GLACE, AccessMode.CENTRE_15):
        return True
    return last_notified_day_for_this_practitioner != today


def should_notify_deposit(requester: Requester, labels: Iterable[Mapping[str, str]] = ()) -> bool:
    """Whether a deposit must be notified (R17).

    Not when the patient or a representative added the document themselves, nor for the
    server's own loads, nor for a document labelled INVISIBLE_PATIENT (R14).
    """
    if requester.kind not in (ActorKind.PRACTITIONER, ActorKind.SYSTEM):
        return False
    return not any(
        c.get("system") == SYSTEM_DMP_CONFIDENTIALITY and c.get("code") == INVISIBLE_PATIENT
        for c in labels
    )


def notification_day(when: datetime, tz: ZoneInfo = PATIENT_TIMEZONE) -> date:
    """The patient's calendar day of an instant: the day ``should_notify_access`` compares."""
    return _aware(when).astimezone(tz).date()


# --- builders -----------------------------------------------------------------------------------


def notification_for_access(
    requester: Requester,
    patient_id: str,
    when: datetime,
    *,
    server_base: str,
    audit_event_reference: str | None = None,
    labels: Iterable[Mapping[str, str]] = (),
) -> dict:
    """The Communication telling the patient that a practitioner accessed their record.

    The text depends on the access mode: consultation (normal), bris de glace (with the
    declared reason), centre 15 (with the reason when one was given).
    """
    actor = actor_phrase(requester)
    at = _french_datetime(when)
    mode = AccessMode(requester.access_mode)
    if mode == AccessMode.BRIS_DE_GLACE:
        text = f"{actor} a accédé à votre dossier en urgence (bris de glace) {at}."
    elif mode == AccessMode.CENTRE_15:
        text = (
            f"{actor} a accédé à votre dossier dans le cadre d'une régulation médicale "
            f"(centre 15, SAMU) {at}."
        )
    else:
        text = f"{actor} a consulté votre dossier {at}."
    if mode != AccessMode.NORMAL and requester.access_reason:
        text += f" Motif déclaré : {requester.access_reason.strip()}"
        if not text.endswith((".", "!", "?")):
            text += "."
    facts = _actor_facts(requester) + [
        {"url": "accessMode", "valueCoding": {"system": SYSTEM_ACCESS_MODE, "code": mode.value}}
    ]
    if requester.access_reason and mode != AccessMode.NORMAL:
        facts.append({"url": "reason", "valueString": requester.access_reason})
    if audit_event_reference:
        facts.append({"url": "auditEvent", "valueReference": {"reference": audit_event_reference}})
    return _communication(
        patient_id,
        when,
        server_base=server_base,
        event="access",
        text=text,
        facts=facts,
        about=audit_event_reference,
        labels=labels,
    )


def notification_for_deposit(
    depositor: Requester,
    patient_id: str,
    when: datetime,
    *,
    server_base: str,
    document_reference: str,
    document_title: str | None = None,
    labels: Iterable[Mapping[str, str]] = (),
) -> dict:
    """The Communication telling the patient that a document was added to their record."""
    title = (document_title or "").strip() or "document sans titre"
    text = f"Un nouveau document a été ajouté à votre dossier : {title}, {_french_datetime(when)}"
    by = _depositor_phrase(depositor)
    text += f", par {by}." if by else "."
    facts = _actor_facts(depositor) + [
        {"url": "document", "valueReference": {"reference": document_reference, "display": title}}
    ]
    return _communication(
        patient_id,
        when,
        server_base=server_base,
        event="deposit",
        text=text,
        facts=facts,
        about=document_reference,
        labels=labels,
    )


def notification_for_authorization(
    requester: Requester,
    patient_id: str,
    when: datetime,
    *,
    server_base: str,
    consent_reference: str | None = None,
) -> dict:
    """The Communication telling the patient that a practitioner recorded their authorization.

    R10: a practitioner of the care team may record the authorization for themselves
    (presumed consent); the patient is told and may withdraw it.
    """
    text = (
        f"{actor_phrase(requester)} s'est déclaré(e) membre de votre équipe de soins "
        f"{_french_datetime(when)} et a enregistré votre autorisation d'accès à votre dossier. "
        "Vous pouvez retirer cette autorisation à tout moment depuis la gestion des accès "
        "à votre dossier."
    )
    return _consent_notice(
        "authorization", text, requester, patient_id, when, server_base, consent_reference
    )


# --- text pieces --------------------------------------------------------------------------------


def actor_phrase(requester: Requester) -> str:
    """ "Le Dr Marie Durand (médecin, CH Exemple)": who did it, as the patient reads it."""
    name = requester.display_name.strip()
    if not name:
        name = f"Un professionnel de santé (identifiant {requester.subject_id})"
    elif name.split(" ", 1)[0].rstrip(".") in {"Dr", "Pr", "Docteur", "Professeur"}:
        name = f"Le {name}"
    details = []
    if requester.profession:
        details.append(PROFESSION_LABELS.get(requester.profession, "professionnel de santé"))
    if requester.organization_name:
        details.append(requester.organization_name)
    return f"{name} ({', '.join(details)})" if details else name


def _depositor_phrase(requester: Requester) -> str:
    if requester.kind == ActorKind.PRACTITIONER:
        phrase = actor_phrase(requester)
        return phrase[0].lower() + phrase[1:] if phrase.startswith(("Le ", "Un ")) else phrase
    return requester.organization_name or requester.display_name or ""


def _french_datetime(when: datetime) -> str:
    local = _aware(when).astimezone(PATIENT_TIMEZONE)
    return f"le {local:%d/%m/%Y} à {local:%H:%M}"


# --- resource pieces ----------------------------------------------------------------------------


def _actor_facts(requester: Requester) -> list[dict]:
    facts: list[dict] = []
    if requester.kind == ActorKind.PRACTITIONER:
        facts.append(
            {
                "url": "actor",
                "valueIdentifier": {"system": SYSTEM_IDNAT_PS, "value": requester.subject_id},
            }
        )
    else:
        facts.append(
            {"url": "actorReference", "valueReference": {"reference": requester.reference}}
        )
    if requester.display_name:
        facts.append({"url": "actorName", "valueString": requester.display_name})
    if requester.profession:
        facts.append(
            {
                "url": "profession",
                "valueCoding": {"system": SYSTEM_PROFESSION, "code": requester.profession},
            }
        )
    if requester.organization_name:
        facts.append({"url": "organization", "valueString": requester.organization_name})
    return facts


def notification_for_initial_consent(
    requester: Requester,
    patient_id: str,
    when: datetime,
    *,
    server_base: str,
    consent_reference: str | None = None,
) -> dict:
    """The Communication telling the patient that a practitioner declared they collected
    the patient's initial consent (`access.initial_consent`): it opens the record to the
    care team, so the patient is told, and may withdraw it."""
    text = (
        f"{actor_phrase(requester)} a déclaré {_french_datetime(when)} avoir recueilli votre "
        "consentement initial à l'accès de votre équipe de soins à votre dossier. Vous pouvez "
        "retirer ce consentement à tout moment depuis la gestion des accès à votre dossier."
    )
    return _consent_notice(
        "initial-consent", text, requester, patient_id, when, server_base, consent_reference
    )


def _consent_notice(
    event: str,
    text: str,
    requester: Requester,
    patient_id: str,
    when: datetime,
    server_base: str,
    consent_reference: str | None,
) -> dict:
    """A notification about a Consent a practitioner wrote: who, and which Consent."""
    facts = _actor_facts(requester)
    if consent_reference:
        facts.append({"url": "consent", "valueReference": {"reference": consent_reference}})
    return _communication(
        patient_id,
        when,
        server_base=server_base,
        event=event,
        text=text,
        facts=facts,
        about=consent_reference,
    )


def _communication(
    patient_id: str,
    when: datetime,
    *,
    server_base: str,
    event: str,
    text: str,
    facts: list[dict],
    about: str | None = None,
    labels: Iterable[Mapping[str, str]] = (),
) -> dict:
    instant = _instant(when)
    fact_ext = [
        {"url": "event", "valueCoding": {"system": SYSTEM_NOTIFICATION_EVENT, "code": event}},
        {"url": "occurred", "valueDateTime": instant},
        *facts,
    ]
    communication: dict = {
        "resourceType": "Communication",
        "extension": [{"url": EXT_NOTIFICATION_FACT, "extension": fact_ext}],
        "status": "completed",
        "category": [NOTIFICATION_CATEGORY],
        "subject": {"reference": f"Patient/{patient_id}"},
        "sent": instant,
        "recipient": [{"reference": f"Patient/{patient_id}"}],
        "sender": {
            "type": "Device",
            "identifier": {"system": SYSTEM_RFC3986, "value": server_base},
            "display": "Mon espace santé",
        },
        "payload": [{"contentString": text}],
    }
    if about:
        communication["about"] = [{"reference": about}]
    security = []
    seen = set()
    for c in labels:
        key = (c.get("system"), c.get("code"))
        if c.get("code") and key not in seen:
            seen.add(key)
            security.append({k: c[k] for k in ("system", "code", "display") if c.get(k)})
    if security:
        communication["meta"] = {"security": security}
    return communication


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("notification times must be timezone-aware datetimes")
    return when


def _instant(when: datetime) -> str:
    return _aware(when).astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
