"""Attack pass: who may WRITE the record's governance? (R03, R07-R10, R14, R15)

The governance of a record is what the rules read to decide who reads it: the Patient (its
record-status, INS, birthDate, generalPractitioner), its RelatedPersons (the representatives of
a minor), its Consents (authorizations, blocks, oppositions, the initial consent) and the
labels of its documents (MASQUE_PS, the patient's; INVISIBLE_PATIENT and
INVISIBLE_REPRESENTANTS_LEGAUX, the professionals'). Every actor (the patient, adult or minor,
a parent, professionals authorized, blocked, unauthorized, in bris de glace or centre 15, the
médecin traitant, the author of a document, system clients of every organisation type) was
asked, through every door (REST create, update, PATCH, delete, conditional, transaction and
batch entries, ITI-65, ITI-41 replacement), how a writer reaches what they may not read or
widens their own rights.

What it found, and what these tests hold (each fails on main):

- A professional recorded their own authorization (R10) with `meta.security`
  INVISIBLE_PATIENT (or, on a minor's record, INVISIBLE_REPRESENTANTS_LEGAUX): the Consent
  was hidden from the patient (their read 404) and their DELETE answered 204 and deleted
  nothing, so the authorization they could not see they could not revoke either. A masking
  label (TRE_A07) now stands only on what R14 labels: a Consent, a Patient or a
  RelatedPerson carrying one is refused (422), whoever writes it.
- A Patient update by the identity feed (health insurer or administration client, R15) that
  left out the record-status extension, or set it `open`, reopened a closed record and lifted
  the patient's opposition to the record (R03): the deposits and reads the opposition
  refused were then made. The operator's own `fhir-server record reopen` refuses to reopen an
  opposed record. Through FHIR a record may now be closed or opposed, never reopened: an
  update that would lift a closure or an opposition (or exchange one for the other) is 409.
- A Patient written `active: false` (PDSm4DMP's TD0.2 tells a closed record so) with its
  record-status open was stored and the record stayed open; the contradiction is refused.
- A Patient could be created with another Patient's INS, or given one (a PUT): one INS named
  two records, and every door resolving a patient by INS (a token's or a VIHF's, ITI-41,
  ITI-65, `patient.identifier`) found two. `fhir-server record oppose` refuses an INS a
  record holds; a Patient write giving one now answers 409 `duplicate`.
  In one Bundle the check sees the Bundle's earlier entries (it did; now held by a test),
  and on MongoDB two overlapping writes giving one new INS each read a snapshot without
  the other's: each INS is now claimed as a conditional create by it claims, so one of the
  two conflicts.
- The author of a document (R14: only they change it otherwise) removed the patient's
  MASQUE_PS from it, by PUT, PATCH or a transaction entry, or deposited its replacement
  (`relatesTo.replaces`) without it: every authorized professional then read it. MASQUE_PS
  is the patient's choice; the server cannot tell who set it, so only the patient or a
  representative removes it (decided here), and a replacement by anyone else carries it.
- The identity feed re-pointed a parent's RelatedPerson at another patient (the same
  RelatedPerson, its credentials, its history): now refused as any move of a resource to
  another record (422). It stored a RelatedPerson naming its patient by INS, a foreign or
  contained reference or an unknown id, counted for no record (now 422). It stored
  `dmp-medecin-traitant` on a Patient, served to every professional reading it as "you are
  the médecin traitant" (now 422). It ended a guardianship with `active: "false"` (or `0`),
  which the models coerce and the rules read as active (a non-boolean `active` on a Patient
  or RelatedPerson is now 422).
- The feed wrote a `generalPractitioner` reference naming two practitioners (identifier and
  literal, or a contained Practitioner with two IdNat_PS): both were médecins traitants
  (R08), the second reading the record, masked documents included; now 422.
- A patient's Consent under `policyRule` OPTOUT (or a text-only rule, or a `policy` by URI)
  was read as the DMP shape, its permits honoured; only OPTIN is read now, the rest 422.
- A Consent, Patient or RelatedPerson carrying `implicitRules` (a modifier: rules under
  which it means something else) was read as if it had none; now 422.
- The author's ITI-57 and ITI-41 RPLC lifted the patient's MASQUE_PS as the FHIR doors did.

Companion tests (passing before too) show that what remains allowed still is: an update
keeping a closed or opposed record's status, the author's other changes of a masked
document, a replacement carrying MASQUE_PS, closing a record with `active: false`.

What held (tried, refused or answered as for a missing resource): a parent's create or
change of a RelatedPerson (theirs, of an adult, of another family's child) or of the minor's
Patient (birthDate); a parent's or the minor's removal of INVISIBLE_REPRESENTANTS_LEGAUX
(404, 403); a Consent for another patient, or naming its patient by identifier, contained
or foreign reference (403 patient-context, 422 unknown-patient); a Consent's versioned
reference (read as the patient's, its block enforced); a professional's change or delete of
any Consent (403 R10, whatever the id names), a blocked professional's own authorization, a
professional's Consent putting someone else on the care team or itself on it with an
initial-consent category, their conditional create of a Consent (403: they read none); a
system client's Consent, Patient or RelatedPerson (R15); an uninterpretable Consent (422 on
write); a PATCH of a Patient, RelatedPerson or Consent, alone or in a Bundle (405); a
`Patient.link` to another record (it brings the other Patient to no reader of this one).

Not closed here (see docs/access-rules.md and the report): in one transaction or batch every
entry is judged on the record's facts as they were before the Bundle (the store's reader
does not see the Bundle's own writes), so a professional's two self-authorizations in one
Bundle are both recorded (the 409 `duplicate` is for a second request).
"""

