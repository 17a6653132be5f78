"""Attack pass on the authentication doors (R01, R02, R11, R13, R18): credentials that say
more, or something else, than the server read from them.

Each test is a way a client presented itself with more rights, or in another mode, than its
credentials say: a SMART v2 granular scope (`?param=value`) honoured by searches only, so
that a read, vread, history or `_revinclude` served what the constraint excludes; a token
whose JSON names a claim twice; a `patient` claim that disagrees with the `fhirUser` it
travels with; a specialty or an organisation named twice (the first one read); a VIHF
attribute whose Name is another spelling of one the server reads (dropped, so that a
declared bris de glace was served as normal and a resource-id left the request unbound).
Fail closed: what the server cannot read as one fact is refused, 401/403 with an
OperationOutcome or a SOAP Fault, never a 500.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from flask import request
from lxml import etree

import fhir_server.auth.vihf as vihf
from fhir_server.access.requester import INTERNAL
from fhir_server.auth.clients import ClientRegistry, RegisteredClient
from fhir_server.auth.http import bearer_requester
from fhir_server.auth.keys import load_or_create_signing_key
from fhir_server.auth.tokens import AuthenticationError, AuthSettings, TokenValidator
from ihe_xds import vocabulary as v
from ihe_xds.stored_query import FIND_DOCUMENTS
from tests.http.conftest import INS_SYSTEM, auth, valid_nir
from tests.http.test_attack_pass_spellings import record  # noqa: F401 - the fixture
from tests.http.test_normal_form import AUTHORIZED, PATIENT_A, PATIENT_B, document, post
from tests.http.test_xds_endpoints import OTHER_PS, Xds, fault_of
from tests.http.test_xds_stored_queries import adhoc
from tests.xds_builders import patient_cx

A03 = "urn:oid:1.2.250.1.213.1.1.4.1"  # the class codes `document` files under


def outcome_code(response) -> str | None:
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0].get("details", {}).get("coding", [{}])[0].get("code")


# -- R02: a granular scope is enforced or refused, never ignored -------------------------------


@pytest.fixture
def deposited(client, tokens, record):  # noqa: F811 - the fixture imported above
    """A document of class 10 in patient A's record."""
    response = post(client, tokens.practitioner(AUTHORIZED), document(PATIENT_A))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


OTHER_CLASS = f"patient/DocumentReference.rs?category={A03}|99 patient/Patient.rs"


@pytest.mark.parametrize(
    "path",
    [
        "DocumentReference/{id}",
        "DocumentReference/{id}/_history/1",
        "DocumentReference/{id}/_history",
    ],
)
def test_r02_granular_scope_is_not_ignored_by_a_read(client, tokens, deposited, path):
    """`patient/DocumentReference.rs?category=…|99` grants the documents of class 99 only.
    The search applied it; a read, a vread and an instance history by id served the class 10
    document all the same (200). Not applied by them, the constraint refuses them (403 R02)."""
    token = tokens.patient(PATIENT_A, scope=OTHER_CLASS)
    response = client.get(f"/fhir/{path.format(id=deposited)}", headers=auth(token))
    assert response.status_code == 403
    assert outcome_code(response) == "R02"


def test_r02_granular_scope_confines_a_revinclude(client, tokens, deposited):
    """`Patient?_revinclude=DocumentReference:patient` added the class 10 document that a
    search of DocumentReference under the same scope does not return."""
    token = tokens.patient(PATIENT_A, scope=OTHER_CLASS)
    searched = client.get(f"/fhir/DocumentReference?patient={PATIENT_A}", headers=auth(token))
    assert searched.status_code == 200 and searched.get_json().get("entry", []) == []
    response = client.get(
        f"/fhir/Patient?_id={PATIENT_A}&_revinclude=DocumentReference:patient", headers=auth(token)
    )
    assert response.status_code == 200
    types = [e["resource"]["resourceType"] for e in response.get_json().get("entry", [])]
    assert types == ["Patient"]


def test_r02_granular_scope_naming_the_class_still_finds_it(client, tokens, deposited):
    """The constraint is applied, not a blanket refusal: the class it names is found, by a
    search and by an include."""
    scope = f"patient/DocumentReference.rs?category={A03}|10 patient/Patient.rs"
    token = tokens.patient(PATIENT_A, scope=scope)
    searched = client.get(f"/fhir/DocumentReference?patient={PATIENT_A}", headers=auth(token))
    assert [e["resource"]["id"] for e in searched.get_json()["entry"]] == [deposited]
    response = client.get(
        f"/fhir/Patient?_id={PATIENT_A}&_revinclude=DocumentReference:patient", headers=auth(token)
    )
    assert deposited in [e["resource"]["id"] for e in response.get_json()["entry"]]


