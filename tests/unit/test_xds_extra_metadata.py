"""No silent loss in the XDS <-> FHIR mapping (issue #19, point 3 and deliver 4).

Extra metadata Slots (ITI TF-3 4.1.14), every SubmissionSet author and intendedRecipient
(ITI TF-3 4.2.3.3.1, 4.2.3.3.6, carried as IHE MHD prescribes) and every DocumentEntry
author make the trip ebRIM -> FHIR -> ebRIM unchanged; a Slot given twice on one object is
an error (ebRIM 3.0: Slot names are unique within a RegistryObject).
"""

from __future__ import annotations

import copy

import pytest
from fhir.resources.R4B.list import List as FhirList
from lxml import etree

from fhir_server.resources.profiles import DMP_SUBMISSION_SET, default_registry
from ihe_xds import vocabulary as v
from ihe_xds.ebrim import Author, Slot, parse_submission
from ihe_xds.errors import SEVERITY_WARNING, XDS_REGISTRY_METADATA_ERROR
from ihe_xds.extra_metadata import EXT_EXTRA_METADATA
from ihe_xds.mapping import (
    associations_from_fhir,
    document_reference_to_ebrim,
    list_to_ebrim,
    submission_to_fhir,
)
from ihe_xds.mapping.list_parties import EXT_AUTHOR_ORG, EXT_INTENDED_RECIPIENT
from ihe_xds.soap import read_envelope
from ihe_xds.validation import DMP_PROFILE, validate_submission
from tests.xds_builders import REPOSITORY_UNIQUE_ID, build_iti41
from tests.xds_metadata_builders import (
    ENTRY_AUTHORS,
    ENTRY_EXTRA,
    INTENDED_RECIPIENTS,
    RIM,
    SET_EXTRA,
    SUBMISSION_SET_AUTHORS,
    edited,
    rich_iti41,
    slot,
)


def _parsed(request):
    return parse_submission(read_envelope(request.envelope).body)


def _mapped(submission):
    result = submission_to_fhir(
        submission,
        submission.documents,
        repository_unique_id=REPOSITORY_UNIQUE_ID,
        resolve_patient=lambda oid, value: "patient-1",
    )
    assert result.errors == []
    return result


def _authors(specs) -> list[Author]:
    return [Author(p, list(i), list(r), list(s), list(t)) for p, i, r, s, t in specs]


def _codes(errors) -> list[tuple[str, str]]:
    return [(e.error_code, e.location) for e in errors]


# -- parsing and validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "name"),
    [
        ("ExtrinsicObject", "creationTime"),
        ("ExtrinsicObject", "urn:foo:bar"),
        ("RegistryPackage", "submissionTime"),
        ("Association", "SubmissionSetStatus"),
    ],
)
def test_a_slot_given_twice_on_one_object_is_a_metadata_error_naming_it(where, name):
    """ebRIM 3.0 (Slot names are unique within their RegistryObject): the second Slot used to
    replace the first without a word (issue #19, point 3)."""

    def twice(root):
        element = next(root.iter(f"{RIM}{where}"))
        slot(element, name, "20240115103000" if "Time" in name else "Original", index=0)
        if name.startswith("urn:"):
            slot(element, name, "x", index=0)

    submission = _parsed(edited(build_iti41(mtom=False), twice))
    errors = validate_submission(submission, DMP_PROFILE)
    repeated = [e for e in errors if "given twice" in e.code_context]
    assert len(repeated) == 1, errors
    assert repeated[0].error_code == XDS_REGISTRY_METADATA_ERROR
    assert repeated[0].location.endswith(f" {name}")
    assert name in repeated[0].code_context


def test_a_slot_given_twice_in_an_author_classification_is_an_error():
    """ebRIM 3.0: a Classification is a RegistryObject, its Slot names are unique too."""

    def twice(root):
        package = root.find(f".//{RIM}RegistryPackage")
        for classification in package.findall(f"{RIM}Classification"):
            if classification.get("classificationScheme") == v.SS_AUTHOR:
                slot(classification, "authorInstitution", "AUTRE^^^^^&1.2.3&ISO^IDNST^^^1")

    errors = validate_submission(_parsed(edited(build_iti41(mtom=False), twice)), DMP_PROFILE)
    assert [(e.error_code, e.location) for e in errors if "given twice" in e.code_context] == [
        ("XDSRegistryMetadataError", "SubmissionSet SubmissionSet01 author authorInstitution")
    ]


