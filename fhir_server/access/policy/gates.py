"""The gates: whether a requester may act on one patient's record at all (R03, R06-R12),
before the constraints of the type they read or write."""

from __future__ import annotations

import unicodedata

from fhir_server.access import initial_consent
from fhir_server.access.decision import Deny, Note, forbidden
from fhir_server.access.habilitation import HabilitationMatrix, Readable
from fhir_server.access.policy.refusals import not_their_record, record_status_deny
from fhir_server.access.policy.tables import (
    MSG_CONSENT_UNREADABLE,
    MSG_R10,
    MSG_R11_OPPOSED,
    MSG_R11_REASON,
    MSG_R12_OPPOSED,
    MSG_REFUSED,
    Grant,
)
from fhir_server.access.record import PatientRecord
from fhir_server.access.requester import AccessMode, ActorKind, Requester


class PolicyBase:
    """The policy's state (the habilitation matrix it was started with, R13) and its gates."""

    def __init__(self, matrix: HabilitationMatrix) -> None:
        self.matrix = matrix
        # The systems J66 draws from: a document with no type coding in them has no J66
        # type, and R13 judges it by its class (`readable_node`).
        self._type_systems = tuple(sorted({system for system, _ in matrix.axes.types}))

    def j66_type(self, system: str, code: str) -> tuple[str, str] | None:
        """(system, code) in the matrix's spelling when it is a J66 type (R13), else None."""
        key = self.matrix.axes.key(system, code)
        return key if key in self.matrix.axes.types else None

    def _readable(self, requester: Requester) -> Readable:
        """R13: what the requester's J65 roles (profession, specialty) read."""
        return self.matrix.readable(self.matrix.roles_of(requester.profession, requester.specialty))

    def _person_gate(
        self,
        requester: Requester,
        record: PatientRecord | None,
        *,
        own_patient: bool = False,
    ) -> Grant | Deny:
        """R06/R07: the patient, or a representative of a minor, on that patient's record."""
        patient = requester.kind is ActorKind.PATIENT
        rule = "R06" if patient else "R07"
        if record is None:
            return Deny("R04", 400, "invalid", "The patient parameter is missing", "R04")
        acting = (
            record.patient_id == requester.subject_id
            if patient
            else requester.subject_id in record.representatives
        )
        if not acting:
            return not_their_record(requester)
        if not record.is_open and not own_patient:
            return record_status_deny(record, 403)
        return Grant(rule)

    def _practitioner_gate(self, requester: Requester, record: PatientRecord) -> Grant | Deny:
        """R03, R08-R12 for a practitioner on one record."""
        if not record.is_open:
            return record_status_deny(record, 403)
        idnat = requester.subject_id
        notes = mode_notes(requester.access_mode)
        if record.is_general_practitioner(idnat):
            return Grant("R08", notes, general_practitioner=True)
        mode = requester.access_mode
        if mode is AccessMode.BRIS_DE_GLACE and not declares_reason(requester.access_reason):
            return forbidden("R11", MSG_R11_REASON)
        if record.rules.is_blocked(idnat):
            if mode is AccessMode.NORMAL:
                return Deny("R09", 403, "forbidden", MSG_R10, "R10")
            return Deny("R09", 403, "forbidden", MSG_REFUSED, "access-refused")
        if record.uninterpretable_consents:
            return Deny("R09", 403, "forbidden", MSG_CONSENT_UNREADABLE, "access-refused")
        match mode:
            case AccessMode.NORMAL:
                if record.rules.is_authorized(idnat):
                    if not record.rules.initial_consent:
                        # CE 15/10/2025: no access under R10 before the patient's initial
                        # consent is collected (`access.initial_consent`). Told only to whom
                        # holds an authorization: the others are refused as before, so that
                        # a block stays undisclosed (R09).
                        return initial_consent.missing()
                    return Grant("R10", notes)
                return forbidden("R10", MSG_R10)
            case AccessMode.BRIS_DE_GLACE:
                if record.rules.oppose_bris_de_glace:
                    return forbidden("R11", MSG_R11_OPPOSED)
                return Grant("R11", notes)
            case AccessMode.CENTRE_15:
                if record.rules.oppose_centre_15:
                    return forbidden("R12", MSG_R12_OPPOSED)
                return Grant("R12", notes)
        return forbidden("R10", MSG_R10)


# Letters that print as nothing (Hangul fillers, the Braille blank): a reason made of them is
# as blank as one of spaces.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def declares_reason(reason: str | None) -> bool:
    """R11: a bris de glace access declares its reason, which the patient is told (R17). A
    reason is declared when it holds a letter or a digit. `str.strip` removes spaces only: a
    reason of zero-width or format characters (U+200B, U+FEFF, U+2060, a soft hyphen), of
    control characters or of blank letters (U+3164) was no reason at all and opened the
    record in bris de glace, the patient told an empty motive (fail closed)."""
    return isinstance(reason, str) and any(
        unicodedata.category(char)[0] in "LN" and char not in _BLANK_LETTERS for char in reason
    )


def mode_notes(mode: AccessMode) -> tuple[str, ...]:
    match mode:
        case AccessMode.BRIS_DE_GLACE:
            return (Note.NOTIFY_BRIS_DE_GLACE,)
        case AccessMode.CENTRE_15:
            return (Note.NOTIFY_CENTRE_15,)
    return (Note.NOTIFY_IF_FIRST_ACCESS_OF_DAY,)