@pytest.mark.parametrize(
    "constraint",
    ["_summary=count", "_count=0", "_elements=id", "_sort=date", "foo=bar", "date=notadate"],
)
def test_r02_granular_scope_that_filters_nothing_the_server_reads_is_refused(
    client, tokens, deposited, constraint
):
    """`patient/DocumentReference.rs?_summary=count` grants counts; the server took its
    result parameter for no constraint at all and served the documents whole. A parameter
    it does not know, or a bad value, was a 400 naming a parameter the request never sent.
    Each is a 403 (R02): the grant cannot be confined as written."""
    token = tokens.patient(
        PATIENT_A, scope=f"patient/DocumentReference.rs?{constraint} patient/Patient.rs"
    )
    response = client.get(f"/fhir/DocumentReference?patient={PATIENT_A}", headers=auth(token))
    assert response.status_code == 403
    assert outcome_code(response) == "R02"
    assert "granular scope" in response.get_json()["issue"][0]["diagnostics"]


def r02_refusals(service, resource_type: str, interaction: str) -> list[dict]:
    """The audit log's refusals (R16) under R02 of `interaction` on `resource_type`, as the
    server itself reads the log."""
    result = service.search(INTERNAL, "AuditEvent", [("_count", "1000")])
    found = []
    for _, _, body, _ in result.matches:
        event = json.loads(body)
        details = {
            detail["type"]: detail.get("valueString")
            for entity in event.get("entity", [])
            for detail in entity.get("detail", [])
        }
        if (
            event.get("outcome") == "8"
            and details.get("denied-rule") == "R02"
            and details.get("interaction") == interaction
            and details.get("resource-type") == resource_type
        ):
            found.append(event)
    return found


@pytest.mark.parametrize(
    "door, scoped, path, interaction",
    [
        ("search", "DocumentReference", f"DocumentReference?patient={PATIENT_A}", "search"),
        (
            "revinclude",
            "DocumentReference",
            f"Patient?_id={PATIENT_A}&_revinclude=DocumentReference:patient",
            "search",
        ),
        (
            "chain",
            "Patient",
            f"DocumentReference?patient.identifier={INS_SYSTEM}|{valid_nir(1)}",
            "search",
        ),
        ("read", "DocumentReference", "DocumentReference/any-id", "read"),
    ],
)
def test_r02_r16_a_refusal_under_a_granular_scope_is_traced(
    client,
    tokens,
    record,  # noqa: F811 - the fixture imported above
    door,
    scoped,
    path,
    interaction,
):
    """R16: every refused access is traced. A read under a granular scope left its refusal
    event; a search refused because the scope's constraint cannot be applied (403 R02) left
    none, nor a search whose `_revinclude` or chain reached the type so scoped."""
    other = "Patient" if scoped == "DocumentReference" else "DocumentReference"
    token = tokens.patient(
        PATIENT_A, scope=f"patient/{scoped}.rs?_summary=count patient/{other}.rs"
    )
    before = {event["id"] for event in r02_refusals(record, scoped, interaction)}
    response = client.get(f"/fhir/{path}", headers=auth(token))
    assert response.status_code == 403, response.get_data(as_text=True)
    assert outcome_code(response) == "R02"
    after = r02_refusals(record, scoped, interaction)
    new = [event for event in after if event["id"] not in before]
    assert len(new) == 1, "the refusal was not traced (or traced twice)"
    assert f"Patient/{PATIENT_A}" in json.dumps(new[0]["agent"])


@pytest.fixture
def in_b(client, tokens, record):  # noqa: F811 - the fixture imported above
    """A document of class 10 in patient B's record, whom AUTHORIZED may read."""
    response = post(client, tokens.practitioner(AUTHORIZED), document(PATIENT_B))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def practitioner_token(tokens, scope: str) -> str:
    return tokens.issuer.issue(
        subject=AUTHORIZED, scopes=scope, extensions=practitioner_extensions(AUTHORIZED)
    )


def test_r02_patient_and_granular_user_scopes_each_keep_their_bound(client, tokens, in_b):
    """`patient/*.rs user/DocumentReference.rs?category=…|99`: the patient/ scope is bound
    to the patient in context (here none), the user/ one to class 99. Their contexts and
    constraints were pooled apart, each lifting the other's: B's class 10 document was
    read and found. Each scope now keeps its own bound (OR of context AND constraint)."""
    scope = f"patient/*.rs user/DocumentReference.rs?category={A03}|99 user/Patient.rs"
    token = practitioner_token(tokens, scope)
    read = client.get(f"/fhir/DocumentReference/{in_b}", headers=auth(token))
    assert read.status_code == 404
    found = client.get(f"/fhir/DocumentReference?patient={PATIENT_B}", headers=auth(token))
    assert found.status_code == 200
    assert found.get_json().get("entry", []) == []


def test_r02_patient_scope_without_a_patient_in_context_reads_nothing(client, tokens, in_b):
    """A `patient/` scope grants the patient in context's compartment; with none, nothing.
    The search already found nothing; a read by id served the document."""
    token = practitioner_token(tokens, "patient/*.rs")
    assert client.get(f"/fhir/DocumentReference/{in_b}", headers=auth(token)).status_code == 404
    found = client.get(f"/fhir/DocumentReference?patient={PATIENT_B}", headers=auth(token))
    assert found.get_json().get("entry", []) == []