from __future__ import annotations

import json

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.auth.identifiers import ins_token
from fhir_server.resources.ins import nir_key
from fhir_server.service import lifecycle
from fhir_server.store import with_audit_log
from fhir_server.terminology import EXT_RECORD_STATUS, SYSTEM_DMP_CONFIDENTIALITY
from ihe_xds import vocabulary as v
from tests.http.conftest import (
    FHIR_JSON,
    INS_SYSTEM,
    a_patient,
    auth,
    dmp_consent,
    permit,
    valid_nir,
)
from tests.http.test_attack_pass_xds import deposit as iti41
from tests.http.test_attack_pass_xds import entry_uuid, errors
from tests.http.test_attack_pass_xds import record as xds_record  # noqa: F401 - fixture
from tests.http.test_binary_ownership import parent_token
from tests.http.test_r18_matrix import (
    AUTHOR,
    AUTHORIZED,
    PARENT,
    PATIENT_A,
    PATIENT_B,
    PATIENT_M,
    STRANGER,
    World,
    doc_id,
    own_world,
)
from tests.http.test_xds_endpoints import OTHER_PS

# The fixtures `xds` and `record` are those of the ITI-57 tests (imported, hence F811).
# ruff: noqa: F811
from tests.http.test_xds_update_document_set import (  # noqa: F401 - fixtures
    V3_OID,
    deposit,
    entry_of,
    metadata_update,
    record,
    update,
    xds,
)
from tests.support.documents import dmp_document, transaction

# test_r18_matrix's record (A adult with a médecin traitant, M a minor with a parent, B), one
# per test: every test here writes to it.
world = pytest.fixture(own_world, name="world")

IDENTITY_SCOPES = "system/Patient.crus system/RelatedPerson.cru"


def send(world: World, token: str, method: str, path: str, body: object | None = None):
    headers = auth(token, **{"Content-Type": FHIR_JSON})
    data = json.dumps(body) if body is not None else None
    return world.client.open(f"/fhir/{path}", method=method, data=data, headers=headers)


def current(world, resource_type: str, resource_id: str) -> dict:
    """The current version as the server reads it (`world`: a World or an Xds)."""
    service = world.service if isinstance(world, World) else world.runtime.service
    return service.read(INTERNAL, resource_type, resource_id).json()


def count(world: World, resource_type: str, *params: tuple[str, str]) -> int:
    """How many current resources of the type match `params`, as the server counts them."""
    result = world.service.search(INTERNAL, resource_type, [*params, ("_summary", "count")])
    assert result.total is not None
    return result.total


def labelled(resource: dict, code: str) -> dict:
    return {
        **resource,
        "meta": {"security": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": code}]},
    }


# -- R10, R14: a masking label on the governance hides it from whom it governs ----------------


@pytest.mark.parametrize(
    "patient_id, label, reader",
    [
        (PATIENT_A, "INVISIBLE_PATIENT", "patient"),
        (PATIENT_M, "INVISIBLE_REPRESENTANTS_LEGAUX", "parent"),
    ],
)
def test_r10_r14_a_professionals_own_authorization_cannot_be_hidden_from_who_revokes_it(
    world, patient_id, label, reader
):
    """R10: the patient (a parent, R07) may revoke the authorization a professional recorded
    for themselves. Labelled INVISIBLE_PATIENT (INVISIBLE_REPRESENTANTS_LEGAUX), it was
    hidden from them: their read 404, their DELETE 204 deleting nothing, and the professional
    kept reading the record. A Consent carries no masking label (R14 labels documents):
    refused, nothing written, and the professional reads nothing."""
    consent = dmp_consent(patient_id, permit(STRANGER), initial_consent=False)
    stranger = world.tokens.practitioner(STRANGER)
    before = count(world, "Consent", ("patient", patient_id))
    response = send(world, stranger, "POST", "Consent", labelled(consent, label))
    assert response.status_code == 422, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "code-invalid" and "Consent" in issue["diagnostics"]
    assert count(world, "Consent", ("patient", patient_id)) == before
    read = world.get(stranger, f"/fhir/DocumentReference?patient={patient_id}")
    assert read.status_code == 403, read.get_data(as_text=True)
    # The same authorization unlabelled is recorded, and its patient (parent) revokes it.
    token = world.tokens.patient(patient_id) if reader == "patient" else parent_token(world)
    made = send(world, stranger, "POST", "Consent", consent)
    assert made.status_code == 201, made.get_data(as_text=True)
    revoked = send(world, token, "DELETE", f"Consent/{made.get_json()['id']}")
    assert revoked.status_code in (200, 204)
    assert world.get(stranger, f"/fhir/DocumentReference?patient={patient_id}").status_code == 403


@pytest.mark.parametrize("door", ["POST", "transaction", "batch"])
def test_r06_r14_the_patients_own_consent_carries_no_masking_label(world, door):
    """R06, R14: the patient's Consent labelled MASQUE_PS (any TRE_A07 label) is refused at
    every door as the professional's is: the rules read no label on a Consent, one there
    was stored and hid it from whom it was hidden from (a parent's from the minor)."""
    consent = labelled(dmp_consent(PATIENT_A, permit(STRANGER)), "MASQUE_PS")
    token = world.tokens.patient(PATIENT_A)
    before = count(world, "Consent", ("patient", PATIENT_A))
    if door == "POST":
        response = send(world, token, "POST", "Consent", consent)
        status = response.status_code
    else:
        bundle = {
            "resourceType": "Bundle",
            "type": door,
            "entry": [{"resource": consent, "request": {"method": "POST", "url": "Consent"}}],
        }
        response = send(world, token, "POST", "", bundle)
        status = response.status_code
        if door == "batch":
            assert status == 200, response.get_data(as_text=True)
            status = int(response.get_json()["entry"][0]["response"]["status"].split()[0])
    assert status == 422, response.get_data(as_text=True)
    assert count(world, "Consent", ("patient", PATIENT_A)) == before


ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


@pytest.mark.parametrize(
    "policy",
    [
        {"policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTOUT"}]}},
        {"policyRule": {"text": "personne ne lit mon dossier"}},
        {"policy": [{"uri": "https://example.org/politique/refus-total"}]},
    ],
    ids=["OPTOUT", "text-only", "policy-uri"],
)
def test_r09_r10_a_consent_under_a_policy_the_rules_do_not_read_is_refused(world, policy):
    """R09, R10 (fail closed): a Consent's `policyRule` or `policy` names the rules it is to
    be read under. The patient's Consent under OPTOUT (their refusal to share), or a policy
    by URI, was stored and read as the DMP shape: the permits in it authorized whom they
    named. Decided here: only v3-ActCode OPTIN (the shape the rules read) is accepted;
    another is refused (422 `processing` naming the element), nothing written."""
    token = world.tokens.patient(PATIENT_A)
    before = count(world, "Consent", ("patient", PATIENT_A))
    body = {**dmp_consent(PATIENT_A, permit(STRANGER)), **policy}
    response = send(world, token, "POST", "Consent", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "processing"
    assert issue["expression"][0].startswith(f"Consent.{next(iter(policy))}")
    assert count(world, "Consent", ("patient", PATIENT_A)) == before
    optin = {"policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN"}]}}
    accepted = {k: v for k, v in body.items() if k != "policy"} | optin
    made = send(world, token, "POST", "Consent", accepted)
    assert made.status_code == 201, made.get_data(as_text=True)


