"""Attack pass on the XDS.b face: other spellings of the same fact (R14, R18, fail closed).

What got through, each reproduced over HTTP with VIHFs as `fhir-server token` makes them:

- An ITI-41 whose MASQUE_PS confidentialityCode Classification spelled its
  classificationScheme otherwise (the confidentialityCode UUID in capitals, which RFC 4122
  reads as the same UUID, or without its `urn:uuid:`, or with a space) was answered Success
  and stored without the label: the registry dropped a Classification it did not recognize,
  and every authorized professional read the document its author had masked. A
  Classification of a DocumentEntry is now read whatever the case of its UUID, and one the
  registry does not interpret (another scheme, or a loose one naming no object of the
  submission) is refused, not dropped.
- The same parser reads ITI-57: a metadata update by the médecin traitant lifting
  INVISIBLE_PATIENT and keeping MASQUE_PS, the latter's scheme in capitals, was stored with
  the N code alone: the mask was lifted without being asked for.
"""

from __future__ import annotations

import uuid

import pytest
from lxml import etree

from ihe_xds import vocabulary as v
from ihe_xds.stored_query import GET_DOCUMENTS
from tests.http import test_attack_pass_xds as attack
from tests.http.test_attack_pass_xds import AUTHORIZED, entry_uuid, errors, stored
from tests.http.test_xds_endpoints import GP, Xds, envelope_of, registry_status
from tests.http.test_xds_stored_queries import adhoc
from tests.http.test_xds_update_document_set import (
    A07_OID,
    V3_OID,
    confidentiality,
    entry_of,
    metadata_update,
    update,
)
from tests.xds_builders import build_iti41

RIM = f"{{{v.NS_RIM}}}"
OID_TRE_A07 = "1.2.250.1.213.1.1.4.13"

# The record of the first attack pass: GP its médecin traitant, AUTHORIZED permitted, and a
# MASQUE_PS, an INVISIBLE_PATIENT and another record's document of GP.
record = attack.record


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


def deposit_with(api, nir: str, add) -> tuple:
    """An inline ITI-41 by GP (the médecin traitant) of one new document, `add(root)` editing
    its metadata."""
    request = build_iti41(
        nir=nir,
        mtom=False,
        security=api.security(GP, nir),
        documents=[f"<{uuid.uuid4().hex}/>".encode()],
    )
    root = etree.fromstring(request.envelope)
    add(root)
    response = api.client.post(
        "/xds/repository",
        data=etree.tostring(root, xml_declaration=True, encoding="UTF-8"),
        headers={"Content-Type": request.content_type},
    )
    return request, response


def masking(scheme: str, *, parent: str = "entry", classified: str = "Document01"):
    """Adds a MASQUE_PS confidentialityCode under `scheme`, inside the DocumentEntry or loose
    in the RegistryObjectList (`parent`), classifying `classified`."""

    def add(root: etree._Element) -> None:
        holder = (
            root.find(f".//{RIM}ExtrinsicObject[@id='Document01']")
            if parent == "entry"
            else root.find(f".//{RIM}RegistryObjectList")
        )
        element = etree.SubElement(
            holder,
            f"{RIM}Classification",
            id=f"cl-{uuid.uuid4().hex[:8]}",
            classificationScheme=scheme,
            classifiedObject=classified,
            nodeRepresentation="MASQUE_PS",
        )
        slot = etree.SubElement(element, f"{RIM}Slot", name="codingScheme")
        etree.SubElement(
            etree.SubElement(slot, f"{RIM}ValueList"), f"{RIM}Value"
        ).text = OID_TRE_A07
        name = etree.SubElement(element, f"{RIM}Name")
        etree.SubElement(name, f"{RIM}LocalizedString", value="MASQUE_PS")

    return add


def seen_by(api, idnat: str, nir: str, document: dict) -> int:
    """How many DocumentEntries a GetDocuments by the document's entryUUID answers `idnat`."""
    query = adhoc(
        GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", f"('{entry_uuid(document)}')")], "ObjectRef"
    )
    response = api.soap("/xds/registry", v.ACTION_ITI18, query, api.security(idnat, nir))
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:2000]
    root, _ = envelope_of(response)
    return len(root.findall(f".//{RIM}ObjectRef"))