def test_r02_patient_scope_without_a_patient_in_context_writes_nothing(client, tokens, record):  # noqa: F811
    """`patient/*.cruds` with no patient in context: the scope's bound was computed and
    dropped for writes, and the practitioner deposited in patient B's record (201)."""
    token = practitioner_token(tokens, "patient/*.cruds")
    response = post(client, token, document(PATIENT_B))
    assert response.status_code == 403
    assert outcome_code(response) == "R02"
    with_context = tokens.issuer.issue(
        subject=AUTHORIZED,
        scopes="patient/*.cruds",
        patient=PATIENT_B,
        extensions=practitioner_extensions(AUTHORIZED),
    )
    assert post(client, with_context, document(PATIENT_B)).status_code == 201


def test_r02_user_scope_without_constraint_still_reads(client, tokens, in_b):
    token = practitioner_token(tokens, "user/*.rs")
    assert client.get(f"/fhir/DocumentReference/{in_b}", headers=auth(token)).status_code == 200


# -- R01: a token's JSON names each member once ---------------------------------------------


def _segment(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def signed_as_written(data_dir, header: str, claims: str) -> str:
    """A token signed by the server's own key over `header` and `claims` exactly as written
    (what an issuer whose JSON writer repeats a member would sign)."""
    key = load_or_create_signing_key(data_dir)
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    signature = key.key.private_key.sign(
        signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def patient_claims(data_dir, patient: str, **extra) -> dict:
    settings = AuthSettings(data_dir=data_dir)
    now = int(time.time())
    return {
        "iss": settings.local_issuer,
        "sub": patient,
        "aud": settings.effective_audience,
        "exp": now + 600,
        "iat": now,
        "scope": "patient/*.rs",
        "fhirUser": f"Patient/{patient}",
        **extra,
    }


def header_of(data_dir, **extra) -> dict:
    key = load_or_create_signing_key(data_dir)
    return {"alg": "RS256", "kid": key.kid, "typ": "at+jwt", **extra}


def test_r01_token_whose_claims_name_fhir_user_twice_is_refused(client, data_dir, record):  # noqa: F811
    """`"fhirUser": "Patient/A", …, "fhirUser": "Patient/B"`: the server's JSON parser read
    the last (patient B, whose record was served), another reader (a proxy, the issuer's
    own log) the first. RFC 7519 §4 lets a parser refuse duplicate claim names: refused."""
    claims = json.dumps(patient_claims(data_dir, PATIENT_A))
    claims = claims[:-1] + f', "fhirUser": "Patient/{PATIENT_B}"}}'
    token = signed_as_written(data_dir, json.dumps(header_of(data_dir)), claims)
    response = client.get(f"/fhir/Patient/{PATIENT_B}", headers=auth(token))
    assert response.status_code == 401
    assert outcome_code(response) == "R01"


def test_r01_token_whose_header_names_typ_twice_is_refused(client, data_dir, record):  # noqa: F811
    """A header `"typ": "JWT", …, "typ": "at+jwt"` is an ID token to a reader of the first
    and an access token to this server, which read the last: refused."""
    header = json.dumps(header_of(data_dir, typ="JWT"))[:-1] + ', "typ": "at+jwt"}'
    token = signed_as_written(data_dir, header, json.dumps(patient_claims(data_dir, PATIENT_A)))
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 401


def test_r01_token_naming_nested_extension_members_twice_is_refused(client, data_dir, record):  # noqa: F811
    """Duplicates are refused at any depth: `extensions.dmp.access_mode` given twice."""
    claims = json.dumps(patient_claims(data_dir, PATIENT_A))[:-1] + (
        ', "extensions": {"dmp": {"access_mode": "bris_de_glace", "access_mode": "normal"}}}'
    )
    token = signed_as_written(data_dir, json.dumps(header_of(data_dir)), claims)
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 401


def test_r01_the_same_token_written_once_is_accepted(client, data_dir, record):  # noqa: F811
    token = signed_as_written(
        data_dir, json.dumps(header_of(data_dir)), json.dumps(patient_claims(data_dir, PATIENT_A))
    )
    assert client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token)).status_code == 200


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_r01_token_time_claim_that_is_a_boolean_is_refused(client, data_dir, record, claim):  # noqa: F811
    """`"nbf": true` is no NumericDate (RFC 7519 §2); Python read it as 1 (1970) and the
    token as valid. Wrong JSON types are refused, as `exp` already was."""
    claims = json.dumps(patient_claims(data_dir, PATIENT_A, **{claim: True}))
    token = signed_as_written(data_dir, json.dumps(header_of(data_dir)), claims)
    assert client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token)).status_code == 401


