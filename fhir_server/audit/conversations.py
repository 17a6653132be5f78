"""Conversations of secure messaging, as the messaging of Mon espace santé (MSSanté
citoyenne, MSS-C) runs them.

The rules, from the public descriptions of MSS-C (ameli.fr for pharmacists, the Mon espace
santé FAQ, the GRADeS e-santé Martinique page, Le Moniteur des pharmacies; see
``docs/access-rules.md``, "Messages"):

- only a professional or an establishment opens a conversation with a patient; the patient
  answers. The one exception: the patient may write first to a pharmacy (officine) where a
  prescription of theirs was dispensed and reimbursed in the past year, through the
  pharmacy's organisational mailbox;
- the exchange goes on until the professional closes the conversation; the patient can then
  no longer answer in it.

The FHIR shape, decided here and kept to standard elements:

- a conversation is a thread of Communications (category ``message``): its first message has
  no ``inResponseTo``; every later one answers a message of the thread (``inResponseTo``) and
  carries ``partOf`` = the first message, which the server fills in (so that a thread is one
  ``Communication?part-of=Communication/<first>`` search away);
- a professional of the thread closes it by sending a message of the thread that also carries
  the category :data:`CATEGORY_CLOSURE`; the server then refuses any further message in it;
- the patient's pharmacies are named on the Patient with the HL7 extension
  ``patient-preferredPharmacy`` (sub-extension ``pharmacy``: a Reference to the Organization
  by its IdNat_Struct identifier). Only the health insurer's feed or an administration system
  writes the Patient (R15): the insurer is who knows where the patient's prescriptions were
  dispensed and reimbursed, as it does for Mon espace santé. A pharmacy is addressed the same
  way, ``{"type": "Organization", "identifier": {IdNat_Struct}}``; a practitioner whose token
  names that organization acts for it (reads, answers, closes as the pharmacy).
"""

from __future__ import annotations

from collections.abc import Mapping

from fhir_server.audit.notifications import SYSTEM_COMMUNICATION_CATEGORY
from fhir_server.terminology import SYSTEM_IDNAT_STRUCT

CATEGORY_CLOSURE = "closure"
CLOSURE_CATEGORY = {
    "coding": [
        {
            "system": SYSTEM_COMMUNICATION_CATEGORY,
            "code": CATEGORY_CLOSURE,
            "display": "Clôture de la conversation",
        }
    ]
}
EXT_PREFERRED_PHARMACY = "http://hl7.org/fhir/StructureDefinition/patient-preferredPharmacy"

# details codes of the refusals (OperationOutcome.issue.details), so that a client can tell
# the two conversation rules from the other messaging refusals.
RULE_INITIATIVE = "conversation-opened-by-professional"
RULE_CLOSED = "conversation-closed"


def organization_key(reference: Mapping | None, *, implied: bool = False) -> str | None:
    """``Organization/<IdNat_Struct>`` for an Organization named by IdNat_Struct, else None.

    ``implied``: the element can only reference an Organization (the extension's
    ``pharmacy``), so ``type`` may be left out; a message recipient or sender must say it.
    """
    if not isinstance(reference, Mapping) or reference.get("reference"):
        return None
    identifier = reference.get("identifier")
    if (
        isinstance(identifier, Mapping)
        and identifier.get("system") == SYSTEM_IDNAT_STRUCT
        and isinstance(identifier.get("value"), str)
        and identifier["value"]
        and reference.get("type", "Organization" if implied else None) == "Organization"
    ):
        return f"Organization/{identifier['value']}"
    return None


def pharmacies_of(patient: Mapping | None) -> frozenset[str]:
    """The participant keys of the patient's pharmacies, from ``patient-preferredPharmacy``.

    A malformed extension names no pharmacy (fail closed: the patient then only answers).
    """
    keys: set[str] = set()
    for extension in (patient or {}).get("extension") or []:
        if not isinstance(extension, Mapping) or extension.get("url") != EXT_PREFERRED_PHARMACY:
            continue
        for part in extension.get("extension") or []:
            if isinstance(part, Mapping) and part.get("url") == "pharmacy":
                key = organization_key(part.get("valueReference"), implied=True)
                if key:
                    keys.add(key)
    return frozenset(keys)


def declared_root(message: Mapping) -> str | None:
    """``Communication/<id>`` that ``message.partOf`` names, or None.

    On a stored message it is the first message of its conversation, filled in by the server
    when the message answered another; a message without it opened its conversation (or was
    stored before conversations were tracked: the service then walks ``inResponseTo``).
    """
    for ref in message.get("partOf") or []:
        target = ref.get("reference") if isinstance(ref, Mapping) else None
        if isinstance(target, str) and target.startswith("Communication/"):
            return target
    return None
