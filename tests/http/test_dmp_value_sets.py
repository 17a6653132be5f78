"""The DMP value sets on every door that deposits a document (issue #20, deliverable 5).

JDV_J58 admits three of TRE_A07's five codes (MASQUE_PSOCIAL and MASQUE_PT are refused), the
type is in JDV_J66, and the type and the class agree per ASS_X16 (profiles/terminology/nos/).
A deposit breaking one of them is refused, naming the code and the value set, the same
through REST, MHD ITI-65 and XDS ITI-41, and nothing of it is stored.
"""

from __future__ import annotations

import copy

import pytest
from lxml import etree

from ihe_xds import vocabulary as v
from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_mhd import SUBMISSION, Mhd, fixture
from tests.http.test_xds_endpoints import Xds
from tests.http.test_xds_error_codes import assert_failure, deposit_mutated
from tests.support.documents import dmp_document, with_submission_set_unique_id

LOINC = "http://loinc.org"
A07 = "urn:oid:1.2.250.1.213.1.1.4.13"

# (what is wrong, change to the document, the words the refusal must hold)
CASES = {
    "masque-psocial": (
        {"securityLabel": [{"coding": [{"system": A07, "code": "MASQUE_PSOCIAL"}]}]},
        ("MASQUE_PSOCIAL", "JDV_J58-ConfidentialityCode-DMP"),
    ),
    "type-outside-j66": (
        {"type": {"coding": [{"system": LOINC, "code": "51851-4"}]}},  # LOINC, not the DMP's
        ("51851-4", "JDV_J66-TypeCode-DMP"),
    ),
    "type-class-mismatch": (
        # an imaging report (ASS_X16: class 31) filed as a compte rendu (class 10)
        {"type": {"coding": [{"system": LOINC, "code": "18748-4"}]}},
        ("18748-4", " 10", "ASS_X16-CorrespondanceType-Classe-DMP"),
    ),
}
# The XDS spelling of the same changes: (classification scheme, code, codingScheme).
XDS_CASES = {
    "masque-psocial": (v.DE_CONFIDENTIALITY_CODE, "MASQUE_PSOCIAL", "1.2.250.1.213.1.1.4.13"),
    "type-outside-j66": (v.DE_TYPE_CODE, "51851-4", "2.16.840.1.113883.6.1"),
    "type-class-mismatch": (v.DE_TYPE_CODE, "18748-4", "2.16.840.1.113883.6.1"),
}


@pytest.fixture
def mhd(client, tokens):
    return Mhd(client, tokens)


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


def diagnostics(response) -> str:
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return " | ".join(issue.get("diagnostics", "") for issue in outcome["issue"])


def a_document(patient_id: str) -> dict:
    """A valid DMP compte rendu (type 11488-4, class 10: a pair ASS_X16 admits), labelled N,
    its bytes inline: every other element as the one document model requires (#19)."""
    return dmp_document(patient_id, class_code="10")


def changed(document: dict, change: dict) -> dict:
    out = copy.deepcopy(document)
    if "securityLabel" in change:
        out["securityLabel"] = out.get("securityLabel", []) + change["securityLabel"]
    if "type" in change:
        out["type"] = change["type"]
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_rest_write_outside_the_dmp_value_sets_is_422_naming_code_and_value_set(mhd, case):
    change, words = CASES[case]
    patient_id, _ = mhd.patient(40 + sorted(CASES).index(case))
    headers = auth(mhd.ps, **{"Content-Type": FHIR_JSON})
    valid = mhd.client.post("/fhir/DocumentReference", json=a_document(patient_id), headers=headers)
    assert valid.status_code == 201, valid.get_data(as_text=True)
    response = mhd.client.post(
        "/fhir/DocumentReference", json=changed(a_document(patient_id), change), headers=headers
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    text = diagnostics(response)
    assert all(word in text for word in words), text
    assert len(mhd.ids("DocumentReference", {"patient": patient_id})) == 1  # only the valid one


def iti65_bundle(nir: str, change: dict) -> dict:
    """The PDSm4DMP submission with a class its type admits (10: the published example files
    the Consult note 11488-4 under class 11, which ASS_X16 refuses), then `change`."""
    bundle = fixture(SUBMISSION, nir)
    document = bundle["entry"][1]["resource"]
    document["category"][0]["coding"][0]["code"] = "10"
    document.update(changed(document, change))
    return bundle


@pytest.mark.parametrize("case", sorted(CASES))
def test_iti65_deposit_outside_the_dmp_value_sets_is_refused_naming_code_and_value_set(mhd, case):
    change, words = CASES[case]
    patient_id, nir = mhd.patient(50 + sorted(CASES).index(case))
    response = mhd.provide(iti65_bundle(nir, change))
    assert response.status_code == 422, response.get_data(as_text=True)
    text = diagnostics(response)
    assert all(word in text for word in words), text
    assert mhd.ids("DocumentReference", {"patient": patient_id}) == set()
    assert mhd.provide(iti65_bundle(nir, {})).status_code == 200  # the same, within the sets


@pytest.mark.parametrize("case", sorted(XDS_CASES))
def test_iti41_deposit_outside_the_dmp_value_sets_is_xdsregistrymetadataerror(xds, case):
    scheme, code, coding_scheme = XDS_CASES[case]
    _, words = CASES[case]
    patient_id, nir = xds.patient(60 + sorted(XDS_CASES).index(case))

    def mutate(root: etree._Element) -> None:
        for classification in root.iter(f"{{{v.NS_RIM}}}Classification"):
            if classification.get("classificationScheme") != scheme:
                continue
            classification.set("nodeRepresentation", code)
            for slot in classification.iter(f"{{{v.NS_RIM}}}Slot"):
                if slot.get("name") == "codingScheme":
                    slot.find(f".//{{{v.NS_RIM}}}Value").text = coding_scheme
            break  # the first of the scheme: the document's (N stays for masque-psocial)

    if scheme == v.DE_CONFIDENTIALITY_CODE:
        _, response = deposit_mutated(xds, nir, lambda root: None, masking=(code,))
    else:
        _, response = deposit_mutated(xds, nir, mutate)
    errors = assert_failure(response, "XDSRegistryMetadataError")
    context = " | ".join(e.get("codeContext") for e in errors)
    assert all(word in context for word in words), context
    stored = xds.client.get(
        f"/fhir/DocumentReference?patient={patient_id}", headers=auth(xds.tokens.system())
    ).get_json()
    assert stored.get("total", len(stored.get("entry", []))) == 0


def test_iti65_pdsm4dmp_example_as_published_is_refused_for_its_type_class_pair(mhd):
    """The published PDSm4DMP submission files the Consult note 11488-4 under class 11
    (Synthèse); ASS_X16 files 11488-4 under 10, so the example is refused for that reason
    (tests/dmp_codes.py corrects the class where the example serves as valid data). The
    SubmissionSet uniqueId the example also lacks is given, so the type/class pair is the
    one fault left."""
    patient_id, nir = mhd.patient(70)
    published = with_submission_set_unique_id(fixture(SUBMISSION, nir, as_published=True))
    response = mhd.provide(published)
    assert response.status_code == 422, response.get_data(as_text=True)
    text = diagnostics(response)
    assert "11488-4" in text and "class 11" in text and "ASS_X16" in text, text
    assert mhd.ids("DocumentReference", {"patient": patient_id}) == set()
