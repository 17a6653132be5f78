"""Every ITI-18 parameter is applied or refused (issue #19, deliverable 3).

One row per (stored query, parameter) of ITI TF-2a 3.18.4.1.2.3.7, each naming its section:

- APPLIED rows deposit one document (ITI-41, `tests.xds_builders` metadata) and ask the query
  twice: with a value the deposit matches, the object is in the answer; with one it does not
  match, it is not. A parameter the registry ignored would answer the same both times.
- REFUSED rows give the request and the RegistryError codes the Failure must carry
  (ITI TF-3 4.2.4.1: XDSStoredQueryMissingParam, XDSStoredQueryParamNumber,
  XDSUnknownStoredQuery; a value of the wrong form is XDSRegistryMetadataError here).
- WARNED rows: a parameter the query does not define is ignored, as ebRS 3.0 6.3.2.1
  requires ("a registry MUST ignore any parameters ... that do not match"), with a Warning
  naming it so the consumer knows no filter was applied.

The table of every parameter and what the server does with it is docs/xds-stored-queries.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ihe_xds import vocabulary as v
from ihe_xds.stored_query import (
    FIND_DOCUMENTS,
    FIND_SUBMISSION_SETS,
    GET_ALL,
    GET_DOCUMENTS,
    GET_RELATED_DOCUMENTS,
    GET_SUBMISSION_SET_AND_CONTENTS,
)
from tests.http.test_xds_endpoints import GP, envelope_of, registry_status
from tests.http.test_xds_stored_queries import (
    APPROVED,
    adhoc,
    answered,
    ask,
    deposit,
    entry_uuids,
    xds,  # noqa: F401 (fixture)
)
from tests.xds_builders import SOURCE_ID, patient_cx

DEPRECATED = f"('{v.STATUS_DEPRECATED}')"
STABLE = "('urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1')"
ON_DEMAND = "('urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248')"
CLASS = "1.2.250.1.213.1.1.4.1"
FORMAT = "1.3.6.1.4.1.19376.1.2.3"
CONFIDENTIALITY = "2.16.840.1.113883.5.25"
EVENT = "1.2.250.1.213.2.5"
OTHER_UUID = "'urn:uuid:00000000-0000-4000-8000-000000000000'"
SQ = "ITI TF-2a 3.18.4.1.2.3.7"


@dataclass(frozen=True)
class Applied:
    """`param` given as `hit` keeps the deposited object in the answer, as `miss` drops it.
    `hit`/`miss` are lists of Slot values: several are several Slots (AND for the
    multi-slot code lists)."""

    section: str
    query: str
    param: str
    hit: list[str]
    miss: list[str]


def _find_documents(nir: str, _: object) -> list[tuple[str, str]]:
    return [
        ("$XDSDocumentEntryPatientId", f"'{patient_cx(nir)}'"),
        ("$XDSDocumentEntryStatus", APPROVED),
    ]


def _find_submission_sets(nir: str, _: object) -> list[tuple[str, str]]:
    return [
        ("$XDSSubmissionSetPatientId", f"'{patient_cx(nir)}'"),
        ("$XDSSubmissionSetStatus", APPROVED),
    ]


def _get_all(nir: str, _: object) -> list[tuple[str, str]]:
    return [
        ("$patientId", f"'{patient_cx(nir)}'"),
        ("$XDSDocumentEntryStatus", APPROVED),
        ("$XDSSubmissionSetStatus", APPROVED),
        ("$XDSFolderStatus", APPROVED),
    ]


def _submission_set(nir: str, request) -> list[tuple[str, str]]:
    return [("$XDSSubmissionSetUniqueId", f"'{request.submission_set_unique_id}'")]


# Base slots of each query, the parameter under test replacing any of the same name.
BASE = {
    FIND_DOCUMENTS: _find_documents,
    FIND_SUBMISSION_SETS: _find_submission_sets,
    GET_ALL: _get_all,
    GET_SUBMISSION_SET_AND_CONTENTS: _submission_set,
    GET_DOCUMENTS: lambda nir, request: [],
}
FD, FSS = f"{SQ}.1", f"{SQ}.2"
GA, GD, GSSC = f"{SQ}.4", f"{SQ}.5", f"{SQ}.10"
LEVEL = "ITI TF-2a 3.18.4.1.2.3.5.1.1"


def _code(code: str, scheme: str) -> str:
    return f"('{code}^^{scheme}')"


APPLIED = [
    Applied(FD, FIND_DOCUMENTS, "$XDSDocumentEntryStatus", [APPROVED], [DEPRECATED]),
    Applied(
        FD,
        FIND_DOCUMENTS,
        "$XDSDocumentEntryClassCode",
        [_code("10", CLASS)],
        [_code("11", CLASS)],
    ),
    Applied(
        FD,
        FIND_DOCUMENTS,
        "$XDSDocumentEntryTypeCode",
        [_code("11490-0", "2.16.840.1.113883.6.1")],
        [_code("11488-4", "2.16.840.1.113883.6.1")],
    ),
    Applied(
        FD,
        FIND_DOCUMENTS,
        "$XDSDocumentEntryPracticeSettingCode",
        [_code("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9")],
        [_code("AMBULATOIRE", "1.2.250.1.213.1.1.4.9")],
    ),
    Applied(
        FD,
        FIND_DOCUMENTS,
        "$XDSDocumentEntryHealthcareFacilityTypeCode",
        [_code("SA01", "1.2.250.1.71.4.2.4")],
        [_code("SA02", "1.2.250.1.71.4.2.4")],
    ),
    # EventCodeList: the Values of one Slot OR together, several Slots AND together.
    Applied(
        FD,
        FIND_DOCUMENTS,
        "$XDSDocumentEntryEventCodeList",
        [f"('GLE^^{EVENT}', 'XYZ^^{EVENT}')"],
        [_code("GLE", EVENT), _code("XYZ", EVENT)],
    ),
    Applied(
        FD,
        FIND_DOCUMENTS,
        "$XDSDocumentEntryConfidentialityCode",
        [f"('N^^{CONFIDENTIALITY}', 'R^^{CONFIDENTIALITY}')"],
        [_code("N", CONFIDENTIALITY), _code("R", CONFIDENTIALITY)],
    ),
    Applied(
        FD,
        FIND_DOCUMENTS,
        "$XDSDocumentEntryFormatCode",
        [_code("urn:ihe:iti:xds:2017:mimeTypeSufficient", FORMAT)],
        [_code("urn:ihe:pcc:xphr:2007", FORMAT)],
    ),
    # The deposit: creationTime 20240115103000, service 20240115090000-20240115100000.
    Applied(FD, FIND_DOCUMENTS, "$XDSDocumentEntryCreationTimeFrom", ["20240115"], ["20240116"]),
    Applied(FD, FIND_DOCUMENTS, "$XDSDocumentEntryCreationTimeTo", ["20240116"], ["20240115"]),
    Applied(
        FD, FIND_DOCUMENTS, "$XDSDocumentEntryServiceStartTimeFrom", ["20240115"], ["20240116"]
    ),
    Applied(FD, FIND_DOCUMENTS, "$XDSDocumentEntryServiceStartTimeTo", ["20240116"], ["20240115"]),
    Applied(FD, FIND_DOCUMENTS, "$XDSDocumentEntryServiceStopTimeFrom", ["20240115"], ["20240116"]),
    Applied(FD, FIND_DOCUMENTS, "$XDSDocumentEntryServiceStopTimeTo", ["20240116"], ["20240115"]),
    # AuthorPerson: SQL LIKE wildcards (% any run, _ one character), OR over the values.
    Applied(
        FD,
        FIND_DOCUMENTS,
        "$XDSDocumentEntryAuthorPerson",
        ["('%^DURAND^%', '%^MART_N^%')"],
        ["('%^DURAND^%')"],
    ),
    Applied(FD, FIND_DOCUMENTS, "$XDSDocumentEntryType", [STABLE], [ON_DEMAND]),
    Applied(FSS, FIND_SUBMISSION_SETS, "$XDSSubmissionSetStatus", [APPROVED], [DEPRECATED]),
    Applied(
        FSS,
        FIND_SUBMISSION_SETS,
        "$XDSSubmissionSetSourceId",
        [f"('{SOURCE_ID}')"],
        ["('1.2.250.1.999.2')"],
    ),
    # The deposit: submissionTime 20240115110000.
    Applied(
        FSS, FIND_SUBMISSION_SETS, "$XDSSubmissionSetSubmissionTimeFrom", ["20240115"], ["20240116"]
    ),
    Applied(
        FSS, FIND_SUBMISSION_SETS, "$XDSSubmissionSetSubmissionTimeTo", ["20240116"], ["20240115"]
    ),
    Applied(
        FSS,
        FIND_SUBMISSION_SETS,
        "$XDSSubmissionSetAuthorPerson",
        ["'%^MARTIN^%'"],
        ["'%^DURAND^%'"],
    ),
    Applied(
        FSS,
        FIND_SUBMISSION_SETS,
        "$XDSSubmissionSetContentType",
        [_code("10", CLASS)],
        [_code("11", CLASS)],
    ),
    Applied(GA, GET_ALL, "$XDSDocumentEntryStatus", [APPROVED], [DEPRECATED]),
    Applied(GA, GET_ALL, "$XDSSubmissionSetStatus", [APPROVED], [DEPRECATED]),
    Applied(
        GA,
        GET_ALL,
        "$XDSDocumentEntryFormatCode",
        [_code("urn:ihe:iti:xds:2017:mimeTypeSufficient", FORMAT)],
        [_code("urn:ihe:pcc:xphr:2007", FORMAT)],
    ),
    Applied(
        GA,
        GET_ALL,
        "$XDSDocumentEntryConfidentialityCode",
        [_code("N", CONFIDENTIALITY)],
        [_code("R", CONFIDENTIALITY)],
    ),
    Applied(GA, GET_ALL, "$XDSDocumentEntryType", [STABLE], [ON_DEMAND]),
    Applied(
        GSSC,
        GET_SUBMISSION_SET_AND_CONTENTS,
        "$XDSDocumentEntryFormatCode",
        [_code("urn:ihe:iti:xds:2017:mimeTypeSufficient", FORMAT)],
        [_code("urn:ihe:pcc:xphr:2007", FORMAT)],
    ),
    Applied(
        GSSC,
        GET_SUBMISSION_SET_AND_CONTENTS,
        "$XDSDocumentEntryConfidentialityCode",
        [_code("N", CONFIDENTIALITY)],
        [_code("R", CONFIDENTIALITY)],
    ),
    Applied(GSSC, GET_SUBMISSION_SET_AND_CONTENTS, "$XDSDocumentEntryType", [STABLE], [ON_DEMAND]),
    # GetDocuments: the values "{uuid}" / "{unique}" are the deposited entry's.
    Applied(GD, GET_DOCUMENTS, "$XDSDocumentEntryEntryUUID", ["('{uuid}')"], [f"({OTHER_UUID})"]),
    Applied(GD, GET_DOCUMENTS, "$XDSDocumentEntryUniqueId", ["('{unique}')"], ["('1.2.3.4')"]),
    # Metadata Update: a DocumentEntry's logicalId is its entryUUID in this registry.
    Applied(GD, GET_DOCUMENTS, "$XDSDocumentEntryLogicalID", ["('{uuid}')"], [f"({OTHER_UUID})"]),
]


def _objects_of(query: str, objects) -> set[str]:
    """What the row looks at: the SubmissionSets for FindSubmissionSets and GetAll's
    SubmissionSetStatus, the DocumentEntries' uniqueIds otherwise."""
    if query == FIND_SUBMISSION_SETS:
        return set(answered(objects, "RegistryPackage"))
    return set(answered(objects, "ExtrinsicObject"))


