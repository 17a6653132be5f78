"""Attack pass: the same fact spelled another way, so that a rule misses it (R03, R07, R09-R12,
R14).

Each test is a spelling a rule did not read, and that was stored or accepted as if the fact
were absent: a masking label in `meta.tag` (the rules read `meta.security` and
`securityLabel`), a record status given twice (the first one read), an access mode under
another spelling of TRE_R248 or as the v3-ActReason code the audit writes (read as normal),
a Consent's `modifierExtension` outside its provisions and an actor naming two
practitioners (both ignored but for one), a permit or a guardianship whose period ended
earlier today (kept until midnight), a minor who is 18 today east of Greenwich. Fail
closed: what the rules cannot read is refused, never ignored.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta

import pytest
from lxml import etree

from fhir_server.access.record import build_record
from fhir_server.access.requester import INTERNAL, AccessMode
from fhir_server.auth.requester import requester_from_claims
from fhir_server.auth.tokens import AuthenticationError
from fhir_server.auth.vihf import HL7, load_or_create_structure_credential, mint_vihf, vihf_claims
from fhir_server.resources.ins import nir_key
from fhir_server.terminology import (
    EXT_RECORD_STATUS,
    SYSTEM_ACT_REASON,
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
    SYSTEM_V3_ROLE_CODE,
)
from ihe_xds import vocabulary as v
from tests.http.conftest import INS_SYSTEM, a_patient, auth, deny, dmp_consent, internal_put, permit
from tests.http.test_normal_form import (
    AUTHORIZED,
    BLOCKED,
    GP,
    PATIENT_A,
    PATIENT_B,
    PHARMACIST,
    document,
    post,
    put_patient_b,
)
from tests.http.test_xds_endpoints import GP as XDS_GP
from tests.http.test_xds_endpoints import Xds, registry_status
from tests.support.documents import transaction
from tests.xds_builders import build_iti41

STRANGER = "810000000040"  # named in no Consent
R248_URL = "https://mos.esante.gouv.fr/NOS/TRE_R248_ModeAcces/FHIR/TRE-R248-ModeAcces"
R248_OID = "urn:oid:1.2.250.1.213.1.1.4.248"
INITIAL_CATEGORY = "https://dmp-server.fr/fhir/CodeSystem/dmp-consent-category"
MASQUE_PS = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "MASQUE_PS"}


@pytest.fixture
def record(app):
    """Patient A (médecin traitant GP; authorizes AUTHORIZED and PHARMACIST, blocks BLOCKED)
    and patient B (authorizes AUTHORIZED), as in test_normal_form."""
    service = app.extensions["fhir"].service

    put = internal_put(service)

    gp = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}]
    put(a_patient(1, generalPractitioner=gp), PATIENT_A)
    put(a_patient(2), PATIENT_B)
    put(dmp_consent(PATIENT_A, permit(AUTHORIZED), permit(PHARMACIST), deny(BLOCKED)), "consent-a")
    put(dmp_consent(PATIENT_B, permit(AUTHORIZED)), "consent-b")
    return service


def documents_of(service, patient: str) -> set[str]:
    found = service.search(INTERNAL, "DocumentReference", [("patient", patient)])
    return {resource["id"] for resource in found.resources()[0]}


# -- R14: a masking label where the rules do not read labels ---------------------------------


@pytest.mark.parametrize(
    "place",
    [
        {"meta": {"tag": [MASQUE_PS]}},
        {"extension": [{"url": "https://example.org/visibility", "valueCoding": MASQUE_PS}]},
    ],
    ids=["meta-tag", "extension-valueCoding"],
)
def test_r14_masking_label_outside_security_labels_is_refused_not_ignored(
    client, tokens, record, place
):
    """`meta.tag` MASQUE_PS was stored and ignored: another authorized practitioner read the
    document the author meant to mask (200)."""
    before = documents_of(record, PATIENT_A)
    refused = post(client, tokens.practitioner(AUTHORIZED), {**document(PATIENT_A), **place})
    assert refused.status_code == 422, refused.get_json()
    assert "meta.security or securityLabel" in json.dumps(refused.get_json())
    assert documents_of(record, PATIENT_A) == before


def test_r14_masking_label_on_the_binary_instead_of_its_document_is_refused(client, tokens, record):
    """A Binary is read as its document: MASQUE_PS in the Binary's meta.security was stored
    and read by no rule, and another practitioner read the content (200)."""
    bundle = transaction(PATIENT_A, document(PATIENT_A), b"bonjour")
    binary = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Binary")
    binary["resource"]["meta"] = {"security": [MASQUE_PS]}
    before = documents_of(record, PATIENT_A)
    refused = client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(tokens.practitioner(AUTHORIZED), **{"Content-Type": "application/fhir+json"}),
    )
    assert refused.status_code == 422, refused.get_json()
    assert documents_of(record, PATIENT_A) == before


def test_r14_iti41_masking_code_as_an_event_code_is_refused(app, client, tokens, data_dir):
    """Over XDS: MASQUE_PS under TRE_A07 as an eventCodeList entry instead of the
    confidentialityCode was deposited (Success) and the document served unmasked."""
    api = Xds(app, client, tokens, data_dir)
    _, nir = api.patient(1)
    request = build_iti41(
        nir=nir, mtom=False, security=api.security(XDS_GP, nir), masking=("MASQUE_PS",)
    )
    root = etree.fromstring(request.envelope)
    for classification in root.iter(f"{{{v.NS_RIM}}}Classification"):
        if classification.get("nodeRepresentation") == "MASQUE_PS":
            classification.set("classificationScheme", v.DE_EVENT_CODE)
    response = client.post(
        "/xds/repository",
        data=etree.tostring(root, xml_declaration=True, encoding="UTF-8"),
        headers={"Content-Type": request.content_type},
    )
    status, errors = registry_status(response)
    assert status.endswith("Failure") and errors == ["XDSRepositoryMetadataError"]


# -- R03: the record's status given twice -------------------------------------------------------


def test_r03_record_status_given_twice_is_refused(client, tokens, record):
    """`[open, closed]` was stored and read as open (the first one): an authorized
    practitioner read a record its feed also said was closed."""
    statuses = [
        {"url": EXT_RECORD_STATUS, "valueCode": "open"},
        {"url": EXT_RECORD_STATUS, "valueCode": "closed"},
    ]
    refused = put_patient_b(client, tokens, a_patient(2, id=PATIENT_B, extension=statuses))
    assert refused.status_code == 422, refused.get_json()
    assert "more than once" in json.dumps(refused.get_json())


def test_r03_record_status_stored_twice_reads_as_closed():
    """A Patient written before the check, holding two statuses, is read fail closed."""
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "extension": [
            {"url": EXT_RECORD_STATUS, "valueCode": "open"},
            {"url": EXT_RECORD_STATUS, "valueCode": "opposed"},
        ],
    }
    now = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
    assert build_record(patient, [], [], now.date(), now).status == "closed"


# -- R11, R12: the access mode in another spelling ----------------------------------------------


def practitioner_token(tokens, purposes: list[dict], **dmp: str) -> str:
    """A médecin's token whose purpose_of_use is `purposes` (and `extensions.dmp` is `dmp`)."""
    return tokens.practitioner_claims(
        STRANGER,
        iua={"purpose_of_use": purposes},
        dmp={"access_reason": "patient inconscient", **dmp},
    )


