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
- A VIHF naming one fact twice was read as its first value: two access modes
  (`bris_de_glace` then `normal` opened the record to a professional the patient had not
  authorized, `normal` then `bris_de_glace` did not; a second AttributeStatement too), two
  TRE_G15 professions (the order chose what R13 serves), two Subjects or NameIDs (the order
  chose the practitioner judged); a PurposeOfUse outside TRE_R248 or without a code was
  dropped (mode normal). Each is refused (SOAP Fault, FailedAuthentication), as a mode
  spelled otherwise already was.
"""

from __future__ import annotations

import copy
import uuid

import pytest
from lxml import etree

import fhir_server.auth.vihf as vihf
from fhir_server.auth.vihf import mint_vihf
from ihe_xds import vocabulary as v
from ihe_xds.stored_query import FIND_DOCUMENTS, GET_DOCUMENTS
from tests.http import test_attack_pass_xds as attack
from tests.http.conftest import INS_SYSTEM
from tests.http.test_attack_pass_xds import AUTHORIZED, entry_uuid, errors, stored
from tests.http.test_xds_endpoints import (
    GP,
    OTHER_PS,
    Xds,
    envelope_of,
    fault_of,
    registry_status,
)
from tests.http.test_xds_stored_queries import adhoc
from tests.http.test_xds_update_document_set import (
    A07_OID,
    V3_OID,
    confidentiality,
    entry_of,
    metadata_update,
    update,
)
from tests.xds_builders import build_iti41, patient_cx

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


def masking(
    scheme: str,
    *,
    parent: str = "entry",
    classified: str = "Document01",
    coding_schemes: tuple[str, ...] = (OID_TRE_A07,),
):
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
        values = etree.SubElement(slot, f"{RIM}ValueList")
        for coding_scheme in coding_schemes:
            etree.SubElement(values, f"{RIM}Value").text = coding_scheme
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


def test_r14_a_confidentiality_code_with_two_coding_schemes_is_refused(xds, record):
    """A codingScheme Slot holding two values (TRE_A07 then v3-Confidentiality) was read as
    its first: which system the label was judged in hung on the order of the values. A code
    has one system: refused, nothing stored."""
    nir = record["nir"]
    add = masking(v.DE_CONFIDENTIALITY_CODE, coding_schemes=(OID_TRE_A07, V3_OID))
    request, response = deposit_with(xds, nir, add)
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSRegistryMetadataError"])
    assert "codingSchemes" in errors(response)[0][1]
    unique_id = request.document_unique_ids["Document01"]
    found = xds.runtime.service.documents_with_unique_id(
        "urn:ietf:rfc:3986", f"urn:oid:{unique_id}"
    )
    assert found == []


# -- the VIHF: one fact, one value ----------------------------------------------------------

R248 = "1.2.250.1.213.1.1.4.248"  # TRE_R248 access modes
G15 = "1.2.250.1.71.1.2.7"  # TRE_G15 professions


def vihf_edited(api, monkeypatch, edit, idnat: str, nir: str, **kwargs) -> etree._Element:
    """A `wsse:Security` header whose VIHF, as minted, is edited by `edit(assertion)` before
    it is signed: what a structure's software could sign."""
    sign = vihf.XMLSigner.sign

    def edited_then_signed(self, data, **options):
        edit(data)
        return sign(self, data, **options)

    with monkeypatch.context() as patch:
        patch.setattr(vihf.XMLSigner, "sign", edited_then_signed)
        assertion = mint_vihf(
            api.credential,
            practitioner_id=idnat,
            profession="10",
            audience=api.audience,
            patient_ins=f"{INS_SYSTEM}|{nir}",
            **kwargs,
        )
    header = etree.Element(f"{{{vihf.WSSE}}}Security", nsmap={"wsse": vihf.WSSE})
    header.append(assertion)
    return header


def coded_values(attribute: str, tag: str, *codes: tuple[str | None, str | None]):
    """An edit making the VIHF attribute's values these (code, codeSystem) HL7 CEs."""

    def edit(assertion: etree._Element) -> None:
        holder = assertion.find(f".//{{{vihf.SAML}}}Attribute[@Name='{attribute}']")
        for child in list(holder):
            holder.remove(child)
        for code, system in codes:
            value = etree.SubElement(holder, f"{{{vihf.SAML}}}AttributeValue")
            element = etree.SubElement(value, f"{{{vihf.HL7}}}{tag}", nsmap={None: vihf.HL7})
            if code is not None:
                element.set("code", code)
            if system is not None:
                element.set("codeSystem", system)

    return edit


def purposes(*codes):
    return coded_values(vihf.ATTR_PURPOSE, "PurposeOfUse", *codes)


def roles(*codes):
    return coded_values(vihf.ATTR_ROLE, "Role", *codes)


def second_statement_in_centre_15(assertion: etree._Element) -> None:
    """A second AttributeStatement whose PurposeOfUse is centre_15."""
    statement = assertion.find(f"{{{vihf.SAML}}}AttributeStatement")
    extra = etree.Element(f"{{{vihf.SAML}}}AttributeStatement")
    statement.addnext(extra)
    attribute = etree.SubElement(extra, f"{{{vihf.SAML}}}Attribute", Name=vihf.ATTR_PURPOSE)
    value = etree.SubElement(attribute, f"{{{vihf.SAML}}}AttributeValue")
    element = etree.SubElement(value, f"{{{vihf.HL7}}}PurposeOfUse", nsmap={None: vihf.HL7})
    element.set("code", "centre_15")
    element.set("codeSystem", R248)


