"""The DMP access policy: R03-R15 and R18 as decisions, one entry point per interaction.

The service gathers the facts (the Requester, the PatientRecord of the patient concerned,
the resource for single reads and writes) and asks; the policy answers with a Permit whose
constraints the service adds to the store query, or a Deny it turns into an error and an
audit event. SMART scopes (R02) are checked by the service before it asks.

What each actor may do (types not listed are refused with rule "types"):

| actor | read / search | write |
|---|---|---|
| patient (R06) | own compartment, minus INVISIBLE_PATIENT; AuditEvents; Consents | documents (own: anything; others': MASQUE_PS only), Consents, Communications they send |
| representative (R07) | as the patient of a minor, minus INVISIBLE_REPRESENTANTS_LEGAUX too | as the patient |
| practitioner | Patient, DocumentReference, Binary (as its owning DocumentReference), List, Communication (sender/recipient only); directory types | deposits; own documents; removing INVISIBLE_* labels; own authorization (R10); Communications they send |
| system (R15) | Patient identities; admin/health insurer also RelatedPerson | deposits for open records; admin/health insurer: Patient, RelatedPerson |
| payers (R05) | nothing | health insurer: deposits and identities only |

Labels (R14) are looked for in both DocumentReference.securityLabel and meta.security.
AuditEvents and Communications about a labelled document must carry that document's DMP
labels in meta.security (the audit helper's side of the contract): that is how R07 hides
"the AuditEvents of accesses to" INVISIBLE_REPRESENTANTS_LEGAUX documents, and how the
patient is not told about an INVISIBLE_PATIENT document through its audit trail or its
deposit notification.

What a refusal reveals (R18), decided per case:
- A single read of a resource other than Patient that the requester may not see, for a
  reason that depends on the patient's data or choices (another patient's record, record
  status, consent, masking, habilitation, messaging), is a 404 worded exactly like a genuine
  not-found (`decision.not_found_message`).
- A search naming a patient, and a read of a Patient, answer with the reason the rules
  require (R03 record status, R10 missing authorization, R11/R12 oppositions), since the
  requester designated that patient and must know what to do next. A blocked practitioner
  (R09) gets the same answer as an unauthorized one in normal mode and a generic refusal in
  the other modes: the block itself is not disclosed (the audit still says R09).
- Refusals that depend only on the requester (R05, actor types, R11 missing reason, R04)
  are plain 403/400 answers.
- A change (update, patch, delete) the requester may make of no resource of its type is
  refused whatever the id names (`change_refusal`), before the id is looked at, so that an
  existing id and a missing one get the same answer.
"""

from fhir_server.access.policy.tables import (
    DEPOSIT_TYPES,
    DIRECTORY_TYPES,
    IDENTITY_TYPES,
    MSG_CONSENT_UNREADABLE,
    MSG_R04,
    MSG_R04_PATIENT,
    MSG_R05,
    MSG_R10,
    MSG_R11_OPPOSED,
    MSG_R11_REASON,
    MSG_R12_OPPOSED,
    MSG_REFUSED,
    PAYER_TYPES,
    PRACTITIONER_READ_TYPES,
    TYPES_RULE,
)
from fhir_server.access.policy.writes import WriteDecisions

# Where each concern lives: `tables` (types per actor family, messages), `gates` (R03,
# R06-R12 on one record), `reads` (searches and single reads), `writes`, `authorizations`
# (a practitioner's R10 Consents), `labels` (R13/R14 masking), `references` (message
# parties, authors), `refusals` (what a refusal reveals, R18).


class DmpPolicy(WriteDecisions):
    """The policy, holding the habilitation matrix it was started with (R13): one entry
    point per interaction (`decide_search`, `decide_read`, `decide_binary_read`,
    `decide_write`)."""


__all__ = [
    "DEPOSIT_TYPES",
    "DIRECTORY_TYPES",
    "IDENTITY_TYPES",
    "MSG_CONSENT_UNREADABLE",
    "MSG_R04",
    "MSG_R04_PATIENT",
    "MSG_R05",
    "MSG_R10",
    "MSG_R11_OPPOSED",
    "MSG_R11_REASON",
    "MSG_R12_OPPOSED",
    "MSG_REFUSED",
    "PAYER_TYPES",
    "PRACTITIONER_READ_TYPES",
    "TYPES_RULE",
    "DmpPolicy",
]