@pytest.mark.parametrize("kid", [["a"], {"a": 1}, 5])
def test_r01_token_whose_kid_is_not_a_string_is_a_401_not_a_500(tmp_path, kid):
    """With an external issuer configured, a `kid` array or object was looked up in its
    JWKS cache as a dictionary key: a TypeError, a 500. A 401 now, as any other bad kid."""
    settings = AuthSettings(
        data_dir=tmp_path, issuer="https://idp.example", jwks_url="https://idp.example/jwks"
    )
    validator = TokenValidator.from_settings(settings, fetch_jwks=lambda url: {"keys": []})
    header = {"alg": "RS256", "kid": kid, "typ": "at+jwt"}
    claims = {"iss": "https://idp.example", "aud": settings.effective_audience, "exp": 2**40}
    token = f"{_segment(json.dumps(header))}.{_segment(json.dumps(claims))}.c2ln"
    with pytest.raises(AuthenticationError):
        validator.validate(token)


# -- R02, R06: the patient in context is the patient the token names --------------------------


def test_r02_patient_token_whose_patient_claim_names_another_patient_is_refused(
    client,
    tokens,
    record,  # noqa: F811
):
    """`fhirUser` Patient/A with `patient` B: a patient's token was read as A (its fhirUser)
    and a practitioner's with the same two claims as B (its `patient`). Two patients in one
    token: refused (401)."""
    token = tokens.issuer.issue(
        subject=PATIENT_A,
        scopes="patient/*.rs",
        fhir_user=f"Patient/{PATIENT_A}",
        patient=PATIENT_B,
    )
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 401
    assert "two different patients" in response.get_json()["issue"][0]["diagnostics"]


def practitioner_extensions(idnat: str, **dmp) -> dict:
    return {
        "ihe_iua": {
            "subject_name": "Dr Marie Durand",
            "national_provider_identifier": idnat,
            "subject_role": [{"system": "urn:oid:1.2.250.1.71.1.2.7", "code": "10"}],
            "subject_organization_id": "urn:oid:1.2.250.1.71.4.2.2|1000000001",
        },
        "dmp": dmp,
    }


def test_r02_practitioner_token_whose_patient_and_fhir_user_disagree_is_refused(
    client,
    tokens,
    record,  # noqa: F811
):
    token = tokens.issuer.issue(
        subject=AUTHORIZED,
        scopes="user/*.cruds",
        fhir_user=f"Patient/{PATIENT_B}",
        patient=PATIENT_A,
        extensions=practitioner_extensions(AUTHORIZED),
    )
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 401


def test_r01_practitioner_token_with_a_related_person_fhir_user_is_refused(
    client,
    tokens,
    record,  # noqa: F811
):
    """An IdNat_PS and a `fhirUser` RelatedPerson name two users; the RelatedPerson was
    silently dropped and the token served as the practitioner's."""
    token = tokens.issuer.issue(
        subject=AUTHORIZED,
        scopes="user/*.cruds",
        fhir_user="RelatedPerson/parent-1",
        extensions=practitioner_extensions(AUTHORIZED),
    )
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 401


def test_r02_system_token_naming_an_ins_is_bound_to_that_record(client, tokens, record):  # noqa: F811
    """`extensions.dmp.patient_identifier` (the INS in context) binds the request to that
    patient's record (`access.binding`); it was read for practitioners only, so a system
    token naming patient B's INS read patient A. It is now bound: A is not found."""
    ins_b = f"{INS_SYSTEM}|{valid_nir(2)}"  # patient B's, as `record` made it
    extensions = {"dmp": {"organization_type": "hospital", "patient_identifier": ins_b}}
    token = tokens.issuer.issue(
        subject="his", scopes="system/*.cruds", client_id="his", extensions=extensions
    )
    assert client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token)).status_code == 404
    assert client.get(f"/fhir/Patient/{PATIENT_B}", headers=auth(token)).status_code == 200


# -- R13: one specialty ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "roles, declared",
    [
        ([{"system": "urn:oid:1.2.250.1.71.4.2.5", "code": "SM26"}], "SM54"),
        (
            [
                {"system": "urn:oid:1.2.250.1.71.4.2.5", "code": "SM26"},
                {"system": "urn:oid:1.2.250.1.71.4.2.5", "code": "SM54"},
            ],
            None,
        ),
    ],
    ids=["role-and-extension", "two-roles"],
)
def test_r13_practitioner_token_naming_two_specialties_is_refused(
    client,
    tokens,
    record,  # noqa: F811
    roles,
    declared,
):
    """R13 reads the specialty's J65 roles: `extensions.dmp.specialty` was read before the
    subject_role specialties, and of those the first, so that the order of the claims chose
    the document types served."""
    extensions = practitioner_extensions(
        AUTHORIZED, **({"specialty": declared} if declared else {})
    )
    extensions["ihe_iua"]["subject_role"] += roles
    token = tokens.issuer.issue(subject=AUTHORIZED, scopes="user/*.cruds", extensions=extensions)
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 401
    assert "specialty" in response.get_json()["issue"][0]["diagnostics"]