def test_r11_bris_de_glace_under_the_nos_url_of_tre_r248_is_bris_de_glace(client, tokens, record):
    """The TRE_R248 purpose under its NOS URL was not read: the access was taken as normal
    (403, authorization missing) instead of the bris de glace it declared."""
    token = practitioner_token(tokens, [{"system": R248_URL, "code": "bris_de_glace"}])
    found = client.get(f"/fhir/DocumentReference?patient={PATIENT_B}", headers=auth(token))
    assert found.status_code == 200, found.get_json()


@pytest.mark.parametrize(
    ("purposes", "dmp"),
    [
        ([{"system": SYSTEM_ACT_REASON, "code": "BTG"}], {}),
        ([{"system": SYSTEM_ACT_REASON, "code": "ETREAT"}], {}),
        ([{"code": "bris_de_glace"}], {}),
        ([{"system": "https://example.org/modes", "code": "CENTRE_15"}], {}),
        ([{"system": R248_URL.replace("https:", "http:"), "code": "bris_de_glace"}], {}),
        (
            [
                {"system": R248_OID, "code": "normal"},
                {"system": R248_OID, "code": "bris_de_glace"},
            ],
            {},
        ),
        ([{"system": R248_OID, "code": "normal"}], {"access_mode": "centre_15"}),
    ],
    ids=[
        "v3-btg",
        "v3-etreat",
        "no-system",
        "other-system-capitals",
        "http-near-miss",
        "two-modes",
        "purpose-and-extension-disagree",
    ],
)
def test_r11_r12_access_mode_the_rules_cannot_read_refuses_the_token(
    client, tokens, record, purposes, dmp
):
    """Each of these was read as normal mode (or as the first mode found): a declared
    emergency access went unnotified and audited as a normal one."""
    token = practitioner_token(tokens, purposes, **dmp)
    refused = client.get(f"/fhir/DocumentReference?patient={PATIENT_B}", headers=auth(token))
    assert refused.status_code == 401, refused.get_json()


