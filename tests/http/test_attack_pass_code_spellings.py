"""Attack pass: a coded fact the access rules read, spelled another way (R13, R14).

The shapes here are those the other spelling passes (test_attack_pass_spellings.py,
test_attack_pass_xds_spellings.py, test_attack_pass_r13.py, test_dmp_value_sets.py) do not
send. What got through:

- R14: a TRE_A07 masking label on a *contained* resource (a contained Practitioner's
  `meta.security`) was accepted and read by no rule: the rules read the labels of the
  resource that holds it, and the document was served to every authorized practitioner
  (200). FHIR R4 dom-5 says a contained resource SHALL NOT have a security label. It is
  refused (422) at every door that writes (POST, PUT, a transaction entry), as a label
  in `meta.tag` already was (`service.validation.contained_record_validator`, which
  refuses a contained DocumentReference whole: the document cases below stay as controls).
- R13: the token's TRE_G15 profession was the `subject_role` under
  `urn:oid:1.2.250.1.71.1.2.7` exactly; the same system under its NOS URL, its bare OID or
  (in a VIHF) its `urn:oid:` form was read as the *specialty*. A token naming pharmacien
  (21) and médecin (10) under two spellings was read by the order of the spellings: a
  médecin (who reads every type) or a pharmacien, where two professions under one spelling
  refuse the credentials at both faces. Every spelling of TRE_G15 is now the profession:
  two refuse the token (401) and the VIHF (SOAP Fault); one alone is the profession.
- R14: TRE_A07 has five codes, the rules read three; MASQUE_PT and MASQUE_PSOCIAL are
  refused on a document (J58) but were stored on a message (`meta.security`) and read by
  no rule, the message served to everyone it was meant to be masked from. Refused (422
  naming the element and J58) on every resource.
- R14: MASQUE_PS in the `meta.security` of the Bundle that deposits a document (a
  transaction, an ITI-65 ProvideBundle, a batch) was accepted and labelled nothing: the
  Bundle is never stored and its document was created unmasked, read by another authorized
  practitioner. Refused (422 naming `Bundle.meta.security`), nothing written.
- R14: `securityLabel: [{coding: [N, MASQUE_PS]}]`, one concept for two labels: the rules
  read every coding (masked), the XDS face (`ihe_xds.mapping.from_fhir`) one
  confidentialityCode per securityLabel, its first (N alone). Refused (422): a TRE_A07
  label stands in a securityLabel of its own.

What held (not repeated here): the label's code in another case, with a zero-width or
fullwidth character, under `system|version`, a system with a space or in capitals of its
scheme, `display` or `text` only, an extension on its code, a `modifierExtension` on the
concept, a masking and a non-masking coding in one concept.
"""

from __future__ import annotations

import copy
import json

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.auth.requester import requester_from_claims
from fhir_server.auth.tokens import AuthenticationError
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY, SYSTEM_IDNAT_PS
from tests.http import test_attack_pass_spellings as spellings
from tests.http.conftest import auth
from tests.http.test_attack_pass_spellings import MASQUE_PS, documents_of
from tests.http.test_attack_pass_xds import AUTHORIZED as XDS_AUTHORIZED
from tests.http.test_attack_pass_xds_spellings import (
    G15,
    find_documents_with,
    roles,
    vihf_edited,
)
from tests.http.test_normal_form import AUTHORIZED, PATIENT_A, PHARMACIST, document, post
from tests.http.test_r18_matrix import AUTHORIZED as R18_AUTHORIZED
from tests.http.test_r18_matrix import PATIENT_A as R18_PATIENT_A
from tests.http.test_r18_matrix import own_world
from tests.http.test_xds_endpoints import Xds, fault_of
from tests.support.documents import transaction

# Patient A (authorizes AUTHORIZED and PHARMACIST) and patient B, as in the first pass.
record = spellings.record

FHIR_JSON = "application/fhir+json"


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


@pytest.fixture
def nir(xds) -> str:
    """The INS of a record the VIHF names (its content plays no part: the VIHF is refused
    before any rule reads the record)."""
    return xds.patient(43)[1]


