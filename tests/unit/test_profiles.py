"""The server's profiles (profiles/StructureDefinition-*.json) and their enforcement.

One test per constraint kind, each checking the OperationOutcome of `$validate` points at the
element (issue.expression) with the FHIR issue code a client would act on.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.errors import FhirError
from fhir_server.resources.ins import nir_key
from fhir_server.resources.model import model_class, validate_resource
from fhir_server.resources.profiles import (
    DMP_AUDIT_EVENT,
    DMP_CONSENT,
    DMP_DOCUMENT_REFERENCE,
    DMP_PATIENT_INS,
    DMP_SUBMISSION_SET,
    PROFILES_DIR,
    ProfileRegistry,
    default_registry,
)
from fhir_server.resources.validate_operation import validate_operation
from tests.support.documents import with_submission_set_unique_id

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/external/pdsm4dmp"
ENTRY_UUID = "urn:uuid:0b0f3e4e-7f3a-4c1e-9a55-2f8f3c9a1b2d"
RFC3986 = "urn:ietf:rfc:3986"
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
IDNAT_PS = "urn:oid:1.2.250.1.71.4.2.1"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def valid_nir(nir13: str = "2840763220092") -> str:
    return f"{nir13}{nir_key(nir13):02d}"


@pytest.fixture(scope="module")
def registry() -> ProfileRegistry:
    return ProfileRegistry.load(PROFILES_DIR)


def outcome(resource: dict, *, deposit: bool = False, profile: str | None = None, mode=None):
    """$validate as the REST face runs it: model issues, then the profiles."""
    kind = resource["resourceType"]
    return validate_operation(
        resource, kind, mode, profile, validate_resource(resource, kind), deposit=deposit
    )


def errors(oo: dict) -> list[dict]:
    return [i for i in oo["issue"] if i["severity"] in ("error", "fatal")]


def expressions(oo: dict) -> list[str]:
    return [e for i in errors(oo) for e in i.get("expression", [])]


def only_error(oo: dict) -> dict:
    found = errors(oo)
    assert len(found) == 1, found
    return found[0]


def dmp_document() -> dict:
    document = json.loads((FIXTURES / "DocumentReference-doc-x-id.json").read_text("utf-8"))
    document["identifier"] = [{"system": RFC3986, "value": ENTRY_UUID}]
    return document


def dmp_patient() -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": INS_NIR, "value": valid_nir()}],
        "name": [{"family": "Martin", "given": ["Claire"]}],
        "gender": "female",
        "birthDate": "1984-07-12",
    }


def practitioner_exception(kind: str, idnat: str = "810002673899") -> dict:
    return {
        "type": kind,
        "actor": [
            {
                "role": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                        }
                    ]
                },
                "reference": {"identifier": {"system": IDNAT_PS, "value": idnat}},
            }
        ],
    }


def purpose_exception(code: str, kind: str = "deny") -> dict:
    return {"type": kind, "purpose": [{"system": ACT_REASON, "code": code}]}


def dmp_consent(*exceptions: dict) -> dict:
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p1"},
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {"type": "permit"},
    }
    if exceptions:
        consent["provision"]["provision"] = list(exceptions)
    return consent


def submission_set() -> dict:
    """The PDSm4DMP example's SubmissionSet adapted to the DMP (a uniqueId added,
    `tests.support.documents`)."""
    bundle = json.loads((FIXTURES / "Bundle-example-td2-iti65-lot-soumission.json").read_text())
    return copy.deepcopy(with_submission_set_unique_id(bundle)["entry"][0]["resource"])


def audit_event() -> dict:
    return {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
        },
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
        "action": "R",
        "recorded": "2025-01-02T10:00:00+01:00",
        "agent": [
            {
                "who": {"identifier": {"system": IDNAT_PS, "value": "810002673899"}},
                "requestor": True,
            }
        ],
        "source": {"observer": {"display": "dmp-server"}},
        "meta": {"profile": [DMP_AUDIT_EVENT]},
    }


# --------------------------------------------------------------------------- baselines


def test_dmp_profiles_accept_conforming_resources_with_all_ok():
    for resource, deposit in (
        (dmp_document(), True),
        (dmp_patient(), False),
        (dmp_consent(), False),
        (submission_set(), False),
        (audit_event(), False),
    ):
        oo = outcome(resource, deposit=deposit)
        assert oo["issue"] == [
            {"severity": "information", "code": "informational", "diagnostics": "All OK"}
        ], (resource["resourceType"], oo)


# --------------------------------------------------------------------------- cardinality


def test_dmp_document_reference_security_label_min_1_is_required_at_the_element():
    document = dmp_document()
    del document["securityLabel"]
    issue = only_error(outcome(document, deposit=True))
    assert issue["code"] == "required"
    assert issue["expression"] == ["DocumentReference.securityLabel"]


def test_dmp_document_reference_attachment_hash_min_1_points_into_the_content_instance():
    document = dmp_document()
    del document["content"][0]["attachment"]["hash"]
    issue = only_error(outcome(document, deposit=True))
    assert issue["code"] == "required"
    assert issue["expression"] == ["DocumentReference.content[0].attachment.hash"]


def test_dmp_document_reference_context_children_not_required_when_context_is_absent():
    document = dmp_document()
    del document["context"]
    assert expressions(outcome(document, deposit=True)) == ["DocumentReference.context"]


def test_dmp_document_reference_security_label_max_4():
    document = dmp_document()
    document["securityLabel"] += [
        {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": code}]}
        for code in (
            "MASQUE_PS",
            "INVISIBLE_PATIENT",
            "INVISIBLE_REPRESENTANTS_LEGAUX",
            "MASQUE_PS",
        )
    ]
    issue = only_error(outcome(document, deposit=True))
    assert issue["code"] == "structure"
    assert issue["expression"] == ["DocumentReference.securityLabel"]
    assert "maximum cardinality 4" in issue["diagnostics"]


def test_dmp_consent_third_level_provision_max_0():
    nested = practitioner_exception("deny")
    nested["provision"] = [practitioner_exception("permit")]
    issue = only_error(outcome(dmp_consent(nested)))
    assert issue["code"] == "structure"
    assert issue["expression"] == ["Consent.provision.provision[0].provision"]


# --------------------------------------------------------------------------- fixed / pattern


def test_dmp_submission_set_mode_fixed_working():
    lst = submission_set()
    lst["mode"] = "snapshot"
    issue = only_error(outcome(lst))
    assert issue["code"] == "value"
    assert issue["expression"] == ["List.mode"]


def test_dmp_consent_root_provision_type_fixed_permit():
    consent = dmp_consent()
    consent["provision"]["type"] = "deny"
    issue = only_error(outcome(consent))
    assert (issue["code"], issue["expression"]) == ("value", ["Consent.provision.type"])


def test_dmp_consent_scope_pattern_patient_privacy():
    consent = dmp_consent()
    consent["scope"]["coding"][0]["code"] = "research"
    issue = only_error(outcome(consent))
    assert (issue["code"], issue["expression"]) == ("value", ["Consent.scope"])


def test_dmp_submission_set_code_pattern_allows_extra_codings_and_text():
    lst = submission_set()
    lst["code"]["coding"].insert(0, {"system": "http://example.org/local", "code": "lot"})
    lst["code"]["text"] = "Lot de soumission"
    assert errors(outcome(lst, profile=DMP_SUBMISSION_SET)) == []


# --------------------------------------------------------------------------- bindings


def test_dmp_document_reference_category_required_binding_tre_a03():
    document = dmp_document()
    document["category"][0]["coding"][0]["code"] = "99"
    issue = only_error(outcome(document, deposit=True))
    assert issue["code"] == "code-invalid"
    assert issue["expression"] == ["DocumentReference.category[0]"]
    assert "TRE-A03-ClasseDocument|99" in issue["diagnostics"]


def test_dmp_document_reference_security_label_accepts_the_tre_a07_oid_as_system():
    document = dmp_document()
    document["securityLabel"].append(
        {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": "MASQUE_PS"}]}
    )
    assert errors(outcome(document, deposit=True)) == []
    document["securityLabel"][1]["coding"][0]["code"] = "MASQUE_PT"  # in TRE_A07, not in JDV_J58
    issue = only_error(outcome(document, deposit=True))
    assert (issue["code"], issue["expression"]) == (
        "code-invalid",
        ["DocumentReference.securityLabel[1]"],
    )


def test_dmp_document_reference_format_binding_on_nested_coding():
    document = dmp_document()
    document["content"][0]["format"]["code"] = "urn:example:unknown"
    issue = only_error(outcome(document, deposit=True))
    assert (issue["code"], issue["expression"]) == (
        "code-invalid",
        ["DocumentReference.content[0].format"],
    )


def test_dmp_audit_event_type_binding_when_claimed():
    event = audit_event()
    event["type"] = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "999999"}
    issue = only_error(outcome(event))
    assert (issue["code"], issue["expression"]) == ("code-invalid", ["AuditEvent.type"])


# --------------------------------------------------------------------------- slices


def test_dmp_document_reference_identifier_slice_entry_uuid_by_system():
    document = dmp_document()
    document["identifier"] = [{"system": "urn:oid:1.2.3", "value": "42"}]
    issue = only_error(outcome(document, deposit=True))
    assert issue["code"] == "required"
    assert issue["expression"] == ["DocumentReference.identifier"]
    assert "slice entryUUID" in issue["diagnostics"]


def test_dmp_document_reference_entry_uuid_must_be_a_urn_uuid():
    document = dmp_document()
    document["identifier"][0]["value"] = "urn:oid:1.2.3.4"
    issue = only_error(outcome(document, deposit=True))
    assert (issue["code"], issue["expression"]) == (
        "invariant",
        ["DocumentReference.identifier[0].value"],
    )


def test_dmp_patient_ins_slice_ins_nir_max_1():
    patient = dmp_patient()
    patient["identifier"].append({"system": INS_NIR, "value": valid_nir("1550375120005")})
    issue = only_error(outcome(patient))
    assert (issue["code"], issue["expression"]) == ("structure", ["Patient.identifier"])
    assert "INS-NIR" in issue["diagnostics"]


def test_dmp_patient_without_an_ins_identifier_is_rejected():
    patient = dmp_patient()
    patient["identifier"] = [{"system": "urn:oid:1.2.250.1.71.4.2.2.99", "value": "IPP-42"}]
    issue = only_error(outcome(patient))
    assert (issue["code"], issue["expression"]) == ("invariant", ["Patient.identifier"])


def test_dmp_submission_set_extension_slice_source_id_by_url():
    lst = submission_set()
    lst["extension"] = [e for e in lst["extension"] if not e["url"].endswith("ihe-sourceId")]
    issue = only_error(outcome(lst))
    assert (issue["code"], issue["expression"]) == ("required", ["List.extension"])
    assert "sourceId" in issue["diagnostics"]


def test_dmp_submission_set_source_id_value_required():
    lst = submission_set()
    source = next(e for e in lst["extension"] if e["url"].endswith("ihe-sourceId"))
    del source["valueIdentifier"]
    source["extension"] = [{"url": "x", "valueString": "y"}]  # keep the extension non-empty
    issue = only_error(outcome(lst))
    assert issue["code"] == "required"
    assert issue["expression"] == [f"List.extension[{lst['extension'].index(source)}].value"]


# --------------------------------------------------------------------------- invariants


@settings(max_examples=60, deadline=None)
@given(
    sex=st.sampled_from("12"),
    digits=st.from_regex(r"\A[0-9]{4}(?:[0-9]{2}|2[AB])[0-9]{6}\Z"),
    delta=st.integers(min_value=1, max_value=96),
)
def test_dmp_patient_ins_key_invariant(sex, digits, delta):
    nir13 = sex + digits
    key = nir_key(nir13)
    patient = dmp_patient()
    patient["identifier"] = [
        {"system": "urn:oid:1.2.3", "value": "IPP-1"},
        {"system": INS_NIR, "value": f"{nir13}{key:02d}"},
    ]
    registry = default_registry()
    assert registry.validate(patient) == []
    wrong = (key + delta - 1) % 97 + 1
    patient["identifier"][1]["value"] = f"{nir13}{wrong:02d}"
    issues = registry.validate(patient)
    assert [(i.code, i.expression) for i in issues] == [
        ("invariant", ("Patient.identifier[1].value",))
    ]
    assert f"expected {key:02d}" in issues[0].diagnostics


def test_dmp_document_reference_hash_is_a_sha1_digest():
    document = dmp_document()
    document["content"][0]["attachment"]["hash"] = "2jmj7l5rSw0yVb/vlWAYkK/YBwk2jmj7"  # 24 bytes
    issue = only_error(outcome(document, deposit=True))
    assert issue["code"] == "invariant"
    assert issue["expression"] == ["DocumentReference.content[0].attachment.hash"]


def test_dmp_document_reference_exactly_one_hl7_confidentiality():
    document = dmp_document()
    document["securityLabel"] = [
        {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": "MASQUE_PS"}]}
    ]
    issue = only_error(outcome(document, deposit=True))
    assert (issue["code"], issue["expression"]) == (
        "invariant",
        ["DocumentReference.securityLabel"],
    )


def test_dmp_document_reference_subject_must_reference_a_patient():
    document = dmp_document()
    document["subject"] = {"reference": "Practitioner/p1"}
    issue = only_error(outcome(document, deposit=True))
    assert (issue["code"], issue["expression"]) == ("value", ["DocumentReference.subject"])


def test_invariant_without_python_implementation_runs_its_fhirpath_expression():
    sd = {
        "resourceType": "StructureDefinition",
        "url": "https://dmp-server.fr/fhir/StructureDefinition/test-birthdate",
        "name": "TestBirthDate",
        "kind": "resource",
        "type": "Patient",
        "derivation": "constraint",
        "differential": {
            "element": [
                {
                    "id": "Patient",
                    "path": "Patient",
                    "constraint": [
                        {
                            "key": "test-1",
                            "severity": "error",
                            "human": "born in this century",
                            "expression": "birthDate >= @2000-01-01",
                        }
                    ],
                }
            ]
        },
    }
    registry = ProfileRegistry([sd], [], [])
    assert (
        registry.validate({"resourceType": "Patient", "birthDate": "2001-02-03"}, sd["url"]) == []
    )
    issues = registry.validate({"resourceType": "Patient", "birthDate": "1999-02-03"}, sd["url"])
    assert [(i.code, i.expression) for i in issues] == [("invariant", ("Patient",))]


# --------------------------------------------------------------------------- Consent shapes


@pytest.mark.parametrize(
    "exception",
    [
        practitioner_exception("deny"),
        practitioner_exception("permit"),
        purpose_exception("BTG"),
        purpose_exception("ETREAT"),
    ],
    ids=["block-practitioner", "authorize-practitioner", "oppose-btg", "oppose-centre-15"],
)
def test_dmp_consent_shapes_of_the_access_rules_are_accepted(exception):
    assert errors(outcome(dmp_consent(exception))) == []


def test_dmp_consent_actor_must_be_identified_by_idnat_ps():
    exception = practitioner_exception("deny")
    exception["actor"][0]["reference"] = {"identifier": {"system": "urn:oid:1.2.3", "value": "7"}}
    issue = only_error(outcome(dmp_consent(exception)))
    assert issue["code"] == "value"
    assert issue["expression"] == ["Consent.provision.provision[0].actor[0].reference.identifier"]


def test_dmp_consent_actor_role_must_be_ircp():
    exception = practitioner_exception("deny")
    exception["actor"][0]["role"]["coding"][0]["code"] = "PRCP"
    issue = only_error(outcome(dmp_consent(exception)))
    assert issue["expression"] == ["Consent.provision.provision[0].actor[0].role"]


def test_dmp_consent_purpose_other_than_btg_or_etreat_is_code_invalid():
    issue = only_error(outcome(dmp_consent(purpose_exception("TREAT"))))
    assert issue["code"] == "code-invalid"
    assert issue["expression"] == ["Consent.provision.provision[0].purpose[0]"]


def test_dmp_consent_opposing_a_purpose_must_deny():
    issue = only_error(outcome(dmp_consent(purpose_exception("BTG", kind="permit"))))
    assert (issue["code"], issue["expression"]) == (
        "invariant",
        ["Consent.provision.provision[0].type"],
    )


def test_dmp_consent_exception_with_actor_and_purpose_or_data_is_not_interpretable():
    both = practitioner_exception("deny")
    both["purpose"] = purpose_exception("BTG")["purpose"]
    assert expressions(outcome(dmp_consent(both))) == ["Consent.provision.provision[0]"]
    with_data = practitioner_exception("deny")
    with_data["data"] = [
        {"meaning": "instance", "reference": {"reference": "DocumentReference/d1"}}
    ]
    assert expressions(outcome(dmp_consent(with_data))) == ["Consent.provision.provision[0].data"]


def test_dmp_consent_root_provision_with_actor_is_rejected():
    consent = dmp_consent()
    consent["provision"]["actor"] = practitioner_exception("deny")["actor"]
    issue = only_error(outcome(consent))
    assert (issue["code"], issue["expression"]) == ("structure", ["Consent.provision.actor"])


# --------------------------------------------------------------------------- which profiles


def test_default_profiles_patient_and_consent_always(registry):
    assert registry.default_profiles("Patient") == [DMP_PATIENT_INS]
    assert registry.default_profiles("Consent") == [DMP_CONSENT]
    assert registry.default_profiles("DocumentReference") == []
    assert registry.default_profiles("AuditEvent") == []


def test_dmp_document_reference_profile_on_deposit_or_claim_only(registry):
    document = dmp_document()
    del document["meta"]
    assert registry.profiles_for(document) == []
    assert registry.profiles_for(document, deposit=True) == [DMP_DOCUMENT_REFERENCE]
    document["meta"] = {"profile": [DMP_DOCUMENT_REFERENCE + "|0.1.0"]}
    assert registry.profiles_for(document) == [DMP_DOCUMENT_REFERENCE]
    pdsm = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
    document["meta"] = {"profile": [pdsm + "pdsm-comprehensive-document-reference"]}
    assert registry.profiles_for(document) == [DMP_DOCUMENT_REFERENCE]


def test_submission_set_profile_applies_to_lists_coded_submissionset(registry):
    lst = submission_set()
    del lst["meta"]
    assert registry.profiles_for(lst) == [DMP_SUBMISSION_SET]
    lst["code"]["coding"][0]["code"] = "folder"
    assert registry.profiles_for(lst) == []


# --------------------------------------------------------------------------- $validate


def test_validate_operation_combines_model_and_profile_issues():
    patient = dmp_patient()
    patient["birthDate"] = "12/07/1984"  # structural: not a FHIR date
    del patient["gender"]
    found = expressions(outcome(patient))
    assert "Patient.birthDate" in found and "Patient.gender" in found


def test_validate_operation_unknown_profile_is_not_supported():
    oo = outcome(dmp_patient(), profile="https://example.org/StructureDefinition/other")
    issue = only_error(oo)
    assert (issue["code"], issue["expression"]) == ("not-supported", ["profile"])


def test_validate_operation_profile_of_another_type_is_invalid():
    issue = only_error(outcome(dmp_patient(), profile=DMP_CONSENT))
    assert (issue["code"], issue["expression"]) == ("invalid", ["profile"])


def test_validate_operation_profile_parameter_enforces_the_dmp_document_reference():
    document = dmp_document()
    del document["meta"]
    del document["authenticator"]
    assert errors(outcome(document)) == []
    issue = only_error(outcome(document, profile=DMP_DOCUMENT_REFERENCE))
    assert issue["expression"] == ["DocumentReference.authenticator"]


def test_validate_operation_mode_update_needs_an_id():
    patient = dmp_patient()
    issue = only_error(outcome(patient, mode="update"))
    assert (issue["code"], issue["expression"]) == ("required", ["Patient.id"])
    patient["id"] = "p1"
    assert errors(outcome(patient, mode="update")) == []


def test_validate_operation_unknown_mode_is_a_bad_request():
    with pytest.raises(FhirError) as raised:
        outcome(dmp_patient(), mode="replace")
    assert raised.value.status == 400
    assert raised.value.issues[0].expression == ("mode",)


# --------------------------------------------------------------------------- conformance


def test_structure_definitions_are_r4_constraints_on_our_canonical_base(registry):
    sds = registry.structure_definitions()
    assert {sd["url"] for sd in sds} == {
        DMP_DOCUMENT_REFERENCE,
        DMP_SUBMISSION_SET,
        DMP_PATIENT_INS,
        DMP_CONSENT,
        DMP_AUDIT_EVENT,
    }
    for sd in sds:
        assert sd["fhirVersion"] == "4.0.1" and sd["kind"] == "resource"
        assert sd["derivation"] == "constraint"
        assert sd["baseDefinition"] == f"http://hl7.org/fhir/StructureDefinition/{sd['type']}"
        assert sd["url"].endswith("/" + sd["id"])
        for element in sd["differential"]["element"]:
            assert element["path"] == ".".join(p.split(":")[0] for p in element["id"].split("."))
            binding = element.get("binding")
            if binding:
                assert binding["strength"] == "required"
                assert binding["valueSet"] in registry.expansions
        model_class("StructureDefinition").model_validate(sd)  # raises when malformed


def test_terminology_subsets_say_so_and_where_the_codes_come_from(registry):
    """Ours say they are transcribed, and from what; the official NOS files (published by the
    ANS, brought in unmodified) are each accounted for in nos/SOURCE.md."""
    source = (PROFILES_DIR / "terminology" / "nos" / "SOURCE.md").read_text(encoding="utf-8")
    for resource in registry.terminology():
        if resource.get("publisher") == "ANS":
            assert f"`{resource['resourceType']}-{resource['id']}.json`" in source
            continue
        description = resource["description"]
        assert "transcribed" in description, resource["url"]
        assert any(word in description for word in ("ANS", "HL7", "IHE", "DICOM")), resource["url"]


def test_structure_definitions_returns_copies(registry):
    registry.structure_definitions()[0]["url"] = "changed"
    assert registry.structure_definitions()[0]["url"] != "changed"