@pytest.mark.parametrize("row", APPLIED, ids=[f"{r.section}-{r.param}" for r in APPLIED])
def test_iti18_parameter_is_applied(xds, row: Applied):  # noqa: F811
    _, nir = xds.patient(230)
    request = deposit(xds, nir)
    unique = request.document_unique_ids["Document01"]
    uuid = entry_uuids(xds, nir, request)["Document01"]
    base = [s for s in BASE[row.query](nir, request) if s[0] != row.param]

    def answer(values: list[str]) -> set[str]:
        slots = base + [
            (row.param, value.replace("{uuid}", uuid).replace("{unique}", unique))
            for value in values
        ]
        return _objects_of(row.query, ask(xds, nir, row.query, slots))

    if row.param == "$XDSSubmissionSetStatus" and row.query == GET_ALL:
        looked_at = lambda values: set(  # noqa: E731
            answered(ask(xds, nir, row.query, base + [(row.param, values[0])]), "RegistryPackage")
        )
        assert looked_at(row.hit) and not looked_at(row.miss)
        return
    expected = {request.submission_set_unique_id} if row.query == FIND_SUBMISSION_SETS else {unique}
    assert answer(row.hit) == expected
    assert answer(row.miss) == set()


@dataclass(frozen=True)
class Refused:
    section: str
    query: str
    slots: list[tuple[str, str]]
    codes: list[str]
    why: str
    return_type: str = "LeafClass"