# -- R14: a masking label on a contained resource --------------------------------------------


def _contained_document(**labels) -> dict:
    return {
        "resourceType": "DocumentReference",
        "id": "earlier-version",
        "status": "current",
        "content": [{"attachment": {"contentType": "text/plain", "data": "Ym9uam91cg=="}}],
        **labels,
    }


CONTAINED = {
    "document-meta-security": _contained_document(meta={"security": [MASQUE_PS]}),
    "document-securityLabel": _contained_document(securityLabel=[{"coding": [MASQUE_PS]}]),
    "practitioner-meta-security": {
        "resourceType": "Practitioner",
        "id": "reviewer",
        "meta": {"security": [MASQUE_PS]},
    },
}


def _with_contained(resource: dict, contained: dict) -> dict:
    resource = copy.deepcopy(resource)
    resource.setdefault("contained", []).append(copy.deepcopy(contained))
    return resource


def _post_bundle(client, tokens, bundle: dict):
    """`bundle` POSTed to the base by an authorized practitioner."""
    return client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(tokens.practitioner(AUTHORIZED), **{"Content-Type": FHIR_JSON}),
    )


@pytest.mark.parametrize("case", list(CONTAINED))
def test_r14_masking_label_on_a_contained_resource_is_refused_by_post(client, tokens, record, case):
    """MASQUE_PS on a contained resource was stored (201) and read by no rule: the document
    was served to another authorized practitioner (200)."""
    before = documents_of(record, PATIENT_A)
    refused = post(
        client,
        tokens.practitioner(AUTHORIZED),
        _with_contained(document(PATIENT_A), CONTAINED[case]),
    )
    assert refused.status_code == 422, refused.get_data(as_text=True)
    outcome = refused.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    expressions = [e for i in outcome["issue"] for e in i.get("expression", [])]
    assert any(e.startswith("DocumentReference.contained[") for e in expressions), expressions
    assert documents_of(record, PATIENT_A) == before


def test_r14_masking_label_on_a_contained_resource_is_refused_in_a_transaction(
    client, tokens, record
):
    """The same label in a transaction (ITI-65 shape) entry: refused, nothing written."""
    labelled = _with_contained(document(PATIENT_A), CONTAINED["practitioner-meta-security"])
    bundle = transaction(PATIENT_A, labelled, b"bonjour")
    before = documents_of(record, PATIENT_A)
    refused = _post_bundle(client, tokens, bundle)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    assert documents_of(record, PATIENT_A) == before


