"""The patient's initial consent to access by the care team (Conseil d'État, 15 October 2025).

The ruling (CE, 10e-9e ch. réunies, n° 490409) annulled the arrêté of 26 October 2023 "en tant
seulement qu'[il] omet de mentionner l'obligation de recueil du consentement initial du
patient, préalablement à l'ouverture de l'accès à son DMP à l'ensemble des membres de l'équipe
de soins": since then, the care team's presumed consent (R10, CSP R.1111-46) opens the record
only once the patient's initial consent has been collected.

How it is recorded (decided here: PDSm4DMP maps the professional's access authorization,
EF_DMP04_01, to "une ressource Consent (à préciser)" and says nothing of the initial consent):

- A Consent of the patient's record (the DMP shape, `dmp-access-rules.md`) whose `category`
  carries `INITIAL_CONSENT_CODING` (`https://dmp-server.fr/fhir/CodeSystem/dmp-consent-category`
  `|initial-consent`). While one such Consent is `active` and its root provision in force, the
  initial consent is collected (`ConsentRules.initial_consent`).
- Who sets it: the patient (or a minor's legal representative), on any of their Consents (a
  Consent of its own, or their DMP Consent carrying the category too); or a professional who
  collected it and declares so, as the DMP lets the professional who creates the record
  declare that the patient was informed: a *new* Consent carrying the category, `status`
  active, `dateTime` (when it was collected), `performer` naming the declaring professional by
  IdNat_PS and nothing else, and no nested provision (a declaration grants no one anything by
  itself; the professional then records their own authorization, R10). A blocked professional
  (R09) declares nothing; it is declared once (409 after that).
- Who revokes it: the patient or a representative only (status `inactive`, a period end, the
  category removed, or a delete). Professionals never change or delete it.
- Audit: each write is a Consent version with its AuditEvent (R16) naming the writer; the
  declaration also names its professional in `performer`, and the patient is notified of it
  (R17, decided here: it opens their record to the care team; event `initial-consent`).

Whom it binds (decided here, from the ruling's text):

- Every access of a professional in normal mode under R10 (an active permit provision naming
  them) requires it, and so does a professional recording their own authorization. The
  ruling concerns the care team; a permit the patient wrote and one a professional recorded
  for themselves have the same shape (R10), so the rule cannot tell them apart and applies to
  both: fail closed. A patient who authorizes professionals records the initial consent once.
- Not the médecin traitant (R08): their access to the whole record is given by the law to the
  doctor the patient themselves designated (CSP L.1111-16, the declaration of médecin traitant
  signed by the patient), not by the arrêté's care-team rules the ruling censured.
- Not bris de glace (R11) nor centre 15 (R12): emergency access without consent (CSP
  L.1111-17) is outside the ruling, which annuls nothing about it.
- Not the patient nor their representatives (R06, R07), who are not professionals, and not
  deposits: feeding the record requires the patient's information, not their consent
  (CSP L.1111-15); the ruling is about opening access.
"""

from __future__ import annotations

from fhir_server.access.decision import Deny
from fhir_server.terminology import CANONICAL_BASE, SYSTEM_IDNAT_PS

SYSTEM_DMP_CONSENT_CATEGORY = f"{CANONICAL_BASE}/CodeSystem/dmp-consent-category"
INITIAL_CONSENT = "initial-consent"
INITIAL_CONSENT_CODING = {
    "system": SYSTEM_DMP_CONSENT_CATEGORY,
    "code": INITIAL_CONSENT,
    "display": "Consentement initial du patient à l'accès de l'équipe de soins",
}
MISSING_CODE = "initial-consent-missing"
MSG_MISSING = (
    "The patient's initial consent to access by the care team has not been collected; "
    "access to their record is refused"
)


def carries_initial_consent(consent: dict) -> bool:
    """Whether a Consent's category says it records the patient's initial consent."""
    for concept in consent.get("category") or []:
        if not isinstance(concept, dict):
            continue
        for coding in concept.get("coding") or []:
            if (
                isinstance(coding, dict)
                and coding.get("system") == SYSTEM_DMP_CONSENT_CATEGORY
                and coding.get("code") == INITIAL_CONSENT
            ):
                return True
    return False


def missing() -> Deny:
    """The refusal of a professional's access, or self-authorization, without it (R10)."""
    return Deny("R10", 403, "forbidden", MSG_MISSING, MISSING_CODE)


def declaration_problem(consent: dict, idnat_ps: str) -> Deny | None:
    """Why `consent` is not a professional's declaration that they collected the patient's
    initial consent, or None when it is one (its Consent shape already checked)."""
    if consent.get("status") != "active":
        return _invalid("A declared initial consent is active", "Consent.status")
    if not isinstance(consent.get("dateTime"), str):
        return _invalid(
            "A declared initial consent says when it was collected (Consent.dateTime)",
            "Consent.dateTime",
            code="required",
        )
    performers = consent.get("performer")
    if not isinstance(performers, list) or len(performers) != 1:
        return _invalid(
            "A declared initial consent names the professional who collected it, and only them "
            f"(one performer with an identifier of system {SYSTEM_IDNAT_PS})",
            "Consent.performer",
            code="required",
        )
    identifier = (
        (performers[0] or {}).get("identifier") if isinstance(performers[0], dict) else None
    )
    if (
        not isinstance(identifier, dict)
        or identifier.get("system") != SYSTEM_IDNAT_PS
        or identifier.get("value") != idnat_ps
    ):
        return Deny(
            "R10",
            403,
            "forbidden",
            "A professional may only declare an initial consent they collected themselves "
            "(Consent.performer names the requester's IdNat_PS)",
            "R10",
            ("Consent.performer[0].identifier",),
        )
    if (consent.get("provision") or {}).get("provision"):
        return _invalid(
            "A declared initial consent grants nothing by itself: no nested provision "
            "(the professional records their own authorization afterwards)",
            "Consent.provision.provision",
            code="processing",
        )
    return None


def _invalid(message: str, expression: str, code: str = "invalid") -> Deny:
    return Deny("R10", 422, code, message, None, (expression,))