PATIENT_SLOTS = "{patient}"  # replaced by the test's patient CX
FIND = [
    ("$XDSDocumentEntryPatientId", PATIENT_SLOTS),
    ("$XDSDocumentEntryStatus", APPROVED),
]
MISSING, NUMBER, VALUE = (
    "XDSStoredQueryMissingParam",
    "XDSStoredQueryParamNumber",
    "XDSRegistryMetadataError",
)
ONE_UUID = "'urn:uuid:11111111-1111-4111-8111-111111111111'"
TWO_UUIDS = f"({ONE_UUID}, {OTHER_UUID})"

REFUSED = [
    Refused(FD, FIND_DOCUMENTS, FIND[:1], [MISSING], "required $XDSDocumentEntryStatus missing"),
    Refused(FD, FIND_DOCUMENTS, FIND + FIND[:1], [NUMBER], "$XDSDocumentEntryPatientId twice"),
    Refused(
        FD,
        FIND_DOCUMENTS,
        FIND + [("$XDSDocumentEntryClassCode", _code("10", CLASS))] * 2,
        [NUMBER],
        "a single-slot code list given in two Slots",
    ),
    Refused(
        FD,
        FIND_DOCUMENTS,
        FIND + [("$XDSDocumentEntryCreationTimeFrom", "(20240101, 20240102)")],
        [NUMBER],
        "a time is one value",
    ),
    Refused(
        FD,
        FIND_DOCUMENTS,
        FIND + [("$XDSDocumentEntryCreationTimeFrom", "'yesterday'")],
        [VALUE],
        "a time is YYYY[MM[DD[hh[mm[ss]]]]]",
    ),
    Refused(
        FD,
        FIND_DOCUMENTS,
        [FIND[0], ("$XDSDocumentEntryStatus", "('Approved')")],
        [VALUE],
        "a status is a StatusType URN",
    ),
    Refused(
        FD,
        FIND_DOCUMENTS,
        FIND + [("$XDSDocumentEntryClassCode", "('10')")],
        [VALUE],
        "a code is code^^scheme",
    ),
    Refused(
        FD,
        FIND_DOCUMENTS,
        FIND + [("$XDSDocumentEntryType", "('stable')")],
        [VALUE],
        "a DocumentEntry type is its objectType UUID",
    ),
    Refused(LEVEL, FIND_DOCUMENTS, FIND + [("$MetadataLevel", "3")], [VALUE], "level 1 or 2"),
    Refused(LEVEL, FIND_DOCUMENTS, FIND + [("$MetadataLevel", "'abc'")], [VALUE], "a number"),
    Refused(
        LEVEL,
        GET_DOCUMENTS,
        [("$XDSDocumentEntryEntryUUID", f"({ONE_UUID})"), ("$MetadataLevel", "3")],
        [VALUE],
        "every stored query takes $MetadataLevel, 1 or 2",
    ),
    Refused(
        FSS,
        FIND_SUBMISSION_SETS,
        [
            ("$XDSSubmissionSetPatientId", PATIENT_SLOTS),
            ("$XDSSubmissionSetStatus", APPROVED),
            ("$XDSSubmissionSetAuthorPerson", "('%MARTIN%', '%DURAND%')"),
        ],
        [NUMBER],
        "$XDSSubmissionSetAuthorPerson takes one value",
    ),
    Refused(FD, FIND_DOCUMENTS, [], [MISSING, MISSING], "no parameter at all"),
    Refused(
        GA,
        GET_ALL,
        [
            ("$patientId", PATIENT_SLOTS),
            ("$XDSDocumentEntryStatus", APPROVED),
            ("$XDSSubmissionSetStatus", APPROVED),
        ],
        [MISSING],
        "GetAll requires $XDSFolderStatus",
    ),
    Refused(GD, GET_DOCUMENTS, [], [MISSING], "one of entryUUID, uniqueId, logicalID"),
    Refused(
        GD,
        GET_DOCUMENTS,
        [("$XDSDocumentEntryEntryUUID", f"({ONE_UUID})"), ("$XDSDocumentEntryUniqueId", "('1.2')")],
        [NUMBER],
        "entryUUID and uniqueId are exclusive",
    ),
    Refused(
        GD,
        GET_DOCUMENTS,
        [("$XDSDocumentEntryEntryUUID", "('1234-not-a-uuid')")],
        [VALUE],
        "entryUUIDs are urn:uuid:",
    ),
    Refused(
        GSSC,
        GET_SUBMISSION_SET_AND_CONTENTS,
        [("$XDSSubmissionSetEntryUUID", TWO_UUIDS)],
        [NUMBER],
        "GetSubmissionSetAndContents names one SubmissionSet",
    ),
    Refused(
        f"{SQ}.13",
        GET_RELATED_DOCUMENTS,
        [("$XDSDocumentEntryEntryUUID", TWO_UUIDS), ("$AssociationTypes", f"('{v.ASSOC_RPLC}')")],
        [NUMBER],
        "GetRelatedDocuments names one DocumentEntry",
    ),
    Refused(
        f"{SQ}.13",
        GET_RELATED_DOCUMENTS,
        [("$XDSDocumentEntryEntryUUID", ONE_UUID)],
        [MISSING],
        "$AssociationTypes is required",
    ),
    Refused(
        f"{SQ}.13",
        GET_RELATED_DOCUMENTS,
        [("$XDSDocumentEntryEntryUUID", ONE_UUID), ("$AssociationTypes", "('RPLC')")],
        [VALUE],
        "an association type is its URN",
    ),
    Refused(
        "ITI TF-2a 3.18.4.1.2.2",
        "urn:uuid:00000000-0000-4000-8000-0000000000ff",
        [],
        ["XDSUnknownStoredQuery"],
        "unknown query id",
    ),
    Refused(
        "ITI TF-2a 3.18.4.1.2.1",
        FIND_DOCUMENTS,
        FIND,
        [VALUE],
        "returnType is ObjectRef or LeafClass",
        return_type="LeafClassWithRepositoryItem",
    ),
]