def test_r14_masking_label_added_to_a_contained_resource_by_update_is_refused(
    client, tokens, record
):
    """A PUT of a stored List (a folder) adding the contained, labelled resource: refused,
    the List left as it was (its version unchanged). (PATCH is served for a document's
    metadata only, and never changes its `contained`.)"""
    author = tokens.practitioner(AUTHORIZED)
    listing = {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "subject": {"reference": f"Patient/{PATIENT_A}"},
    }
    created = client.post(
        "/fhir/List", data=json.dumps(listing), headers=auth(author, **{"Content-Type": FHIR_JSON})
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    list_id = created.get_json()["id"]
    changed = {**listing, "id": list_id, "contained": [CONTAINED["practitioner-meta-security"]]}
    updated = client.put(
        f"/fhir/List/{list_id}",
        data=json.dumps(changed),
        headers=auth(author, **{"Content-Type": FHIR_JSON}),
    )
    assert updated.status_code == 422, updated.get_data(as_text=True)
    assert "List.contained[0].meta.security[0]" in updated.get_data(as_text=True)
    stored = record.read(INTERNAL, "List", list_id).json()
    assert stored["meta"]["versionId"] == "1" and "contained" not in stored


def test_r14_contained_resource_without_a_masking_label_is_still_accepted(client, tokens, record):
    """Control: a contained resource without a TRE_A07 label is stored as before."""
    plain = _with_contained(document(PATIENT_A), {"resourceType": "Practitioner", "id": "reviewer"})
    created = post(client, tokens.practitioner(AUTHORIZED), plain)
    assert created.status_code == 201, created.get_data(as_text=True)


# -- R13: the profession under another spelling of TRE_G15 -----------------------------------

G15_URL = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"
G15_OID = f"urn:oid:{G15}"


def _practitioner_token(tokens, subject_role: list[dict]) -> str:
    return tokens.issuer.issue(
        subject=PHARMACIST,
        scopes="user/*.cruds",
        extensions={
            "ihe_iua": {
                "national_provider_identifier": PHARMACIST,
                "subject_role": subject_role,
            }
        },
    )


@pytest.mark.parametrize(
    "subject_role",
    [
        [{"system": G15_OID, "code": "21"}, {"system": G15_URL, "code": "10"}],
        [{"system": G15_URL, "code": "21"}, {"system": G15_OID, "code": "10"}],
        [{"system": G15_OID, "code": "21"}, {"system": G15, "code": "10"}],
    ],
    ids=["oid-pharmacien-url-medecin", "url-pharmacien-oid-medecin", "urn-oid-and-bare-oid"],
)
def test_r13_token_naming_two_professions_under_two_spellings_of_tre_g15_is_refused(
    client, tokens, record, subject_role
):
    """Read as the profession under the `urn:oid:` spelling, the other one taken for a
    specialty: the spelling chose between pharmacien and médecin (every type). 401."""
    token = _practitioner_token(tokens, subject_role)
    refused = client.get(f"/fhir/DocumentReference?patient={PATIENT_A}", headers=auth(token))
    assert refused.status_code == 401, refused.get_data(as_text=True)


@pytest.mark.parametrize("system", [G15_URL, G15, "URN:OID:1.2.250.1.71.1.2.7"])
def test_r13_token_profession_under_any_spelling_of_tre_g15_is_the_profession(system):
    """One profession, under any accepted spelling of TRE_G15, is the profession (it was
    no profession, or a specialty)."""
    claims = {
        "scope": "user/*.read",
        "extensions": {
            "ihe_iua": {
                "national_provider_identifier": PHARMACIST,
                "subject_role": [{"system": system, "code": "21"}],
            }
        },
    }
    requester = requester_from_claims(claims)
    assert (requester.profession, requester.specialty) == ("21", None)


def test_r13_token_profession_under_a_near_miss_of_tre_g15_is_refused():
    """A near miss (http, a trailing slash) is no system the rules read: refused, not read
    as a specialty."""
    near = G15_URL.replace("https://", "http://") + "/"
    claims = {
        "scope": "user/*.read",
        "extensions": {
            "ihe_iua": {
                "national_provider_identifier": PHARMACIST,
                "subject_role": [{"system": G15_OID, "code": "21"}, {"system": near, "code": "10"}],
            }
        },
    }
    with pytest.raises(AuthenticationError, match="near miss"):
        requester_from_claims(claims)


@pytest.mark.parametrize(
    "edit",
    [roles(("21", G15), ("10", G15_OID)), roles(("10", G15_OID), ("21", G15))],
    ids=["pharmacien-then-urn-oid-medecin", "urn-oid-medecin-then-pharmacien"],
)
def test_r13_vihf_naming_two_professions_under_two_spellings_is_refused(
    xds, nir, monkeypatch, edit
):
    """A VIHF Role whose codeSystem is TRE_G15's `urn:oid:` form was read as the specialty
    beside the Role under the bare OID: refused as two professions (SOAP Fault)."""
    security = vihf_edited(xds, monkeypatch, edit, XDS_AUTHORIZED, nir)
    response = find_documents_with(xds, nir, security)
    assert response.status_code == 400, response.get_data()[:2000]
    code, reason = fault_of(response)
    assert code == "soap:Sender"
    assert "profession" in reason


# -- R14: a TRE_A07 code the rules do not read, on a resource other than a document ----------

world = pytest.fixture(own_world, name="world")


def _message(labels: list[dict]) -> dict:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "meta": {"security": labels},
        "subject": {"reference": f"Patient/{R18_PATIENT_A}"},
        "sender": {
            "type": "Practitioner",
            "identifier": {"system": SYSTEM_IDNAT_PS, "value": R18_AUTHORIZED},
        },
        "recipient": [{"reference": f"Patient/{R18_PATIENT_A}"}],
        "payload": [{"contentString": "Bonjour"}],
    }