# -- VIHF: one attribute, one spelling, one value (R01, R11, R18) ---------------------------


INS = "urn:oid:1.2.250.1.213.1.4.8|123456789012311"


def vihf_signed_after(data_dir, monkeypatch, edit, **options) -> etree._Element:
    """A `wsse:Security` header whose VIHF, as minted, is edited by `edit(assertion)` before
    the structure signs it: what a structure's software could sign."""
    sign = vihf.XMLSigner.sign

    def edited_then_signed(self, data, **arguments):
        edit(data)
        return sign(self, data, **arguments)

    arguments = {
        "practitioner_id": AUTHORIZED,
        "profession": "10",
        "specialty": "SM54",
        "organization_id": "1000000001",
        "patient_ins": INS,
        "audience": AuthSettings(data_dir=data_dir).effective_audience,
        **options,
    }
    with monkeypatch.context() as patch:
        patch.setattr(vihf.XMLSigner, "sign", edited_then_signed)
        assertion = vihf.mint_vihf(vihf.load_or_create_structure_credential(data_dir), **arguments)
    header = etree.Element(f"{{{vihf.WSSE}}}Security", nsmap={"wsse": vihf.WSSE})
    header.append(etree.fromstring(vihf.vihf_to_string(assertion).encode()))
    return header


def requester_of(data_dir, security: etree._Element):
    trust = vihf.VihfTrust.from_settings(AuthSettings(data_dir=data_dir))
    return vihf.vihf_requester(security, trust, cache=None)


def _attribute(assertion: etree._Element, name: str) -> etree._Element:
    return assertion.find(f".//{{{vihf.SAML}}}Attribute[@Name='{name}']")


def renamed(name: str, spelling: str):
    def edit(assertion: etree._Element) -> None:
        _attribute(assertion, name).set("Name", spelling)

    return edit


@pytest.mark.parametrize(
    "edit, options",
    [
        (renamed(vihf.ATTR_PURPOSE, vihf.ATTR_PURPOSE.upper()), {"mode": "bris_de_glace"}),
        (renamed(vihf.ATTR_PURPOSE, f" {vihf.ATTR_PURPOSE}"), {"mode": "centre_15"}),
        (renamed(vihf.ATTR_RESOURCE_ID, f"{vihf.ATTR_RESOURCE_ID} "), {}),
        (renamed(vihf.ATTR_STRUCTURE, "identifiant_structure"), {}),
    ],
    ids=["purpose-in-capitals", "purpose-with-a-space", "resource-id-with-a-space", "structure"],
)
def test_r11_vihf_attribute_named_in_another_spelling_is_refused(
    data_dir, monkeypatch, edit, options
):
    """An Attribute whose Name is a known one in another case or with surrounding spaces was
    not read at all: a PurposeOfUse declaring bris de glace or centre 15 served the request
    in mode normal (neither notified nor audited as an emergency access, R11, R12), and a
    resource-id so spelled left the request bound to no patient. Refused."""
    reason = {"reason": "urgence"} if options else {}
    security = vihf_signed_after(data_dir, monkeypatch, edit, **options, **reason)
    with pytest.raises(AuthenticationError, match="not spelled as"):
        requester_of(data_dir, security)


def second_statement(name: str, value: str):
    def edit(assertion: etree._Element) -> None:
        statement = assertion.find(f"{{{vihf.SAML}}}AttributeStatement")
        extra = etree.Element(f"{{{vihf.SAML}}}AttributeStatement")
        statement.addnext(extra)
        attribute = etree.SubElement(extra, f"{{{vihf.SAML}}}Attribute", Name=name)
        etree.SubElement(attribute, f"{{{vihf.SAML}}}AttributeValue").text = value

    return edit


def second_value(name: str, value: str):
    def edit(assertion: etree._Element) -> None:
        holder = _attribute(assertion, name)
        etree.SubElement(holder, f"{{{vihf.SAML}}}AttributeValue").text = value

    return edit


@pytest.mark.parametrize(
    "edit",
    [
        second_statement(vihf.ATTR_STRUCTURE, "2000000002"),
        second_value(vihf.ATTR_STRUCTURE, "2000000002"),
        second_value(vihf.ATTR_ACCESS_REASON, "autre"),
    ],
    ids=["structure-in-a-second-statement", "structure-twice", "reason-twice"],
)
def test_r18_vihf_naming_an_organisation_or_reason_twice_is_refused(data_dir, monkeypatch, edit):
    """The structure (Identifiant_Structure) is the organisational mailbox a practitioner
    acts for (R18), the reason the justification of a bris de glace (R11): two values were
    read as the first, so that the order of elements chose. Refused."""
    security = vihf_signed_after(
        data_dir, monkeypatch, edit, mode="bris_de_glace", reason="urgence"
    )
    with pytest.raises(AuthenticationError, match="more than one value"):
        requester_of(data_dir, security)