@pytest.mark.parametrize(
    "resource_type, resource_id",
    [("Consent", None), ("Patient", PATIENT_B), ("RelatedPerson", PARENT)],
)
def test_r03_r07_r10_implicit_rules_the_rules_do_not_read_are_refused(
    world, resource_type, resource_id
):
    """R03, R07, R10 (fail closed): `implicitRules` is a modifier element (FHIR R4): rules
    under which the resource means something else. A Consent, a Patient or a RelatedPerson
    carrying one was stored and read as if it had none. Refused (422 `processing` naming
    it), nothing written."""
    rules = "https://example.org/regles-locales"
    if resource_type == "Consent":
        token = world.tokens.patient(PATIENT_A)
        before = count(world, "Consent", ("patient", PATIENT_A))
        body = {**dmp_consent(PATIENT_A, permit(STRANGER)), "implicitRules": rules}
        response = send(world, token, "POST", "Consent", body)
        assert count(world, "Consent", ("patient", PATIENT_A)) == before
    else:
        token = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
        body = {k: v for k, v in current(world, resource_type, resource_id).items() if k != "meta"}
        response = send(
            world, token, "PUT", f"{resource_type}/{resource_id}", {**body, "implicitRules": rules}
        )
        assert "implicitRules" not in current(world, resource_type, resource_id)
    assert response.status_code == 422, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == [f"{resource_type}.implicitRules"]


