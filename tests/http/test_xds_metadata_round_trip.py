"""No silent loss, end to end (issue #19, point 3 and deliver 4).

What an ITI-41 says (extra metadata Slots, every SubmissionSet author with all its
institutions, roles, specialties and telecoms, every intendedRecipient, every DocumentEntry
author) comes back the same from ITI-18 LeafClass answers and shows in FHIR as IHE MHD
prescribes; what an ITI-65 says in those MHD forms comes back from ITI-18 the same way. A
Slot given twice on one object is refused, naming it.
"""

from __future__ import annotations

import json
import uuid

import pytest
from lxml import etree

from ihe_xds import vocabulary as v
from ihe_xds.extra_metadata import EXT_EXTRA_METADATA
from ihe_xds.mapping.list_parties import EXT_INTENDED_RECIPIENT, EXT_SUBMISSION_SET_AUTHOR
from ihe_xds.stored_query import (
    FIND_SUBMISSION_SETS,
    GET_SUBMISSION_SET_AND_CONTENTS,
    GET_SUBMISSION_SETS,
)
from tests.http.conftest import FHIR_JSON, INS_SYSTEM, auth
from tests.http.test_mhd_xds_roundtrip import _iti65_bundle
from tests.http.test_xds_endpoints import GP, Xds, envelope_of, registry_status
from tests.http.test_xds_stored_queries import (
    APPROVED,
    answered,
    ask,
    assert_equivalent_entry,
    assert_equivalent_submission_set,
    classifications,
    entry_uuids,
    sent_entries,
    sent_submission_set,
    slots,
)
from tests.xds_builders import build_iti41, patient_cx
from tests.xds_metadata_builders import (
    ENTRY_EXTRA,
    INTENDED_RECIPIENTS,
    RIM,
    SET_EXTRA,
    edited,
    rich,
    slot,
)


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


def post(api: Xds, nir: str, edit=rich):
    request = edited(build_iti41(nir=nir, mtom=False, security=api.security(GP, nir)), edit)
    response = api.client.post(
        "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
    )
    return request, response


def deposit(api: Xds, nir: str, edit=rich):
    request, response = post(api, nir, edit)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:3000]
    return request


def author_classifications(element: etree._Element, scheme: str) -> list[tuple]:
    return [c for c in classifications(element) if c[0] == scheme]


# -- ITI-41 in, ITI-18 out ---------------------------------------------------------------------


def test_iti18_get_submission_set_and_contents_returns_everything_the_iti41_said(xds):
    """ITI TF-3 4.1.14 (extra metadata stored and returned), 4.2.3.3.1 and 4.2.3.3.6 (every
    SubmissionSet author and intendedRecipient), 4.2.3.2.1 (every DocumentEntry author):
    the LeafClass answer carries the same Slots and author Classifications as the request."""
    _, nir = xds.patient(301)
    request = deposit(xds, nir)
    objects = ask(
        xds,
        nir,
        GET_SUBMISSION_SET_AND_CONTENTS,
        [("$XDSSubmissionSetUniqueId", f"'{request.submission_set_unique_id}'")],
    )
    package = answered(objects, "RegistryPackage")[request.submission_set_unique_id]
    sent = sent_submission_set(request)
    assert_equivalent_submission_set(sent, package)
    got_slots = slots(package)
    assert got_slots["intendedRecipient"] == INTENDED_RECIPIENTS
    for name, values in SET_EXTRA:
        assert got_slots[name] == values, name
    assert len(author_classifications(package, v.SS_AUTHOR)) == 3
    entries = answered(objects, "ExtrinsicObject")
    for unique_id, element in sent_entries(request).items():
        got = entries[unique_id]
        assert_equivalent_entry(element, got)
        for name, values in ENTRY_EXTRA:
            assert slots(got)[name] == values, name
        assert author_classifications(got, v.DE_AUTHOR) == author_classifications(
            element, v.DE_AUTHOR
        )


@pytest.mark.parametrize("query", ["GetSubmissionSets", "FindSubmissionSets"])
def test_iti18_submission_set_queries_return_every_author_and_recipient(xds, query):
    """ITI TF-2a 3.18.4.1.2.3.7.x: every query returning the SubmissionSet returns it whole."""
    _, nir = xds.patient(302)
    request = deposit(xds, nir)
    if query == "GetSubmissionSets":
        entry_uuid = entry_uuids(xds, nir, request)["Document01"]
        objects = ask(xds, nir, GET_SUBMISSION_SETS, [("$uuid", f"('{entry_uuid}')")])
    else:
        objects = ask(
            xds,
            nir,
            FIND_SUBMISSION_SETS,
            [
                ("$XDSSubmissionSetPatientId", f"'{patient_cx(nir)}'"),
                ("$XDSSubmissionSetStatus", APPROVED),
            ],
        )
    package = answered(objects, "RegistryPackage")[request.submission_set_unique_id]
    assert_equivalent_submission_set(sent_submission_set(request), package)