@pytest.mark.parametrize(
    ("code_system", "code"),
    [("2.16.840.1.113883.5.8", "BTG"), ("1.2.250.1.213.1.1.4.999", "bris_de_glace")],
    ids=["v3-actreason", "other-oid"],
)
def test_r11_vihf_bris_de_glace_under_another_code_system_refuses_the_assertion(
    data_dir, code_system, code
):
    """The VIHF's PurposeOfUse under another codeSystem was dropped: normal mode."""
    assertion = mint_vihf(
        load_or_create_structure_credential(data_dir),
        practitioner_id=STRANGER,
        profession="10",
        audience="test",
        mode="bris_de_glace",
        reason="patient inconscient",
    )
    purpose = assertion.find(f".//{{{HL7}}}PurposeOfUse")
    purpose.set("codeSystem", code_system)
    purpose.set("code", code)
    with pytest.raises(AuthenticationError):
        requester_from_claims(vihf_claims(assertion))


def test_r11_vihf_bris_de_glace_under_the_r248_oid_is_still_read(data_dir):
    assertion = mint_vihf(
        load_or_create_structure_credential(data_dir),
        practitioner_id=STRANGER,
        profession="10",
        audience="test",
        mode="bris_de_glace",
        reason="patient inconscient",
    )
    requester = requester_from_claims(vihf_claims(assertion))
    assert requester.access_mode is AccessMode.BRIS_DE_GLACE


@pytest.mark.parametrize(
    "organization",
    ["urn:oid:1.2.250.1.71.4.2.9|1000000001", "1000000001", "urn:oid:1.2.250.1.71.4.2.2|"],
    ids=["another-identifier-system", "no-system", "no-value"],
)
def test_r18_organisational_mailbox_named_otherwise_refuses_the_token(
    client, tokens, record, organization
):
    """The organization's system was dropped: whatever identifier came after the last `|`
    was taken for an IdNat_Struct, whose organisational mailbox's messages the practitioner
    then read and answered as (200 before)."""
    token = tokens.practitioner_claims(AUTHORIZED, iua={"subject_organization_id": organization})
    refused = client.get(f"/fhir/DocumentReference?patient={PATIENT_B}", headers=auth(token))
    assert refused.status_code == 401, refused.get_json()


@pytest.mark.parametrize(
    ("fhir_user", "status"),
    [
        ("https://elsewhere.example/fhir/Patient/patient-a", 401),
        ("http://127.0.0.1:8080/other/Patient/patient-a", 401),
        ("HTTP://127.0.0.1:8080/fhir/Patient/patient-a", 200),
    ],
    ids=["another-server", "another-base-same-host", "this-base-in-capitals"],
)
def test_r06_fhir_user_on_another_server_is_not_the_local_patient(
    client, tokens, record, fhir_user, status
):
    """An absolute fhirUser was read by its last two segments whatever its base: a token
    naming Patient/patient-a of another server read patient A's record here (200)."""
    token = tokens.issuer.issue(
        subject="someone", scopes="patient/*.rs", fhir_user=fhir_user, patient=PATIENT_A
    )
    found = client.get(f"/fhir/DocumentReference?patient={PATIENT_A}", headers=auth(token))
    assert found.status_code == status, found.get_json()


# -- R04, patient binding: one INS, one spelling ------------------------------------------------

CORSICAN_NIR = "185052A004123" + f"{nir_key('185052A004123'):02d}"