@pytest.mark.parametrize(
    "name",
    ["urn:ihe:iti:xds:2099:notDefined", "creationtime", "myOwnSlot"],
    ids=["undefined-urn-ihe", "misspelt-xds-name", "not-a-urn"],
)
def test_an_undefined_slot_that_cannot_be_extra_metadata_is_refused(name):
    """ITI TF-3 4.1.14: extra metadata is named by a URN outside the urn:ihe: namespace; any
    other undefined name is an XDS attribute this registry does not know, refused by name."""

    def add(root):
        slot(next(root.iter(f"{RIM}ExtrinsicObject")), name, "x", index=0)

    errors = validate_submission(_parsed(edited(build_iti41(mtom=False), add)), DMP_PROFILE)
    assert _codes(errors) == [("XDSRegistryMetadataError", f"DocumentEntry Document01 {name}")]
    # ... while a defined urn:ihe: Slot (referenceIdList) and extra URNs are accepted.

    def defined(root):
        entry = next(root.iter(f"{RIM}ExtrinsicObject"))
        slot(entry, "urn:ihe:iti:xds:2013:referenceIdList", "R1^^^&1.2.3&ISO", index=0)

    accepted = _parsed(edited(rich_iti41(), defined))
    assert validate_submission(accepted, DMP_PROFILE) == []
    assert [(s.name, s.values) for s in accepted.entries[0].extra_slots] == [
        (n, list(vs)) for n, vs in reversed(ENTRY_EXTRA)
    ]


def test_extra_slots_of_an_association_not_kept_get_the_not_saved_warning():
    """ITI TF-3 4.1.14: what the registry does not store, it says so (XDSExtraMetadataNotSaved,
    a warning: the submission still succeeds). A HasMember naming a stored document
    (SubmissionSetStatus Reference) is not kept by the FHIR mapping, nor its Slots."""
    stored = "urn:uuid:0b2a6c1e-8b0f-4d5e-9f3a-1c2d3e4f5a6b"

    def add(root):
        objects = next(root.iter(f"{RIM}RegistryObjectList"))
        association = etree.SubElement(
            objects,
            f"{RIM}Association",
            id="as-ref",
            associationType=v.ASSOC_HAS_MEMBER,
            sourceObject="SubmissionSet01",
            targetObject=stored,
        )
        slot(association, "SubmissionSetStatus", "Reference")
        slot(association, "urn:nist:extraAssocSlot", "importantvalue")

    errors = validate_submission(_parsed(edited(build_iti41(mtom=False), add)), DMP_PROFILE)
    assert [(e.error_code, e.severity, e.location) for e in errors] == [
        ("XDSExtraMetadataNotSaved", SEVERITY_WARNING, "Association as-ref urn:nist:extraAssocSlot")
    ]


def test_extra_slots_of_kept_associations_round_trip_and_follow_the_naming_rule():
    """ITI TF-3 4.1.14 (extra metadata of Associations too, NIST test 12379): the HasMember's
    on its List.entry, the RPLC's on its relatesTo, both given back by the Associations
    rebuilt for ITI-18; a name no extra Slot may have is refused there as well."""
    target = "urn:uuid:0b2a6c1e-8b0f-4d5e-9f3a-1c2d3e4f5a6b"

    def add(root):
        for association in root.iter(f"{RIM}Association"):
            slot(association, f"urn:nist:extra:{association.get('id')}", "v1", "v2")

    submission = _parsed(edited(build_iti41(mtom=False, replaces=target), add))
    assert validate_submission(submission, DMP_PROFILE) == []
    result = _mapped(submission)
    (doc,) = result.document_references
    rebuilt = {a.type: a.slots for a in associations_from_fhir([result.list_resource], [doc])}
    assert rebuilt[v.ASSOC_HAS_MEMBER] == [
        Slot("SubmissionSetStatus", ["Original"]),
        Slot("urn:nist:extra:as01", ["v1", "v2"]),
    ]
    assert rebuilt[v.ASSOC_RPLC] == [Slot("urn:nist:extra:as-rplc", ["v1", "v2"])]

    def reserved(root):
        slot(next(root.iter(f"{RIM}Association")), "urn:ihe:iti:2099:x", "v")

    errors = validate_submission(_parsed(edited(build_iti41(mtom=False), reserved)), DMP_PROFILE)
    assert _codes(errors) == [("XDSRegistryMetadataError", "Association as01 urn:ihe:iti:2099:x")]


# -- ebRIM -> FHIR -> ebRIM --------------------------------------------------------------------


def test_extra_metadata_round_trips_through_the_document_reference_and_the_list():
    """ITI TF-3 4.1.14: stored, and returned by queries as sent (same names, same values, same
    order of values)."""
    submission = _parsed(rich_iti41())
    result = _mapped(submission)
    (doc,) = result.document_references
    extensions = [e for e in doc["extension"] if e["url"] == EXT_EXTRA_METADATA]
    assert extensions[0]["extension"][0] == {"url": "name", "valueUri": ENTRY_EXTRA[-1][0]}
    back = document_reference_to_ebrim(doc, patient_cx="x", repository_unique_id="r")
    assert sorted((s.name, s.values) for s in back.extra_slots) == sorted(
        (n, list(vs)) for n, vs in ENTRY_EXTRA
    )
    list_back = list_to_ebrim(result.list_resource)
    assert sorted((s.name, s.values) for s in list_back.extra_slots) == sorted(
        (n, list(vs)) for n, vs in SET_EXTRA
    )


