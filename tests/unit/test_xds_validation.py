"""Metadata validation of ITI-41 / ITI-42 submissions (IHE XDS.b and the DMP profile)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from fhir_server.resources.ins import nir_key
from ihe_xds import vocabulary as v
from ihe_xds.ebrim import parse_submission
from ihe_xds.soap import read_envelope
from ihe_xds.validation import (
    DMP_PROFILE,
    XDS_PROFILE,
    external_targets,
    is_unique_id,
    patient_id_error,
    validate_submission,
)
from tests.xds_builders import DEFAULT_NIR, build_iti41, patient_cx

NS = {"rim": v.NS_RIM, "xdsb": v.NS_XDSB, "lcm": v.NS_LCM}


def _body(**kwargs) -> etree._Element:
    return read_envelope(build_iti41(mtom=False, **kwargs).envelope).body


def _errors(body: etree._Element, profile=DMP_PROFILE) -> list[tuple[str, str]]:
    return [
        (e.error_code, e.location) for e in validate_submission(parse_submission(body), profile)
    ]


def _entry(body):
    return body.find(".//rim:ExtrinsicObject", NS)


def _slot(element, name):
    return element.find(f"rim:Slot[@name='{name}']", NS)


def _classification(element, scheme):
    return [
        c
        for c in element.findall("rim:Classification", NS)
        if c.get("classificationScheme") == scheme
    ]


def test_builder_message_passes_dmp_and_xds_profiles():
    body = _body()
    assert _errors(body, DMP_PROFILE) == []
    assert _errors(body, XDS_PROFILE) == []


@pytest.mark.parametrize(
    "slot",
    ["legalAuthenticator", "serviceStartTime", "sourcePatientInfo"],
)
def test_dmp_required_slots_missing_are_registry_metadata_errors(slot):
    body = _body()
    entry = _entry(body)
    entry.remove(_slot(entry, slot))
    assert _errors(body, DMP_PROFILE) == [
        ("XDSRegistryMetadataError", f"DocumentEntry Document01 ({_uid(body)}) {slot}")
    ]
    assert _errors(body, XDS_PROFILE) == []  # plain XDS does not require them


def _uid(body) -> str:
    return [
        e.get("value")
        for e in _entry(body).findall("rim:ExternalIdentifier", NS)
        if e.get("identificationScheme") == v.DE_UNIQUE_ID
    ][0]


def test_dmp_title_and_author_required():
    body = _body()
    entry = _entry(body)
    entry.remove(entry.find("rim:Name", NS))
    for author in _classification(entry, v.DE_AUTHOR):
        entry.remove(author)
    uid = _uid(body)
    assert sorted(_errors(body)) == [
        ("XDSRegistryMetadataError", f"DocumentEntry Document01 ({uid}) author"),
        ("XDSRegistryMetadataError", f"DocumentEntry Document01 ({uid}) title"),
    ]


@pytest.mark.parametrize(
    ("scheme", "name"),
    [
        (v.DE_CLASS_CODE, "classCode"),
        (v.DE_TYPE_CODE, "typeCode"),
        (v.DE_FORMAT_CODE, "formatCode"),
        (v.DE_FACILITY_TYPE_CODE, "healthcareFacilityTypeCode"),
        (v.DE_PRACTICE_SETTING_CODE, "practiceSettingCode"),
        (v.DE_CONFIDENTIALITY_CODE, "confidentialityCode"),
    ],
)
def test_xds_required_codes_missing(scheme, name):
    body = _body()
    entry = _entry(body)
    for classification in _classification(entry, scheme):
        entry.remove(classification)
    assert _errors(body, XDS_PROFILE) == [
        ("XDSRegistryMetadataError", f"DocumentEntry Document01 ({_uid(body)}) {name}")
    ]


@pytest.mark.parametrize(
    ("scheme", "name"),
    [
        (v.DE_CLASS_CODE, "classCode"),
        (v.DE_TYPE_CODE, "typeCode"),
        (v.DE_FORMAT_CODE, "formatCode"),
        (v.DE_FACILITY_TYPE_CODE, "healthcareFacilityTypeCode"),
        (v.DE_PRACTICE_SETTING_CODE, "practiceSettingCode"),
    ],
)
def test_dmp_code_from_a_foreign_code_system_is_refused(scheme, name):
    body = _body()
    (classification,) = _classification(_entry(body), scheme)
    classification.find("rim:Slot/rim:ValueList/rim:Value", NS).text = "2.16.840.1.113883.6.96"
    errors = validate_submission(parse_submission(body), DMP_PROFILE)
    assert [(e.error_code, e.location) for e in errors] == [
        ("XDSRegistryMetadataError", f"DocumentEntry Document01 ({_uid(body)}) {name}")
    ]
    assert "2.16.840.1.113883.6.96" in errors[0].code_context
    assert validate_submission(parse_submission(body), XDS_PROFILE) == []


def test_dmp_masking_codes_accepted_and_unknown_tre_a07_code_refused():
    assert (
        _errors(_body(masking=("MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX")))
        == []
    )
    body = _body(masking=("SECRET",))
    assert _errors(body) == [
        ("XDSRegistryMetadataError", f"DocumentEntry Document01 ({_uid(body)}) confidentialityCode")
    ]


def test_dmp_more_than_four_confidentiality_codes_refused():
    body = _body(
        masking=("MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX", "MASQUE_PS")
    )
    assert (
        "XDSRegistryMetadataError",
        f"DocumentEntry Document01 ({_uid(body)}) confidentialityCode",
    ) in _errors(body)


def test_dmp_patient_id_must_be_an_ins():
    other = "12345^^^&1.2.3.4&ISO"
    body = _body(entry_patient_cx=other)
    errors = _errors(body, DMP_PROFILE)
    assert (
        "XDSRegistryMetadataError",
        f"DocumentEntry Document01 ({_uid(body)}) patientId",
    ) in errors
    assert (
        "XDSPatientIdDoesNotMatch",
        f"DocumentEntry Document01 ({_uid(body)}) patientId",
    ) in errors


def test_ins_with_wrong_nir_key_is_refused_with_the_key_message():
    wrong = DEFAULT_NIR[:13] + f"{(nir_key(DEFAULT_NIR[:13]) + 1) % 97:02d}"
    problem = patient_id_error(patient_cx(wrong), require_ins=True)
    assert problem is not None and "key" in problem


def test_ins_corsican_department_key_accepted():
    nir13 = "185072A123456"
    assert patient_id_error(patient_cx(nir13 + f"{nir_key(nir13):02d}"), require_ins=True) is None


@pytest.mark.parametrize(
    "cx",
    [
        "",
        "12345",
        "12345^^^1.2.3&ISO",
        "12345^^^&1.2.3&L",
        "^^^&1.2.3&ISO",
        "12345^x^^&1.2.3&ISO",
        "12345^^^&notanoid&ISO",
    ],
)
def test_patient_id_not_in_cx_form_refused(cx):
    assert patient_id_error(cx, require_ins=False) is not None


def test_submission_set_and_entry_patient_ids_must_match():
    other = patient_cx("1" + DEFAULT_NIR[1:13] + f"{nir_key('1' + DEFAULT_NIR[1:13]):02d}")
    body = _body(entry_patient_cx=other)
    assert _errors(body) == [
        ("XDSPatientIdDoesNotMatch", f"DocumentEntry Document01 ({_uid(body)}) patientId")
    ]


def test_iti41_missing_document_is_xdsmissingdocument():
    body = _body()
    body.remove(body.find("xdsb:Document", NS))
    assert _errors(body) == [("XDSMissingDocument", f"DocumentEntry Document01 ({_uid(body)})")]


def test_iti41_document_without_entry_is_xdsmissingdocumentmetadata():
    body = _body()
    extra = etree.SubElement(body, v.q(v.NS_XDSB, "Document"), id="Orphan")
    extra.text = "PGEvPg=="
    assert _errors(body) == [("XDSMissingDocumentMetadata", "Document Orphan")]


def test_wrong_hash_and_size_are_repository_metadata_errors():
    body = _body()
    entry = _entry(body)
    _slot(entry, "hash").find("rim:ValueList/rim:Value", NS).text = "0" * 40
    _slot(entry, "size").find("rim:ValueList/rim:Value", NS).text = "1"
    uid = _uid(body)
    assert _errors(body) == [
        ("XDSRepositoryMetadataError", f"DocumentEntry Document01 ({uid}) hash"),
        ("XDSRepositoryMetadataError", f"DocumentEntry Document01 ({uid}) size"),
    ]


def test_hash_and_size_optional_on_iti41():
    assert _errors(_body(include_hash=False)) == []


def test_iti42_requires_hash_size_and_repository_unique_id():
    submit = _body(include_hash=False).find("lcm:SubmitObjectsRequest", NS)
    submission = parse_submission(submit)
    uid = submission.entries[0].unique_id
    assert sorted(
        (e.error_code, e.location) for e in validate_submission(submission, DMP_PROFILE)
    ) == [
        ("XDSRegistryMetadataError", f"DocumentEntry Document01 ({uid}) hash"),
        ("XDSRegistryMetadataError", f"DocumentEntry Document01 ({uid}) repositoryUniqueId"),
        ("XDSRegistryMetadataError", f"DocumentEntry Document01 ({uid}) size"),
    ]


def test_duplicate_unique_ids_in_message():
    body = _body(documents=[b"<a/>", b"<b/>"])
    entries = body.findall(".//rim:ExtrinsicObject", NS)
    first_uid = _uid(body)
    for ext in entries[1].findall("rim:ExternalIdentifier", NS):
        if ext.get("identificationScheme") == v.DE_UNIQUE_ID:
            ext.set("value", first_uid)
    assert _errors(body) == [
        (
            "XDSRegistryDuplicateUniqueIdInMessage",
            f"DocumentEntry Document02 ({first_uid}) uniqueId",
        )
    ]


@pytest.mark.parametrize(
    ("slot", "value"),
    [
        ("creationTime", "2024-01-15"),
        ("creationTime", "202401151030"),
        ("serviceStartTime", "20241301"),
        ("serviceStopTime", "2024011525"),
    ],
)
def test_times_must_be_yyyymmdd_hhmm_ss(slot, value):
    body = _body()
    _slot(_entry(body), slot).find("rim:ValueList/rim:Value", NS).text = value
    errors = _errors(body)
    if value == "202401151030":  # YYYYMMDDhhmm is a valid form
        assert errors == []
    else:
        assert errors == [
            ("XDSRegistryMetadataError", f"DocumentEntry Document01 ({_uid(body)}) {slot}")
        ]


def test_association_with_unknown_source_and_target():
    body = _body()
    objects = body.find(".//rim:RegistryObjectList", NS)
    etree.SubElement(
        objects,
        v.q(v.NS_RIM, "Association"),
        id="bad",
        associationType=v.ASSOC_APND,
        sourceObject="Nope",
        targetObject="alsoNope",
    )
    assert _errors(body) == [
        ("XDSRegistryMetadataError", "Association bad sourceObject"),
        ("XDSRegistryMetadataError", "Association bad targetObject"),
    ]


def test_entry_not_member_of_submission_set():
    body = _body()
    objects = body.find(".//rim:RegistryObjectList", NS)
    objects.remove(objects.find("rim:Association", NS))
    assert _errors(body) == [
        ("XDSRegistryMetadataError", f"DocumentEntry Document01 ({_uid(body)})")
    ]


def test_folder_in_submission_is_refused_cleanly():
    body = _body()
    objects = body.find(".//rim:RegistryObjectList", NS)
    etree.SubElement(objects, v.q(v.NS_RIM, "RegistryPackage"), id="Folder01")
    etree.SubElement(
        objects,
        v.q(v.NS_RIM, "Classification"),
        id="clf",
        classifiedObject="Folder01",
        classificationNode=v.FOLDER_NODE,
    )
    errors = validate_submission(parse_submission(body), DMP_PROFILE)
    assert [(e.error_code, e.location, e.code_context) for e in errors] == [
        (
            "XDSRegistryMetadataError",
            "Folder Folder01",
            "Folders are not supported by this registry",
        )
    ]


def test_replacement_target_listed_for_the_caller_to_check():
    target = "urn:uuid:0b2a6c1e-8b0f-4d5e-9f3a-1c2d3e4f5a6b"
    submission = parse_submission(_body(replaces=target))
    assert validate_submission(submission, DMP_PROFILE) == []
    assert external_targets(submission) == {v.ASSOC_RPLC: [target]}


def test_missing_submission_set_reported():
    body = _body()
    objects = body.find(".//rim:RegistryObjectList", NS)
    objects.remove(objects.find("rim:RegistryPackage", NS))
    errors = _errors(body)
    assert ("XDSRegistryMetadataError", "SubmissionSet") in errors


@settings(max_examples=300, deadline=None)
@given(
    root=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=8),
    extension=st.text(max_size=20),
)
def test_unique_id_accepts_oids_and_short_extensions_only(root, extension):
    oid = "1." + ".".join(str(n) for n in root)
    assert is_unique_id(oid) == (len(oid) <= 64)
    with_extension = f"{oid}^{extension}"
    expected = (
        len(oid) <= 64
        and 0 < len(extension) <= 16
        and "^" not in extension
        and len(with_extension) <= 128
    )
    assert is_unique_id(with_extension) == expected