def test_r04_corsican_nir_in_lower_case_is_refused_as_a_second_patient(client, tokens, record):
    """`2a` passed the NIR check: a second Patient was created for the INS `2A` already
    names, and search, designation and binding by one spelling missed the other."""
    admin = tokens.system("insurer", scope="system/Patient.cruds")
    created = []
    for value in (CORSICAN_NIR, CORSICAN_NIR.lower()):
        patient = a_patient(1)
        patient["identifier"][0]["value"] = value
        created.append(
            client.post(
                "/fhir/Patient",
                data=json.dumps(patient),
                headers=auth(admin, **{"Content-Type": "application/fhir+json"}),
            )
        )
    assert [r.status_code for r in created] == [201, 422], created[1].get_json()
    assert "2A" in json.dumps(created[1].get_json())


def test_r04_token_naming_the_lower_case_spelling_of_an_ins_is_refused(client, tokens, record):
    token = tokens.practitioner_naming_ins(AUTHORIZED, f"{INS_SYSTEM}|{CORSICAN_NIR.lower()}")
    refused = client.get(f"/fhir/DocumentReference?patient={PATIENT_B}", headers=auth(token))
    assert refused.status_code == 401, refused.get_json()


# -- R09, R10: Consents spelled otherwise ---------------------------------------------------------


def test_r10_consent_modifier_extension_outside_provisions_is_refused(client, tokens, record):
    """A root `modifierExtension` (a negation, say) was stored and the Consent read without
    it; a provision's was already refused."""
    consent = dmp_consent(PATIENT_B, permit(STRANGER))
    consent["modifierExtension"] = [{"url": "https://example.org/negated", "valueBoolean": True}]
    refused = post(client, tokens.patient(PATIENT_B), consent)
    assert refused.status_code == 422, refused.get_json()
    assert "Consent.modifierExtension" in json.dumps(refused.get_json())


def test_r09_consent_actor_naming_two_practitioners_is_refused(client, tokens, record):
    """An actor whose reference names `Practitioner/<IdNat_PS>` of one practitioner and whose
    identifier names another was read as the identifier's alone."""
    provision = permit(STRANGER)
    provision["actor"][0]["reference"]["reference"] = f"Practitioner/{PHARMACIST}"
    refused = post(client, tokens.patient(PATIENT_B), dmp_consent(PATIENT_B, provision))
    assert refused.status_code == 422, refused.get_json()
    assert "reference.reference" in json.dumps(refused.get_json())


def test_r10_initial_consent_category_near_miss_is_refused_not_ignored(client, tokens, record):
    """The initial consent's category under `http://` (or in another case) was stored and
    ignored: the patient who recorded it was told nothing, and the rules read no consent."""
    consent = dmp_consent(PATIENT_B, permit(STRANGER), initial_consent=False)
    consent["category"].append(
        {"coding": [{"system": f"http://{INITIAL_CATEGORY[8:]}", "code": "initial-consent"}]}
    )
    refused = post(client, tokens.patient(PATIENT_B), consent)
    assert refused.status_code == 422, refused.get_json()
    assert INITIAL_CATEGORY in json.dumps(refused.get_json())


def test_r10_initial_consent_category_with_a_trailing_slash_is_the_initial_consent(
    client, tokens, record
):
    without = dmp_consent(PATIENT_B, permit(AUTHORIZED), initial_consent=False)
    record.update(INTERNAL, "Consent", "consent-b", {**without, "id": "consent-b"})
    consent = dmp_consent(PATIENT_B, permit(STRANGER), initial_consent=False)
    consent["category"].append(
        {"coding": [{"system": INITIAL_CATEGORY + "/", "code": "initial-consent"}]}
    )
    assert post(client, tokens.patient(PATIENT_B), consent).status_code == 201
    url = f"/fhir/DocumentReference?patient={PATIENT_B}"
    assert client.get(url, headers=auth(tokens.practitioner(STRANGER))).status_code == 200


@pytest.mark.parametrize(
    "period",
    [
        {"start": "2027-01-01", "end": "2025-01-01"},
        {"start": "2026-12-07T01:00:00-10:00", "end": "2026-12-07T05:00:00Z"},
    ],
    ids=["dates", "instants-across-zones"],
)
def test_r09_consent_whose_period_ends_before_it_starts_is_refused(client, tokens, record, period):
    """A block under a period ending before it starts (per-1; the second: 11:00 UTC to 05:00
    UTC) was stored and in force at no instant: the practitioner it blocked read on (200)."""
    consent = dmp_consent(PATIENT_B, deny(AUTHORIZED))
    consent["provision"]["period"] = period
    refused = post(client, tokens.patient(PATIENT_B), consent)
    assert refused.status_code == 422, refused.get_json()
    url = f"/fhir/DocumentReference?patient={PATIENT_B}"
    assert client.get(url, headers=auth(tokens.practitioner(AUTHORIZED))).status_code == 200