def second_name_id(assertion: etree._Element) -> None:
    subject = assertion.find(f"{{{vihf.SAML}}}Subject")
    etree.SubElement(subject, f"{{{vihf.SAML}}}NameID").text = GP


def second_subject(assertion: etree._Element) -> None:
    subject = assertion.find(f"{{{vihf.SAML}}}Subject")
    other = copy.deepcopy(subject)
    other[0].text = GP
    subject.addnext(other)


def find_documents_with(api, nir: str, security: etree._Element):
    query = adhoc(
        FIND_DOCUMENTS,
        [
            ("$XDSDocumentEntryPatientId", f"'{patient_cx(nir)}'"),
            ("$XDSDocumentEntryStatus", f"('{v.STATUS_APPROVED}')"),
        ],
        "ObjectRef",
    )
    return api.soap("/xds/registry", v.ACTION_ITI18, query, security)


@pytest.mark.parametrize(
    "edit",
    [
        purposes(("normal", R248), ("bris_de_glace", R248)),
        purposes(("bris_de_glace", R248), ("normal", R248)),
        purposes(("centre_15", R248), ("bris_de_glace", R248)),
        second_statement_in_centre_15,
        purposes(("bris_de_glace", "1.2.250.1.213.1.1.4.2")),
        purposes(("bris_de_glace", None)),
        purposes((None, R248)),
    ],
    ids=[
        "normal-then-bris-de-glace",
        "bris-de-glace-then-normal",
        "centre-15-then-bris-de-glace",
        "second-statement",
        "another-code-system",
        "no-code-system",
        "no-code",
    ],
)
def test_r11_r12_a_vihf_whose_access_mode_cannot_be_read_as_one_is_refused(
    xds, record, monkeypatch, edit
):
    """The access mode decides R11/R12 (an opposition, a reason, the patient's notice). A
    VIHF naming two modes was read as its first (`bris_de_glace, normal` opened the record to
    a professional without authorization, `normal, bris_de_glace` did not), and a
    PurposeOfUse outside TRE_R248, or without a code, as no mode at all (normal). Each is
    refused (SOAP Fault, FailedAuthentication), as a mode spelled otherwise already was."""
    security = vihf_edited(
        xds, monkeypatch, edit, OTHER_PS, record["nir"], mode="bris_de_glace", reason="urgence"
    )
    response = find_documents_with(xds, record["nir"], security)
    assert response.status_code == 400, response.get_data()[:2000]
    code, reason = fault_of(response)
    assert code == "soap:Sender"
    assert "access mode" in reason


@pytest.mark.parametrize(
    "edit",
    [roles(("21", G15), ("10", G15)), roles(("10", G15), ("21", G15))],
    ids=["pharmacien-then-medecin", "medecin-then-pharmacien"],
)
def test_r13_a_vihf_naming_two_professions_is_refused(xds, record, monkeypatch, edit):
    """The habilitation matrix (R13) reads the TRE_G15 profession: a VIHF naming two was
    read as its first, so the order of the Role values chose the document types served."""
    security = vihf_edited(xds, monkeypatch, edit, AUTHORIZED, record["nir"])
    response = find_documents_with(xds, record["nir"], security)
    assert response.status_code == 400, response.get_data()[:2000]
    code, reason = fault_of(response)
    assert code == "soap:Sender"
    assert "profession" in reason


@pytest.mark.parametrize("edit", [second_name_id, second_subject], ids=["NameID", "Subject"])
def test_r01_a_vihf_naming_two_practitioners_is_refused(xds, record, monkeypatch, edit):
    """The IdNat_PS is the Subject's NameID: a VIHF with two (OTHER_PS, then the médecin
    traitant) was read as its first. Which one the rules judge must not depend on the order
    of elements: it is refused."""
    security = vihf_edited(xds, monkeypatch, edit, OTHER_PS, record["nir"])
    response = find_documents_with(xds, record["nir"], security)
    assert response.status_code == 400, response.get_data()[:2000]
    code, reason = fault_of(response)
    assert code == "soap:Sender"
    assert "NameID" in reason


def test_a_mime_type_ending_in_a_newline_is_refused_naming_the_mime_type(xds, record):
    """ITI-41 (ITI TF-3 4.2.3.2.15 mimeType): the XDS checks read a value to its last
    character (`fullmatch`): `text/xml&#10;` passed the registry's own check (`$` matches
    before a final newline) and was refused later, by the FHIR model, under the name of a
    Binary element the depositor never wrote."""

    def add(root: etree._Element) -> None:
        root.find(f".//{RIM}ExtrinsicObject[@id='Document01']").set("mimeType", "text/xml\n")

    _, response = deposit_with(xds, record["nir"], add)
    assert registry_status(response)[0] == v.RESPONSE_FAILURE
    assert errors(response) == [("XDSRegistryMetadataError", "mimeType 'text/xml\\n' is not valid")]
