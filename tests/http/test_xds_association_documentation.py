"""Association Documentation over HTTP (ITI TF-3 4.2.2.2; NIST XDS toolkit test 12370).

A replacement (RPLC) labelled with an Association Documentation Classification (scheme
urn:uuid:abd807a3-4432-4053-87b4-fd82c643d1f3) is accepted, and the label comes back with
the RPLC Association from the ITI-18 queries that return it: GetAssociations (the toolkit's
12370 query step) and GetRelatedDocuments (GetSubmissionSetAndContents answers the
SubmissionSet's HasMember Associations only, which may carry no label). The same label on a
HasMember is refused (12370 not_configured) and nothing is stored. Before issue #19 the
first was silently dropped and the second accepted.
"""

from __future__ import annotations

import pytest
from lxml import etree

from ihe_xds import vocabulary as v
from ihe_xds.stored_query import (
    GET_ASSOCIATIONS,
    GET_RELATED_DOCUMENTS,
)
from tests.http.test_xds_endpoints import GP, Xds, envelope_of, registry_status
from tests.http.test_xds_stored_queries import ask, entry_uuids
from tests.xds_builders import build_iti41
from tests.xds_metadata_builders import RIM, edited, slot

DOCUMENTATION = v.ASSOCIATION_DOCUMENTATION
CODING_SCHEME = "1.3.6.1.4.1.21367.2017.3"


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


def _labelled(association_id: str):
    """An edit adding to Association `association_id` the Classification 12370 sends."""

    def edit(root: etree._Element) -> None:
        association = next(
            a for a in root.iter(f"{RIM}Association") if a.get("id") == association_id
        )
        element = etree.SubElement(
            association,
            f"{RIM}Classification",
            id="cl-doc",
            classifiedObject=association_id,
            classificationScheme=DOCUMENTATION,
            nodeRepresentation="Additional_Information",
        )
        name = etree.SubElement(element, f"{RIM}Name")
        etree.SubElement(name, f"{RIM}LocalizedString", value="Additional Information")
        slot(element, "codingScheme", CODING_SCHEME)

    return edit


def _post(api: Xds, nir: str, edit=None, **kwargs):
    request = build_iti41(nir=nir, mtom=False, security=api.security(GP, nir), **kwargs)
    if edit is not None:
        request = edited(request, edit)
    response = api.client.post(
        "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
    )
    return request, response


def _labels(objects: etree._Element) -> list[tuple]:
    """(associationType, scheme, code, codingScheme, display) of each Association's
    Classifications in an ITI-18 answer."""
    found = []
    for association in objects.findall(f"{RIM}Association"):
        for c in association.findall(f"{RIM}Classification"):
            found.append(
                (
                    association.get("associationType"),
                    c.get("classificationScheme"),
                    c.get("classifiedObject") == association.get("id"),
                    c.get("nodeRepresentation"),
                    c.findtext(f"{RIM}Slot[@name='codingScheme']/{RIM}ValueList/{RIM}Value"),
                    c.find(f"{RIM}Name/{RIM}LocalizedString").get("value"),
                )
            )
    return found


EXPECTED = [
    (
        v.ASSOC_RPLC,
        DOCUMENTATION,
        True,
        "Additional_Information",
        CODING_SCHEME,
        "Additional Information",
    )
]


def test_a_labelled_replacement_comes_back_labelled_from_iti18(xds):
    """ITI TF-3 4.2.2.2 (NIST 12370 submit, rplc, query): stored and returned by
    GetAssociations and GetRelatedDocuments (LeafClass)."""
    _, nir = xds.patient(391)
    first, response = _post(xds, nir)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    original = entry_uuids(xds, nir, first)["Document01"]
    second, response = _post(xds, nir, _labelled("as-rplc"), replaces=original)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:2000]
    replacement = entry_uuids(xds, nir, second)["Document01"]

    by_associations = ask(xds, nir, GET_ASSOCIATIONS, [("$uuid", f"('{replacement}')")])
    assert _labels(by_associations) == EXPECTED
    related = ask(
        xds,
        nir,
        GET_RELATED_DOCUMENTS,
        [
            ("$XDSDocumentEntryEntryUUID", f"'{replacement}'"),
            ("$AssociationTypes", f"('{v.ASSOC_RPLC}')"),
        ],
    )
    assert _labels(related) == EXPECTED


def test_a_labelled_has_member_is_refused_and_nothing_is_stored(xds):
    """ITI TF-3 4.2.2.2 (NIST 12370 not_configured, expected Failure): XDSRegistryMetadataError
    naming the HasMember Association and the scheme; no document is findable afterwards."""
    _, nir = xds.patient(392)
    _, response = _post(xds, nir, _labelled("as01"))
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSRegistryMetadataError"])
    root, _ = envelope_of(response)
    (error,) = root.iter(f"{{{v.NS_RS}}}RegistryError")
    assert error.get("location") == f"Association as01 Classification {DOCUMENTATION}"
    assert "HasMember" in error.get("codeContext")
    found, _ = envelope_of(xds.find_documents(nir))
    assert list(found.iter(f"{RIM}ExtrinsicObject")) == []
