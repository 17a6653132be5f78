"""One normal form at the door (architecture invariant 7; issue #18, findings 3, 4, 5, 9, 10, 12).

The same fact spelled another way must get the same decision: a masking label under the
canonical NOS URL, its bare OID or `URN:OID:` hides the document exactly as under
`urn:oid:`; a Consent about `http://<this server>/fhir/Patient/X` applies to X; a List entry
naming a hidden document by absolute URL is served without it. What is almost, but not
exactly, a spelling the rules act on (another scheme, a lower-case masking code, a masking code
under another system, the record-status extension with a trailing slash) is refused with 422
naming the expected form, never stored and ignored. Everything through HTTP with the tokens
`fhir-server token` makes.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import (
    EXT_RECORD_STATUS,
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
)
from tests.dmp_codes import type_of_class
from tests.http.conftest import FHIR_JSON, a_patient, auth, deny, dmp_consent, internal_put, permit
from tests.support.documents import dmp_document, transaction

BASE = "http://127.0.0.1:8080/fhir"  # the test app's own base (settings' host and port)
NOS_A07 = (
    "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
    "TRE-A07-StatutVisibiliteDocument"
)
NOS_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
OID_A03 = "urn:oid:1.2.250.1.213.1.1.4.1"

GP = "810000000010"
AUTHORIZED = "810000000020"
BLOCKED = "810000000030"
PHARMACIST = "810000000050"

# B sorts before A: the old code judged a write on the first Patient by sort order (finding 4).
PATIENT_A, PATIENT_B, PATIENT_OPPOSED = "patient-a", "patient-0b", "patient-opposed"


@pytest.fixture
def record(app):
    """Patient A (médecin traitant GP; authorizes AUTHORIZED and PHARMACIST, blocks BLOCKED),
    patient B (authorizes AUTHORIZED and BLOCKED), and a record whose patient opposed its creation."""
    service = app.extensions["fhir"].service

    put = internal_put(service)

    gp = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}]
    put(a_patient(1, generalPractitioner=gp), PATIENT_A)
    put(a_patient(2), PATIENT_B)
    opposed = a_patient(3, extension=[{"url": EXT_RECORD_STATUS, "valueCode": "opposed"}])
    put(opposed, PATIENT_OPPOSED)
    put(dmp_consent(PATIENT_A, permit(AUTHORIZED), permit(PHARMACIST), deny(BLOCKED)), "consent-a")
    put(dmp_consent(PATIENT_B, permit(AUTHORIZED), permit(BLOCKED)), "consent-b")
    return service


def document(
    patient: str, *, labels=(), meta_labels=(), class_system=OID_A03, class_code="10", **extra
) -> dict:
    """A DMP document by AUTHORIZED (`tests.support.documents`), its bytes inline, with
    `labels` added to its securityLabels and `meta_labels` as its meta.security."""
    resource = dmp_document(patient, content=b"bonjour", content_type="text/plain", **extra)
    resource["type"] = type_of_class(class_code)  # the type ASS_X16 files under that class
    resource["category"] = [{"coding": [{"system": class_system, "code": class_code}]}]
    resource["author"] = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": AUTHORIZED}}]
    resource["securityLabel"] = [{"coding": [dict(label)]} for label in labels] + resource[
        "securityLabel"
    ]
    if meta_labels:
        resource["meta"] = {"security": [dict(label) for label in meta_labels]}
    return resource


def post(client, token: str, resource: dict):
    return client.post(
        f"/fhir/{resource['resourceType']}",
        data=json.dumps(resource),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )


def put_patient_b(client, tokens, patient: dict):
    """Patient B's identity rewritten by the health insurer's feed (R15)."""
    admin = tokens.system(
        "insurer", scope="system/Patient.cruds", organization_type="health_insurer"
    )
    return client.put(
        f"/fhir/Patient/{PATIENT_B}",
        data=json.dumps(patient),
        headers=auth(admin, **{"Content-Type": FHIR_JSON}),
    )


def ids_in(response) -> set[str]:
    return {entry["resource"]["id"] for entry in response.get_json().get("entry", [])}


def outcome_text(response) -> str:
    return " ".join(
        f"{issue.get('diagnostics', '')} {' '.join(issue.get('expression', []))}"
        for issue in response.get_json()["issue"]
    )


# -- finding 5: masking labels in every accepted spelling hide the document --------------------

INVISIBLE_SPELLINGS = {
    "canonical-urn-oid": {
        "labels": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}]
    },
    "nos-url": {"labels": [{"system": NOS_A07, "code": "INVISIBLE_PATIENT"}]},
    "nos-url-trailing-slash": {"labels": [{"system": NOS_A07 + "/", "code": "INVISIBLE_PATIENT"}]},
    "bare-oid": {"labels": [{"system": "1.2.250.1.213.1.1.4.13", "code": "INVISIBLE_PATIENT"}]},
    "urn-oid-capitals": {
        "labels": [{"system": "URN:OID:1.2.250.1.213.1.1.4.13", "code": "INVISIBLE_PATIENT"}]
    },
    "meta-security-only": {"meta_labels": [{"system": NOS_A07, "code": "INVISIBLE_PATIENT"}]},
}


@pytest.mark.parametrize("spelling", sorted(INVISIBLE_SPELLINGS))
def test_r14_invisible_patient_in_any_accepted_spelling_hides_the_document(
    client, tokens, record, spelling
):
    """Finding 5: the label spelled with the canonical TRE_A07 URL (the one our ValueSet names),
    the bare OID, `URN:OID:`, a trailing slash or in meta.security only was stored and ignored;
    the patient read the document and the deposit's trace named it."""
    deposited = post(
        client,
        tokens.practitioner(AUTHORIZED),
        document(PATIENT_A, **INVISIBLE_SPELLINGS[spelling]),
    )
    assert deposited.status_code == 201, deposited.get_json()
    doc_id = deposited.get_json()["id"]
    stored = deposited.get_json()
    assert {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"} in [
        coding for concept in stored["securityLabel"] for coding in concept["coding"]
    ]

    patient = tokens.patient(PATIENT_A)
    read = client.get(f"/fhir/DocumentReference/{doc_id}", headers=auth(patient))
    assert read.status_code == 404
    search = client.get(f"/fhir/DocumentReference?patient={PATIENT_A}", headers=auth(patient))
    assert search.status_code == 200 and doc_id not in ids_in(search)
    for path in (
        f"/fhir/AuditEvent?patient={PATIENT_A}",
        f"/fhir/Communication?subject={PATIENT_A}",
    ):
        trace = client.get(path, headers=auth(patient))
        assert trace.status_code == 200
        assert doc_id not in trace.get_data(as_text=True), path
    # The author still reads it: the label hides it from the patient only.
    assert (
        client.get(
            f"/fhir/DocumentReference/{doc_id}", headers=auth(tokens.practitioner(AUTHORIZED))
        ).status_code
        == 200
    )