def _messages_of_patient(world) -> set[str]:
    found = world.client.get(
        f"/fhir/Communication?subject=Patient/{R18_PATIENT_A}&_count=100",
        headers=auth(world.tokens.practitioner(R18_AUTHORIZED)),
    )
    assert found.status_code == 200, found.get_data(as_text=True)
    return {e["resource"]["id"] for e in found.get_json().get("entry", [])}


@pytest.mark.parametrize("code", ["MASQUE_PT", "MASQUE_PSOCIAL"])
def test_r14_a07_label_outside_j58_on_a_message_is_refused(world, code):
    """MASQUE_PT (masked from third parties) and MASQUE_PSOCIAL are TRE_A07 codes the DMP
    refuses on a document (J58): on a message they were stored (201) and read by no rule,
    the message served to the patient it was meant to be masked from. 422 naming the
    element and J58; nothing written."""
    before = _messages_of_patient(world)
    refused = world.client.post(
        "/fhir/Communication",
        data=json.dumps(_message([{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": code}])),
        headers=auth(world.tokens.practitioner(R18_AUTHORIZED), **{"Content-Type": FHIR_JSON}),
    )
    assert refused.status_code == 422, refused.get_data(as_text=True)
    issue = refused.get_json()["issue"][0]
    assert issue["expression"] == ["Communication.meta.security[0]"]
    assert code in issue["diagnostics"] and "JDV_J58" in issue["diagnostics"]
    assert _messages_of_patient(world) == before


def test_r14_a07_label_the_rules_read_on_a_message_is_still_accepted(world):
    """Control: INVISIBLE_PATIENT on a message is stored and hides it from the patient."""
    label = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}
    created = world.client.post(
        "/fhir/Communication",
        data=json.dumps(_message([label])),
        headers=auth(world.tokens.practitioner(R18_AUTHORIZED), **{"Content-Type": FHIR_JSON}),
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    read = world.client.get(
        f"/fhir/Communication/{created.get_json()['id']}",
        headers=auth(world.tokens.patient(R18_PATIENT_A)),
    )
    assert read.status_code == 404


# -- R14: a masking label on the Bundle that carries the documents ---------------------------


@pytest.mark.parametrize("iti65", [False, True], ids=["transaction", "iti65"])
def test_r14_masking_label_on_a_transaction_bundle_is_refused(client, tokens, record, iti65):
    """MASQUE_PS in the `meta.security` of the transaction (or ITI-65 ProvideBundle) that
    deposits a document was accepted (200) and labelled nothing: the Bundle is never stored,
    its document was created unmasked and read by another authorized practitioner (200).
    Refused (422), nothing written."""
    bundle = transaction(PATIENT_A, document(PATIENT_A), b"bonjour", with_submission_set=iti65)
    bundle["meta"] = {**bundle.get("meta", {}), "security": [MASQUE_PS]}
    before = documents_of(record, PATIENT_A)
    refused = _post_bundle(client, tokens, bundle)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    outcome = refused.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.meta.security[0]" in json.dumps(outcome)
    assert documents_of(record, PATIENT_A) == before


def test_r14_masking_label_on_a_batch_bundle_writes_no_unmasked_document(client, tokens, record):
    """The same label on a batch: its entry was created unmasked (200, entry 201). Refused
    (422) before any entry runs."""
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "meta": {"security": [MASQUE_PS]},
        "entry": [
            {
                "resource": document(PATIENT_A),
                "request": {"method": "POST", "url": "DocumentReference"},
            }
        ],
    }
    before = documents_of(record, PATIENT_A)
    answered = _post_bundle(client, tokens, bundle)
    assert answered.status_code == 422, answered.get_data(as_text=True)
    assert "Bundle.meta.security[0]" in answered.get_data(as_text=True)
    assert documents_of(record, PATIENT_A) == before


# -- R14: a masking label sharing its securityLabel with another coding ----------------------


@pytest.mark.parametrize("first", ["level", "label"])
def test_r14_masking_label_beside_another_coding_in_one_security_label_is_refused(
    client, tokens, record, first
):
    """`securityLabel: [{coding: [N, MASQUE_PS]}]`: the rules read every coding (masked),
    the XDS face one confidentialityCode per securityLabel, its first (ITI-18 showed N
    alone, and an ITI-57 built from it would unmask). Accepted (201) before; refused (422
    naming the securityLabel), nothing written."""
    level = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}
    codings = [level, MASQUE_PS] if first == "level" else [MASQUE_PS, level]
    resource = document(PATIENT_A)
    resource["securityLabel"] = [{"coding": codings}]
    before = documents_of(record, PATIENT_A)
    refused = post(client, tokens.practitioner(AUTHORIZED), resource)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    issues = refused.get_json()["issue"]
    assert any(i.get("expression") == ["DocumentReference.securityLabel[0]"] for i in issues)
    assert "stands alone" in json.dumps(issues)
    assert documents_of(record, PATIENT_A) == before


# -- R13: a specialty is read only from the specialty systems the matrix knows ------------

R38_OID = "urn:oid:1.2.250.1.71.4.2.5"
R01_URL = (
    "https://mos.esante.gouv.fr/NOS/TRE_R01-EnsembleSavoirFaire-CISIS/FHIR/"
    "TRE-R01-EnsembleSavoirFaire-CISIS"
)
G16_URL = (
    "https://mos.esante.gouv.fr/NOS/TRE_G16-ProfessionFormation/FHIR/TRE-G16-ProfessionFormation"
)
R85_URL = "https://mos.esante.gouv.fr/NOS/TRE_R85-RolePriseCharge/FHIR/TRE-R85-RolePriseCharge"


def _claims(*roles: dict) -> dict:
    return {
        "scope": "user/*.read",
        "extensions": {
            "ihe_iua": {
                "national_provider_identifier": PHARMACIST,
                "subject_role": [{"system": G15_OID, "code": "21"}, *roles],
            }
        },
    }


@pytest.mark.parametrize("system", [R38_OID, R38_OID.removeprefix("urn:oid:"), R01_URL])
def test_r13_specialty_under_tre_r38_or_tre_r01_is_the_specialty(system):
    requester = requester_from_claims(_claims({"system": system, "code": "SM54"}))
    assert (requester.profession, requester.specialty) == ("21", "SM54")


@pytest.mark.parametrize(
    "system", [R85_URL, "urn:oid:1.2.3.4", "http://example.org/roles"], ids=["r85", "oid", "url"]
)
def test_r13_role_of_a_system_the_matrix_does_not_read_is_no_specialty(system):
    """Any role not TRE_G15 was read as a TRE_R01 specialty code: a TRE_R85 role, or a
    structure's own code spelled like a savoir-faire, chose the J65 rows read. Ignored now
    (a specialty only adds to its profession's types: ignoring one gives fewer)."""
    requester = requester_from_claims(_claims({"system": system, "code": "SM54"}))
    assert (requester.profession, requester.specialty) == ("21", None)


@pytest.mark.parametrize("system", [G16_URL, G16_URL + "/", G16_URL.replace("https", "http")])
def test_r13_tre_g16_student_profession_is_refused(system):
    """TRE_G16 (students; codes 10, 21, 40, 50, TRE_G15's) was read as a specialty. The
    matrix has no TRE_G16 row: refused, neither a specialty nor a profession."""
    with pytest.raises(AuthenticationError, match="TRE_G16"):
        requester_from_claims(_claims({"system": system, "code": "10"}))


def test_r13_specialty_under_a_near_miss_of_tre_r01_is_refused():
    near = R01_URL.replace("https://", "http://")
    with pytest.raises(AuthenticationError, match="near miss"):
        requester_from_claims(_claims({"system": near, "code": "SM54"}))