@pytest.mark.parametrize(
    "resource_type, resource_id, label",
    [
        ("Patient", PATIENT_M, "INVISIBLE_PATIENT"),
        ("RelatedPerson", PARENT, "INVISIBLE_REPRESENTANTS_LEGAUX"),
    ],
)
def test_r15_r14_identities_carry_no_masking_label(world, resource_type, resource_id, label):
    """R15, R14: the identity feed labelling a Patient INVISIBLE_PATIENT, or a parent's
    RelatedPerson INVISIBLE_REPRESENTANTS_LEGAUX, hid the identity from whom it governs
    (their own Patient, their own RelatedPerson). Refused (422), nothing written."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    body = labelled(current(world, resource_type, resource_id), label)
    response = send(world, admin, "PUT", f"{resource_type}/{resource_id}", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert not (current(world, resource_type, resource_id).get("meta") or {}).get("security")


# -- R03: a Patient update does not lift a closure or an opposition ------------------------------


def _without_status(patient: dict) -> dict:
    body = {k: v for k, v in patient.items() if k != "meta"}
    extensions = [e for e in body.get("extension") or [] if e.get("url") != EXT_RECORD_STATUS]
    body.pop("extension", None)
    if extensions:
        body["extension"] = extensions
    return body


LIFTS = [
    ("closed", None),
    ("closed", "open"),
    ("closed", "opposed"),
    ("opposed", None),
    ("opposed", "open"),
    ("opposed", "closed"),
]


def _status_update(world: World, organization: str, sent: str | None):
    """The identity feed's PUT of B's Patient with a new address and record-status `sent`
    (None: the extension left out)."""
    feed = world.tokens.system("feed", IDENTITY_SCOPES, organization)
    body = _without_status(current(world, "Patient", PATIENT_B))
    body["address"] = [{"city": "Lyon"}]
    if sent is not None:
        body["extension"] = [
            *body.get("extension", []),
            {"url": EXT_RECORD_STATUS, "valueCode": sent},
        ]
    return send(world, feed, "PUT", f"Patient/{PATIENT_B}", body)


@pytest.mark.parametrize("stored, sent", LIFTS)
@pytest.mark.parametrize("organization", ["admin", "health_insurer"])
def test_r03_a_patient_update_never_lifts_a_closure_or_an_opposition(
    world, stored, sent, organization
):
    """R03: the identity feed's update of a closed or opposed record's Patient (a new
    address) that leaves the record-status out, or says `open`, reopened the record: its
    absence reads as open, and the deposits and reads the patient's opposition refused were
    made. Decided here, as `fhir-server record reopen` refuses to reopen an opposed record:
    the FHIR door only closes a record; lifting a closure or an opposition (or exchanging
    one for the other) is the operator's. 409 `business-rule`, the status kept, a deposit
    still refused."""
    lifecycle.set_status(world.service, PATIENT_B, stored)
    response = _status_update(world, organization, sent)
    assert response.status_code == 409, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["code"] == "business-rule"
    assert lifecycle.record_status(current(world, "Patient", PATIENT_B)) == stored
    hospital = world.tokens.system("his", "system/DocumentReference.c system/Binary.c", "hospital")
    deposit = send(world, hospital, "POST", "", transaction(PATIENT_B))
    assert deposit.status_code == 422, deposit.get_data(as_text=True)


@pytest.mark.parametrize("door", ["conditional PUT", "transaction", "batch"])
def test_r03_no_door_of_an_update_lifts_an_opposition(world, door):
    """R03: the same update without the record-status, as a conditional update by the INS
    (the feed's usual door) or a Bundle entry, lifted the opposition too. 409, still
    opposed."""
    lifecycle.set_status(world.service, PATIENT_B, "opposed")
    feed = world.tokens.system("feed", IDENTITY_SCOPES, "health_insurer")
    body = _without_status(current(world, "Patient", PATIENT_B))
    body["address"] = [{"city": "Lyon"}]
    if door == "conditional PUT":
        ins = body.pop("identifier")[0]
        body.pop("id")
        body["identifier"] = [ins]
        criteria = f"identifier={ins['system']}|{ins['value']}"
        response = send(world, feed, "PUT", f"Patient?{criteria}", body)
        status = response.status_code
    else:
        entry = {"resource": body, "request": {"method": "PUT", "url": f"Patient/{PATIENT_B}"}}
        bundle = {"resourceType": "Bundle", "type": door, "entry": [entry]}
        response = send(world, feed, "POST", "", bundle)
        status = response.status_code
        if door == "batch":
            assert status == 200, response.get_data(as_text=True)
            status = int(response.get_json()["entry"][0]["response"]["status"].split()[0])
    assert status == 409, response.get_data(as_text=True)
    assert lifecycle.record_status(current(world, "Patient", PATIENT_B)) == "opposed"


@pytest.mark.parametrize("door", ["PUT", "POST"])
def test_r03_a_record_closed_by_patient_active_alone_is_refused_not_left_open(world, door):
    """R03, PDSm4DMP TD0.2: the guide tells a closed record by `Patient.active` false; the
    rules read the record-status. A feed closing B's record the guide's way (or creating a
    Patient so) was stored with the record open, read and deposited to by everyone. Decided
    here: the contradiction is refused (422 naming Patient.active), nothing written."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    if door == "PUT":
        body = {k: v for k, v in current(world, "Patient", PATIENT_B).items() if k != "meta"}
        response = send(world, admin, "PUT", f"Patient/{PATIENT_B}", {**body, "active": False})
        assert current(world, "Patient", PATIENT_B).get("active") is None
    else:
        response = send(world, admin, "POST", "Patient", a_patient(7, active=False))
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["expression"] == ["Patient.active"]
    closed = _without_status(current(world, "Patient", PATIENT_B))
    closed["extension"] = [{"url": EXT_RECORD_STATUS, "valueCode": "closed"}]
    made = send(world, admin, "PUT", f"Patient/{PATIENT_B}", {**closed, "active": False})
    assert made.status_code == 200, made.get_data(as_text=True)


@pytest.mark.parametrize("stored", ["closed", "opposed"])
def test_r03_a_patient_update_keeping_the_status_is_made(world, stored):
    """R03: the same update carrying the record's status as stored is made (the feed still
    updates the identity of a closed or opposed record)."""
    lifecycle.set_status(world.service, PATIENT_B, stored)
    response = _status_update(world, "health_insurer", stored)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert current(world, "Patient", PATIENT_B)["address"] == [{"city": "Lyon"}]


# -- R03, R15: an INS names one record ----------------------------------------------------------


def test_r03_a_patient_created_with_another_patients_ins_is_refused(world):
    """R03, R15: a second Patient with A's INS made every resolution of that INS find two
    records (the token's and VIHF's INS bind to none, ITI-41 and ITI-65 deposits refused).
    409 `duplicate`, nothing created, the INS still names A alone."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    ins = current(world, "Patient", PATIENT_A)["identifier"][0]
    response = send(world, admin, "POST", "Patient", a_patient(1))
    assert response.status_code == 409, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["code"] == "duplicate"
    found = world.service.find(
        INTERNAL, "Patient", [("identifier", f"{ins['system']}|{ins['value']}")]
    )
    assert [p.id for p in found] == [PATIENT_A]


@pytest.mark.parametrize("door", ["PUT", "transaction", "conditional PUT"])
def test_r03_a_patient_given_another_patients_ins_is_refused(world, door):
    """R03, R15: re-pointing an INS: B's Patient given A's INS (a PUT, a transaction entry,
    a conditional update by B's INS) made A's INS name B's record too, and deposits by A's
    INS could then be filed in B's once A's Patient changed. 409, B unchanged; an update
    keeping each Patient's own INS is made."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    a_ins = current(world, "Patient", PATIENT_A)["identifier"]
    b = {k: v for k, v in current(world, "Patient", PATIENT_B).items() if k != "meta"}
    b_ins = b["identifier"][0]
    moved = {**b, "identifier": a_ins}
    match door:
        case "PUT":
            response = send(world, admin, "PUT", f"Patient/{PATIENT_B}", moved)
        case "conditional PUT":
            without_id = {k: v for k, v in moved.items() if k != "id"}
            criteria = f"identifier={b_ins['system']}|{b_ins['value']}"
            response = send(world, admin, "PUT", f"Patient?{criteria}", without_id)
        case _:
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {"resource": moved, "request": {"method": "PUT", "url": f"Patient/{PATIENT_B}"}}
                ],
            }
            response = send(world, admin, "POST", "", bundle)
    assert response.status_code == 409, response.get_data(as_text=True)
    assert current(world, "Patient", PATIENT_B)["identifier"][0] == b_ins
    kept = send(world, admin, "PUT", f"Patient/{PATIENT_B}", {**b, "gender": "other"})
    assert kept.status_code == 200, kept.get_data(as_text=True)