NEAR_MISSES = {
    "lower-case-code": (
        {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "invisible_patient"},
        "INVISIBLE_PATIENT",
    ),
    "unknown-code": ({"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "MASQUE"}, "MASQUE_PS"),
    "masking-code-under-another-system": (
        {"system": "http://example.org/labels", "code": "INVISIBLE_PATIENT"},
        SYSTEM_DMP_CONFIDENTIALITY,
    ),
    "masking-code-without-system": ({"code": "MASQUE_PS"}, SYSTEM_DMP_CONFIDENTIALITY),
    "http-instead-of-https": (
        {"system": NOS_A07.replace("https:", "http:"), "code": "INVISIBLE_PATIENT"},
        SYSTEM_DMP_CONFIDENTIALITY,
    ),
    "url-in-another-case": (
        {"system": NOS_A07.upper(), "code": "INVISIBLE_PATIENT"},
        SYSTEM_DMP_CONFIDENTIALITY,
    ),
}


@pytest.mark.parametrize("case", sorted(NEAR_MISSES))
def test_r14_masking_label_near_miss_is_refused_and_nothing_is_stored(client, tokens, record, case):
    """Deliverable 2: a label the rules cannot read is refused with 422 naming the expected
    form, never stored as an unmasked document."""
    label, expected = NEAR_MISSES[case]
    token = tokens.practitioner(AUTHORIZED)
    before = client.get(
        f"/fhir/DocumentReference?patient={PATIENT_A}&_total=accurate", headers=auth(token)
    ).get_json()["total"]
    refused = post(client, token, document(PATIENT_A, labels=[label]))
    assert refused.status_code == 422, refused.get_json()
    assert expected in outcome_text(refused)
    assert "securityLabel[0]" in outcome_text(refused)
    after = client.get(
        f"/fhir/DocumentReference?patient={PATIENT_A}&_total=accurate", headers=auth(token)
    ).get_json()["total"]
    assert after == before


# -- finding 3: a Consent about this server's Patient by absolute URL applies -----------------


def test_r09_consent_with_absolute_patient_reference_on_own_base_is_applied(client, tokens, record):
    """Finding 3: a Consent whose `patient` is this server's absolute URL was accepted (201)
    and never applied: the block it carries was ignored."""
    patient = tokens.patient(PATIENT_B)
    consent = dmp_consent(PATIENT_B, deny(AUTHORIZED))
    consent["patient"] = {"reference": f"{BASE}/Patient/{PATIENT_B}"}
    created = post(client, patient, consent)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["patient"]["reference"] == f"Patient/{PATIENT_B}"
    refused = client.get(
        f"/fhir/DocumentReference?patient={PATIENT_B}",
        headers=auth(tokens.practitioner(AUTHORIZED)),
    )
    assert refused.status_code == 403


def test_r06_consent_naming_a_foreign_patient_url_is_not_about_a_local_record(
    client, tokens, record
):
    """An absolute reference to another server never designates a local record: a Consent
    about `https://elsewhere.example/fhir/Patient/<B>` is not B's and does not block anyone."""
    consent = dmp_consent(PATIENT_B, deny(AUTHORIZED))
    consent["patient"] = {"reference": f"https://elsewhere.example/fhir/Patient/{PATIENT_B}"}
    created = post(client, tokens.patient(PATIENT_B), consent)
    assert created.status_code in (403, 404, 422)
    allowed = client.get(
        f"/fhir/DocumentReference?patient={PATIENT_B}",
        headers=auth(tokens.practitioner(AUTHORIZED)),
    )
    assert allowed.status_code == 200


# -- finding 4: a write is judged on the one record it belongs to ------------------------------


def test_r03_deposit_into_opposed_record_with_second_patient_in_author_is_refused(
    client, tokens, record
):
    """Finding 4: `author: Patient/<open record>` made a hospital's deposit into an opposed
    record be judged on the open one."""
    hospital = tokens.system(
        "his", scope="system/DocumentReference.c system/Binary.c", organization_type="hospital"
    )
    deposit = document(PATIENT_OPPOSED)
    deposit["author"].append({"reference": f"Patient/{PATIENT_A}"})
    refused = post(client, hospital, deposit)
    assert refused.status_code == 422
    found = record.search(INTERNAL, "DocumentReference", [("patient", PATIENT_OPPOSED)])
    assert found.matches == []


def test_r09_blocked_practitioner_cannot_deposit_by_naming_another_patient(client, tokens, record):
    """Finding 4: a practitioner blocked by A deposited into A's record by adding
    `author: Patient/<B>` (B authorizes nobody blocked)."""
    deposit = document(PATIENT_A)
    deposit["author"] = [
        {"identifier": {"system": SYSTEM_IDNAT_PS, "value": BLOCKED}},
        {"reference": f"Patient/{PATIENT_B}"},
    ]
    refused = post(client, tokens.practitioner(BLOCKED), deposit)
    assert refused.status_code in (403, 422)
    assert record.search(INTERNAL, "DocumentReference", [("patient", PATIENT_A)]).matches == []


def test_r06_patient_cannot_write_into_another_patients_record(client, tokens, record):
    """Finding 4: patient B wrote into A's record with `author: Patient/<B>`."""
    deposit = document(PATIENT_A)
    deposit["author"] = [{"reference": f"Patient/{PATIENT_B}"}]
    refused = post(client, tokens.patient(PATIENT_B), deposit)
    assert refused.status_code in (403, 404, 422)
    assert record.search(INTERNAL, "DocumentReference", [("patient", PATIENT_A)]).matches == []


# -- finding 9: the record-status extension in another spelling is refused ---------------------


@pytest.mark.parametrize(
    "extension",
    [
        {"url": EXT_RECORD_STATUS.replace("https:", "http:"), "valueCode": "opposed"},
        {"url": EXT_RECORD_STATUS + "/", "valueCode": "opposed"},
        {"url": EXT_RECORD_STATUS.upper(), "valueCode": "opposed"},
        {"url": EXT_RECORD_STATUS, "valueCode": "Opposed"},
    ],
    ids=["http", "trailing-slash", "upper-case", "code-case"],
)
def test_r03_record_status_near_miss_is_refused(client, tokens, record, extension):
    """Finding 9: the record-status extension with `http://` or a trailing `/` was accepted and
    ignored, leaving an opposed record open to reads and deposits."""
    refused = put_patient_b(client, tokens, a_patient(2, id=PATIENT_B, extension=[extension]))
    assert refused.status_code == 422, refused.get_json()
    assert EXT_RECORD_STATUS in outcome_text(refused) or "valueCode" in outcome_text(refused)
    # The record is as it was: open to the authorized practitioner.
    assert (
        client.get(
            f"/fhir/DocumentReference?patient={PATIENT_B}",
            headers=auth(tokens.practitioner(AUTHORIZED)),
        ).status_code
        == 200
    )


# -- finding 10: references by absolute URL name what relative ones name ---------------------


def test_r18_list_entry_naming_hidden_document_by_absolute_url_is_not_served(
    client, tokens, record
):
    """Finding 10: List entries and `relatesTo` naming a hidden document by absolute URL were
    served, and `List?item=<url>` found them."""
    hidden = post(
        client,
        tokens.practitioner(AUTHORIZED),
        document(
            PATIENT_A, labels=[{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}]
        ),
    ).get_json()["id"]
    visible = post(client, tokens.practitioner(AUTHORIZED), document(PATIENT_A)).get_json()["id"]
    absolute = f"{BASE}/DocumentReference/{hidden}"
    patient = tokens.patient(PATIENT_A)
    listing = {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "subject": {"reference": f"{BASE}/Patient/{PATIENT_A}"},
        # With a visible entry, the List is the patient's to see (`access.list_labels`).
        "entry": [
            {"item": {"reference": absolute}},
            {"item": {"reference": f"{BASE}/DocumentReference/{visible}"}},
        ],
    }
    created = post(client, tokens.practitioner(AUTHORIZED), listing)
    assert created.status_code == 201, created.get_json()
    list_id = created.get_json()["id"]
    served = client.get(f"/fhir/List/{list_id}", headers=auth(patient))
    assert served.status_code == 200
    assert hidden not in served.get_data(as_text=True)
    assert served.get_json()["entry"] == [{"item": {"reference": f"DocumentReference/{visible}"}}]
    for item in (absolute, f"DocumentReference/{hidden}"):
        found = client.get(
            f"/fhir/List?patient={PATIENT_A}&item={quote(item, safe='')}", headers=auth(patient)
        )
        assert found.status_code == 200 and found.get_json().get("entry", []) == [], item
    # Its author, who may read the document, finds the List by either spelling.
    author = tokens.practitioner(AUTHORIZED)
    for item in (absolute, f"DocumentReference/{hidden}"):
        found = client.get(
            f"/fhir/List?patient={PATIENT_A}&item={quote(item, safe='')}", headers=auth(author)
        )
        assert ids_in(found) == {list_id}, item


def test_r06_document_whose_subject_is_absolute_on_own_base_is_found_by_patient(
    client, tokens, record
):
    """Deliverable 1 (and issue #19 point 6): a subject given as this server's absolute URL is
    stored relative, so `patient=` finds the document."""
    deposit = document(PATIENT_A)
    deposit["subject"] = {"reference": f"{BASE}/Patient/{PATIENT_A}"}
    created = post(client, tokens.practitioner(AUTHORIZED), deposit)
    assert created.status_code == 201
    assert created.get_json()["subject"]["reference"] == f"Patient/{PATIENT_A}"
    for params in (
        f"patient={PATIENT_A}",
        f"subject={quote(BASE + '/Patient/' + PATIENT_A, safe='')}",
    ):
        found = client.get(
            f"/fhir/DocumentReference?{params}", headers=auth(tokens.practitioner(AUTHORIZED))
        )
        assert created.get_json()["id"] in ids_in(found), params


def test_r06_foreign_absolute_subject_designates_no_local_record(client, tokens, record):
    """An absolute reference to another server with a local id at its end is foreign: it puts
    the document in no local record, so the patient with that id does not get it."""
    deposit = document(PATIENT_A)
    deposit["subject"] = {"reference": f"https://elsewhere.example/fhir/Patient/{PATIENT_A}"}
    created = post(client, tokens.practitioner(AUTHORIZED), deposit)
    assert created.status_code in (403, 422)
    assert record.search(INTERNAL, "DocumentReference", [("patient", PATIENT_A)]).matches == []


# -- finding 12: identifier spellings -----------------------------------------------------------


def test_r09_consent_actor_idnat_with_white_space_is_refused(client, tokens, record):
    """Finding 12: the Consent's practitioner ids were stripped of white space and the token's
    were not; now both are compared exactly and a padded IdNat_PS is refused at write."""
    consent = dmp_consent(PATIENT_B, deny(" " + AUTHORIZED))
    refused = post(client, tokens.patient(PATIENT_B), consent)
    assert refused.status_code == 422
    assert "white space" in outcome_text(refused)


@pytest.mark.parametrize(
    "general_practitioner",
    [
        {"reference": f"Practitioner/{GP}"},
        {"identifier": {"system": "1.2.250.1.71.4.2.1", "value": GP}},
        {"identifier": {"system": "URN:OID:1.2.250.1.71.4.2.1", "value": GP}},
    ],
    ids=["practitioner-reference", "bare-oid", "urn-oid-capitals"],
)
def test_r08_general_practitioner_in_other_spellings_keeps_access(
    client, tokens, record, general_practitioner
):
    """Finding 12: a generalPractitioner given as `Practitioner/<IdNat>` or under the bare OID
    lost R08 (the médecin traitant's access)."""
    updated = put_patient_b(
        client, tokens, a_patient(2, id=PATIENT_B, generalPractitioner=[general_practitioner])
    )
    assert updated.status_code == 200, updated.get_json()
    read = client.get(
        f"/fhir/DocumentReference?patient={PATIENT_B}", headers=auth(tokens.practitioner(GP))
    )
    assert read.status_code == 200


def test_r08_general_practitioner_rpps_without_leading_8_is_refused(client, tokens, record):
    """Finding 12: the RPPS without its leading 8 under the IdNat_PS system silently lost R08."""
    rpps = GP[1:]
    patient = a_patient(
        2,
        id=PATIENT_B,
        generalPractitioner=[{"identifier": {"system": SYSTEM_IDNAT_PS, "value": rpps}}],
    )
    refused = put_patient_b(client, tokens, patient)
    assert refused.status_code == 422
    assert f"8{rpps}" in outcome_text(refused)


@pytest.mark.parametrize("class_system", [OID_A03, NOS_A03, "1.2.250.1.213.1.1.4.1"])
def test_r13_class_code_in_any_accepted_spelling_meets_the_habilitation_matrix(
    client, tokens, record, class_system
):
    """Finding 12: XDS deposits stored the class under the NOS URL while the habilitation
    constraint tested the OID, so every restricted profession missed every XDS document. A
    pharmacien (21) may see class 10 and not class 31, whichever spelling the class came in."""
    author = tokens.practitioner(AUTHORIZED)
    seen = post(
        client, author, document(PATIENT_A, class_system=class_system, class_code="10")
    ).get_json()["id"]
    unseen = post(
        client, author, document(PATIENT_A, class_system=class_system, class_code="31")
    ).get_json()["id"]
    found = client.get(
        f"/fhir/DocumentReference?patient={PATIENT_A}",
        headers=auth(tokens.practitioner(PHARMACIST, profession="21")),
    )
    assert found.status_code == 200
    assert seen in ids_in(found) and unseen not in ids_in(found)


def test_r14_label_in_meta_security_only_hides_a_document_deposited_in_a_transaction(
    client, tokens, record
):
    """Finding 5 through the transaction door: the normal form of a Bundle's entries moves a
    TRE_A07 label given in meta.security only (under the NOS URL) into securityLabel too."""
    label = {"system": NOS_A07, "code": "INVISIBLE_PATIENT"}
    bundle = transaction(PATIENT_A, document(PATIENT_A, meta_labels=[label]), b"bonjour")
    response = client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(tokens.practitioner(AUTHORIZED), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    doc_id = response.get_json()["entry"][0]["response"]["location"].split("/")[1]
    stored = record.read(INTERNAL, "DocumentReference", doc_id).json()
    assert {
        "coding": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}]
    } in stored["securityLabel"]
    read = client.get(f"/fhir/DocumentReference/{doc_id}", headers=auth(tokens.patient(PATIENT_A)))
    assert read.status_code == 404


# -- one reference, one type: Reference.type agrees with the literal reference ---------------

MISTYPED = {
    "relative": {"reference": f"Patient/{PATIENT_A}", "type": "Practitioner"},
    "absolute-on-own-base": {
        "reference": f"{BASE}/Patient/{PATIENT_A}",
        "type": "RelatedPerson",
    },
    "canonical-url-of-another-type": {
        "reference": f"Patient/{PATIENT_A}",
        "type": "http://hl7.org/fhir/StructureDefinition/Practitioner",
    },
}


def _count(client, token: str, query: str) -> int:
    response = client.get(f"/fhir/{query}&_summary=count", headers=auth(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["total"]


@pytest.mark.parametrize("case", sorted(MISTYPED))
def test_reference_type_disagreeing_with_its_reference_is_refused_at_every_door(
    client, tokens, record, case
):
    """FHIR R4 Reference: when `type` and a literal `reference` are both given, "both SHALL
    be consistent". The rules and the index read the reference; a face or a client reading
    `type` took `{"reference": "Patient/A", "type": "Practitioner"}` for a practitioner (a
    message's recipient, a document's subject). One fact, one reading: 422 naming
    `.type`, nothing stored, through REST create, transaction and PATCH."""
    token = tokens.practitioner(AUTHORIZED)
    query = f"DocumentReference?patient={PATIENT_A}"
    before = _count(client, token, query)
    mistyped = document(PATIENT_A, subject=MISTYPED[case])
    created = post(client, token, mistyped)
    assert created.status_code == 422, created.get_data(as_text=True)
    assert "subject.type" in outcome_text(created)
    assert "SHALL be consistent" in outcome_text(created)

    bundle = transaction(PATIENT_A, mistyped, b"bonjour")
    in_bundle = client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    assert in_bundle.status_code == 422, in_bundle.get_data(as_text=True)
    assert "subject.type" in outcome_text(in_bundle)

    doc_id = post(client, token, document(PATIENT_A)).get_json()["id"]
    patched = client.patch(
        f"/fhir/DocumentReference/{doc_id}",
        data=json.dumps([{"op": "add", "path": "/subject/type", "value": MISTYPED[case]["type"]}]),
        headers=auth(token, **{"Content-Type": "application/json-patch+json"}),
    )
    assert patched.status_code == 422, patched.get_data(as_text=True)
    assert "subject.type" in outcome_text(patched)
    stored = record.read(INTERNAL, "DocumentReference", doc_id).json()
    assert stored["subject"] == {"reference": f"Patient/{PATIENT_A}"}
    assert _count(client, token, query) == before + 1  # the control document only


def test_reference_type_agreeing_with_its_reference_is_kept(client, tokens, record):
    """The control: `type` naming the reference's own type, short or as its canonical URL."""
    token = tokens.practitioner(AUTHORIZED)
    for declared in ("Patient", "http://hl7.org/fhir/StructureDefinition/Patient"):
        subject = {"reference": f"Patient/{PATIENT_A}", "type": declared}
        created = post(client, token, document(PATIENT_A, subject=subject))
        assert created.status_code == 201, created.get_data(as_text=True)
        assert created.get_json()["subject"] == subject
