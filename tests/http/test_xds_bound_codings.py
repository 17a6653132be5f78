"""ITI-18 (LeafClass) names a document's codes by the value set the DMP binds (R13, R14).

The access rules judge a document by the coding of its DMP value set wherever it stands in
the CodeableConcept: the JDV_J66 type, the JDV_J57 class (in any category), the JDV_J58
confidentiality. The XDS mapping (`ihe_xds.mapping.from_fhir`) read the first coding only:
a document deposited by REST with type `[SNOMED X, LOINC 34133-9]` was found by ITI-18
FindDocuments by the LOINC typeCode (a FHIR token search reads every coding) but its
LeafClass named the typeCode SNOMED X, which the DMP does not have: one fact read two ways.
"""

from __future__ import annotations

import pytest
from lxml import etree

from ihe_xds import vocabulary as v
from ihe_xds.stored_query import FIND_DOCUMENTS
from tests.dmp_codes import LOINC, TYPE_OF_CLASS
from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_xds_endpoints import GP, Xds
from tests.http.test_xds_stored_queries import APPROVED, RIM, ask
from tests.support.documents import dmp_document
from tests.xds_builders import patient_cx

SNOMED = "http://snomed.info/sct"
CLASS_OID = "1.2.250.1.213.1.1.4.1"  # TRE_A03
LOINC_OID = "2.16.840.1.113883.6.1"
_, SYNTHESIS = TYPE_OF_CLASS["11"]  # LOINC 34133-9, a J66 type of the TRE_A03 class 11


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


def _deposit_by_rest(xds: Xds, patient_id: str, **changes) -> str:
    """A DMP document (class 11, type 34133-9) the médecin traitant deposits by REST, with
    `changes` to its elements; its masterIdentifier (the XDS uniqueId)."""
    document = dmp_document(patient_id, class_code="11", **changes)
    response = xds.client.post(
        "/fhir/DocumentReference",
        json=document,
        headers=auth(xds.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return document["masterIdentifier"]["value"]


def _entries(objects: etree._Element) -> list[etree._Element]:
    return objects.findall(f"{RIM}ExtrinsicObject")


def _codes(entry: etree._Element, scheme: str) -> list[tuple[str, str | None]]:
    """(code, codingScheme) of the entry's classifications of `scheme`."""
    found = []
    for classification in entry.findall(f"{RIM}Classification"):
        if classification.get("classificationScheme") != scheme:
            continue
        values = classification.findall(f"{RIM}Slot[@name='codingScheme']//{RIM}Value")
        found.append((classification.get("nodeRepresentation"), values[0].text if values else None))
    return found


def _find(xds: Xds, nir: str, *slots: tuple[str, str]) -> list[etree._Element]:
    find = [("$XDSDocumentEntryPatientId", f"'{patient_cx(nir)}'")]
    find += [("$XDSDocumentEntryStatus", APPROVED), *slots]
    return _entries(ask(xds, nir, FIND_DOCUMENTS, find))


def test_iti18_by_the_j66_type_finds_a_two_coding_type_and_names_the_j66_coding(xds):
    """Type `[SNOMED, LOINC 34133-9]`: FindDocuments by typeCode 34133-9 finds it, and its
    LeafClass typeCode is 34133-9 (LOINC), the coding R13 reads, not the SNOMED one."""
    patient_id, nir = xds.patient(71)
    kind = {
        "coding": [{"system": SNOMED, "code": "371531000"}, {"system": LOINC, "code": SYNTHESIS}]
    }
    _deposit_by_rest(xds, patient_id, type=kind)

    (entry,) = _find(xds, nir, ("$XDSDocumentEntryTypeCode", f"('{SYNTHESIS}^^{LOINC_OID}')"))
    assert _codes(entry, v.DE_TYPE_CODE) == [(SYNTHESIS, LOINC_OID)]


def test_iti18_by_the_j57_class_finds_a_two_coding_class_and_names_the_j57_coding(xds):
    """Category `[SNOMED, TRE_A03 11]`: FindDocuments by classCode 11 finds it, and its
    LeafClass classCode is 11 (TRE_A03), the class R13 reads, not the SNOMED coding."""
    patient_id, nir = xds.patient(72)
    categories = [
        {
            "coding": [
                {"system": SNOMED, "code": "371531000"},
                {"system": f"urn:oid:{CLASS_OID}", "code": "11"},
            ]
        }
    ]
    _deposit_by_rest(xds, patient_id, category=categories)

    (entry,) = _find(xds, nir, ("$XDSDocumentEntryClassCode", f"('11^^{CLASS_OID}')"))
    assert _codes(entry, v.DE_CLASS_CODE) == [("11", CLASS_OID)]


def test_iti18_single_coding_document_keeps_its_codes(xds):
    """A document of one coding each (the usual case) answers as before."""
    patient_id, nir = xds.patient(73)
    _deposit_by_rest(xds, patient_id)

    (entry,) = _find(xds, nir)
    assert _codes(entry, v.DE_TYPE_CODE) == [(SYNTHESIS, LOINC_OID)]
    assert _codes(entry, v.DE_CLASS_CODE) == [("11", CLASS_OID)]
    assert _codes(entry, v.DE_CONFIDENTIALITY_CODE) == [("N", "2.16.840.1.113883.5.25")]


def test_iti18_confidentiality_names_the_j58_coding_of_a_two_coding_label(xds):
    """Label `[other system, HL7 N]`: the LeafClass confidentialityCode is N, the J58 label
    R14 reads, not the other coding."""
    patient_id, nir = xds.patient(74)
    labels = [
        {
            "coding": [
                {"system": SNOMED, "code": "371531000"},
                {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"},
            ]
        }
    ]
    _deposit_by_rest(xds, patient_id, securityLabel=labels)

    (entry,) = _find(
        xds, nir, ("$XDSDocumentEntryConfidentialityCode", "('N^^2.16.840.1.113883.5.25')")
    )
    assert _codes(entry, v.DE_CONFIDENTIALITY_CODE) == [("N", "2.16.840.1.113883.5.25")]