NIA_SYSTEM = "urn:oid:1.2.250.1.213.1.4.9"


def _corsican_nia() -> str:
    """A NIA of a patient born in Corsica (2A), its letters in capitals."""
    body = "185072A004012"
    return body + f"{nir_key(body):02d}"


def test_r03_a_nia_differing_only_in_case_is_refused_as_a_patients_ins(world):
    """R03: the rules compare INS as written, so a NIA spelled `...2a` beside another
    Patient's `...2A` would be a second record for one person. A Patient's INS is written
    in capitals (422 for a lower-case one, as for a NIR); the capital spelling is made."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    nia = _corsican_nia()
    first = send(
        world,
        admin,
        "POST",
        "Patient",
        a_patient(901, identifier=[{"system": NIA_SYSTEM, "value": nia}]),
    )
    assert first.status_code == 201, first.get_data(as_text=True)
    second = send(
        world,
        admin,
        "POST",
        "Patient",
        a_patient(902, identifier=[{"system": NIA_SYSTEM, "value": nia.lower()}]),
    )
    assert second.status_code == 422, second.get_data(as_text=True)
    assert count(world, "Patient", ("identifier", f"{NIA_SYSTEM}|{nia}")) == 1


def test_r03_a_token_naming_a_nia_in_lower_case_is_refused(world):
    """R03, R04 (fail closed): a token's INS in context (as a VIHF's or an XDS patientId's)
    is checked for its NIR key unless it is a NIA, so a NIA in lower case passed as an INS
    of its own, a second spelling of one patient's INS; a NIR so spelled was already a 401.
    Now a lower-case INS is refused at every door reading one (401 here), the capital
    spelling accepted."""
    nia = _corsican_nia()
    assert ins_token(f"{NIA_SYSTEM}|{nia}")[0] == f"{NIA_SYSTEM}|{nia}"
    assert ins_token(f"{NIA_SYSTEM}|{nia.lower()}")[0] is None
    token = world.tokens.practitioner_naming_ins(AUTHORIZED, f"{NIA_SYSTEM}|{nia.lower()}")
    refused = world.get(token, f"/fhir/DocumentReference?patient={PATIENT_A}")
    assert refused.status_code == 401, refused.get_data(as_text=True)


@pytest.mark.parametrize("bundle_type", ["transaction", "batch"])
@pytest.mark.parametrize("shape", ["two creates", "create and move"])
def test_r03_one_bundle_gives_an_ins_to_one_record(world, bundle_type, shape):
    """R03, R15: the INS check reads the store as the Bundle's own transaction sees it: a
    transaction creating two Patients with one new INS (or creating one and giving its INS
    to B) is 409 and writes nothing; a batch makes the first entry and refuses the second.
    Either way the INS names one record."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    fresh = a_patient(77)
    ins = fresh["identifier"][0]
    b = {k: v for k, v in current(world, "Patient", PATIENT_B).items() if k != "meta"}
    second = (
        {"resource": a_patient(77), "request": {"method": "POST", "url": "Patient"}}
        if shape == "two creates"
        else {
            "resource": {**b, "identifier": [ins]},
            "request": {"method": "PUT", "url": f"Patient/{PATIENT_B}"},
        }
    )
    bundle = {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [{"resource": fresh, "request": {"method": "POST", "url": "Patient"}}, second],
    }
    response = send(world, admin, "POST", "", bundle)
    holders = count(world, "Patient", ("identifier", f"{ins['system']}|{ins['value']}"))
    if bundle_type == "transaction":
        assert response.status_code == 409, response.get_data(as_text=True)
        assert response.get_json()["issue"][0]["code"] == "duplicate"
        assert holders == 0
    else:
        statuses = [e["response"]["status"] for e in response.get_json()["entry"]]
        assert statuses[0].startswith("201") and statuses[1].startswith("409"), statuses
        assert holders == 1
    assert current(world, "Patient", PATIENT_B)["identifier"] == b["identifier"]