# -- ITI-41 in, FHIR out ------------------------------------------------------------------------


def test_fhir_shows_the_iti41_metadata_as_mhd_prescribes(xds):
    """IHE MHD IHE.MHD.Minimal.SubmissionSet (ITI-66): source is the first author,
    ihe-intendedRecipient one extension per recipient resource; the later authors in our
    documented extension; extra metadata (ITI TF-3 4.1.14) in xds-extra-metadata on the List
    and the DocumentReference (ITI-67)."""
    _, nir = xds.patient(303)
    request = deposit(xds, nir)
    token = xds.tokens.practitioner(GP)
    lists = xds.client.get(
        "/fhir/List",
        query_string={"patient.identifier": f"{INS_SYSTEM}|{nir}", "code": "submissionset"},
        headers=auth(token),
    ).get_json()
    (resource,) = [e["resource"] for e in lists["entry"]]
    contained = {r["id"]: r for r in resource["contained"]}
    by_url: dict[str, list] = {}
    for extension in resource["extension"]:
        by_url.setdefault(extension["url"], []).append(extension)
    recipients = [
        contained[e["valueReference"]["reference"][1:]] for e in by_url[EXT_INTENDED_RECIPIENT]
    ]
    assert {r["resourceType"] for r in recipients} == {"Organization", "Practitioner"}
    assert {"anne.leroy@ch-dest.fr", "secretariat@cabinet-du-port.fr"} <= {
        t["value"] for r in recipients for t in r.get("telecom", [])
    }
    later = [
        contained[e["valueReference"]["reference"][1:]] for e in by_url[EXT_SUBMISSION_SET_AUTHOR]
    ]
    assert "LABORATOIRE DU CENTRE" in {r.get("name") for r in later}
    assert contained[resource["source"]["reference"][1:]]["resourceType"] == "PractitionerRole"
    names = {
        e["extension"][0]["valueUri"]: [x["valueString"] for x in e["extension"][1:]]
        for e in by_url[EXT_EXTRA_METADATA]
    }
    assert names == dict(SET_EXTRA)
    documents = xds.client.get(
        "/fhir/DocumentReference",
        query_string={"patient.identifier": f"{INS_SYSTEM}|{nir}"},
        headers=auth(token),
    ).get_json()
    (document,) = [e["resource"] for e in documents["entry"]]
    assert {
        e["extension"][0]["valueUri"]: [x["valueString"] for x in e["extension"][1:]]
        for e in document["extension"]
        if e["url"] == EXT_EXTRA_METADATA
    } == dict(ENTRY_EXTRA)
    assert len(request.document_unique_ids) == 1


# -- ITI-65 in, ITI-18 out ----------------------------------------------------------------------


def _extra(name: str, *values: str) -> dict:
    return {
        "url": EXT_EXTRA_METADATA,
        "extension": [{"url": "name", "valueUri": name}]
        + [{"url": "value", "valueString": value} for value in values],
    }