def test_r09_consent_period_across_zones_in_order_is_read_as_instants(client, tokens, record):
    """Written in two zones, 20:00 UTC on the 6th to 00:00 UTC on the 7th compares as text
    the wrong way round; as instants it is in order (and long past): accepted."""
    consent = dmp_consent(PATIENT_B, deny(AUTHORIZED))
    consent["provision"]["period"] = {
        "start": "2026-12-07T10:00:00+14:00",
        "end": "2026-12-07T00:00:00Z",
    }
    assert post(client, tokens.patient(PATIENT_B), consent).status_code == 201


def test_r10_authorization_whose_period_ended_is_not_kept_by_the_record_cache(
    client, tokens, record
):
    """A permit whose period ended at an instant (with its time zone) held, through the
    per-process record cache, until midnight UTC or the next write to the record."""
    end = datetime.now(UTC) + timedelta(seconds=2)
    consent = dmp_consent(PATIENT_B, permit(STRANGER))
    consent["provision"]["period"] = {"end": end.astimezone().isoformat(timespec="seconds")}
    assert post(client, tokens.patient(PATIENT_B), consent).status_code == 201
    url = f"/fhir/DocumentReference?patient={PATIENT_B}"
    assert client.get(url, headers=auth(tokens.practitioner(STRANGER))).status_code == 200
    time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 1.5)
    after = client.get(url, headers=auth(tokens.practitioner(STRANGER)))
    assert after.status_code == 403, after.get_json()


# -- R07: representatives at time-zone edges ----------------------------------------------------


def minor(birth: str) -> dict:
    return {"resourceType": "Patient", "id": "child", "birthDate": birth}


def parent(**period: str) -> dict:
    return {
        "resourceType": "RelatedPerson",
        "id": "rp1",
        "patient": {"reference": "Patient/child"},
        "relationship": [{"coding": [{"system": SYSTEM_V3_ROLE_CODE, "code": "PRN"}]}],
        **({"period": period} if period else {}),
    }


def test_r07_patient_eighteen_today_east_of_greenwich_has_no_representative():
    """Born on 7 December 2008: at 13:30 UTC on the 6th it is already the 7th in New
    Caledonia (UTC+11) and Wallis (UTC+12); the UTC date kept the parent's access."""
    now = datetime(2026, 12, 6, 13, 30, tzinfo=UTC)
    facts = build_record(minor("2008-12-07"), [], [parent()], now.date(), now)
    assert not facts.minor and facts.representatives == frozenset()
    younger = build_record(minor("2008-12-08"), [], [parent()], now.date(), now)
    assert younger.minor and younger.representatives == {"rp1"}


@pytest.mark.parametrize(
    ("end", "is_representative"),
    [
        ("2026-12-07T01:00:00Z", False),
        ("2026-12-07T00:30:00+14:00", False),
        ("2026-12-07T06:00:00+00:00", True),
        ("2026-12-07", True),
        ("2026-12-06", False),
    ],
)
def test_r07_guardianship_ended_earlier_today_no_longer_counts(end, is_representative):
    """Compared by its first ten characters, a period ended at 01:00 UTC (or at 00:30 on the
    7th at UTC+14, the 6th at 10:30 UTC) counted until midnight: `now` is 05:00 UTC."""
    now = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
    facts = build_record(minor("2015-05-05"), [], [parent(end=end)], date(2026, 12, 7), now)
    assert (facts.representatives == {"rp1"}) is is_representative


def test_r07_guardianship_starting_later_today_does_not_count_yet():
    now = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
    later = parent(start="2026-12-07T20:00:00+00:00")
    assert build_record(minor("2015-05-05"), [], [later], now.date(), now).representatives == (
        frozenset()
    )


def test_r07_record_facts_expire_when_a_period_ends():
    """The record says until when it holds, so that a cache reads it again then."""
    now = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
    facts = build_record(
        minor("2015-05-05"), [], [parent(end="2026-12-07T09:00:00Z")], now.date(), now
    )
    assert facts.valid_until == datetime(2026, 12, 7, 9, 0, 0, 1, tzinfo=UTC)