def test_r14_masque_ps_with_its_scheme_uuid_in_capitals_masks_the_document(xds, record):
    """RFC 4122: a UUID's hex digits are case-insensitive on input. The confidentialityCode
    scheme in capitals was dropped and the document stored unmasked: the authorized
    professional read it. It is now the confidentialityCode, and the document masked."""
    nir = record["nir"]
    request, response = deposit_with(xds, nir, masking(v.DE_CONFIDENTIALITY_CODE.upper()))
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), errors(response)
    document = stored(xds, request)
    codes = {c["code"] for label in document["securityLabel"] for c in label["coding"]}
    assert "MASQUE_PS" in codes
    assert seen_by(xds, AUTHORIZED, nir, document) == 0
    assert seen_by(xds, GP, nir, document) == 1


@pytest.mark.parametrize(
    ("scheme", "parent", "classified"),
    [
        (v.DE_CONFIDENTIALITY_CODE.removeprefix("urn:uuid:"), "entry", "Document01"),
        (f" {v.DE_CONFIDENTIALITY_CODE}", "entry", "Document01"),
        ("urn:uuid:00000000-0000-0000-0000-000000000000", "entry", "Document01"),
        (v.DE_CONFIDENTIALITY_CODE, "list", "document01"),
    ],
    ids=["without-urn-uuid", "leading-space", "unknown-scheme", "loose-naming-nothing"],
)
def test_r14_a_classification_the_registry_cannot_read_is_refused_not_dropped(
    xds, record, scheme, parent, classified
):
    """Fail closed: a Classification the registry does not interpret (another spelling of
    the confidentialityCode scheme, an unknown scheme, a loose one whose classifiedObject
    names no object of the submission) was dropped and the document stored without the
    MASQUE_PS its author sent, readable by every authorized professional. It is refused
    (XDSRegistryMetadataError) and nothing is stored."""
    nir = record["nir"]
    request, response = deposit_with(
        xds, nir, masking(scheme, parent=parent, classified=classified)
    )
    status, codes = registry_status(response)
    assert status == v.RESPONSE_FAILURE, errors(response)
    assert codes == ["XDSRegistryMetadataError"]
    unique_id = request.document_unique_ids["Document01"]
    assert (
        xds.runtime.service.documents_with_unique_id("urn:ietf:rfc:3986", f"urn:oid:{unique_id}")
        == []
    )


def test_r14_iti57_keeping_masque_ps_with_its_scheme_in_capitals_keeps_the_mask(xds, record):
    """ITI-57: GP lifts INVISIBLE_PATIENT and keeps MASQUE_PS, whose Classification names
    the confidentialityCode scheme in capitals. The MASQUE_PS was dropped, the new version
    stored with N alone and read by the authorized professional; it is kept."""
    nir = record["nir"]

    def both(root: etree._Element) -> None:
        masking(v.DE_CONFIDENTIALITY_CODE)(root)
        add = masking(v.DE_CONFIDENTIALITY_CODE)
        add(root)
        last = root.findall(f".//{RIM}ExtrinsicObject/{RIM}Classification")[-1]
        last.set("nodeRepresentation", "INVISIBLE_PATIENT")

    request, response = deposit_with(xds, nir, both)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), errors(response)
    unique_id = request.document_unique_ids["Document01"]
    entry = entry_of(xds, nir, unique_id)
    assert confidentiality(entry) == {"N", "MASQUE_PS", "INVISIBLE_PATIENT"}
    body = metadata_update(nir, entry, [("N", V3_OID), ("MASQUE_PS", A07_OID)])
    for classification in body.iter(f"{RIM}Classification"):
        if classification.get("nodeRepresentation") == "MASQUE_PS":
            classification.set("classificationScheme", v.DE_CONFIDENTIALITY_CODE.upper())
    assert update(xds, nir, body) == (v.RESPONSE_SUCCESS, [])
    assert confidentiality(entry_of(xds, nir, unique_id)) == {"N", "MASQUE_PS"}
    assert entry_of(xds, nir, unique_id, AUTHORIZED) is None