def test_r13_vihf_naming_two_specialties_is_refused(data_dir, monkeypatch):
    """Two TRE_R38 Roles: the first was the specialty R13 read."""

    def edit(assertion: etree._Element) -> None:
        holder = _attribute(assertion, vihf.ATTR_ROLE)
        value = etree.SubElement(holder, f"{{{vihf.SAML}}}AttributeValue")
        value.append(vihf._coded("Role", "SM26", vihf.OID_TRE_R38_SPECIALTY))
        holder.insert(1, value)

    security = vihf_signed_after(data_dir, monkeypatch, edit)
    with pytest.raises(AuthenticationError, match="specialty"):
        requester_of(data_dir, security)


@pytest.mark.parametrize("instant", ["20991231", "2099-12-31", "2099-12-31T00:00"])
def test_r01_vihf_validity_instant_outside_xs_datetime_is_refused(data_dir, monkeypatch, instant):
    """NotOnOrAfter is an xs:dateTime (SAML core §1.3.3). Python's ISO reader also took a
    date alone or the basic format, an instant the signer's software may have meant
    otherwise: refused."""

    def edit(assertion: etree._Element) -> None:
        assertion.find(f"{{{vihf.SAML}}}Conditions").set("NotOnOrAfter", instant)

    security = vihf_signed_after(data_dir, monkeypatch, edit)
    with pytest.raises(AuthenticationError, match="malformed validity instant"):
        requester_of(data_dir, security)


@pytest.mark.parametrize(
    "instant", ["2099-12-31T00:00:00Z", "2099-12-31T00:00:00", "2099-12-31T00:00:00.1234567+01:00"]
)
def test_r01_vihf_validity_instant_with_or_without_zone_or_fraction_is_read(
    data_dir, monkeypatch, instant
):
    def edit(assertion: etree._Element) -> None:
        assertion.find(f"{{{vihf.SAML}}}Conditions").set("NotOnOrAfter", instant)

    requester = requester_of(data_dir, vihf_signed_after(data_dir, monkeypatch, edit))
    assert requester.subject_id == AUTHORIZED
    assert requester.organization_id == "1000000001"


def test_r01_vihf_comment_inside_the_name_id_is_read_as_signed(data_dir, monkeypatch):
    """The canonical form drops comments: `8100<!---->02…` signed as one IdNat_PS. The
    server reads the element the signature verified (signxml's canonical copy), never the
    text before the comment, so the comment changes nothing (held; kept as a guard)."""
    security = vihf_signed_after(data_dir, monkeypatch, lambda assertion: None)
    name_id = security.find(f".//{{{vihf.SAML}}}NameID")
    text = name_id.text
    name_id.text = text[:4]
    comment = etree.Comment("x")
    comment.tail = text[4:]
    name_id.append(comment)
    requester = requester_of(data_dir, etree.fromstring(etree.tostring(security)))
    assert requester.subject_id == AUTHORIZED


# -- R05, R15: a system client's organization type ------------------------------------------


@pytest.mark.parametrize("spelling", ["Employer", "employer ", "mutual-insurer", "HEALTH_INSURER"])
def test_r05_organization_type_of_a_payer_spelled_otherwise_is_refused(
    client,
    tokens,
    record,  # noqa: F811
    spelling,
):
    """R05 refuses payers and employers by their organization type. `Employer` (or a space,
    a hyphen, capitals) was no payer to the rules: the employer's system read the patient's
    identity, where `employer` is refused. Refused at authentication (401)."""
    token = tokens.system("payer", scope="system/*.cruds", organization_type=spelling)
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 401
    assert "organization type" in response.get_json()["issue"][0]["diagnostics"]


def test_r05_organization_type_of_a_payer_as_the_rules_spell_it_is_a_payer(
    client,
    tokens,
    record,  # noqa: F811
):
    token = tokens.system("payer", scope="system/*.cruds", organization_type="employer")
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 403
    assert outcome_code(response) == "R05"


def test_r15_client_registration_with_a_payer_type_spelled_otherwise_is_refused(tmp_path):
    """The registration is where a client's organization type comes from (the token endpoint
    copies it, the client cannot choose it): a near miss is refused there, not at use."""
    registry = ClientRegistry.in_data_dir(tmp_path)
    key = load_or_create_signing_key(tmp_path).public_jwks()
    with pytest.raises(ValueError, match="health_insurer"):
        registry.add(
            RegisteredClient(
                "feed", dict(key), "system/Patient.cru", organization_type="Health_Insurer"
            )
        )
    assert registry.get("feed") is None


# -- XDS: one Header, one Body, one wsse:Security (R01) -------------------------------------


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


