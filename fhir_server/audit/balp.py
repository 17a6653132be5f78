"""AuditEvent builders in the IHE Basic Audit Log Patterns (BALP) shapes (R16).

Every interaction that concerns a patient's data is written as AuditEvents, one per patient
concerned, because BALP asks for it and because the patient searches their AuditEvents through
the ``patient`` search parameter (``AuditEvent.entity.what`` of type Patient): an event naming
two patients could not be shown to either without revealing the other.

The builders are pure: they take what the service layer knows about the interaction and return
plain FHIR R4 JSON dicts; the service stores them (in the same transaction as a write, durably
before a read's response is sent) and seals them with :mod:`fhir_server.audit.chain`.

Shapes (BALP 1.1, https://profiles.ihe.net/ITI/BALP/):

=================  ========================  ======  ====================  ====================
interaction        BALP profile              action  client agent type     server agent type
=================  ========================  ======  ====================  ====================
read, vread        PatientRead / Read        R       DCM 110152 Dest.      DCM 110153 Source
search-*, history  PatientQuery / Query      E / R   DCM 110153 Source     DCM 110152 Dest.
create             PatientCreate / Create    C       DCM 110153 Source     DCM 110152 Dest.
update, patch      PatientUpdate / Update    U       DCM 110153 Source     DCM 110152 Dest.
delete             PatientDelete / Delete    D       DCM 110150 Applic.    custodian
transaction/batch  (none; Create-like)       E       DCM 110153 Source     DCM 110152 Dest.
refusal            AuthZconsent              E       DCM 110150 Applic.    authserver
=================  ========================  ======  ====================  ====================

The client/server agent types follow BALP exactly, including its DICOM convention that for a
query the client is the "Source" (the query parameters flow from it) while for a read the server
is the "Source" (the data flows from it).

Decisions taken here (BALP leaves them open):

- The X-Request-Id is the BALP ``transaction`` entity (type BasicAuditEntityType#XrequestId,
  ``what.identifier.value``) in the RESTful shapes, as BALP defines it. The AuthZconsent profile
  closes its entity slicing (patient, consent, token), so there the X-Request-Id travels as the
  extension :data:`EXT_REQUEST_ID` instead.
- The user agent is the Requester: ``who`` is ``Patient/x`` or ``RelatedPerson/x`` for patients
  and representatives (resources that exist here), and an IdNat_PS *identifier* for
  practitioners (who are not stored as resources). ``role`` carries the TRE_G15 profession and
  the TRE_R38 specialty; ``purposeOfUse`` carries the v3-ActReason purpose (TREAT / BTG / ETREAT
  for practitioners, PATRQT for the patient, FAMRQT for a representative) and the TRE_R248 access
  mode, with the declared reason of a bris de glace in ``purposeOfUse.text``. The token id goes
  in ``agent.policy`` as ``urn:ietf:params:oauth:jti:<jti>``. Reading interactions type the user
  IRCP (information recipient); writing ones type it AUT (author), from BALP's DataSources set.
  Systems and the server itself have no user agent: the client agent is then the requestor.
- A practitioner's organization is an extra agent typed v3-RoleClass#PROV (BALP's ``userorg``),
  requestor false; BALP's open agent slicing allows it on every RESTful shape.
- ``meta.security`` of each event is the union of the security labels of its data entities, so
  that the access policy filters AuditEvents with the same clauses it uses for documents (R07:
  a representative never sees the AuditEvents of accesses to INVISIBLE_REPRESENTANTS_LEGAUX
  documents). A search event carries the labels of the result entities the caller passes; the
  caller decides whether to pass them (BALP records no results for a query).
- ``meta.profile`` names the BALP profile only when the event conforms to it (those profiles fix
  outcome to success); failed interactions keep the same shape with outcome 4/8 and
  ``outcomeDesc``, as BALP's notes suggest, without claiming the profile.
  A refusal claims AuthZconsent only when a practitioner and their organization asked: the
  profile requires both agents (a patient, a representative or a system has no
  organization). A search's event claims PatientQuery or Query only when it lists no
  result: those profiles record none (their entities are sliced on type alone, and every
  System Object is the query), while the DMP names every match and included resource, and
  the labelled resources the criteria name (R16, R18).
- Each event gets a random UUID ``id`` so that it can be sealed in the hash chain before it is
  stored.

XDS.b (IHE ITI TF-2, ATNA audit messages as recorded by our Registry/Repository):

==========  ==========================  ======  ============  ===========================
trans.      type (DCM)                  action  client        server
==========  ==========================  ======  ============  ===========================
ITI-41      110107 Import               C       110153 Source 110152 Destination
ITI-18      110112 Query                E       110153 Source 110152 Destination
ITI-43      110106 Export               R       110152 Dest.  110153 Source
==========  ==========================  ======  ============  ===========================

subtype is ``urn:ihe:event-type-code#ITI-nn``. ITI-41 records the patient and the submission set
(type 2 System Object, role 20 Job, identified by its uniqueId) plus the stored documents;
ITI-18 records the query (role 24 Query, ``what.identifier`` the stored query id, ``query`` the
base64 AdhocQueryRequest, detail QueryEncoding UTF-8); ITI-43 records each document (role 3
Report, identified by its uniqueId, detail "Repository Unique Id").
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from fhir_server.access.requester import AccessMode, ActorKind, Requester
from fhir_server.errors import RULE_SYSTEM
from fhir_server.terminology import (
    CANONICAL_BASE,
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    PURPOSE_BY_MODE,
    SYSTEM_ACCESS_MODE,
    SYSTEM_ACT_REASON,
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
    SYSTEM_PARTICIPATION_TYPE,
    SYSTEM_PROFESSION,
    SYSTEM_RFC3986,
)

# --- code systems -----------------------------------------------------------------------------

SYSTEM_DCM = "http://dicom.nema.org/resources/ontology/DCM"
SYSTEM_AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
SYSTEM_RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
SYSTEM_AUDIT_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SYSTEM_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SYSTEM_SECURITY_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SYSTEM_PROVENANCE_PARTICIPANT_TYPE = (
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
)
SYSTEM_EXTRA_SECURITY_ROLE_TYPE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
SYSTEM_V3_ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
SYSTEM_RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
SYSTEM_IHE_EVENT_TYPE = "urn:ihe:event-type-code"
SYSTEM_BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
SYSTEM_BALP_AUTHZ_SUBTYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType"
SYSTEM_BALP_USER_AGENT_TYPES = "https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes"
# TRE_R38_SpecialiteOrdinale (spécialités ordinales), for Requester.specialty ("SM54" ...).
SYSTEM_SPECIALTY = "urn:oid:1.2.250.1.71.4.2.5"

BALP_PROFILE_BASE = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"

# The X-Request-Id where BALP's closed entity slicing leaves no room for its entity (AuthZ).
EXT_REQUEST_ID = f"{CANONICAL_BASE}/StructureDefinition/request-id"

# AuditEvent.outcome (R4 code, audit-event-outcome)
OUTCOME_SUCCESS = "0"
OUTCOME_MINOR_FAILURE = "4"
OUTCOME_SERIOUS_FAILURE = "8"
OUTCOME_MAJOR_FAILURE = "12"
_OUTCOMES = frozenset({"0", "4", "8", "12"})

# object-role codes for data entities
ROLE_DOMAIN_RESOURCE = "4"
ROLE_REPORT = "3"
ROLE_JOB = "20"
ROLE_QUERY = "24"

# ATNA ParticipantObjectIDTypeCode of an XDS submission set (ITI TF-2 ITI-41 audit message).
XDS_SUBMISSION_SET_ID_TYPE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"

_DCM_DISPLAY = {
    "110150": "Application",
    "110152": "Destination Role ID",
    "110153": "Source Role ID",
    "110106": "Export",
    "110107": "Import",
    "110112": "Query",
    "110113": "Security Alert",
}
_OBJECT_ROLE_DISPLAY = {
    "1": "Patient",
    "3": "Report",
    "4": "Domain Resource",
    "20": "Job",
    "24": "Query",
}
_PROFESSION_DISPLAY = {
    "10": "Médecin",
    "21": "Pharmacien",
    "26": "Audioprothésiste",
    "28": "Opticien-lunetier",
    "40": "Chirurgien-dentiste",
    "50": "Sage-femme",
    "60": "Infirmier",
    "69": "Infirmier psychiatrique",
    "70": "Masseur-kinésithérapeute",
    "80": "Pédicure-podologue",
    "91": "Orthophoniste",
    "92": "Orthoptiste",
    "94": "Ergothérapeute",
    "95": "Diététicien",
    "96": "Psychomotricien",
    "98": "Manipulateur ERM",
}

# interaction -> (shape, default action)
_INTERACTIONS: dict[str, tuple[str, str]] = {
    "read": ("read", "R"),
    "vread": ("read", "R"),
    "search": ("query", "E"),
    "search-type": ("query", "E"),
    "search-system": ("query", "E"),
    "history": ("query", "R"),
    "history-instance": ("query", "R"),
    "history-type": ("query", "R"),
    "history-system": ("query", "R"),
    "operation": ("query", "E"),
    "create": ("create", "C"),
    "update": ("update", "U"),
    "patch": ("update", "U"),
    "delete": ("delete", "D"),
    "transaction": ("create", "E"),
    "batch": ("create", "E"),
}
_PROFILE_BY_SHAPE = {
    "read": ("IHE.BasicAudit.PatientRead", "IHE.BasicAudit.Read", {"read", "vread"}),
    "query": (
        "IHE.BasicAudit.PatientQuery",
        "IHE.BasicAudit.Query",
        {"search", "search-type", "search-system"},
    ),
    "create": ("IHE.BasicAudit.PatientCreate", "IHE.BasicAudit.Create", {"create"}),
    "update": ("IHE.BasicAudit.PatientUpdate", "IHE.BasicAudit.Update", {"update", "patch"}),
    "delete": ("IHE.BasicAudit.PatientDelete", "IHE.BasicAudit.Delete", {"delete"}),
}

XDS_TRANSACTIONS: dict[str, tuple[str, str, str]] = {
    # transaction -> (DCM event type, action, display of the IHE event type code)
    "ITI-41": ("110107", "C", "Provide and Register Document Set-b"),
    "ITI-18": ("110112", "E", "Registry Stored Query"),
    "ITI-43": ("110106", "R", "Retrieve Document Set"),
    "ITI-57": ("110107", "U", "Update Document Set"),
}


# --- values ------------------------------------------------------------------------------------


def security_labels_of(resource: Mapping) -> tuple[Mapping[str, str], ...]:
    """A resource's labels, each once: ``meta.security`` and, for a DocumentReference,
    ``securityLabel`` (where the DMP confidentiality codes usually live, R14)."""
    labels: list[Mapping[str, str]] = list((resource.get("meta") or {}).get("security") or [])
    for concept in resource.get("securityLabel") or []:
        labels.extend(concept.get("coding") or [])
    return tuple(_unique_codings(labels))


def security_labels_of_all(resources: Iterable[Mapping]) -> tuple[Mapping[str, str], ...]:
    """The labels of several resources (`security_labels_of`), each once, in order."""
    return tuple(
        _unique_codings(label for resource in resources for label in security_labels_of(resource))
    )


@dataclass(frozen=True)
class DataEntity:
    """A resource (or XDS object) an interaction touched: BALP's ``entity[data]``.

    ``patient_id`` says whose record it belongs to, so that an interaction touching several
    patients puts each entity only in that patient's event; None puts it in every event.
    ``security_labels`` are codings (dicts with system/code) copied to ``entity.securityLabel``
    and, merged, to the event's ``meta.security``.
    """

    reference: str | None = None  # "DocumentReference/abc" (relative, no version)
    version: str | None = None
    security_labels: tuple[Mapping[str, str], ...] = ()
    patient_id: str | None = None
    role: str = ROLE_DOMAIN_RESOURCE
    identifier: tuple[str | None, str] | None = None  # (system, value), e.g. an XDS uniqueId
    name: str | None = None
    details: tuple[tuple[str, str], ...] = ()  # (type, valueString)

    def __post_init__(self) -> None:
        if self.reference is None and self.identifier is None:
            raise ValueError("a DataEntity needs a reference or an identifier")

    @classmethod
    def from_resource(
        cls,
        resource: Mapping,
        *,
        patient_id: str | None = None,
        role: str = ROLE_DOMAIN_RESOURCE,
    ) -> DataEntity:
        """The entity for a stored resource: its reference, version and security labels.

        Labels come from ``meta.security`` and, for a DocumentReference, from ``securityLabel``
        (where the DMP confidentiality codes usually live, R14).
        """
        return cls(
            reference=f"{resource['resourceType']}/{resource['id']}",
            version=resource.get("meta", {}).get("versionId"),
            security_labels=security_labels_of(resource),
            patient_id=patient_id,
            role=role,
        )

    def to_fhir(self) -> dict:
        what: dict = {}
        if self.reference:
            ref = self.reference
            if self.version:
                ref = f"{ref}/_history/{self.version}"
            what["reference"] = ref
        if self.identifier:
            system, value = self.identifier
            what["identifier"] = {"value": value} | ({"system": system} if system else {})
        entity: dict = {
            "what": what,
            "type": _coding(SYSTEM_AUDIT_ENTITY_TYPE, "2", "System Object"),
            "role": _coding(SYSTEM_OBJECT_ROLE, self.role, _OBJECT_ROLE_DISPLAY.get(self.role)),
        }
        if self.security_labels:
            entity["securityLabel"] = [_clean_coding(c) for c in self.security_labels]
        if self.name:
            entity["name"] = self.name
        if self.details:
            entity["detail"] = [{"type": t, "valueString": v} for t, v in self.details]
        return entity


# --- RESTful interactions -------------------------------------------------------------------


def build_audit_events(
    *,
    interaction: str,
    requester: Requester,
    patients: Sequence[str],
    outcome: str = OUTCOME_SUCCESS,
    recorded: datetime,
    server_base: str,
    request_id: str | None = None,
    raw_query: bytes | str | None = None,
    entities: Sequence[DataEntity] = (),
    client_address: str | None = None,
    action: str | None = None,
    outcome_desc: str | None = None,
    query_description: str | None = None,
) -> list[dict]:
    """One AuditEvent per patient concerned by a RESTful interaction (BALP shapes).

    ``interaction`` is a http://hl7.org/fhir/restful-interaction code (read, vread, search-type,
    history-instance, create, update, patch, delete, transaction, batch, operation ...).
    ``patients`` are Patient ids; with none, one event without a patient entity is returned
    (BALP's non-patient profiles). ``raw_query`` is the raw request (method + path + query
    string, or the POST body of a _search) recorded base64-encoded in the query entity of
    searches. ``action`` overrides the action derived from the interaction.

    Raises ValueError for an unknown interaction or outcome, a naive ``recorded``.
    """
    if interaction not in _INTERACTIONS:
        raise ValueError(f"unknown RESTful interaction {interaction!r}")
    _check_outcome(outcome)
    shape, default_action = _INTERACTIONS[interaction]
    action = action or default_action
    if action not in {"C", "R", "U", "D", "E"}:
        raise ValueError(f"unknown AuditEvent action {action!r}")
    instant = _instant(recorded)

    client_type, server_type = _agent_types(shape)
    user_type = "IRCP" if shape in {"read", "query"} else "AUT"

    events = []
    for patient_id, mine in _rest_event_entities(interaction, patients, entities):
        entity_list: list[dict] = []
        if request_id:
            entity_list.append(_request_id_entity(request_id))
        if patient_id is not None:
            entity_list.append(_patient_entity(patient_id))
        entity_list.extend(e.to_fhir() for e in mine)
        if shape == "query":
            entity_list.append(_query_entity(raw_query, query_description))

        event = {
            "resourceType": "AuditEvent",
            "id": _new_id(),
            "meta": _meta(
                # BALP's Query profiles require the raw request (entity[query].query 1..1)
                # and record no results: a search's event naming its matches (R16) keeps
                # their shape without claiming them.
                _profile(shape, interaction, outcome, patient_id is not None)
                if shape != "query" or (raw_query and not mine)
                else None,
                _unique_codings(c for e in mine for c in e.security_labels),
            ),
            "type": _coding(SYSTEM_AUDIT_EVENT_TYPE, "rest", "Restful Operation"),
            "subtype": [_coding(SYSTEM_RESTFUL_INTERACTION, interaction, interaction)],
            "action": action,
            "recorded": instant,
            "outcome": outcome,
            "agent": _agents(
                requester,
                client_type=client_type,
                server_type=server_type,
                user_type=user_type,
                server_base=server_base,
                client_address=client_address,
            ),
            "source": _source(server_base),
            "entity": entity_list,
        }
        if outcome_desc:
            event["outcomeDesc"] = outcome_desc
        events.append(_drop_empty_meta(event))
    return events


# The interactions whose results are split by the labels that hide them (`_rest_event_entities`).
_SPLIT_BY_HIDING_LABELS = frozenset({"search", "search-type", "search-system"})
# The labels that hide an AuditEvent from someone who reads AuditEvents: the patient and the
# representatives (R07, R14; `policy.reads`). MASQUE_PS hides documents from professionals,
# who never read AuditEvents.
_HIDING_CODES = frozenset({INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX})


def hiding_codes(labels: Iterable[Mapping[str, str]]) -> frozenset[str]:
    """The codes among `labels` that hide an event from a patient or a representative."""
    return frozenset(
        c.get("code", "")
        for c in labels
        if c.get("system") == SYSTEM_DMP_CONFIDENTIALITY and c.get("code") in _HIDING_CODES
    )


def _rest_event_entities(
    interaction: str, patients: Sequence[str], entities: Sequence[DataEntity]
) -> list[tuple[str | None, list[DataEntity]]]:
    """(patient id or None, the entities of one event) for each event of a RESTful
    interaction: one per patient concerned and, for a search, one per set of hiding labels
    its results carry (R16, R18).

    A search's event carried the labels of every result, so a professional's search that
    found a visible document and an INVISIBLE_PATIENT one was hidden whole from the patient
    (and one finding an INVISIBLE_REPRESENTANTS_LEGAUX one from the parents): the access was
    traced, in no trail they could read. The results are now split by the hiding labels
    they carry: the event naming those that hide from nobody is always recorded, found or
    not, as the same search of a record without the hidden documents would be; each other
    set of results has its own event, hidden as they are. What the criteria name (role
    query) goes into every one, as the query they keep names it. A resource's versions go
    together (a history is not split: its request names its one resource)."""
    out: list[tuple[str | None, list[DataEntity]]] = []
    for patient_id in _patients_or_none(patients):
        mine = [e for e in entities if e.patient_id is None or e.patient_id == patient_id]
        if interaction not in _SPLIT_BY_HIDING_LABELS:
            out.append((patient_id, mine))
            continue
        named = [e for e in mine if e.role == ROLE_QUERY]
        found = [e for e in mine if e.role != ROLE_QUERY]
        # Every event carries the labels of what the criteria name: results hidden by no
        # more than those go with the results hidden from nobody.
        base = hiding_codes(c for e in named for c in e.security_labels)
        codes_of: dict[object, frozenset[str]] = {}
        for entity in found:
            key = entity.reference or entity.identifier
            codes_of[key] = codes_of.get(key, base) | hiding_codes(entity.security_labels)
        groups: dict[frozenset[str], list[DataEntity]] = {base: []}
        for entity in found:
            groups.setdefault(codes_of[entity.reference or entity.identifier], []).append(entity)
        out.extend((patient_id, [*named, *group]) for group in groups.values())
    return out


# --- refusals (AuthZ-Consent) -------------------------------------------------------------------


def build_refusal_events(
    *,
    requester: Requester,
    patients: Sequence[str],
    denied_rule: str,
    recorded: datetime,
    server_base: str,
    interaction: str,
    resource_type: str | None = None,
    security_labels: Sequence[Mapping[str, str]] = (),
    request_id: str | None = None,
    client_address: str | None = None,
    consent_references: Sequence[str] = (),
    outcome: str = OUTCOME_SERIOUS_FAILURE,
    outcome_desc: str | None = None,
) -> list[dict]:
    """One BALP AuthZconsent event per patient for an access the rules refused (R16).

    ``denied_rule`` is the rule id of the refusal ("R09", "R10", "record-opposed" ...); it is in
    ``outcomeDesc`` (unless one is given) and in the consent entity's ``detail`` "denied-rule".
    ``interaction`` names what was attempted (a RESTful interaction code or an XDS transaction
    such as "ITI-43"), kept in the "interaction" detail, and ``resource_type`` the type of the
    resource refused, in the "resource-type" detail. The raw request is never recorded: its
    path or query names the resource refused, which may be hidden from the patient or a
    representative who reads the event (R18, issue #18 finding 2). ``security_labels``: those
    of the resource refused (a Binary: its document's), in ``meta.security``, so that the
    event is filtered like the resource itself (R07, R14). The consent entity points at the patient's Consent(s) when
    ``consent_references`` are given, otherwise at the access rule as an identifier
    (system :data:`fhir_server.errors.RULE_SYSTEM`): a refusal for a missing authorization
    has no Consent to point to.
    """
    _check_outcome(outcome)
    if outcome == OUTCOME_SUCCESS:
        raise ValueError("a refusal event cannot have a success outcome")
    if not denied_rule:
        raise ValueError("a refusal event needs the denied rule")
    instant = _instant(recorded)

    details = [{"type": "denied-rule", "valueString": denied_rule}]
    details.append({"type": "interaction", "valueString": interaction})
    if resource_type:
        details.append({"type": "resource-type", "valueString": resource_type})

    events = []
    for patient_id in _patients_or_none(patients):
        entity_list = []
        if patient_id is not None:
            entity_list.append(_patient_entity(patient_id))
        consent_type = _coding(SYSTEM_RESOURCE_TYPES, "Consent", "Consent")
        whats: list[dict[str, object]] = [{"reference": r} for r in consent_references] or [
            {"identifier": {"system": RULE_SYSTEM, "value": denied_rule}}
        ]
        for what in whats:
            entity_list.append({"what": what, "type": consent_type, "detail": list(details)})
        if requester.token_id:
            entity_list.append(
                {
                    "what": {"identifier": {"value": _jti(requester.token_id)}},
                    "type": _coding(
                        SYSTEM_BALP_USER_AGENT_TYPES,
                        "UserOauthAgent",
                        "User OAuth Agent participant",
                    ),
                }
            )

        agents = [_client_agent(requester, "110150", client_address)]
        user = _user_agent(requester, "IRCP")
        if user:
            agents.append(user)
        org = _organization_agent(requester)
        if org:
            agents.append(org)
        agents.append(
            {
                "type": _concept(
                    SYSTEM_EXTRA_SECURITY_ROLE_TYPE, "authserver", "authorization server"
                ),
                "who": _server_who(server_base),
                "requestor": False,
            }
        )
        event = {
            "resourceType": "AuditEvent",
            "id": _new_id(),
            "meta": _meta(
                # AuthZconsent requires the user and their organization (agent[user] 1..1,
                # agent[userorg] 1..1): a patient, a representative or a system has no
                # organization agent, so their refusals keep the shape without the claim.
                BALP_PROFILE_BASE + "IHE.BasicAudit.AuthZconsent" if user and org else None,
                _unique_codings(security_labels),
            ),
            "type": _coding(SYSTEM_DCM, "110113", "Security Alert"),
            "subtype": [
                _coding(
                    SYSTEM_BALP_AUTHZ_SUBTYPE,
                    "AuthZ-Consent",
                    "Authorization Decision using Roles and Consent",
                )
            ],
            "action": "E",
            "recorded": instant,
            "outcome": outcome,
            "outcomeDesc": outcome_desc or f"Access denied by rule {denied_rule}",
            "agent": agents,
            "source": _source(server_base, security_server=True),
            "entity": entity_list,
        }
        if request_id:
            event["extension"] = [{"url": EXT_REQUEST_ID, "valueString": request_id}]
        events.append(_drop_empty_meta(event))
    return events


# --- XDS.b transactions ------------------------------------------------------------------------


def build_xds_events(
    *,
    transaction: str,
    requester: Requester,
    patients: Sequence[str],
    outcome: str = OUTCOME_SUCCESS,
    recorded: datetime,
    server_base: str,
    endpoint: str | None = None,
    request_id: str | None = None,
    client_address: str | None = None,
    documents: Sequence[DataEntity] = (),
    submission_set_unique_id: str | None = None,
    submission_set_reference: str | None = None,
    raw_query: bytes | str | None = None,
    query_id: str | None = None,
    home_community_id: str | None = None,
    outcome_desc: str | None = None,
) -> list[dict]:
    """One ATNA-shaped AuditEvent per patient for an XDS.b transaction we served.

    ``transaction`` is "ITI-41" (we are the Document Repository: Import), "ITI-18" (the Document
    Registry: Query) or "ITI-43" (the Document Repository: Export). ``endpoint`` is the SOAP
    endpoint URL (the server agent's network address; ``server_base`` when None).
    ``documents`` are the stored or retrieved documents (build them with an ``identifier`` of
    their uniqueId; ITI-43 documents get role 3 Report and a "Repository Unique Id" detail if
    the caller adds it). Their labels go to ``meta.security`` as in the RESTful shapes.
    """
    if transaction not in XDS_TRANSACTIONS:
        raise ValueError(f"unknown XDS transaction {transaction!r}")
    _check_outcome(outcome)
    event_type, action, display = XDS_TRANSACTIONS[transaction]
    instant = _instant(recorded)
    if transaction == "ITI-43":
        client_type, server_type, user_type = "110152", "110153", "IRCP"
    elif transaction == "ITI-18":
        client_type, server_type, user_type = "110153", "110152", "IRCP"
    else:
        client_type, server_type, user_type = "110153", "110152", "AUT"
    if transaction == "ITI-41" and not submission_set_unique_id:
        raise ValueError("an ITI-41 event needs the submission set uniqueId")

    events = []
    for patient_id, mine in _xds_event_documents(transaction, patients, documents):
        entity_list: list[dict] = []
        if request_id:
            entity_list.append(_request_id_entity(request_id))
        if patient_id is not None:
            entity_list.append(_patient_entity(patient_id))
        if transaction == "ITI-41":
            what: dict = {
                "identifier": {
                    "type": {
                        "coding": [
                            {
                                "code": XDS_SUBMISSION_SET_ID_TYPE,
                                "display": "submission set classificationNode",
                            }
                        ]
                    },
                    "value": submission_set_unique_id,
                }
            }
            if submission_set_reference:
                what["reference"] = submission_set_reference
            entity_list.append(
                {
                    "what": what,
                    "type": _coding(SYSTEM_AUDIT_ENTITY_TYPE, "2", "System Object"),
                    "role": _coding(SYSTEM_OBJECT_ROLE, ROLE_JOB, "Job"),
                }
            )
        if transaction == "ITI-18":
            query = _query_entity(raw_query, None)
            query["detail"] = [{"type": "QueryEncoding", "valueString": "UTF-8"}]
            if query_id:
                query["what"] = {"identifier": {"value": query_id}}
            if home_community_id:
                query["detail"].append(
                    {"type": "ihe:homeCommunityID", "valueString": home_community_id}
                )
            entity_list.append(query)
        entity_list.extend(d.to_fhir() for d in mine)

        event = {
            "resourceType": "AuditEvent",
            "id": _new_id(),
            "meta": _meta(None, _unique_codings(c for d in mine for c in d.security_labels)),
            "type": _coding(SYSTEM_DCM, event_type, _DCM_DISPLAY[event_type]),
            "subtype": [_coding(SYSTEM_IHE_EVENT_TYPE, transaction, display)],
            "action": action,
            "recorded": instant,
            "outcome": outcome,
            "agent": _agents(
                requester,
                client_type=client_type,
                server_type=server_type,
                user_type=user_type,
                server_base=endpoint or server_base,
                client_address=client_address,
            ),
            "source": _source(server_base),
            "entity": entity_list,
        }
        if outcome_desc:
            event["outcomeDesc"] = outcome_desc
        events.append(_drop_empty_meta(event))
    return events


def _xds_event_documents(
    transaction: str, patients: Sequence[str], documents: Sequence[DataEntity]
) -> list[tuple[str | None, list[DataEntity]]]:
    """(patient id or None, the documents of one event) for each event of an XDS
    transaction: one per patient and, for an ITI-43 retrieving or an ITI-41 depositing
    documents hidden from a patient or a representative beside others, one per set of
    hiding labels (R16, R18).

    One event naming them all carried every label: the patient saw the read of the visible
    document's Binary in their trail but not the ITI-43 that retrieved it, where the same
    retrieve of it alone showed both, which told them that it had retrieved something
    hidden from them; and an ITI-41 depositing a visible and an INVISIBLE_PATIENT document
    left no trace in their trail of the visible one's deposit, of which they were told.
    Neither keeps a request (no query entity), so their documents can be split (an ITI-41's
    SubmissionSet is in each event); one naming only hidden documents stays one event,
    hidden as they are (an ITI-18 keeps its request, and is not split)."""
    out: list[tuple[str | None, list[DataEntity]]] = []
    for patient_id in _patients_or_none(patients):
        mine = [d for d in documents if d.patient_id is None or d.patient_id == patient_id]
        if transaction not in ("ITI-41", "ITI-43"):
            out.append((patient_id, mine))
            continue
        groups: dict[frozenset[str], list[DataEntity]] = {}
        for document in mine:
            groups.setdefault(hiding_codes(document.security_labels), []).append(document)
        out.extend((patient_id, group) for group in groups.values() or [[]])
    return out


# --- reading events back ------------------------------------------------------------------------


def event_patients(event: Mapping) -> list[str]:
    """The Patient ids an AuditEvent names as patient entities (for indexing and tests)."""
    out = []
    for entity in event.get("entity", []):
        ref = entity.get("what", {}).get("reference", "")
        role = entity.get("role", {})
        if ref.startswith("Patient/") and role.get("code") == "1":
            out.append(ref.split("/")[1])
    return out


# --- pieces -----------------------------------------------------------------------------------


def _agent_types(shape: str) -> tuple[dict, dict]:
    if shape == "read":
        return _concept(SYSTEM_DCM, "110152", "Destination Role ID"), _concept(
            SYSTEM_DCM, "110153", "Source Role ID"
        )
    if shape == "delete":
        return _concept(SYSTEM_DCM, "110150", "Application"), _concept(
            SYSTEM_PROVENANCE_PARTICIPANT_TYPE, "custodian", "Custodian"
        )
    return _concept(SYSTEM_DCM, "110153", "Source Role ID"), _concept(
        SYSTEM_DCM, "110152", "Destination Role ID"
    )


def _agents(
    requester: Requester,
    *,
    client_type: dict | str,
    server_type: dict | str,
    user_type: str,
    server_base: str,
    client_address: str | None,
) -> list[dict]:
    if isinstance(client_type, str):
        client_type = _concept(SYSTEM_DCM, client_type, _DCM_DISPLAY[client_type])
    if isinstance(server_type, str):
        server_type = _concept(SYSTEM_DCM, server_type, _DCM_DISPLAY[server_type])
    client = _client_agent(requester, client_type, client_address)
    server = {
        "type": server_type,
        "who": _server_who(server_base),
        "requestor": False,
        "network": {"address": server_base, "type": "5"},
    }
    agents = [client, server]
    user = _user_agent(requester, user_type)
    if user:
        agents.append(user)
    org = _organization_agent(requester)
    if org:
        agents.append(org)
    return agents


def _client_agent(requester: Requester, client_type: dict | str, address: str | None) -> dict:
    if isinstance(client_type, str):
        client_type = _concept(SYSTEM_DCM, client_type, _DCM_DISPLAY[client_type])
    client_id = requester.client_id
    if client_id is None and requester.kind in (ActorKind.SYSTEM, ActorKind.INTERNAL):
        client_id = requester.subject_id
    agent: dict = {
        "type": client_type,
        "who": {"identifier": {"value": client_id or "unknown-client"}},
        # Without a human user, the application itself asked.
        "requestor": not _has_user(requester),
    }
    if address:
        agent["network"] = {"address": address, "type": "2"}
    return agent


def _has_user(requester: Requester) -> bool:
    return requester.kind in (ActorKind.PATIENT, ActorKind.REPRESENTATIVE, ActorKind.PRACTITIONER)


def _user_agent(requester: Requester, user_type: str) -> dict | None:
    if not _has_user(requester):
        return None
    displays = {"IRCP": "information recipient", "AUT": "author (originator)"}
    agent: dict = {
        "type": _concept(SYSTEM_PARTICIPATION_TYPE, user_type, displays[user_type]),
        "who": _user_who(requester),
        "requestor": True,
    }
    if requester.display_name:
        agent["name"] = requester.display_name
    roles = _user_roles(requester)
    if roles:
        agent["role"] = roles
    if requester.token_id:
        agent["policy"] = [_jti(requester.token_id)]
    agent["purposeOfUse"] = [purpose_of_use(requester)]
    return agent


def _user_who(requester: Requester) -> dict:
    if requester.kind == ActorKind.PRACTITIONER:
        who: dict = {"identifier": {"system": SYSTEM_IDNAT_PS, "value": requester.subject_id}}
    else:
        who = {"reference": requester.reference}
    if requester.display_name:
        who["display"] = requester.display_name
    return who


def _user_roles(requester: Requester) -> list[dict]:
    match requester.kind:
        case ActorKind.PRACTITIONER:
            roles = []
            if requester.profession:
                roles.append(
                    _concept(
                        SYSTEM_PROFESSION,
                        requester.profession,
                        _PROFESSION_DISPLAY.get(requester.profession),
                    )
                )
            if requester.specialty:
                roles.append(_concept(SYSTEM_SPECIALTY, requester.specialty))
            return roles
        case ActorKind.PATIENT:
            return [_concept(SYSTEM_V3_ROLE_CLASS, "PAT", "patient")]
        case ActorKind.REPRESENTATIVE:
            return [_concept(SYSTEM_V3_ROLE_CLASS, "RESPRSN", "responsible party")]
        case _:
            return []


def purpose_of_use(requester: Requester) -> dict:
    """The purposeOfUse CodeableConcept of a requester (v3-ActReason, plus TRE_R248 mode).

    Practitioners: TREAT / BTG / ETREAT with the TRE_R248 access mode coding, and the declared
    reason as text. Patients: PATRQT; representatives: FAMRQT (decided here).
    """
    if requester.kind == ActorKind.PRACTITIONER:
        mode = AccessMode(requester.access_mode)
        concept: dict = {
            "coding": [
                {"system": SYSTEM_ACT_REASON, "code": PURPOSE_BY_MODE[mode.value]},
                {"system": SYSTEM_ACCESS_MODE, "code": mode.value},
            ]
        }
        if requester.access_reason:
            concept["text"] = requester.access_reason
        return concept
    if requester.kind == ActorKind.PATIENT:
        return _concept(SYSTEM_ACT_REASON, "PATRQT", "patient requested")
    if requester.kind == ActorKind.REPRESENTATIVE:
        return _concept(SYSTEM_ACT_REASON, "FAMRQT", "family requested")
    return _concept(SYSTEM_ACT_REASON, "HOPERAT", "healthcare operations")


def _organization_agent(requester: Requester) -> dict | None:
    if requester.kind != ActorKind.PRACTITIONER or not (
        requester.organization_id or requester.organization_name
    ):
        return None
    who: dict = {}
    if requester.organization_id:
        system, sep, value = requester.organization_id.partition("|")
        who["identifier"] = {"system": system, "value": value} if sep else {"value": system}
    if requester.organization_name:
        who["display"] = requester.organization_name
    return {
        "type": _concept(SYSTEM_V3_ROLE_CLASS, "PROV", "healthcare provider"),
        "who": who,
        "requestor": False,
    }


def _server_who(server_base: str) -> dict:
    return {"identifier": {"system": SYSTEM_RFC3986, "value": server_base}, "display": "DMP server"}


def _source(server_base: str, security_server: bool = False) -> dict:
    code, display = ("6", "Security Server") if security_server else ("4", "Application Server")
    source = {
        "observer": _server_who(server_base),
        "type": [{"system": SYSTEM_SECURITY_SOURCE_TYPE, "code": code, "display": display}],
    }
    site = urlsplit(server_base).hostname
    if site:
        source["site"] = site
    return source


def _patient_entity(patient_id: str) -> dict:
    return {
        "what": {"reference": f"Patient/{patient_id}"},
        "type": _coding(SYSTEM_AUDIT_ENTITY_TYPE, "1", "Person"),
        "role": _coding(SYSTEM_OBJECT_ROLE, "1", "Patient"),
    }


def _request_id_entity(request_id: str) -> dict:
    return {
        "what": {"identifier": {"value": request_id}},
        "type": _coding(
            SYSTEM_BALP_ENTITY_TYPE,
            "XrequestId",
            "transport specific unique identifier where http X-Request-Id is used",
        ),
    }


def _query_entity(raw_query: bytes | str | None, description: str | None) -> dict:
    entity: dict = {
        "type": _coding(SYSTEM_AUDIT_ENTITY_TYPE, "2", "System Object"),
        "role": _coding(SYSTEM_OBJECT_ROLE, ROLE_QUERY, "Query"),
    }
    if raw_query:
        entity["query"] = _b64(raw_query)
    if description:
        entity["description"] = description
    return entity


def _profile(shape: str, interaction: str, outcome: str, with_patient: bool) -> str | None:
    if outcome != OUTCOME_SUCCESS or shape not in _PROFILE_BY_SHAPE:
        return None
    patient_profile, plain_profile, interactions = _PROFILE_BY_SHAPE[shape]
    if interaction not in interactions:
        return None
    return BALP_PROFILE_BASE + (patient_profile if with_patient else plain_profile)


def _meta(profile: str | None, security: list[dict]) -> dict:
    meta: dict = {}
    if profile:
        meta["profile"] = [profile]
    if security:
        meta["security"] = security
    return meta


def _drop_empty_meta(event: dict) -> dict:
    if not event.get("meta"):
        event.pop("meta", None)
    return event


def _unique_codings(codings: Iterable[Mapping[str, str]]) -> list[dict]:
    seen: set[tuple[str | None, str | None]] = set()
    out = []
    for c in codings:
        key = (c.get("system"), c.get("code"))
        if key in seen or not c.get("code"):
            continue
        seen.add(key)
        out.append(_clean_coding(c))
    return out


def _clean_coding(c: Mapping[str, str]) -> dict:
    return {k: c[k] for k in ("system", "code", "display") if c.get(k)}


def _coding(system: str, code: str, display: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _concept(system: str, code: str, display: str | None = None) -> dict:
    return {"coding": [_coding(system, code, display)]}


def _b64(raw: bytes | str) -> str:
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    return base64.b64encode(raw).decode("ascii")


def _jti(token_id: str) -> str:
    prefix = "urn:ietf:params:oauth:jti:"
    return token_id if token_id.startswith(prefix) else prefix + token_id


def _patients_or_none(patients: Sequence[str]) -> list[str | None]:
    unique = list(dict.fromkeys(patients))
    return list(unique) if unique else [None]


def _check_outcome(outcome: str) -> None:
    if outcome not in _OUTCOMES:
        raise ValueError(f"AuditEvent.outcome must be one of 0, 4, 8, 12, not {outcome!r}")


def _instant(when: datetime) -> str:
    """A FHIR instant in UTC with milliseconds; naive datetimes are refused (ambiguous)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("recorded must be a timezone-aware datetime")
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_id() -> str:
    """A UUID version 7 (RFC 9562 5.7: the Unix millisecond, then 74 random bits). Events
    are appended in time order, so their ids land at the right edge of the audit log's id
    index rather than on random pages of a B-tree that grows by millions a month; the
    millisecond they reveal is the event's `recorded`, which they carry anyway."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # the RFC variant
    return str(uuid.UUID(int=value))
