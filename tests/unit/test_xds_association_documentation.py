"""Association Documentation (ITI TF-3 4.2.2.2): refused where XDS forbids it, kept where not.

A document relationship (RPLC, APND, XFRM, XFRM_RPLC, signs) may carry a Classification of
scheme urn:uuid:abd807a3-4432-4053-87b4-fd82c643d1f3 giving the reason for the relationship;
a HasMember may not (NIST toolkit test 12370, "not_configured"), and XDS defines no other
Classification on an Association. Before issue #19 the Classifications of an Association
were not read at all: a forbidden one was accepted, an allowed one silently lost.
"""

from __future__ import annotations

import pytest
from lxml import etree

from ihe_xds import vocabulary as v
from ihe_xds.association_documentation import EXT_ASSOCIATION_DOCUMENTATION
from ihe_xds.ebrim import association_to_element, parse_submission
from ihe_xds.errors import XDS_REGISTRY_METADATA_ERROR
from ihe_xds.mapping import associations_from_fhir, submission_to_fhir
from ihe_xds.soap import read_envelope
from ihe_xds.validation import DMP_PROFILE, validate_submission
from tests.xds_builders import REPOSITORY_UNIQUE_ID, build_iti41
from tests.xds_metadata_builders import RIM, edited, slot

TARGET = "urn:uuid:0b2a6c1e-8b0f-4d5e-9f3a-1c2d3e4f5a6b"
DOCUMENTATION = v.ASSOCIATION_DOCUMENTATION
CODING_SCHEME = "1.3.6.1.4.1.21367.2017.3"


def _label(
    parent: etree._Element,
    classified: str,
    *,
    scheme: str = DOCUMENTATION,
    code: str = "Additional_Information",
    coding_scheme: str | None = CODING_SCHEME,
) -> None:
    """A Classification as the toolkit's 12370 writes it, under `parent`."""
    element = etree.SubElement(
        parent,
        f"{RIM}Classification",
        id=f"cl-{classified}-{code}",
        classifiedObject=classified,
        classificationScheme=scheme,
        nodeRepresentation=code,
    )
    etree.SubElement(etree.SubElement(element, f"{RIM}Name"), f"{RIM}LocalizedString").set(
        "value", code.replace("_", " ")
    )
    if coding_scheme:
        slot(element, "codingScheme", coding_scheme)


def _association(root: etree._Element, association_id: str) -> etree._Element:
    return next(a for a in root.iter(f"{RIM}Association") if a.get("id") == association_id)


def _submission(replaces: str | None, edit):
    request = edited(build_iti41(mtom=False, replaces=replaces), edit)
    return parse_submission(read_envelope(request.envelope).body)


def _errors(submission) -> list[tuple[str, str]]:
    return [(e.error_code, e.location) for e in validate_submission(submission, DMP_PROFILE)]


def _mapped(submission):
    result = submission_to_fhir(
        submission,
        submission.documents,
        repository_unique_id=REPOSITORY_UNIQUE_ID,
        resolve_patient=lambda oid, value: "patient-1",
    )
    assert result.errors == []
    return result


def test_association_documentation_on_a_has_member_is_refused_naming_it():
    """ITI TF-3 4.2.2.2 (NIST 12370 not_configured: expected Failure): Association
    Documentation labels document relationships only; on the HasMember it is a metadata error
    naming the Association and the scheme."""
    submission = _submission(None, lambda root: _label(_association(root, "as01"), "as01"))
    errors = validate_submission(submission, DMP_PROFILE)
    assert [(e.error_code, e.location) for e in errors] == [
        (XDS_REGISTRY_METADATA_ERROR, f"Association as01 Classification {DOCUMENTATION}")
    ]
    assert "HasMember" in errors[0].code_context
    assert "document relationships" in errors[0].code_context


def test_a_classification_of_another_scheme_on_an_association_is_refused():
    """ITI TF-3 4.2.2.2 defines one Classification on an Association; any other scheme (here
    a DocumentEntry classCode) would be read and dropped, so it is refused by name."""
    submission = _submission(
        TARGET,
        lambda root: _label(_association(root, "as-rplc"), "as-rplc", scheme=v.DE_CLASS_CODE),
    )
    assert _errors(submission) == [
        (XDS_REGISTRY_METADATA_ERROR, f"Association as-rplc Classification {v.DE_CLASS_CODE}")
    ]


