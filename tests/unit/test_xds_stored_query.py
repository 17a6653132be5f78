"""ITI-18 stored queries: value grammar, parameter checks, FHIR search plans."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ihe_xds import vocabulary as v
from ihe_xds.ebrim import parse_submission
from ihe_xds.mapping import submission_to_fhir
from ihe_xds.soap import read_envelope
from ihe_xds.stored_query import (
    FIND_DOCUMENTS,
    QUERIES,
    Code,
    StoredQueryError,
    like_matches,
    parse_stored_query,
    parse_value,
    plan,
    to_fhir_search,
)
from ihe_xds.xml import parse_xml
from tests.xds_builders import AUTHOR_PERSON, build_iti41

APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
PATIENT = "'280017512345610^^^&1.2.250.1.213.1.4.8&ISO'"
LOINC = "http://loinc.org"


def _request(
    query_id: str, slots: list[tuple[str, list[str]]], return_type: str = "LeafClass"
) -> bytes:
    def esc(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;")

    body = "".join(
        f'<rim:Slot name="{name}"><rim:ValueList>'
        + "".join(f"<rim:Value>{esc(value)}</rim:Value>" for value in values)
        + "</rim:ValueList></rim:Slot>"
        for name, values in slots
    )
    return (
        f'<query:AdhocQueryRequest xmlns:query="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}">'
        f'<query:ResponseOption returnType="{return_type}" returnComposedObjects="true"/>'
        f'<rim:AdhocQuery id="{query_id}">{body}</rim:AdhocQuery></query:AdhocQueryRequest>'
    ).encode()


def _parse(query_id, slots, return_type="LeafClass"):
    return parse_stored_query(parse_xml(_request(query_id, slots, return_type)))


def _errors(query_id, slots) -> list[tuple[str, str]]:
    with pytest.raises(StoredQueryError) as info:
        _parse(query_id, slots)
    return [(e.error_code, e.location) for e in info.value.errors]


FIND = [("$XDSDocumentEntryPatientId", [PATIENT]), ("$XDSDocumentEntryStatus", [APPROVED])]


@pytest.mark.parametrize(
    ("text", "values", "is_list"),
    [
        ("'abc'", ["abc"], False),
        ("'it''s'", ["it's"], False),
        ("20240101", ["20240101"], False),
        ("('a','b,c')", ["a", "b,c"], True),
        (" ( 'a' , 'b' ) ", ["a", "b"], True),
        ("('a''b')", ["a'b"], True),
    ],
)
def test_value_grammar_quoted_strings_numbers_and_lists(text, values, is_list):
    assert parse_value(text) == (values, is_list)


@pytest.mark.parametrize(
    "text", ["'abc", "abc", "('a','b'", "('a',,'b')", "'a'b'", "('a' 'b')", "'a' or 1=1 --'"]
)
def test_value_grammar_refuses_broken_values(text):
    with pytest.raises(ValueError):
        parse_value(text)


@settings(max_examples=500, deadline=None)
@given(
    items=st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
        min_size=1,
        max_size=5,
    )
)
def test_value_grammar_quoting_round_trips_any_string(items):
    text = "(" + ",".join("'" + item.replace("'", "''") + "'" for item in items) + ")"
    assert parse_value(text) == (items, True)


def test_find_documents_parsed_with_typed_values_and_and_or_semantics():
    query = _parse(
        FIND_DOCUMENTS,
        FIND
        + [
            (
                "$XDSDocumentEntryClassCode",
                ["('10^^1.2.250.1.213.1.1.4.1','11^^1.2.250.1.213.1.1.4.1')"],
            ),
            ("$XDSDocumentEntryEventCodeList", ["('A^^1.2.3')"]),
            ("$XDSDocumentEntryEventCodeList", ["('B^^1.2.3')", "('C^^1.2.3')"]),
            ("$XDSDocumentEntryCreationTimeFrom", ["20240101"]),
        ],
    )
    assert query.name == "FindDocuments" and query.return_type == "LeafClass"
    assert query.one("$XDSDocumentEntryPatientId").value == "280017512345610"
    assert query.params["$XDSDocumentEntryClassCode"] == [
        [Code("10", "1.2.250.1.213.1.1.4.1"), Code("11", "1.2.250.1.213.1.1.4.1")]
    ]
    assert query.params["$XDSDocumentEntryEventCodeList"] == [
        [Code("A", "1.2.3")],
        [Code("B", "1.2.3"), Code("C", "1.2.3")],
    ]


def test_find_documents_to_fhir_search_iti67_vocabulary():
    query = _parse(
        FIND_DOCUMENTS,
        FIND
        + [
            ("$XDSDocumentEntryTypeCode", ["('11490-0^^2.16.840.1.113883.6.1')"]),
            ("$XDSDocumentEntryConfidentialityCode", ["('N^^2.16.840.1.113883.5.25')"]),
            ("$XDSDocumentEntryConfidentialityCode", ["('MASQUE_PS^^1.2.250.1.213.1.1.4.13')"]),
            ("$XDSDocumentEntryEventCodeList", ["('A^^1.2.3','B^^1.2.3')"]),
            ("$XDSDocumentEntryCreationTimeFrom", ["20240101"]),
            ("$XDSDocumentEntryCreationTimeTo", ["202402011230"]),
            ("$XDSDocumentEntryAuthorPerson", ["'%^MARTIN^%'"]),
        ],
    )
    assert to_fhir_search(query) == [
        ("patient.identifier", "urn:oid:1.2.250.1.213.1.4.8|280017512345610"),
        ("status", "current"),
        ("isArchived:not", "true"),  # PDSm_IsArchived (issue #20)
        ("type", f"{LOINC}|11490-0"),
        ("event", "urn:oid:1.2.3|A,urn:oid:1.2.3|B"),
        ("security-label", "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|N"),
        ("security-label", "urn:oid:1.2.250.1.213.1.1.4.13|MASQUE_PS"),
        ("creation", "ge2024-01-01"),
        ("creation", "lt2024-02-01T12:30:00Z"),
        ("author.family", "MARTIN"),
    ]


def test_status_list_with_archived_and_deprecated():
    statuses = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated','urn:asip:ci-sis:2010:StatusType:Archived')"
    query = _parse(FIND_DOCUMENTS, [FIND[0], ("$XDSDocumentEntryStatus", [statuses])])
    assert to_fhir_search(query)[1:] == [
        ("status", "current,superseded"),
        ("isArchived", "true"),
    ]


def test_unknown_stored_query_id():
    assert _errors("urn:uuid:00000000-0000-0000-0000-000000000000", FIND) == [
        ("XDSUnknownStoredQuery", "AdhocQuery/@id")
    ]


def test_missing_required_parameter():
    assert _errors(FIND_DOCUMENTS, FIND[:1]) == [
        ("XDSStoredQueryMissingParam", "$XDSDocumentEntryStatus")
    ]


def test_patient_id_with_several_values_is_param_number():
    assert _errors(
        FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", [PATIENT, PATIENT]), FIND[1]]
    ) == [("XDSStoredQueryParamNumber", "$XDSDocumentEntryPatientId")]


def test_single_slot_parameter_repeated_is_param_number():
    assert _errors(FIND_DOCUMENTS, FIND + [("$XDSDocumentEntryClassCode", ["('a^^1.2')"])] * 2) == [
        ("XDSStoredQueryParamNumber", "$XDSDocumentEntryClassCode")
    ]


def test_get_documents_needs_exactly_one_of_uuid_or_unique_id():
    get_documents = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
    assert _errors(get_documents, []) == [
        ("XDSStoredQueryMissingParam", "$XDSDocumentEntryEntryUUID")
    ]
    both = [
        ("$XDSDocumentEntryEntryUUID", ["('urn:uuid:0b2a6c1e-8b0f-4d5e-9f3a-1c2d3e4f5a6b')"]),
        ("$XDSDocumentEntryUniqueId", ["('1.2.3')"]),
    ]
    assert _errors(get_documents, both) == [
        ("XDSStoredQueryParamNumber", "$XDSDocumentEntryUniqueId")
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("$XDSDocumentEntryClassCode", "('10')"),
        ("$XDSDocumentEntryCreationTimeFrom", "'2024-01-01'"),
        ("$XDSDocumentEntryType", "('urn:uuid:00000000-0000-0000-0000-000000000000')"),
        ("$XDSDocumentEntryStatus", "('Approved')"),
    ],
)
def test_values_of_the_wrong_type_are_registry_metadata_errors(name, value):
    slots = [s for s in FIND if s[0] != name] + [(name, [value])]
    assert _errors(FIND_DOCUMENTS, slots) == [("XDSRegistryMetadataError", name)]


def test_unknown_parameter_ignored_with_warning():
    query = _parse(FIND_DOCUMENTS, FIND + [("$Nonsense", ["'x'"])])
    assert [(w.error_code, w.location, w.severity.endswith("Warning")) for w in query.warnings] == [
        ("XDSRegistryMetadataError", "$Nonsense", True)
    ]


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("%^MARTIN^%", AUTHOR_PERSON, True),
        ("%^MART_N^%", AUTHOR_PERSON, True),
        ("%^DURAND^%", AUTHOR_PERSON, False),
        ("810001234567%", AUTHOR_PERSON, True),
        ("a.b", "axb", False),
        ("100%", "100%", True),
    ],
)
def test_author_person_like_semantics(pattern, value, matches):
    assert like_matches(pattern, value) is matches


def test_find_documents_plan_keep_applies_author_like_and_service_times():
    request = build_iti41(mtom=False)
    submission = parse_submission(read_envelope(request.envelope).body)
    (doc,) = submission_to_fhir(
        submission,
        submission.documents,
        repository_unique_id="1.2",
        resolve_patient=lambda o, v: "p",
    ).document_references
    matching = _parse(
        FIND_DOCUMENTS,
        FIND
        + [
            ("$XDSDocumentEntryAuthorPerson", ["'%MARTIN%'"]),
            ("$XDSDocumentEntryServiceStartTimeFrom", ["20240115"]),
        ],
    )
    assert plan(matching).keep(doc) is True
    other_author = _parse(
        FIND_DOCUMENTS, FIND + [("$XDSDocumentEntryAuthorPerson", ["'%DURAND%'"])]
    )
    assert plan(other_author).keep(doc) is False
    too_late = _parse(
        FIND_DOCUMENTS, FIND + [("$XDSDocumentEntryServiceStartTimeFrom", ["20240116"])]
    )
    assert plan(too_late).keep(doc) is False
    on_demand_only = _parse(
        FIND_DOCUMENTS, FIND + [("$XDSDocumentEntryType", [f"('{v.OBJECT_TYPE_ON_DEMAND}')"])]
    )
    assert plan(on_demand_only).keep(doc) is False


_UUID = "('urn:uuid:0b2a6c1e-8b0f-4d5e-9f3a-1c2d3e4f5a6b')"
_PLANS = {
    "FindSubmissionSets": [
        ("$XDSSubmissionSetPatientId", [PATIENT]),
        ("$XDSSubmissionSetStatus", [APPROVED]),
    ],
    "GetAll": [
        ("$patientId", [PATIENT]),
        ("$XDSDocumentEntryStatus", [APPROVED]),
        ("$XDSSubmissionSetStatus", [APPROVED]),
        ("$XDSFolderStatus", [APPROVED]),
    ],
    "GetDocuments": [("$XDSDocumentEntryEntryUUID", [_UUID])],
    "GetAssociations": [("$uuid", [_UUID])],
    "GetDocumentsAndAssociations": [("$XDSDocumentEntryUniqueId", ["('1.2.3')"])],
    "GetSubmissionSets": [("$uuid", [_UUID])],
    "GetSubmissionSetAndContents": [("$XDSSubmissionSetUniqueId", ["'1.2.3'"])],
    "GetRelatedDocuments": [
        ("$XDSDocumentEntryEntryUUID", [_UUID]),
        ("$AssociationTypes", [f"('{v.ASSOC_RPLC}')"]),
    ],
    "FindFolders": [("$XDSFolderPatientId", [PATIENT]), ("$XDSFolderStatus", [APPROVED])],
}
_IDS = {definition.name: query_id for query_id, definition in QUERIES.items()}


@pytest.mark.parametrize("name", sorted(_PLANS))
def test_every_issue_list_query_has_a_fhir_plan(name):
    query_plan = plan(_parse(_IDS[name], _PLANS[name]))
    assert query_plan.query == name
    for search in query_plan.searches:
        assert search.resource_type in ("DocumentReference", "List")
        assert all(isinstance(k, str) and isinstance(val, str) for k, val in search.params)
    # FindFolders searches folder Lists (MHD Vol 3 4.5.1) as every other query searches.
    assert query_plan.searches


def test_get_submission_set_and_contents_plan_uses_list_identifier_and_include():
    query_plan = plan(
        _parse(_IDS["GetSubmissionSetAndContents"], _PLANS["GetSubmissionSetAndContents"])
    )
    (search,) = query_plan.searches
    assert search.resource_type == "List"
    assert ("identifier", "urn:ietf:rfc:3986|urn:oid:1.2.3") in search.params
    assert ("_include", "List:item") in search.params


def test_get_related_documents_plan_keeps_requested_association_types():
    query_plan = plan(_parse(_IDS["GetRelatedDocuments"], _PLANS["GetRelatedDocuments"]))
    assert query_plan.association_types == (v.ASSOC_RPLC,)
    params = query_plan.searches[0].params
    assert ("_include", "DocumentReference:relatesto") in params and (
        "_revinclude",
        "DocumentReference:relatesto",
    ) in params
