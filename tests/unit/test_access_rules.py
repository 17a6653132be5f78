"""The DMP access rules (docs/access-rules.md, R03-R18) as policy decisions.

Search decisions are checked the way a user would see them: the Permit's constraints are run
against sample resources with the same evaluator single reads use, so "hidden" means "not
returned by the search".
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.access.constraints import compartment_of, matches
from fhir_server.access.decision import Deny, Note, Permit, not_found_message
from fhir_server.access.habilitation_loader import load_matrix
from fhir_server.access.initial_consent import INITIAL_CONSENT_CODING
from fhir_server.access.policy import DmpPolicy
from fhir_server.access.record import PatientRecord, build_record
from fhir_server.access.requester import INTERNAL, AccessMode, ActorKind, Requester
from fhir_server.errors import not_found
from fhir_server.search.query import And, InCompartment, Node
from fhir_server.terminology import (
    EXT_RECORD_STATUS,
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
    SYSTEM_ACT_REASON,
    SYSTEM_CONSENT_SCOPE,
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
    SYSTEM_INS_NIR,
    SYSTEM_PARTICIPATION_TYPE,
    SYSTEM_V3_ROLE_CODE,
)

TODAY = date(2024, 6, 1)
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
POLICY = DmpPolicy(load_matrix())
CLASS_SYSTEM = "urn:oid:1.2.250.1.213.1.1.4.1"

GP = "810000000001"  # médecin traitant
AUTHORIZED = "810000000002"
STRANGER = "810000000003"
BLOCKED = "810000000004"
NURSE = "810000000005"  # authorized infirmier
AUTHOR = "810000000006"  # authorized, author of the masked document
DEPOSITOR = "810000000007"  # author of the other sample documents

MODES = [AccessMode.NORMAL, AccessMode.BRIS_DE_GLACE, AccessMode.CENTRE_15]


# --- builders ---------------------------------------------------------------------------


def patient(pid: str = "p1", status: str | None = None, birth: str = "1980-02-03") -> dict:
    resource = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": SYSTEM_INS_NIR, "value": "180029912345678"}],
        "birthDate": birth,
        "generalPractitioner": [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}],
    }
    if status:
        resource["extension"] = [{"url": EXT_RECORD_STATUS, "valueCode": status}]
    return resource


def actor_provision(kind: str, idnat: str) -> dict:
    return {
        "type": kind,
        "actor": [
            {
                "role": {"coding": [{"system": SYSTEM_PARTICIPATION_TYPE, "code": "IRCP"}]},
                "reference": {"identifier": {"system": SYSTEM_IDNAT_PS, "value": idnat}},
            }
        ],
    }


def purpose_provision(code: str) -> dict:
    return {"type": "deny", "purpose": [{"system": SYSTEM_ACT_REASON, "code": code}]}


def consent(*nested: dict, pid: str = "p1", cid: str = "c1", initial: bool = True) -> dict:
    """The patient's DMP Consent; `initial`: it also records the patient's initial consent
    to the care team's access (CE 15/10/2025, `access.initial_consent`), as the patients of
    these fixtures gave it."""
    resource = {
        "resourceType": "Consent",
        "id": cid,
        "status": "active",
        "scope": {"coding": [{"system": SYSTEM_CONSENT_SCOPE, "code": "patient-privacy"}]},
        "patient": {"reference": f"Patient/{pid}"},
        "provision": {"type": "permit", "provision": list(nested)},
    }
    if initial:
        resource["category"] = [{"coding": [INITIAL_CONSENT_CODING]}]
    return resource


DEFAULT_CONSENT = consent(
    actor_provision("permit", AUTHORIZED),
    actor_provision("permit", NURSE),
    actor_provision("permit", AUTHOR),
    actor_provision("permit", BLOCKED),
    actor_provision("deny", BLOCKED),
    actor_provision("deny", GP),  # R08: has no effect
)


def related_person(rid: str, pid: str = "p1", code: str = "PRN", active: bool = True) -> dict:
    return {
        "resourceType": "RelatedPerson",
        "id": rid,
        "active": active,
        "patient": {"reference": f"Patient/{pid}"},
        "relationship": [{"coding": [{"system": SYSTEM_V3_ROLE_CODE, "code": code}]}],
    }


def record(
    *nested: dict | None,
    status: str | None = None,
    birth: str = "1980-02-03",
    related: tuple[dict, ...] = (),
) -> PatientRecord:
    consents = [DEFAULT_CONSENT] if not nested else [consent(*[n for n in nested if n])]
    return build_record(patient(status=status, birth=birth), consents, list(related), TODAY, NOW)


def document(
    did: str = "d1",
    pid: str = "p1",
    labels: tuple[str, ...] = (),
    category: str = "10",
    author: str = DEPOSITOR,
    meta_labels: tuple[str, ...] = (),
) -> dict:
    resource: dict = {
        "resourceType": "DocumentReference",
        "id": did,
        "status": "current",
        "subject": {"reference": f"Patient/{pid}"},
        "category": [{"coding": [{"system": CLASS_SYSTEM, "code": category}]}],
        "author": [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": author}}],
        "content": [{"attachment": {"url": f"Binary/b-{did}", "contentType": "application/pdf"}}],
        "securityLabel": [
            {"coding": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": code}]} for code in labels
        ],
    }
    if meta_labels:
        resource["meta"] = {
            "security": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": c} for c in meta_labels]
        }
    return resource


def audit_event(aid: str, pid: str = "p1", labels: tuple[str, ...] = ()) -> dict:
    return {
        "resourceType": "AuditEvent",
        "id": aid,
        "meta": {"security": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": c} for c in labels]},
        "entity": [{"what": {"reference": f"Patient/{pid}"}}],
    }


def practitioner(
    idnat: str,
    profession: str = "10",
    mode: AccessMode = AccessMode.NORMAL,
    reason: str | None = None,
    organization_type: str | None = None,
) -> Requester:
    return Requester(
        kind=ActorKind.PRACTITIONER,
        subject_id=idnat,
        profession=profession,
        access_mode=mode,
        access_reason=reason,
        organization_type=organization_type,
    )


def patient_requester(pid: str = "p1") -> Requester:
    return Requester(kind=ActorKind.PATIENT, subject_id=pid, patient_id=pid)


def representative(rid: str = "rp1") -> Requester:
    return Requester(kind=ActorKind.REPRESENTATIVE, subject_id=rid, patient_id="p1")


def system(organization_type: str | None = "hospital", client: str = "his") -> Requester:
    return Requester(kind=ActorKind.SYSTEM, subject_id=client, organization_type=organization_type)


def search(requester: Requester, rec: PatientRecord | None, resource_type="DocumentReference"):
    return POLICY.decide_search(requester, resource_type, rec, patient_given=rec is not None)


def visible(constraints: Node, resources: list[dict]) -> set[str]:
    return {r["id"] for r in resources if matches(constraints, r)}


def permit(decision) -> Permit:
    assert isinstance(decision, Permit), decision
    return decision


def deny(decision) -> Deny:
    assert isinstance(decision, Deny), decision
    return decision


SAMPLE_DOCS = [
    document("plain"),
    document("masked", labels=(MASQUE_PS,)),
    document("masked-meta", meta_labels=(MASQUE_PS,)),
    document("masked-own", labels=(MASQUE_PS,), author=AUTHOR),
    document("invisible-patient", labels=(INVISIBLE_PATIENT,)),
    document("invisible-rl", labels=(INVISIBLE_REPRESENTANTS_LEGAUX,)),
    document("prescription", category="42"),
    document("other-patient", pid="p2"),
]


# --- record facts -------------------------------------------------------------------------


def test_r03_record_status_comes_from_the_patient_extension():
    assert record().status == "open"
    assert record(status="opposed").status == "opposed"
    assert record(status="closed").status == "closed"
    assert record(status="archived").status == "closed"  # unknown code: fail closed


def test_r08_general_practitioner_read_from_identifier_or_contained_practitioner():
    resource = patient()
    resource["generalPractitioner"] = [{"reference": "#gp"}]
    resource["contained"] = [
        {
            "resourceType": "Practitioner",
            "id": "gp",
            "identifier": [{"system": SYSTEM_IDNAT_PS, "value": "810000008999"}],
        }
    ]
    rec = build_record(resource, [], [], TODAY, NOW)
    assert rec.general_practitioners == {"810000008999"}
    assert record().general_practitioners == {GP}
    assert record().ins == ((SYSTEM_INS_NIR, "180029912345678"),)


# --- R03 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"), [("opposed", "record-opposed"), ("closed", "record-closed")]
)
def test_r03_no_reads_on_an_opposed_or_closed_record(status, code):
    decision = deny(search(practitioner(GP), record(status=status)))
    assert decision.rule == "R03"
    assert decision.code == "processing"
    assert decision.details_code == code
    assert (
        decision.to_error().operation_outcome()["issue"][0]["details"]["coding"][0]["code"] == code
    )


@pytest.mark.parametrize(
    ("status", "code"), [("opposed", "record-opposed"), ("closed", "record-closed")]
)
def test_r03_no_deposits_on_an_opposed_or_closed_record(status, code):
    for requester in (system(), practitioner(AUTHORIZED), patient_requester()):
        decision = deny(
            POLICY.decide_write(
                requester, "create", "DocumentReference", document(), None, record(status=status)
            )
        )
        assert (decision.rule, decision.status, decision.details_code) == ("R03", 422, code)


def test_r03_open_record_is_read_and_deposited():
    permit(search(practitioner(AUTHORIZED), record()))
    permit(POLICY.decide_write(system(), "create", "DocumentReference", document(), None, record()))


def test_r03_deposit_for_an_unknown_patient_is_refused():
    decision = deny(
        POLICY.decide_write(system(), "create", "DocumentReference", document(), None, None)
    )
    assert decision.details_code == "unknown-patient"


# --- R04 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource_type", "parameters"),
    [
        ("DocumentReference", "patient, patient.identifier or subject"),
        ("List", "patient, patient.identifier or subject"),
        ("Communication", "patient, patient.identifier or subject"),
        ("Patient", "_id or identifier"),
    ],
)
def test_r04_practitioner_search_spanning_patients_is_refused(resource_type, parameters):
    decision = deny(search(practitioner(GP), None, resource_type))
    assert decision.status == 400
    assert decision.rule == "R04"
    assert parameters in decision.message


def test_r04_practitioner_search_designating_one_patient_is_bound_to_it():
    decision = permit(search(practitioner(GP), record()))
    assert visible(decision.constraints, SAMPLE_DOCS) >= {"plain"}
    assert "other-patient" not in visible(decision.constraints, SAMPLE_DOCS)


def test_r04_directory_types_need_no_patient():
    permit(search(practitioner(GP), None, "Practitioner"))


# --- R05 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "organization_type", ["insurer", "mutual_insurer", "employer", "health_insurer"]
)
@pytest.mark.parametrize("kind", ["practitioner", "system"])
def test_r05_payers_never_read_clinical_data(organization_type, kind):
    requester = (
        practitioner(GP, organization_type=organization_type)
        if kind == "practitioner"
        else system(organization_type)
    )
    assert deny(search(requester, record())).rule == "R05"
    assert (
        deny(POLICY.decide_read(requester, "DocumentReference", document(), record())).rule == "R05"
    )
    binary = {"resourceType": "Binary", "id": "b-d1"}
    assert deny(POLICY.decide_binary_read(requester, binary, [document()], record())).rule == "R05"


def test_r05_health_insurer_may_deposit_but_other_payers_may_not():
    health = system("health_insurer", "cnam")
    decision = permit(
        POLICY.decide_write(health, "create", "DocumentReference", document(), None, record())
    )
    assert Note.NOTIFY_DOCUMENT_DEPOSITED in decision.notes
    for other in ("insurer", "mutual_insurer", "employer"):
        refused = deny(
            POLICY.decide_write(
                system(other), "create", "DocumentReference", document(), None, record()
            )
        )
        assert refused.rule == "R05"


# --- R06 ----------------------------------------------------------------------------------


def test_r06_patient_reads_the_whole_record_except_invisible_patient():
    decision = permit(search(patient_requester(), record()))
    assert decision.rule == "R06"
    seen = visible(decision.constraints, SAMPLE_DOCS)
    assert seen == {"plain", "masked", "masked-meta", "masked-own", "invisible-rl", "prescription"}


def test_r06_patient_cannot_read_another_patients_record():
    other = build_record(patient("p2"), [], [], TODAY, NOW)
    assert deny(search(patient_requester(), other)).status == 403
    hidden = deny(
        POLICY.decide_read(patient_requester(), "DocumentReference", document(pid="p2"), other)
    )
    assert hidden.status == 404


def test_r06_patient_reads_own_audit_events_but_never_writes_them():
    decision = permit(search(patient_requester(), record(), "AuditEvent"))
    events = [audit_event("a1"), audit_event("a2", pid="p2")]
    assert visible(decision.constraints, events) == {"a1"}
    assert (
        deny(
            POLICY.decide_write(
                patient_requester(), "create", "AuditEvent", events[0], None, record()
            )
        ).status
        == 403
    )


def test_r06_patient_creates_documents_of_their_own():
    own = document("mine", author="x")
    own["author"] = [{"reference": "Patient/p1"}]
    permit(
        POLICY.decide_write(patient_requester(), "create", "DocumentReference", own, None, record())
    )
    refused = deny(
        POLICY.decide_write(
            patient_requester(), "create", "DocumentReference", document(pid="p2"), None, record()
        )
    )
    assert refused.status == 403


def test_r06_patient_masks_and_unmasks_a_professionals_document():
    old = document()
    masked = document(labels=(MASQUE_PS,), meta_labels=(MASQUE_PS,))
    assert (
        permit(
            POLICY.decide_write(
                patient_requester(), "update", "DocumentReference", masked, old, record()
            )
        ).rule
        == "R14"
    )
    permit(
        POLICY.decide_write(
            patient_requester(), "update", "DocumentReference", old, masked, record()
        )
    )


def test_r06_patient_cannot_alter_or_delete_a_professionals_document():
    old = document()
    changed = document(category="11")
    for interaction, new in (("update", changed), ("delete", None)):
        decision = deny(
            POLICY.decide_write(
                patient_requester(), interaction, "DocumentReference", new, old, record()
            )
        )
        assert (decision.rule, decision.status) == ("R06", 403)


def test_r06_patient_may_delete_their_own_document():
    own = document("mine")
    own["author"] = [{"reference": "Patient/p1"}]
    permit(
        POLICY.decide_write(patient_requester(), "delete", "DocumentReference", None, own, record())
    )


def test_r06_patient_manages_their_consents():
    new = consent(actor_provision("deny", STRANGER))
    permit(POLICY.decide_write(patient_requester(), "create", "Consent", new, None, record()))
    permit(
        POLICY.decide_write(
            patient_requester(), "delete", "Consent", None, DEFAULT_CONSENT, record()
        )
    )
    for_other = consent(actor_provision("deny", STRANGER), pid="p2")
    other = build_record(patient("p2"), [], [], TODAY, NOW)
    assert (
        deny(
            POLICY.decide_write(patient_requester(), "create", "Consent", for_other, None, other)
        ).status
        == 403
    )


def test_r06_uninterpretable_consent_is_refused_with_its_expression():
    bad = consent({"type": "deny"})
    decision = deny(
        POLICY.decide_write(patient_requester(), "create", "Consent", bad, None, record())
    )
    assert decision.status == 422
    error = decision.to_error().operation_outcome()["issue"][0]
    assert error["expression"] == ["Consent.provision.provision[0]"]


def test_r06_patient_reads_own_patient_resource_even_when_closed():
    rec = record(status="closed")
    permit(POLICY.decide_read(patient_requester(), "Patient", patient(status="closed"), rec))
    assert deny(search(patient_requester(), rec)).details_code == "record-closed"


# --- R07 ----------------------------------------------------------------------------------


def minor_record(*related: dict) -> PatientRecord:
    return record(birth="2015-05-05", related=related or (related_person("rp1"),))


def test_r07_representative_of_a_minor_acts_as_the_patient():
    rec = minor_record()
    assert rec.minor and rec.representatives == {"rp1"}
    decision = permit(search(representative(), rec))
    assert decision.rule == "R07"
    assert visible(decision.constraints, SAMPLE_DOCS) == {
        "plain",
        "masked",
        "masked-meta",
        "masked-own",
        "prescription",
    }


def test_r07_representative_never_sees_invisible_representants_legaux_nor_its_audit_events():
    rec = minor_record()
    doc = document("rl", labels=(INVISIBLE_REPRESENTANTS_LEGAUX,))
    assert deny(POLICY.decide_read(representative(), "DocumentReference", doc, rec)).status == 404
    events = [audit_event("a1"), audit_event("a2", labels=(INVISIBLE_REPRESENTANTS_LEGAUX,))]
    decision = permit(search(representative(), rec, "AuditEvent"))
    assert visible(decision.constraints, events) == {"a1"}
    # The patient does see them.
    assert visible(permit(search(patient_requester(), rec, "AuditEvent")).constraints, events) == {
        "a1",
        "a2",
    }


@pytest.mark.parametrize(
    ("birth", "related"),
    [
        ("1990-01-01", related_person("rp1")),  # the patient is an adult
        ("2006-06-01", related_person("rp1")),  # 18 today
        ("2015-05-05", related_person("rp1", active=False)),
        ("2015-05-05", related_person("rp1", code="FRND")),
        ("2015-05-05", related_person("rp1", pid="p2")),
    ],
)
def test_r07_non_representative_is_refused(birth, related):
    rec = record(birth=birth, related=(related,))
    decision = deny(search(representative(), rec))
    assert (decision.rule, decision.status) == ("R07", 403)


def test_r07_guardian_is_a_representative_and_masks_documents():
    rec = minor_record(related_person("rp1", code="GUARD"))
    old = document()
    new = document(labels=(MASQUE_PS,))
    permit(POLICY.decide_write(representative(), "update", "DocumentReference", new, old, rec))


# --- R08 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_r08_medecin_traitant_has_access_even_when_named_in_a_deny(mode):
    rec = record()
    assert rec.rules.is_blocked(GP)
    decision = permit(search(practitioner(GP, mode=mode, reason="urgence"), rec))
    assert decision.rule == "R08"


def test_r08_medecin_traitant_sees_documents_masked_from_professionals():
    decision = permit(search(practitioner(GP), record()))
    assert {"masked", "masked-meta", "masked-own"} <= visible(decision.constraints, SAMPLE_DOCS)


def test_r08_another_medecin_does_not_see_masked_documents():
    decision = permit(search(practitioner(AUTHORIZED), record()))
    seen = visible(decision.constraints, SAMPLE_DOCS)
    assert "masked" not in seen and "masked-meta" not in seen


# --- R09 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_r09_blocked_practitioner_is_denied_in_every_mode(mode):
    rec = record()
    assert rec.rules.permitted >= {BLOCKED}  # also named in a permit: the deny wins
    decision = deny(search(practitioner(BLOCKED, mode=mode, reason="urgence"), rec))
    assert (decision.rule, decision.status) == ("R09", 403)
    assert "block" not in decision.message.lower()


def test_r09_unblocked_practitioner_with_authorization_is_permitted():
    assert permit(search(practitioner(AUTHORIZED), record())).rule == "R10"


def test_r09_blocked_practitioner_cannot_deposit_nor_authorize_themselves():
    rec = record()
    assert (
        deny(
            POLICY.decide_write(
                practitioner(BLOCKED), "create", "DocumentReference", document(), None, rec
            )
        ).rule
        == "R09"
    )
    own = consent(actor_provision("permit", BLOCKED), cid="c2", initial=False)
    assert (
        deny(POLICY.decide_write(practitioner(BLOCKED), "create", "Consent", own, None, rec)).rule
        == "R09"
    )


# --- R10 ----------------------------------------------------------------------------------


def test_r10_practitioner_without_authorization_is_refused():
    decision = deny(search(practitioner(STRANGER), record()))
    assert (decision.rule, decision.status) == ("R10", 403)
    assert "authorization is missing" in decision.message


def test_r10_practitioner_records_their_own_authorization_and_the_patient_is_told():
    own = consent(actor_provision("permit", STRANGER), cid="c2", initial=False)
    decision = permit(
        POLICY.decide_write(practitioner(STRANGER), "create", "Consent", own, None, record())
    )
    assert Note.NOTIFY_AUTHORIZATION_RECORDED in decision.notes
    # Not by changing the existing Consent, which they never read: judged on it, the answer
    # told whether a guess of its content was right (R18, tests/http/test_change_door_probes).
    old = DEFAULT_CONSENT
    new = consent(*old["provision"]["provision"], actor_provision("permit", STRANGER))
    refused = deny(
        POLICY.decide_write(practitioner(STRANGER), "update", "Consent", new, old, record())
    )
    assert (refused.rule, refused.status) == ("R10", 403)


@pytest.mark.parametrize(
    "change",
    ["other practitioner", "remove a deny", "add a deny", "delete"],
)
def test_r10_practitioner_may_not_record_anything_else(change):
    old = DEFAULT_CONSENT
    nested = old["provision"]["provision"]
    interaction, new = "update", None
    if change == "other practitioner":
        new = consent(*nested, actor_provision("permit", "810000008123"))
    elif change == "remove a deny":
        new = consent(*nested[:4], actor_provision("permit", STRANGER))
    elif change == "add a deny":
        new = consent(*nested, actor_provision("permit", STRANGER), purpose_provision("BTG"))
    else:
        interaction = "delete"
    decision = deny(
        POLICY.decide_write(practitioner(STRANGER), interaction, "Consent", new, old, record())
    )
    assert (decision.rule, decision.status) == ("R10", 403)


# --- R11 / R12 and the mode x consent matrix ----------------------------------------------

OPPOSITIONS = {
    "none": (),
    "btg": (purpose_provision("BTG"),),
    "etreat": (purpose_provision("ETREAT"),),
    "blocked": (actor_provision("deny", STRANGER),),
    "authorized": (actor_provision("permit", STRANGER),),
}
EXPECTED = {
    # (mode, consent) -> rule of the Permit, or of the Deny when prefixed with "!"
    (AccessMode.NORMAL, "none"): "!R10",
    (AccessMode.NORMAL, "btg"): "!R10",
    (AccessMode.NORMAL, "etreat"): "!R10",
    (AccessMode.NORMAL, "blocked"): "!R09",
    (AccessMode.NORMAL, "authorized"): "R10",
    (AccessMode.BRIS_DE_GLACE, "none"): "R11",
    (AccessMode.BRIS_DE_GLACE, "btg"): "!R11",
    (AccessMode.BRIS_DE_GLACE, "etreat"): "R11",
    (AccessMode.BRIS_DE_GLACE, "blocked"): "!R09",
    (AccessMode.BRIS_DE_GLACE, "authorized"): "R11",
    (AccessMode.CENTRE_15, "none"): "R12",
    (AccessMode.CENTRE_15, "btg"): "R12",
    (AccessMode.CENTRE_15, "etreat"): "!R12",
    (AccessMode.CENTRE_15, "blocked"): "!R09",
    (AccessMode.CENTRE_15, "authorized"): "R12",
}


@pytest.mark.parametrize(("mode", "situation"), sorted(EXPECTED, key=str))
def test_r11_r12_mode_by_consent_matrix(mode, situation):
    rec = record(None, *OPPOSITIONS[situation])
    decision = search(practitioner(STRANGER, mode=mode, reason="patient inconscient"), rec)
    expected = EXPECTED[(mode, situation)]
    if expected.startswith("!"):
        assert deny(decision).rule == expected[1:]
    else:
        assert permit(decision).rule == expected


def test_r11_bris_de_glace_needs_a_declared_reason():
    for reason in (None, "", "   "):
        decision = deny(
            search(practitioner(STRANGER, mode=AccessMode.BRIS_DE_GLACE, reason=reason), record())
        )
        assert decision.rule == "R11"
        assert "reason" in decision.message


def test_r11_bris_de_glace_is_told_each_time_and_masked_documents_stay_masked():
    decision = permit(
        search(practitioner(STRANGER, mode=AccessMode.BRIS_DE_GLACE, reason="coma"), record(None))
    )
    assert decision.notes == (Note.NOTIFY_BRIS_DE_GLACE,)
    seen = visible(decision.constraints, SAMPLE_DOCS)
    assert "plain" in seen and "masked" not in seen and "masked-meta" not in seen


def test_r11_opposition_to_bris_de_glace_is_named():
    decision = deny(
        search(
            practitioner(STRANGER, mode=AccessMode.BRIS_DE_GLACE, reason="coma"),
            record(purpose_provision("BTG")),
        )
    )
    assert "opposed" in decision.message


def test_r12_centre_15_is_permitted_and_told_each_time():
    decision = permit(search(practitioner(STRANGER, mode=AccessMode.CENTRE_15), record(None)))
    assert decision.notes == (Note.NOTIFY_CENTRE_15,)


def test_r12_centre_15_opposed_is_refused():
    decision = deny(
        search(
            practitioner(STRANGER, mode=AccessMode.CENTRE_15), record(purpose_provision("ETREAT"))
        )
    )
    assert (decision.rule, decision.status) == ("R12", 403)


# --- R13 ----------------------------------------------------------------------------------


def test_r13_nurse_sees_only_the_classes_of_the_matrix():
    decision = permit(search(practitioner(NURSE, profession="60"), record()))
    assert visible(decision.constraints, SAMPLE_DOCS) == {"prescription"}
    assert (
        deny(
            POLICY.decide_read(
                practitioner(NURSE, profession="60"), "DocumentReference", document(), record()
            )
        ).status
        == 404
    )


def test_r13_medecin_sees_every_class():
    decision = permit(search(practitioner(AUTHORIZED, profession="10"), record()))
    assert {"plain", "prescription"} <= visible(decision.constraints, SAMPLE_DOCS)


def test_r13_profession_without_classes_is_refused_documents():
    decision = deny(search(practitioner(AUTHORIZED, profession="31"), record()))
    assert decision.rule == "R13"
    # Its Patient read is still governed by the consent, not by R13.
    permit(
        POLICY.decide_read(
            practitioner(AUTHORIZED, profession="31"), "Patient", patient(), record()
        )
    )


# --- R14 ----------------------------------------------------------------------------------


def test_r14_masked_document_is_visible_to_its_author_only_among_non_gp_practitioners():
    rec = record()
    own = document("masked-own", labels=(MASQUE_PS,), author=AUTHOR)
    permit(POLICY.decide_read(practitioner(AUTHOR), "DocumentReference", own, rec))
    assert (
        deny(POLICY.decide_read(practitioner(AUTHORIZED), "DocumentReference", own, rec)).status
        == 404
    )


def test_r14_invisible_patient_hidden_from_patient_and_representatives():
    doc = document("inv", labels=(INVISIBLE_PATIENT,))
    assert (
        deny(POLICY.decide_read(patient_requester(), "DocumentReference", doc, record())).status
        == 404
    )
    assert (
        deny(POLICY.decide_read(representative(), "DocumentReference", doc, minor_record())).status
        == 404
    )
    permit(POLICY.decide_read(practitioner(AUTHORIZED), "DocumentReference", doc, record()))


def test_r14_practitioner_removes_invisible_patient_after_the_announcement():
    old = document("inv", labels=(INVISIBLE_PATIENT,), meta_labels=(INVISIBLE_PATIENT,))
    new = document("inv")
    assert (
        permit(
            POLICY.decide_write(
                practitioner(AUTHORIZED), "update", "DocumentReference", new, old, record()
            )
        ).rule
        == "R14"
    )


def test_r14_practitioner_cannot_mask_or_alter_someone_elses_document():
    old = document()
    for new in (
        document(labels=(MASQUE_PS,)),
        document(labels=(INVISIBLE_PATIENT,)),
        document(category="11"),
    ):
        decision = deny(
            POLICY.decide_write(
                practitioner(AUTHORIZED), "update", "DocumentReference", new, old, record()
            )
        )
        assert (decision.rule, decision.status) == ("R14", 403)
    mine = document(author=AUTHORIZED)
    permit(
        POLICY.decide_write(
            practitioner(AUTHORIZED),
            "update",
            "DocumentReference",
            document(author=AUTHORIZED, category="11"),
            mine,
            record(),
        )
    )


# --- R15 ----------------------------------------------------------------------------------


def test_r15_system_deposits_but_never_reads_documents():
    his = system()
    for resource_type in ("DocumentReference", "Binary", "List"):
        permit(
            POLICY.decide_write(
                his,
                "create",
                resource_type,
                {"resourceType": resource_type, "id": "x"}
                if resource_type == "Binary"
                else document(),
                None,
                record(),
            )
        )
    assert deny(search(his, record())).rule == "R15"
    assert deny(POLICY.decide_read(his, "DocumentReference", document(), record())).rule == "R15"


def test_r15_admin_client_reads_patient_identities_and_manages_records():
    admin = system("admin", "admin-console")
    permit(POLICY.decide_search(admin, "Patient", None, patient_given=False))
    permit(
        POLICY.decide_write(
            admin, "update", "Patient", patient(status="closed"), patient(), record()
        )
    )
    assert deny(search(admin, record())).rule == "R15"


def test_r15_hospital_system_does_not_manage_patients():
    decision = deny(
        POLICY.decide_write(
            system(), "update", "Patient", patient(status="closed"), patient(), record()
        )
    )
    assert decision.rule == "R15"


def test_r15_system_may_deprecate_a_document_but_not_rewrite_it():
    old = document()
    deprecated = {**document(), "status": "superseded"}
    permit(POLICY.decide_write(system(), "update", "DocumentReference", deprecated, old, record()))
    deny(
        POLICY.decide_write(
            system(), "update", "DocumentReference", document(category="11"), old, record()
        )
    )


# --- R16 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("requester", [INTERNAL, patient_requester(), practitioner(GP), system()])
@pytest.mark.parametrize("interaction", ["update", "patch", "delete"])
def test_r16_audit_events_are_never_updated_or_deleted(requester, interaction):
    event = audit_event("a1")
    decision = deny(
        POLICY.decide_write(requester, interaction, "AuditEvent", event, event, record())
    )
    assert (decision.rule, decision.status) == ("R16", 405)


def test_r16_only_the_server_writes_audit_events_and_practitioners_never_read_them():
    permit(POLICY.decide_write(INTERNAL, "create", "AuditEvent", audit_event("a1"), None, record()))
    assert deny(search(practitioner(GP), record(), "AuditEvent")).rule == "R16"


# --- R17 ----------------------------------------------------------------------------------


def test_r17_normal_access_asks_for_the_first_access_of_the_day_notification():
    assert permit(search(practitioner(AUTHORIZED), record())).notes == (
        Note.NOTIFY_IF_FIRST_ACCESS_OF_DAY,
    )
    assert permit(search(practitioner(GP), record())).notes == (Note.NOTIFY_IF_FIRST_ACCESS_OF_DAY,)


def test_r17_patient_own_access_asks_for_no_notification():
    assert permit(search(patient_requester(), record())).notes == ()


def test_r17_deposit_by_a_professional_is_told():
    decision = permit(
        POLICY.decide_write(
            practitioner(STRANGER), "create", "DocumentReference", document(), None, record()
        )
    )
    assert decision.notes == (Note.NOTIFY_DOCUMENT_DEPOSITED,)


# --- R18 ----------------------------------------------------------------------------------


def test_r18_hidden_document_read_looks_exactly_like_not_found():
    hidden = deny(
        POLICY.decide_read(
            practitioner(AUTHORIZED),
            "DocumentReference",
            document("masked", labels=(MASQUE_PS,)),
            record(),
        )
    )
    genuine = not_found(not_found_message("DocumentReference", "masked"))
    assert hidden.to_error().status == genuine.status == 404
    assert hidden.to_error().operation_outcome() == genuine.operation_outcome()
    assert hidden.rule == "R14"  # the audit still knows why


def test_r18_unauthorized_practitioner_reading_a_document_by_id_gets_not_found():
    decision = deny(
        POLICY.decide_read(practitioner(STRANGER), "DocumentReference", document(), record())
    )
    assert (decision.status, decision.details_code, decision.rule) == (404, None, "R10")


def test_r18_constraints_are_pushed_into_the_query():
    decision = permit(search(practitioner(AUTHORIZED), record()))
    assert InCompartment("p1") in getattr(decision.constraints, "parts", ())


def test_r18_binary_readable_only_through_a_readable_document():
    binary = {"resourceType": "Binary", "id": "b-d1"}
    permit(POLICY.decide_binary_read(practitioner(AUTHORIZED), binary, [document()], record()))
    masked = document(labels=(MASQUE_PS,))
    decision = deny(POLICY.decide_binary_read(practitioner(AUTHORIZED), binary, [masked], record()))
    assert decision.status == 404 and decision.message == not_found_message("Binary", "b-d1")
    assert (
        deny(POLICY.decide_binary_read(practitioner(AUTHORIZED), binary, [], record())).status
        == 404
    )


def test_r18_practitioner_reads_only_messages_they_sent_or_received():
    def message(mid: str, sender: dict, recipient: dict) -> dict:
        return {
            "resourceType": "Communication",
            "id": mid,
            "status": "completed",
            "subject": {"reference": "Patient/p1"},
            "sender": sender,
            "recipient": [recipient],
        }

    me = {"identifier": {"system": SYSTEM_IDNAT_PS, "value": AUTHORIZED}}
    colleague = {"identifier": {"system": SYSTEM_IDNAT_PS, "value": STRANGER}}
    the_patient = {"reference": "Patient/p1"}
    messages = [
        message("to-me", colleague, me),
        message("from-me", me, the_patient),
        message("by-local-ref", {"reference": f"Practitioner/{AUTHORIZED}"}, the_patient),
        message("between-others", colleague, the_patient),
    ]
    decision = permit(search(practitioner(AUTHORIZED), record(), "Communication"))
    assert visible(decision.constraints, messages) == {"to-me", "from-me", "by-local-ref"}
    patient_view = permit(search(patient_requester(), record(), "Communication"))
    assert visible(patient_view.constraints, messages) == {
        "from-me",
        "by-local-ref",
        "between-others",
    }


def test_r18_resource_cannot_be_moved_to_another_record():
    old = document(author=AUTHORIZED)
    new = document(pid="p2", author=AUTHORIZED)
    decision = deny(
        POLICY.decide_write(
            practitioner(AUTHORIZED), "update", "DocumentReference", new, old, record()
        )
    )
    assert decision.status == 422


# --- reads and searches agree --------------------------------------------------------------

LABELS = st.sets(st.sampled_from([MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX]))
REQUESTERS = [
    practitioner(GP),
    practitioner(AUTHORIZED),
    practitioner(AUTHOR),
    practitioner(NURSE, profession="60"),
    practitioner(STRANGER, mode=AccessMode.BRIS_DE_GLACE, reason="coma"),
    patient_requester(),
    representative(),
]


@settings(max_examples=150, deadline=None)
@given(
    labels=LABELS,
    meta_labels=LABELS,
    category=st.sampled_from(["10", "11", "42", "60"]),
    author=st.sampled_from([AUTHOR, DEPOSITOR, GP, STRANGER]),
    pid=st.sampled_from(["p1", "p2"]),
    requester=st.sampled_from(REQUESTERS),
)
def test_r18_single_read_agrees_with_search_constraints(
    labels, meta_labels, category, author, pid, requester
):
    rec = build_record(
        patient(birth="2015-05-05"), [DEFAULT_CONSENT], [related_person("rp1")], TODAY, NOW
    )
    doc = document(
        "d",
        pid=pid,
        labels=tuple(sorted(labels)),
        category=category,
        author=author,
        meta_labels=tuple(sorted(meta_labels)),
    )
    searched = permit(search(requester, rec))
    read = POLICY.decide_read(requester, "DocumentReference", doc, rec)
    assert isinstance(read, Permit) == matches(searched.constraints, doc)
    if isinstance(read, Deny):
        assert read.status == 404 and read.details_code is None
    assert ("p1" in compartment_of(doc)) or isinstance(read, Deny)


@pytest.mark.parametrize("requester", REQUESTERS, ids=lambda r: f"{r.kind}-{r.subject_id}")
def test_r14_rare_filters_are_the_label_exclusions_among_the_search_constraints(requester):
    """A Permit's rare filters (checked late by a store) are conjuncts of its constraints, and
    exactly the label exclusions (R07/R14): never the compartment, class or party clauses,
    which may exclude most of a record."""
    rec = build_record(
        patient(birth="2015-05-05"), [DEFAULT_CONSENT], [related_person("rp1")], TODAY, NOW
    )
    for resource_type in ("DocumentReference", "Communication", "AuditEvent"):
        decision = search(requester, rec, resource_type)
        if isinstance(decision, Deny):
            continue
        parts = (
            decision.constraints.parts
            if isinstance(decision.constraints, And)
            else (decision.constraints,)
        )
        assert all(node in parts for node in decision.rare_filters)
        for node in decision.rare_filters:
            masked = (
                document(labels=(MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX))
                if resource_type == "DocumentReference"
                else audit_event(
                    "a", labels=(MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX)
                )
            )
            assert not matches(node, masked), node
            assert not isinstance(node, InCompartment)
    if requester.kind is not ActorKind.PRACTITIONER or requester.subject_id != GP:
        assert permit(search(requester, rec)).rare_filters  # R14 (and R07) labels