def test_every_author_and_recipient_round_trips():
    """ITI TF-3 4.2.3.3.1 (author 0..*: person, institutions, roles, specialties, telecoms) and
    4.2.3.3.6 (intendedRecipient 0..*): all of them, not the first author only; and so
    every DocumentEntry author, with all its institutions (4.2.3.2.1)."""
    submission = _parsed(rich_iti41())
    original = submission.submission_set
    assert original.authors == _authors(SUBMISSION_SET_AUTHORS)
    assert original.intended_recipients == INTENDED_RECIPIENTS
    result = _mapped(submission)
    back = list_to_ebrim(result.list_resource)
    assert back.authors == original.authors
    assert back.intended_recipients == original.intended_recipients
    assert submission.entries[0].authors == _authors(ENTRY_AUTHORS)
    (doc,) = result.document_references
    entry = document_reference_to_ebrim(doc, patient_cx="x", repository_unique_id="r")
    assert entry.authors == _authors(ENTRY_AUTHORS)


def test_the_list_carries_them_as_mhd_prescribes_and_stays_valid_r4():
    """IHE MHD IHE.MHD.Minimal.SubmissionSet: List.source is the author (0..1, R4 allows no
    Organization there: an organisation author goes in source.extension:authorOrg), each
    intendedRecipient an ihe-intendedRecipient extension to a Practitioner or Organization."""
    resource = _mapped(_parsed(rich_iti41())).list_resource
    FhirList.model_validate(resource)
    contained = {r["id"]: r for r in resource["contained"]}
    source = contained[resource["source"]["reference"][1:]]
    assert source["resourceType"] == "PractitionerRole"
    assert contained[source["practitioner"]["reference"][1:]]["name"][0]["family"] == "MARTIN"
    recipients = [
        contained[e["valueReference"]["reference"][1:]]
        for e in resource["extension"]
        if e["url"] == EXT_INTENDED_RECIPIENT
    ]
    assert [r["resourceType"] for r in recipients] == [
        "Organization",
        "Practitioner",
        "Practitioner",
        "Organization",
        "Practitioner",
    ]
    assert default_registry().validate(resource, DMP_SUBMISSION_SET) == []


def test_an_organisation_first_author_is_the_mhd_author_org():
    """IHE MHD ihe-authorOrg: when the SubmissionSet's author is an organisation."""
    submission = _parsed(rich_iti41())
    submission.submission_set.authors = [submission.submission_set.authors[2]]
    resource = _mapped(submission).list_resource
    assert set(resource["source"]) == {"extension"}
    (extension,) = resource["source"]["extension"]
    assert extension["url"] == EXT_AUTHOR_ORG
    assert list_to_ebrim(resource).authors == [_authors(SUBMISSION_SET_AUTHORS)[2]]


# -- FHIR (an MHD client's List) -> ebRIM -----------------------------------------------------


def test_an_mhd_client_list_reads_as_one_author_per_source_and_its_author_org():
    """IHE MHD: List.source (a person) with source.extension:authorOrg (the organisation they
    write for) is one XDS author; each ihe-intendedRecipient reference is one recipient."""
    resource = {
        "resourceType": "List",
        "contained": [
            {"resourceType": "Practitioner", "id": "writer", "name": [{"family": "Weel"}]},
            {"resourceType": "Organization", "id": "org", "name": "Hospital"},
            {
                "resourceType": "Practitioner",
                "id": "doc",
                "name": [{"family": "Dest"}],
                "telecom": [{"system": "email", "value": "dest@example.org"}],
            },
        ],
        "extension": [
            {"url": EXT_INTENDED_RECIPIENT, "valueReference": {"reference": "#doc"}},
            {"url": EXT_INTENDED_RECIPIENT, "valueReference": {"reference": "#org"}},
        ],
        "source": {
            "reference": "#writer",
            "extension": [{"url": EXT_AUTHOR_ORG, "valueReference": {"reference": "#org"}}],
        },
    }
    back = list_to_ebrim(resource)
    assert back.authors == [Author(person="^Weel", institutions=["Hospital"])]
    assert back.intended_recipients == ["|^Dest|^^Internet^dest@example.org", "Hospital"]


@pytest.mark.parametrize(
    "names",
    [["urn:ihe:iti:xds:2099:x"], ["submissionTime"], ["urn:foo:a", "urn:foo:a"]],
    ids=["urn-ihe", "defined-name", "twice"],
)
def test_the_submission_set_profile_refuses_extra_metadata_no_slot_could_carry(names):
    """ITI TF-3 4.1.14 and ebRIM: what FHIR clients send must be an extra Slot ITI-18 can give
    back: a URN outside urn:ihe:, each name once (dmp-xds-extra-1)."""
    resource = copy.deepcopy(_mapped(_parsed(build_iti41(mtom=False))).list_resource)
    resource["extension"] += [
        {
            "url": EXT_EXTRA_METADATA,
            "extension": [{"url": "name", "valueUri": n}, {"url": "value", "valueString": "x"}],
        }
        for n in names
    ]
    issues = default_registry().validate(resource, DMP_SUBMISSION_SET)
    assert [i.expression for i in issues if "[dmp-xds-extra-1:" in i.diagnostics] == [("List",)]
    assert list_to_ebrim(resource).extra_slots == [
        Slot(n, ["x"]) for n in dict.fromkeys(names) if n.startswith("urn:foo")
    ]