def envelope(xds: Xds, *, headers: list[list[etree._Element]], bodies: int = 1) -> bytes:
    """An ITI-18 FindDocuments envelope whose Header elements hold `headers` (each after the
    WS-Addressing Action and MessageID), repeated Bodies as asked."""
    root = etree.Element(f"{{{v.NS_SOAP12}}}Envelope", nsmap={"soap": v.NS_SOAP12, "wsa": v.NS_WSA})
    for extra in headers:
        header = etree.SubElement(root, f"{{{v.NS_SOAP12}}}Header")
        etree.SubElement(header, f"{{{v.NS_WSA}}}Action").text = v.ACTION_ITI18
        etree.SubElement(header, f"{{{v.NS_WSA}}}MessageID").text = f"urn:uuid:{uuid.uuid4()}"
        for element in extra:
            header.append(element)
    for _ in range(bodies):
        query = adhoc(
            FIND_DOCUMENTS,
            [
                ("$XDSDocumentEntryPatientId", f"'{patient_cx(NIR)}'"),
                ("$XDSDocumentEntryStatus", f"('{v.STATUS_APPROVED}')"),
            ],
            "ObjectRef",
        )
        etree.SubElement(root, f"{{{v.NS_SOAP12}}}Body").append(query)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


NIR = "123456789012311"


def post_soap(xds: Xds, data: bytes):
    return xds.client.post(
        "/xds/registry", data=data, headers={"Content-Type": "application/soap+xml; charset=UTF-8"}
    )


@pytest.mark.parametrize(
    "layout",
    ["two-security-headers", "two-headers", "two-bodies"],
)
def test_r01_xds_envelope_naming_two_callers_or_two_requests_is_a_fault(xds, layout):
    """A second `wsse:Security` (the last one was read), a second Header or Body (the first
    was read): which practitioner, or which request, the server served depended on the
    order, and a gateway reading the other one saw another. A SOAP Fault (Sender)."""
    first, second = xds.security(OTHER_PS, NIR), xds.security(AUTHORIZED, NIR)
    if layout == "two-security-headers":
        data = envelope(xds, headers=[[first, second]])
    elif layout == "two-headers":
        data = envelope(xds, headers=[[first], [second]])
    else:
        data = envelope(xds, headers=[[first]], bodies=2)
    response = post_soap(xds, data)
    assert response.status_code == 400
    code, reason = fault_of(response)
    assert code == "soap:Sender"
    assert "more than one" in reason


def test_r01_xds_envelope_with_one_of_each_is_answered(xds):
    response = post_soap(xds, envelope(xds, headers=[[xds.security(AUTHORIZED, NIR)]]))
    assert response.status_code == 200, response.get_data()[:2000]


# -- R01: a valid token's requests do not grow the server -----------------------------------


def test_r01_requests_with_one_token_keep_one_derived_requester(app, data_dir, tokens):
    """The Requester of a verified token is derived once and kept with it. The derivation
    was a new `partial` per request, which never matched the one kept: every request added
    an entry living as long as the token, so one client with one token grew the server's
    memory without bound."""
    validator = TokenValidator.from_settings(AuthSettings(data_dir=data_dir))
    token = tokens.patient(PATIENT_A)
    for _ in range(20):
        with app.test_request_context(headers=auth(token)):
            assert bearer_requester(request, validator, None).patient_id == PATIENT_A
    assert len(validator.verified._derived) == 1


@pytest.mark.parametrize("with_header", [True, False], ids=["with-a-header", "alone"])
def test_r01_token_in_the_query_string_is_refused(client, tokens, record, with_header):  # noqa: F811
    """`?access_token=` (RFC 6750 §2.3) was ignored: beside an Authorization header it was a
    second credential, of another user, that a proxy or a log could take for the caller's
    (RFC 6750 §2: one method per request). Refused, whatever the header says."""
    other = tokens.patient(PATIENT_B)
    headers = auth(tokens.patient(PATIENT_A)) if with_header else {}
    response = client.get(f"/fhir/Patient/{PATIENT_A}?access_token={other}", headers=headers)
    assert response.status_code == 401
    assert "Authorization header only" in response.get_json()["issue"][0]["diagnostics"]


def _conditions(assertion: etree._Element) -> etree._Element:
    return assertion.find(f"{{{vihf.SAML}}}Conditions")


def restricted_to_another_too(assertion: etree._Element) -> None:
    restriction = etree.SubElement(_conditions(assertion), f"{{{vihf.SAML}}}AudienceRestriction")
    etree.SubElement(restriction, f"{{{vihf.SAML}}}Audience").text = "https://other.example/xds"
    _conditions(assertion).insert(0, restriction)


def second_conditions(assertion: etree._Element) -> None:
    conditions = _conditions(assertion)
    other = etree.Element(f"{{{vihf.SAML}}}Conditions", NotOnOrAfter="2000-01-01T00:00:00Z")
    conditions.addnext(other)


def one_time_use(assertion: etree._Element) -> None:
    etree.SubElement(_conditions(assertion), f"{{{vihf.SAML}}}OneTimeUse")