def _with_patient(slots, nir: str) -> list[tuple[str, str]]:
    return [(name, value.replace(PATIENT_SLOTS, f"'{patient_cx(nir)}'")) for name, value in slots]


def _send(xds, nir: str, query: str, slots, return_type: str = "LeafClass"):  # noqa: F811
    slots = _with_patient(slots, nir)
    response = xds.soap(
        "/xds/registry",
        v.ACTION_ITI18,
        adhoc(query, slots, return_type),
        xds.security(GP, nir),
    )
    assert response.status_code == 200
    return registry_status(response)


@pytest.mark.parametrize("row", REFUSED, ids=[f"{r.section}-{r.why}" for r in REFUSED])
def test_iti18_parameter_is_refused(xds, row: Refused):  # noqa: F811
    _, nir = xds.patient(231)
    assert _send(xds, nir, row.query, row.slots, row.return_type) == (
        v.RESPONSE_FAILURE,
        row.codes,
    )


@pytest.mark.parametrize(
    ("query", "slots", "param"),
    [
        (FIND_DOCUMENTS, FIND + [("$Nonsense", "'x'")], "$Nonsense"),
        # ITI-18 names the community by AdhocQuery/@home, never by a $homeCommunityId Slot.
        (
            GET_DOCUMENTS,
            [
                ("$XDSDocumentEntryUniqueId", "('{unique}')"),
                ("$homeCommunityId", "'urn:oid:1.2.3'"),
            ],
            "$homeCommunityId",
        ),
        # A parameter of another query: FindDocuments' status means nothing to GetDocuments.
        (
            GET_DOCUMENTS,
            [
                ("$XDSDocumentEntryUniqueId", "('{unique}')"),
                ("$XDSDocumentEntryStatus", DEPRECATED),
            ],
            "$XDSDocumentEntryStatus",
        ),
    ],
    ids=["unknown name", "homeCommunityId", "another query's parameter"],
)
def test_iti18_undefined_parameter_is_ignored_with_a_warning(xds, query, slots, param):  # noqa: F811
    """ebRS 3.0 6.3.2.1: a registry ignores parameters the stored query does not define;
    the answer is the one without it, with a Warning naming the parameter."""
    _, nir = xds.patient(232)
    request = deposit(xds, nir)
    unique = request.document_unique_ids["Document01"]
    slots = [(name, value.replace("{unique}", unique)) for name, value in slots]
    response = xds.soap(
        "/xds/registry",
        v.ACTION_ITI18,
        adhoc(query, _with_patient(slots, nir)),
        xds.security(GP, nir),
    )
    status, codes = registry_status(response)
    assert (status, codes) == (v.RESPONSE_SUCCESS, ["XDSRegistryMetadataError"])
    root, _ = envelope_of(response)
    warning = next(root.iter(f"{{{v.NS_RS}}}RegistryError"))
    assert warning.get("severity").endswith("Warning")
    assert warning.get("location") == param
    objects = root.find(f".//{{{v.NS_RIM}}}RegistryObjectList")
    assert set(answered(objects, "ExtrinsicObject")) == {unique}