def test_association_documentation_without_coding_scheme_is_refused():
    """ITI TF-3 4.2.2.2 / 4.2.3.1.2: a coded Classification carries its codingScheme Slot."""
    submission = _submission(
        TARGET,
        lambda root: _label(_association(root, "as-rplc"), "as-rplc", coding_scheme=None),
    )
    assert _errors(submission) == [
        (XDS_REGISTRY_METADATA_ERROR, f"Association as-rplc Classification {DOCUMENTATION}")
    ]


@pytest.mark.parametrize("loose", [False, True], ids=["nested", "loose"])
def test_association_documentation_on_a_replacement_is_read_and_accepted(loose):
    """ITI TF-3 4.2.2.2 (NIST 12370 rplc): allowed on an RPLC, nested in the Association or
    loose in the RegistryObjectList naming it as classifiedObject (ebRIM 3.0)."""

    def label(root):
        parent = next(root.iter(f"{RIM}RegistryObjectList")) if loose else None
        _label(parent if loose else _association(root, "as-rplc"), "as-rplc")

    submission = _submission(TARGET, label)
    assert _errors(submission) == []
    (rplc,) = [a for a in submission.associations if a.type == v.ASSOC_RPLC]
    assert [
        (c.scheme, c.coded.code, c.coded.scheme, c.coded.display) for c in rplc.classifications
    ] == [(DOCUMENTATION, "Additional_Information", CODING_SCHEME, "Additional Information")]


def test_association_documentation_is_stored_on_relates_to_and_given_back_to_iti18():
    """ITI TF-3 4.2.2.2 (NIST 12370 query): stored with the relationship (an extension on
    DocumentReference.relatesTo) and written again, same scheme, code, codingScheme and
    display, in the Association an ITI-18 answer carries."""
    submission = _submission(TARGET, lambda root: _label(_association(root, "as-rplc"), "as-rplc"))
    (doc,) = _mapped(submission).document_references
    (relation,) = doc["relatesTo"]
    assert relation["code"] == "replaces"
    assert relation["extension"] == [
        {
            "url": EXT_ASSOCIATION_DOCUMENTATION,
            "valueCoding": {
                "system": f"urn:oid:{CODING_SCHEME}",
                "code": "Additional_Information",
                "display": "Additional Information",
            },
        }
    ]
    (rebuilt,) = [a for a in associations_from_fhir([], [doc]) if a.type == v.ASSOC_RPLC]
    element = association_to_element(rebuilt)
    (classification,) = element.findall(f"{RIM}Classification")
    assert classification.get("classificationScheme") == DOCUMENTATION
    assert classification.get("classifiedObject") == rebuilt.id
    assert classification.get("nodeRepresentation") == "Additional_Information"
    assert classification.findtext(f"{RIM}Slot/{RIM}ValueList/{RIM}Value") == CODING_SCHEME
    assert (
        classification.find(f"{RIM}Name/{RIM}LocalizedString").get("value")
        == "Additional Information"
    )


def test_an_xfrm_rplc_keeps_its_documentation_once():
    """ITI TF-3 4.2.2.2: an XFRM_RPLC becomes two relatesTo (transforms, replaces), both
    labelled; folded back into one Association carrying the Classification once."""

    def xfrm_rplc(root):
        association = _association(root, "as-rplc")
        association.set("associationType", v.ASSOC_XFRM_RPLC)
        _label(association, "as-rplc", code="Corrected_Information")

    submission = _submission(TARGET, xfrm_rplc)
    assert _errors(submission) == []
    (doc,) = _mapped(submission).document_references
    assert [r["code"] for r in doc["relatesTo"]] == ["transforms", "replaces"]
    assert all(
        r["extension"][0]["valueCoding"]["code"] == "Corrected_Information"
        for r in doc["relatesTo"]
    )
    (rebuilt,) = associations_from_fhir([], [doc])
    assert rebuilt.type == v.ASSOC_XFRM_RPLC
    assert [c.coded.code for c in rebuilt.classifications] == ["Corrected_Information"]