@pytest.mark.parametrize(
    "edit, message",
    [
        (restricted_to_another_too, "audience"),
        (second_conditions, "more than one Conditions"),
        (one_time_use, "OneTimeUse is not supported"),
    ],
    ids=["audience-restricted-to-another-too", "two-conditions", "one-time-use"],
)
def test_r01_vihf_conditions_the_server_did_not_read_as_written_are_refused(
    data_dir, monkeypatch, edit, message
):
    """SAML core §2.5.1: AudienceRestrictions are AND-ed (one naming only another relying
    party makes the assertion not ours; all their Audiences were pooled); one Conditions
    (a second one, expired, was never read); a condition the server does not enforce makes
    the assertion invalid (OneTimeUse was ignored and the assertion replayable at will)."""
    security = vihf_signed_after(data_dir, monkeypatch, edit)
    with pytest.raises(AuthenticationError, match=message):
        requester_of(data_dir, security)


# -- what held (guards) ---------------------------------------------------------------------


def test_r01_vihf_signed_by_a_trusted_certificate_past_its_validity_is_refused(tmp_path):
    """A trusted structure certificate that has expired verifies nothing (held: signxml is
    given the verification time), nor does a KeyInfo certificate that is not a trusted one."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired structure")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    audience = AuthSettings(data_dir=tmp_path).effective_audience
    assertion = vihf.mint_vihf(
        vihf.StructureCredential(key, certificate),
        practitioner_id=AUTHORIZED,
        profession="10",
        audience=audience,
    )
    trust = vihf.VihfTrust((certificate,), audience)
    with pytest.raises(AuthenticationError, match="not trusted"):
        vihf.vihf_requester(assertion, trust, cache=None)


def test_r01_xds_assertion_in_the_body_is_not_read(xds):
    """Only the `wsse:Security` header is read for the caller: an empty one, with a valid
    VIHF put in the Body after the request, is a fault (held; since the XDS spellings
    pass, a Body holding anything beside its one request is refused before any VIHF is
    read)."""
    security = etree.Element(f"{{{vihf.WSSE}}}Security", nsmap={"wsse": vihf.WSSE})
    root = etree.fromstring(envelope(xds, headers=[[security]]))
    body = root.find(f"{{{v.NS_SOAP12}}}Body")
    body.append(xds.security(AUTHORIZED, NIR)[0])
    response = post_soap(xds, etree.tostring(root))
    assert response.status_code == 400
    code, reason = fault_of(response)
    assert code == "soap:Sender"
    assert "VIHF" in reason or "a request message holds one" in reason, reason


def test_r01_xds_envelope_declaring_an_entity_is_refused(xds):
    """An entity declaration (`<!ENTITY idnat "…">` in a DTD, used in the NameID) is refused
    before anything is read (held)."""
    data = envelope(xds, headers=[[xds.security(AUTHORIZED, NIR)]]).decode()
    data = data.replace(
        "?>", '?>\n<!DOCTYPE soap:Envelope [<!ENTITY idnat "810000000010">]>', 1
    ).replace(f">{AUTHORIZED}<", ">&idnat;<", 1)
    response = post_soap(xds, data.encode())
    assert response.status_code == 400
    code, reason = fault_of(response)
    assert code == "soap:Sender"
    assert "DTD" in reason, reason


BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"


def confirmed(method: str, **data: str):
    def edit(assertion: etree._Element) -> None:
        subject = assertion.find(f"{{{vihf.SAML}}}Subject")
        confirmation = etree.SubElement(
            subject, f"{{{vihf.SAML}}}SubjectConfirmation", Method=method
        )
        if data:
            etree.SubElement(confirmation, f"{{{vihf.SAML}}}SubjectConfirmationData", **data)

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (confirmed("urn:oasis:names:tc:SAML:2.0:cm:holder-of-key"), "holder-of-key"),
        (
            confirmed(BEARER, NotOnOrAfter="2001-01-01T00:00:00Z"),
            "subject confirmation expired",
        ),
    ],
    ids=["holder-of-key", "confirmation-expired"],
)
def test_r01_vihf_subject_confirmation_is_honoured_or_refused(data_dir, monkeypatch, edit, message):
    """A holder-of-key VIHF is good only with proof of its key, which the server does not
    check: it was served as a bearer one, to anyone holding a copy. A bearer confirmation
    whose window has ended was served until the Conditions' NotOnOrAfter."""
    security = vihf_signed_after(data_dir, monkeypatch, edit)
    with pytest.raises(AuthenticationError, match=message):
        requester_of(data_dir, security)


def test_r01_vihf_bearer_confirmation_within_its_window_is_accepted(data_dir, monkeypatch):
    edit = confirmed(BEARER, NotOnOrAfter="2099-01-01T00:00:00Z")
    requester = requester_of(data_dir, vihf_signed_after(data_dir, monkeypatch, edit))
    assert requester.subject_id == AUTHORIZED