def test_an_iti65_with_several_authors_recipients_and_extra_metadata_shows_in_iti18(xds):
    """IHE MHD ITI-65 -> XDS: List.source and the later authors, each ihe-intendedRecipient,
    and xds-extra-metadata on the List and the DocumentReference come back from ITI-18
    GetSubmissionSetAndContents (ITI TF-3 4.2.3.3.1, 4.2.3.3.6, 4.1.14)."""
    _, nir = xds.patient(304)
    bundle = _iti65_bundle(nir)
    listed = bundle["entry"][0]["resource"]
    set_unique_id = f"1.2.250.1.999.3.{uuid.uuid4().int % 10**12}"
    listed["identifier"] = [i for i in listed.get("identifier", []) if i.get("use") != "usual"]
    listed["identifier"].append(
        {"use": "usual", "system": "urn:ietf:rfc:3986", "value": f"urn:oid:{set_unique_id}"}
    )
    listed["contained"] += [
        {
            "resourceType": "Practitioner",
            "id": "second",
            "name": [{"family": "SECOND", "given": ["Ana"]}],
        },
        {"resourceType": "Organization", "id": "lab", "name": "LABO"},
        {
            "resourceType": "Organization",
            "id": "dest",
            "name": "CH DEST",
            "telecom": [{"system": "email", "value": "dest@ch.fr"}],
        },
    ]
    listed["extension"] += [
        {"url": EXT_SUBMISSION_SET_AUTHOR, "valueReference": {"reference": "#second"}},
        {"url": EXT_SUBMISSION_SET_AUTHOR, "valueReference": {"reference": "#lab"}},
        {"url": EXT_INTENDED_RECIPIENT, "valueReference": {"reference": "#dest"}},
        _extra("urn:foo:lot", "L1", "L2"),
    ]
    document = bundle["entry"][1]["resource"]
    document["contained"].append({"resourceType": "Organization", "id": "org2", "name": "CLINIQUE"})
    document["author"].append({"reference": "#org2"})
    document["extension"] = document.get("extension", []) + [_extra("urn:foo:doc", "D")]
    response = xds.client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(xds.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)

    objects = ask(
        xds,
        nir,
        GET_SUBMISSION_SET_AND_CONTENTS,
        [("$XDSSubmissionSetUniqueId", f"'{set_unique_id}'")],
    )
    package = answered(objects, "RegistryPackage")[set_unique_id]
    got = slots(package)
    assert got["urn:foo:lot"] == ["L1", "L2"]
    assert got["intendedRecipient"] == ["CH DEST||^^Internet^dest@ch.fr"]
    persons = [dict(c[2]).get("authorPerson") for c in author_classifications(package, v.SS_AUTHOR)]
    institutions = [
        dict(c[2]).get("authorInstitution") for c in author_classifications(package, v.SS_AUTHOR)
    ]
    assert sorted(p for p in persons if p) == sorted(
        [("899700218896^^^^^^^^&1.2.250.1.71.4.2.1&ISO",), ("^SECOND^Ana",)]
    )
    assert ("LABO",) in institutions
    (entry,) = objects.findall(f"{RIM}ExtrinsicObject")
    assert slots(entry)["urn:foo:doc"] == ["D"]
    assert ("CLINIQUE",) in [
        dict(c[2]).get("authorInstitution") for c in author_classifications(entry, v.DE_AUTHOR)
    ]


# -- refusals and warnings ---------------------------------------------------------------------


def _findable(api: Xds, nir: str) -> int:
    root, _ = envelope_of(api.find_documents(nir))
    return len(list(root.iter(f"{RIM}ExtrinsicObject")))


@pytest.mark.parametrize(
    ("where", "name", "values"),
    [
        ("ExtrinsicObject", "serviceStopTime", ["20240115100000"]),
        ("RegistryPackage", "urn:foo:bar", ["other"]),
    ],
)
def test_a_slot_given_twice_is_refused_naming_it_and_nothing_is_stored(xds, where, name, values):
    """ebRIM 3.0: a Slot name is unique within its RegistryObject. It used to keep the last
    value without a word (issue #19, point 3); now XDSRegistryMetadataError names it."""
    _, nir = xds.patient(305)

    def twice(root):
        rich(root)
        slot(next(root.iter(f"{RIM}{where}")), name, *values, index=0)

    _, response = post(xds, nir, twice)
    status, codes = registry_status(response)
    assert (status, codes) == (v.RESPONSE_FAILURE, ["XDSRegistryMetadataError"])
    root, _ = envelope_of(response)
    (error,) = root.iter(f"{{{v.NS_RS}}}RegistryError")
    assert name in error.get("codeContext") and error.get("location").endswith(name)
    assert _findable(xds, nir) == 0


def test_an_undefined_urn_ihe_slot_is_refused(xds):
    """ITI TF-3 4.1.14: urn:ihe: is IHE's namespace, not open to extra metadata."""
    _, nir = xds.patient(306)

    def reserved(root):
        slot(next(root.iter(f"{RIM}ExtrinsicObject")), "urn:ihe:iti:xds:2099:unknown", "x")

    _, response = post(xds, nir, reserved)
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSRegistryMetadataError"])
    assert _findable(xds, nir) == 0


def test_extra_slots_of_the_associations_come_back_from_iti18(xds):
    """ITI TF-3 4.1.14 (NIST XDS toolkit test 12379, section support): the HasMember's extra
    Slot is stored and returned with the Association, the deposit succeeds without warning."""
    _, nir = xds.patient(307)

    def on_association(root):
        rich(root)
        slot(next(root.iter(f"{RIM}Association")), "urn:nist:extraAssocSlot", "importantvalue")

    request = deposit(xds, nir, on_association)
    objects = ask(
        xds,
        nir,
        GET_SUBMISSION_SET_AND_CONTENTS,
        [("$XDSSubmissionSetUniqueId", f"'{request.submission_set_unique_id}'")],
    )
    (association,) = objects.findall(f"{RIM}Association")
    assert slots(association) == {
        "SubmissionSetStatus": ["Original"],
        "urn:nist:extraAssocSlot": ["importantvalue"],
    }