def test_r03_a_patient_write_claims_its_ins_as_a_conditional_create_by_it(world, monkeypatch):
    """R03, R15: on MongoDB two overlapping transactions each read their own snapshot, so
    two identity-feed writes giving one new INS both found no duplicate. A Patient write now
    claims each INS it gives under the key a conditional create by `identifier=<INS>`
    claims (`StoreTransaction.claim`): of two overlapping ones, one conflicts (409), and the
    other's check then sees its Patient. Both writes of the pair claim the same key."""
    claimed: list[str] = []
    claim = with_audit_log._Transaction.claim

    def recorded(self, key: str) -> None:
        claimed.append(key)
        claim(self, key)

    monkeypatch.setattr(with_audit_log._Transaction, "claim", recorded)
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    fresh = a_patient(78)
    ins = fresh["identifier"][0]
    criteria = f"identifier={ins['system']}|{ins['value']}"
    headers = auth(admin, **{"Content-Type": FHIR_JSON, "If-None-Exist": criteria})
    created = world.client.post("/fhir/Patient", data=json.dumps(fresh), headers=headers)
    assert created.status_code == 201, created.get_data(as_text=True)
    criteria_key = claimed[0]
    claimed.clear()
    again = send(world, admin, "POST", "Patient", a_patient(78))
    assert again.status_code == 409, again.get_data(as_text=True)
    assert claimed == [criteria_key]


# -- R07, R08: the identity feed re-points no representative, declares no médecin traitant ------


@pytest.mark.parametrize("door", ["PUT", "transaction"])
@pytest.mark.parametrize("to", [PATIENT_B, PATIENT_A])
def test_r07_a_representative_is_not_moved_to_another_patient(world, door, to):
    """R06, R07: a RelatedPerson names one patient for its whole life (its history, its
    events, the credentials naming it). The feed's update re-pointing M's parent at another
    patient was made: with the same RelatedPerson, and credentials naming it, the parent
    became another family's representative (once that patient is a minor), and M's trail
    of their acts moved with it. Decided here: 422, as any resource moved to another
    record (R06); another guardianship is another RelatedPerson."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    body = {k: v for k, v in current(world, "RelatedPerson", PARENT).items() if k != "meta"}
    body["patient"] = {"reference": f"Patient/{to}"}
    if door == "PUT":
        response = send(world, admin, "PUT", f"RelatedPerson/{PARENT}", body)
    else:
        entry = {"resource": body, "request": {"method": "PUT", "url": f"RelatedPerson/{PARENT}"}}
        response = send(
            world, admin, "POST", "", {"resourceType": "Bundle", "type": door, "entry": [entry]}
        )
    assert response.status_code == 422, response.get_data(as_text=True)
    stored = current(world, "RelatedPerson", PARENT)
    assert stored["patient"]["reference"] == f"Patient/{PATIENT_M}"
    # The parent still acts for M; a change of the guardianship itself is made.
    parent = parent_token(world)
    assert world.get(parent, f"/fhir/Patient/{PATIENT_M}").status_code == 200
    ended = {**body, "patient": {"reference": f"Patient/{PATIENT_M}"}, "active": False}
    assert send(world, admin, "PUT", f"RelatedPerson/{PARENT}", ended).status_code == 200


@pytest.mark.parametrize(
    "patient",
    [
        {"identifier": {"system": INS_SYSTEM, "value": valid_nir(2)}},
        {"reference": f"http://other.example/fhir/Patient/{PATIENT_M}"},
        {"reference": "#child"},
        {"reference": "Patient/0a0a0a0a-0000-4000-8000-000000000000"},
    ],
    ids=["identifier", "foreign", "contained", "unknown-id"],
)
def test_r07_a_representative_names_a_known_patient_by_reference(world, patient):
    """R07: a representative is a RelatedPerson whose `patient` is a local reference to a
    known Patient. One naming its patient by INS, a foreign or contained reference, or an
    unknown id was stored (201) and counted for no record, a guardianship the rules could
    not read. Decided here: refused (422 unknown-patient), as a Consent naming no known
    patient is; nothing written."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    body = {
        k: v for k, v in current(world, "RelatedPerson", PARENT).items() if k not in ("id", "meta")
    }
    body["patient"] = patient
    if patient.get("reference") == "#child":
        body["contained"] = [{"resourceType": "Patient", "id": "child"}]
    before = count(world, "RelatedPerson")
    response = send(world, admin, "POST", "RelatedPerson", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert count(world, "RelatedPerson") == before


@pytest.mark.parametrize("value", ["false", 0, "no"])
def test_r07_an_ended_guardianship_is_said_with_a_json_boolean(world, value):
    """R07: the feed ending M's parent's guardianship with `active` written `"false"`, `0`
    or `"no"` was accepted (the models read it as false) and stored as sent; the rules,
    which read only the JSON false as inactive, kept the parent a representative: the
    guardianship its feed ended stayed in force. Refused (422 naming RelatedPerson.active),
    the parent still as before; `false` ends it."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    body = {k: v for k, v in current(world, "RelatedPerson", PARENT).items() if k != "meta"}
    response = send(world, admin, "PUT", f"RelatedPerson/{PARENT}", {**body, "active": value})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["expression"] == ["RelatedPerson.active"]
    assert "active" not in current(world, "RelatedPerson", PARENT)
    ended = send(world, admin, "PUT", f"RelatedPerson/{PARENT}", {**body, "active": False})
    assert ended.status_code == 200, ended.get_data(as_text=True)
    assert world.get(parent_token(world), f"/fhir/Patient/{PATIENT_M}").status_code in (403, 404)


def test_r08_a_stored_medecin_traitant_status_is_refused(world):
    """R08, TD0.2: `dmp-medecin-traitant` is the server's answer to the requester of an
    existence check. Written on the Patient by the feed, it was stored and served to every
    professional reading the Patient, telling each they were the médecin traitant. Refused
    (422 naming it), nothing written; the médecin traitant is `generalPractitioner`."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    body = {k: v for k, v in current(world, "Patient", PATIENT_A).items() if k != "meta"}
    body["extension"] = [
        {
            "url": "https://interop.esante.gouv.fr/ig/fhir/dmp/StructureDefinition/"
            "dmp-medecin-traitant",
            "valueBoolean": True,
        }
    ]
    response = send(world, admin, "PUT", f"Patient/{PATIENT_A}", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "dmp-medecin-traitant" in response.get_json()["issue"][0]["diagnostics"]
    assert "extension" not in current(world, "Patient", PATIENT_A)


MEDECIN_TRAITANT = (
    "https://interop.esante.gouv.fr/ig/fhir/dmp/StructureDefinition/dmp-medecin-traitant"
)


@pytest.mark.parametrize(
    "where, expected_path",
    [
        ("sub-extension", "Patient.extension[0].extension[0]"),
        ("name extension", "Patient.name[0].extension[0]"),
    ],
)
def test_r08_a_medecin_traitant_status_nested_in_a_patient_is_refused(world, where, expected_path):
    """R08, TD0.2: `dmp-medecin-traitant` as a complex extension's sub-extension (or on an
    element of the Patient) was stored (only the Patient's own extensions were read) and
    served to every professional reading it. Refused wherever it stands (422 naming the
    path), nothing written."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    before = current(world, "Patient", PATIENT_A)
    body = {k: v for k, v in before.items() if k != "meta"}
    status = {"url": MEDECIN_TRAITANT, "valueBoolean": True}
    if where == "sub-extension":
        body["extension"] = [{"url": "https://example.org/wrapper", "extension": [status]}]
    else:
        body["name"] = [{**body["name"][0], "extension": [status]}]
    response = send(world, admin, "PUT", f"Patient/{PATIENT_A}", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    diagnostics = response.get_json()["issue"][0]
    assert "dmp-medecin-traitant" in diagnostics["diagnostics"]
    assert expected_path in json.dumps(diagnostics)
    assert current(world, "Patient", PATIENT_A)["meta"] == before["meta"]


@pytest.mark.parametrize("shape", ["literal", "contained"])
def test_r08_one_general_practitioner_reference_names_one_practitioner(world, shape):
    """R08: the médecin traitant is never blocked and reads what the patient masked. A
    `generalPractitioner` reference naming two practitioners (its identifier A's GP, its
    `Practitioner/<IdNat_PS>` literal, or the contained Practitioner it points to, another)
    made both médecins traitants: the second read A's record, masked documents included,
    with no authorization. A Consent actor naming two is refused (R10); so is this (422),
    nothing written."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    body = {k: v for k, v in current(world, "Patient", PATIENT_A).items() if k != "meta"}
    gp = body["generalPractitioner"][0]["identifier"]
    if shape == "literal":
        body["generalPractitioner"] = [{"reference": f"Practitioner/{STRANGER}", "identifier": gp}]
    else:
        body["contained"] = [
            {
                "resourceType": "Practitioner",
                "id": "gp",
                "identifier": [gp, {**gp, "value": STRANGER}],
            }
        ]
        body["generalPractitioner"] = [{"reference": "#gp"}]
    response = send(world, admin, "PUT", f"Patient/{PATIENT_A}", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    stranger = world.tokens.practitioner(STRANGER)
    read = world.get(stranger, f"/fhir/DocumentReference/{doc_id('a-masked')}")
    assert read.status_code == 404, read.get_data(as_text=True)


# -- R14: MASQUE_PS is the patient's ---------------------------------------------------------------


def _authorize_author(world: World) -> str:
    """A authorizes the author of their masked document (R10); the author's token."""
    made = send(
        world,
        world.tokens.patient(PATIENT_A),
        "POST",
        "Consent",
        dmp_consent(PATIENT_A, permit(AUTHOR)),
    )
    assert made.status_code == 201, made.get_data(as_text=True)
    return world.tokens.practitioner(AUTHOR)


def _masked_from_authorized(world: World, document_id: str) -> bool:
    return (
        world.get(
            world.tokens.practitioner(AUTHORIZED), f"/fhir/DocumentReference/{document_id}"
        ).status_code
        == 404
    )


@pytest.mark.parametrize("door", ["PUT", "PATCH", "transaction PUT", "batch PUT"])
def test_r14_the_author_does_not_lift_the_patients_mask(world, door):
    """R14: MASQUE_PS hides a document from professionals; the patient (or a
    representative) sets and removes it. Its author, who may otherwise change the document,
    removed it, and every authorized professional read the document. Decided here: the server
    cannot tell who set the label, so only the patient or a representative removes it. 403
    R14, the document unchanged and still masked."""
    author = _authorize_author(world)
    target = doc_id("a-masked")
    before = world.service.store.read("DocumentReference", target).version
    unmasked = {k: v for k, v in current(world, "DocumentReference", target).items() if k != "meta"}
    unmasked.pop("securityLabel", None)
    if door == "PATCH":
        # PDSm's metadata update (TD3.3a): its examples replace /securityLabel/0.
        response = world.client.patch(
            f"/fhir/DocumentReference/{target}",
            data=json.dumps([{"op": "remove", "path": "/securityLabel/0"}]),
            headers=auth(author, **{"Content-Type": "application/json-patch+json"}),
        )
        status = response.status_code
    elif door == "PUT":
        response = send(world, author, "PUT", f"DocumentReference/{target}", unmasked)
        status = response.status_code
    else:
        kind = door.split()[0]
        entry = {
            "resource": unmasked,
            "request": {"method": "PUT", "url": f"DocumentReference/{target}"},
        }
        response = send(
            world, author, "POST", "", {"resourceType": "Bundle", "type": kind, "entry": [entry]}
        )
        status = response.status_code
        if kind == "batch":
            assert status == 200, response.get_data(as_text=True)
            status = int(response.get_json()["entry"][0]["response"]["status"].split()[0])
    assert status == 403, response.get_data(as_text=True)
    assert world.service.store.read("DocumentReference", target).version == before
    assert _masked_from_authorized(world, target)


def test_r14_the_author_still_changes_the_rest_of_their_masked_document(world):
    """R14: the author's other changes of their masked document are made, the mask kept."""
    author = _authorize_author(world)
    target = doc_id("a-masked")
    changed = {k: v for k, v in current(world, "DocumentReference", target).items() if k != "meta"}
    changed["description"] = "corrigé"
    response = send(world, author, "PUT", f"DocumentReference/{target}", changed)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert _masked_from_authorized(world, target)


def _replacement(label: str | None, door: str) -> dict:
    document = dmp_document(PATIENT_A, author=AUTHOR, class_code="31", label=label)
    document["relatesTo"] = [
        {"code": "replaces", "target": {"reference": f"DocumentReference/{doc_id('a-masked')}"}}
    ]
    return transaction(PATIENT_A, document, with_submission_set=door == "ITI-65")


def _created_document(response) -> str:
    """The id of the DocumentReference a transaction response created."""
    return next(
        entry["response"]["location"].split("/")[1]
        for entry in response.get_json()["entry"]
        if entry["response"]["location"].startswith("DocumentReference/")
    )


@pytest.mark.parametrize("door", ["transaction", "ITI-65"])
def test_r14_a_replacement_by_its_author_carries_the_patients_mask(world, door):
    """R14: the author replaced (a transaction, ITI-65: relatesTo `replaces`) the document
    the patient masked with one without MASQUE_PS: the old one superseded, every authorized
    professional read its replacement. Decided here: the mask follows the document through
    its replacements, as through its metadata versions. 422 (XDSRegistryMetadataError),
    nothing written; the replacement carrying MASQUE_PS is made and stays masked."""
    author = _authorize_author(world)
    before = count(world, "DocumentReference", ("patient", PATIENT_A))
    response = send(world, author, "POST", "", _replacement(None, door))
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "MASQUE_PS" in json.dumps(response.get_json())
    assert count(world, "DocumentReference", ("patient", PATIENT_A)) == before
    assert current(world, "DocumentReference", doc_id("a-masked"))["status"] == "current"
    made = send(world, author, "POST", "", _replacement("MASQUE_PS", door))
    assert made.status_code == 200, made.get_data(as_text=True)
    assert _masked_from_authorized(world, _created_document(made))


def test_r14_the_authors_iti57_does_not_lift_the_patients_mask(xds, record):
    """R14, over XDS: the author's ITI-57 (TD3.3a metadata update) of a document masked from
    professionals, its confidentialityCodes without MASQUE_PS, made a version every
    authorized professional read. Refused (a RegistryError, no new version); the document
    stays hidden from the authorized professional."""
    _, nir = record
    unique_id = deposit(xds, nir, masking=("MASQUE_PS",))
    stored = entry_of(xds, nir, unique_id)
    status, errors = update(xds, nir, metadata_update(nir, stored, [("N", V3_OID)]))
    assert status == v.RESPONSE_FAILURE and errors, errors
    assert entry_of(xds, nir, unique_id, idnat=OTHER_PS) is None
    assert entry_of(xds, nir, unique_id).get("id") == stored.get("id")


def test_r14_the_authors_iti41_replacement_carries_the_patients_mask(xds, xds_record):
    """R14, over XDS: the author's ITI-41 RPLC of the document masked from professionals,
    its replacement without MASQUE_PS, is refused (XDSRegistryMetadataError) as the FHIR
    replacement is; nothing replaced. With MASQUE_PS it is made."""
    _, masked = xds_record["masked"]
    relation = (v.ASSOC_RPLC, entry_uuid(masked))
    _, refused = iti41(xds, xds_record["nir"], relation=relation, documents=[b"<v2/>"])
    assert [code for code, _ in errors(refused)] == ["XDSRegistryMetadataError"], errors(refused)
    assert current(xds, "DocumentReference", masked["id"])["status"] == "current"
    _, made = iti41(
        xds, xds_record["nir"], relation=relation, documents=[b"<v3/>"], masking=("MASQUE_PS",)
    )
    assert errors(made) == []
