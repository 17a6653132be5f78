"""ITI-18 stored queries over HTTP (ITI TF-2a 3.18.4.1.2.3.7), on documents deposited by ITI-41.

Round trip: what an ITI-41 request says about a DocumentEntry or a SubmissionSet
(classifications, slots, external identifiers, name, description) must come back, equivalent,
from every LeafClass query that returns the object.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from lxml import etree

from ihe_xds import vocabulary as v
from ihe_xds.stored_query import (
    FIND_DOCUMENTS,
    FIND_DOCUMENTS_BY_REFERENCE_ID,
    FIND_SUBMISSION_SETS,
    GET_ALL,
    GET_ASSOCIATIONS,
    GET_DOCUMENTS,
    GET_DOCUMENTS_AND_ASSOCIATIONS,
    GET_RELATED_DOCUMENTS,
    GET_SUBMISSION_SET_AND_CONTENTS,
    GET_SUBMISSION_SETS,
)
from tests.http.test_xds_endpoints import GP, Xds, envelope_of, registry_status
from tests.xds_builders import build_iti41, patient_cx

RIM = f"{{{v.NS_RIM}}}"
APPROVED = f"('{v.STATUS_APPROVED}')"
# Slots the registry adds to what the source sent (ITI TF-3 4.2.3.2: registry-assigned).
REGISTRY_SLOTS = {"repositoryUniqueId"}


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


# -- requests ----------------------------------------------------------------------------------


def adhoc(query_id: str, slots: list[tuple[str, str]], return_type: str = "LeafClass"):
    request = etree.Element(
        f"{{{v.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": v.NS_QUERY, "rim": v.NS_RIM}
    )
    etree.SubElement(request, f"{{{v.NS_QUERY}}}ResponseOption", returnType=return_type)
    query = etree.SubElement(request, f"{RIM}AdhocQuery", id=query_id)
    for name, value in slots:
        slot = etree.SubElement(query, f"{RIM}Slot", name=name)
        etree.SubElement(etree.SubElement(slot, f"{RIM}ValueList"), f"{RIM}Value").text = value
    return request


def ask(api: Xds, nir: str, query_id: str, slots, return_type: str = "LeafClass"):
    """The answer's RegistryObjectList, after checking the query succeeded."""
    response = api.soap(
        "/xds/registry", v.ACTION_ITI18, adhoc(query_id, slots, return_type), api.security(GP, nir)
    )
    assert response.status_code == 200
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:2000]
    root, _ = envelope_of(response)
    return root.find(f".//{RIM}RegistryObjectList")


def deposit(api: Xds, nir: str, **kwargs):
    request = build_iti41(nir=nir, security=api.security(GP, nir), **kwargs)
    response = api.client.post(
        "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
    )
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:2000]
    return request


# -- reading ebRIM -----------------------------------------------------------------------------


def kinds(objects: etree._Element) -> Counter:
    return Counter(etree.QName(child).localname for child in objects)


def external_ids(element: etree._Element) -> dict[str, str]:
    return {
        e.get("identificationScheme"): e.get("value")
        for e in element.findall(f"{RIM}ExternalIdentifier")
    }


def unique_id_of(element: etree._Element) -> str:
    ids = external_ids(element)
    return ids.get(v.DE_UNIQUE_ID) or ids[v.SS_UNIQUE_ID]


def slots(element: etree._Element) -> dict[str, list[str]]:
    return {
        s.get("name"): [value.text for value in s.iter(f"{RIM}Value")]
        for s in element.findall(f"{RIM}Slot")
    }


def localized(element: etree._Element, local: str) -> str | None:
    found = element.find(f"{RIM}{local}/{RIM}LocalizedString")
    return found.get("value") if found is not None else None


def classifications(element: etree._Element) -> list[tuple]:
    """Comparable classifications: scheme or node, code, its slots, its display name."""
    found = []
    for c in element.findall(f"{RIM}Classification"):
        found.append(
            (
                c.get("classificationScheme") or c.get("classificationNode"),
                c.get("nodeRepresentation") or "",
                tuple(sorted((k, tuple(vs)) for k, vs in slots(c).items())),
                localized(c, "Name"),
            )
        )
    return sorted(found)


def sent_entries(request) -> dict[str, etree._Element]:
    """uniqueId -> the ExtrinsicObject of the ITI-41 request."""
    root = etree.fromstring(request.envelope)
    return {unique_id_of(e): e for e in root.iter(f"{RIM}ExtrinsicObject")}


def sent_submission_set(request) -> etree._Element:
    root = etree.fromstring(request.envelope)
    package = root.find(f".//{RIM}RegistryPackage")
    # The SubmissionSet node classification is written beside the package in the request.
    for c in root.iter(f"{RIM}Classification"):
        if c.get("classificationNode") == v.SS_NODE:
            package.append(etree.fromstring(etree.tostring(c)))
    return package


def answered(objects: etree._Element, local: str) -> dict[str, etree._Element]:
    return {unique_id_of(e): e for e in objects.findall(f"{RIM}{local}")}


def associations(objects: etree._Element) -> set[tuple[str, str, str]]:
    return {
        (a.get("associationType"), a.get("sourceObject"), a.get("targetObject"))
        for a in objects.findall(f"{RIM}Association")
    }


def assert_equivalent_entry(sent: etree._Element, got: etree._Element) -> None:
    assert got.get("id").startswith("urn:uuid:")
    for attribute in ("mimeType", "objectType"):
        assert got.get(attribute) == sent.get(attribute), attribute
    assert got.get("status") == v.STATUS_APPROVED
    sent_slots, got_slots = slots(sent), slots(got)
    assert set(got_slots) - set(sent_slots) <= REGISTRY_SLOTS, set(got_slots) - set(sent_slots)
    for name, values in sent_slots.items():
        assert sorted(got_slots.get(name) or []) == sorted(values), name
    assert localized(got, "Name") == localized(sent, "Name")
    assert localized(got, "Description") == localized(sent, "Description")
    assert classifications(got) == classifications(sent)
    assert external_ids(got) == external_ids(sent)
    for child in got.findall(f"{RIM}Classification"):
        assert child.get("classifiedObject") == got.get("id")
    for child in got.findall(f"{RIM}ExternalIdentifier"):
        assert child.get("registryObject") == got.get("id")


def assert_equivalent_submission_set(sent: etree._Element, got: etree._Element) -> None:
    assert got.get("id").startswith("urn:uuid:")
    assert slots(got) == slots(sent)
    assert localized(got, "Name") == localized(sent, "Name")
    assert classifications(got) == classifications(sent)
    assert external_ids(got) == external_ids(sent)


def entry_uuids(api: Xds, nir: str, request) -> dict[str, str]:
    """symbolic id -> the entryUUID the registry assigned, read by GetDocuments."""
    by_unique = {u: k for k, u in request.document_unique_ids.items()}
    value = "(" + ",".join(f"'{u}'" for u in by_unique) + ")"
    objects = ask(api, nir, GET_DOCUMENTS, [("$XDSDocumentEntryUniqueId", value)])
    return {by_unique[u]: e.get("id") for u, e in answered(objects, "ExtrinsicObject").items()}


# -- tests -------------------------------------------------------------------------------------


def test_iti18_find_documents_returns_the_deposited_metadata_unchanged(xds):
    _, nir = xds.patient(201)
    request = deposit(xds, nir, masking=("MASQUE_PS",))
    objects = xds.find_documents(nir)
    root, _ = envelope_of(objects)
    got = answered(root.find(f".//{RIM}RegistryObjectList"), "ExtrinsicObject")
    sent = sent_entries(request)
    assert set(got) == set(sent)
    for unique_id, element in sent.items():
        assert_equivalent_entry(element, got[unique_id])
        assert slots(got[unique_id])["repositoryUniqueId"] == [xds.repository_id]


def test_iti18_resolves_the_queried_patient_once_per_request(xds, monkeypatch):
    """The XDS face keeps the per-request memo of the FHIR face: the INS of
    $XDSDocumentEntryPatientId is looked up once, not once per gate check."""
    _, nir = xds.patient(209)
    deposit(xds, nir)
    facts = xds.app.extensions["fhir"].service.gate.facts
    resolved = []
    find = facts._find_designated_patient

    def counting(resource_type, where):
        found = find(resource_type, where)
        resolved.append(found)
        return found

    monkeypatch.setattr(facts, "_find_designated_patient", counting)
    slots = [
        ("$XDSDocumentEntryPatientId", f"'{patient_cx(nir)}'"),
        ("$XDSDocumentEntryStatus", APPROVED),
    ]
    objects = ask(xds, nir, FIND_DOCUMENTS, slots)
    assert kinds(objects) == Counter({"ExtrinsicObject": 1})
    assert len(resolved) == 1 and resolved[0][1]


def test_iti18_find_submission_sets_returns_the_deposited_submission_set(xds):
    _, nir = xds.patient(202)
    request = deposit(xds, nir)
    objects = ask(
        xds,
        nir,
        FIND_SUBMISSION_SETS,
        [
            ("$XDSSubmissionSetPatientId", f"'{patient_cx(nir)}'"),
            ("$XDSSubmissionSetStatus", APPROVED),
        ],
    )
    packages = answered(objects, "RegistryPackage")
    assert list(packages) == [request.submission_set_unique_id]
    assert_equivalent_submission_set(
        sent_submission_set(request), packages[request.submission_set_unique_id]
    )


def test_iti18_get_all_returns_entries_submission_sets_and_their_associations(xds):
    _, nir = xds.patient(203)
    first = deposit(xds, nir, documents=[b"<a/>", b"<b/>"])
    second = deposit(xds, nir, documents=[b"<c/>"])
    objects = ask(
        xds,
        nir,
        GET_ALL,
        [
            ("$patientId", f"'{patient_cx(nir)}'"),
            ("$XDSDocumentEntryStatus", APPROVED),
            ("$XDSSubmissionSetStatus", APPROVED),
            ("$XDSFolderStatus", APPROVED),
        ],
    )
    assert kinds(objects) == {"ExtrinsicObject": 3, "RegistryPackage": 2, "Association": 3}
    entries = answered(objects, "ExtrinsicObject")
    packages = answered(objects, "RegistryPackage")
    sent = {**sent_entries(first), **sent_entries(second)}
    for unique_id, element in sent.items():
        assert_equivalent_entry(element, entries[unique_id])
    for request in (first, second):
        assert_equivalent_submission_set(
            sent_submission_set(request), packages[request.submission_set_unique_id]
        )
    expected = {
        (v.ASSOC_HAS_MEMBER, packages[r.submission_set_unique_id].get("id"), entries[u].get("id"))
        for r in (first, second)
        for u in r.document_unique_ids.values()
    }
    assert associations(objects) == expected
    for association in objects.findall(f"{RIM}Association"):
        assert slots(association)["SubmissionSetStatus"] == ["Original"]


def test_iti18_get_associations_of_a_document(xds):
    _, nir = xds.patient(204)
    request = deposit(xds, nir)
    uuids = entry_uuids(xds, nir, request)
    objects = ask(xds, nir, GET_ASSOCIATIONS, [("$uuid", f"('{uuids['Document01']}')")])
    assert kinds(objects) == {"Association": 1}
    ((kind, source, target),) = associations(objects)
    assert (kind, target) == (v.ASSOC_HAS_MEMBER, uuids["Document01"])
    # The source is the SubmissionSet of the deposit.
    sets = ask(xds, nir, GET_SUBMISSION_SETS, [("$uuid", f"('{uuids['Document01']}')")])
    assert [p.get("id") for p in sets.findall(f"{RIM}RegistryPackage")] == [source]


def test_iti18_get_associations_after_a_replacement(xds):
    _, nir = xds.patient(205)
    original = deposit(xds, nir)
    old = entry_uuids(xds, nir, original)["Document01"]
    replacement = deposit(xds, nir, replaces=old, documents=[b"<v2/>"])
    new = entry_uuids(xds, nir, replacement)["Document01"]
    objects = ask(xds, nir, GET_ASSOCIATIONS, [("$uuid", f"('{old}')")])
    found = associations(objects)
    assert (v.ASSOC_RPLC, new, old) in found
    assert {kind for kind, _, _ in found} == {v.ASSOC_RPLC, v.ASSOC_HAS_MEMBER}
    assert all(old in (source, target) for _, source, target in found)


def test_iti18_get_documents_and_associations(xds):
    _, nir = xds.patient(206)
    request = deposit(xds, nir, documents=[b"<a/>", b"<b/>"])
    unique_id = request.document_unique_ids["Document02"]
    objects = ask(
        xds,
        nir,
        GET_DOCUMENTS_AND_ASSOCIATIONS,
        [("$XDSDocumentEntryUniqueId", f"('{unique_id}')")],
    )
    assert kinds(objects) == {"ExtrinsicObject": 1, "Association": 1}
    entry = answered(objects, "ExtrinsicObject")[unique_id]
    assert_equivalent_entry(sent_entries(request)[unique_id], entry)
    ((kind, _, target),) = associations(objects)
    assert (kind, target) == (v.ASSOC_HAS_MEMBER, entry.get("id"))


def test_iti18_get_submission_sets_of_documents(xds):
    _, nir = xds.patient(207)
    first = deposit(xds, nir)
    second = deposit(xds, nir)
    a = entry_uuids(xds, nir, first)["Document01"]
    b = entry_uuids(xds, nir, second)["Document01"]
    objects = ask(xds, nir, GET_SUBMISSION_SETS, [("$uuid", f"('{a}')")])
    assert kinds(objects) == {"RegistryPackage": 1, "Association": 1}
    package = answered(objects, "RegistryPackage")[first.submission_set_unique_id]
    assert_equivalent_submission_set(sent_submission_set(first), package)
    assert associations(objects) == {(v.ASSOC_HAS_MEMBER, package.get("id"), a)}
    both = ask(xds, nir, GET_SUBMISSION_SETS, [("$uuid", f"('{a}','{b}')")])
    assert set(answered(both, "RegistryPackage")) == {
        first.submission_set_unique_id,
        second.submission_set_unique_id,
    }
    assert kinds(both)["Association"] == 2


def test_iti18_get_submission_set_and_contents(xds):
    _, nir = xds.patient(208)
    request = deposit(xds, nir, documents=[b"<a/>", b"<b/>"])
    deposit(xds, nir)  # another submission: not part of the answer
    objects = ask(
        xds,
        nir,
        GET_SUBMISSION_SET_AND_CONTENTS,
        [("$XDSSubmissionSetUniqueId", f"'{request.submission_set_unique_id}'")],
    )
    assert kinds(objects) == {"RegistryPackage": 1, "ExtrinsicObject": 2, "Association": 2}
    package = answered(objects, "RegistryPackage")[request.submission_set_unique_id]
    assert_equivalent_submission_set(sent_submission_set(request), package)
    entries = answered(objects, "ExtrinsicObject")
    for unique_id, element in sent_entries(request).items():
        assert_equivalent_entry(element, entries[unique_id])
    assert associations(objects) == {
        (v.ASSOC_HAS_MEMBER, package.get("id"), e.get("id")) for e in entries.values()
    }
    by_uuid = ask(
        xds,
        nir,
        GET_SUBMISSION_SET_AND_CONTENTS,
        [("$XDSSubmissionSetEntryUUID", f"'{package.get('id')}'")],
        return_type="ObjectRef",
    )
    assert {r.get("id") for r in by_uuid.findall(f"{RIM}ObjectRef")} == {
        package.get("id"),
        *(e.get("id") for e in entries.values()),
    } | {a.get("id") for a in objects.findall(f"{RIM}Association")}


def test_iti18_get_related_documents(xds):
    _, nir = xds.patient(209)
    original = deposit(xds, nir)
    old = entry_uuids(xds, nir, original)["Document01"]
    replacement = deposit(xds, nir, replaces=old, documents=[b"<v2/>"])
    new_unique = replacement.document_unique_ids["Document01"]
    objects = ask(
        xds,
        nir,
        GET_RELATED_DOCUMENTS,
        [
            ("$XDSDocumentEntryUniqueId", f"'{new_unique}'"),
            ("$AssociationTypes", f"('{v.ASSOC_RPLC}')"),
        ],
    )
    assert kinds(objects) == {"ExtrinsicObject": 2, "Association": 1}
    entries = answered(objects, "ExtrinsicObject")
    new = entries[new_unique].get("id")
    assert associations(objects) == {(v.ASSOC_RPLC, new, old)}
    assert entries[original.document_unique_ids["Document01"]].get("status") == v.STATUS_DEPRECATED
    assert entries[new_unique].get("status") == v.STATUS_APPROVED
    # From the replaced document's side, the same pair.
    from_old = ask(
        xds,
        nir,
        GET_RELATED_DOCUMENTS,
        [("$XDSDocumentEntryEntryUUID", f"'{old}'"), ("$AssociationTypes", f"('{v.ASSOC_RPLC}')")],
    )
    assert associations(from_old) == {(v.ASSOC_RPLC, new, old)}
    assert set(answered(from_old, "ExtrinsicObject")) == set(entries)
    # No association of the asked type: an empty answer.
    none = ask(
        xds,
        nir,
        GET_RELATED_DOCUMENTS,
        [
            ("$XDSDocumentEntryUniqueId", f"'{new_unique}'"),
            ("$AssociationTypes", f"('{v.ASSOC_APND}')"),
        ],
    )
    assert kinds(none) == {}


@pytest.mark.parametrize(
    ("name", "value", "members"),
    [
        ("$XDSDocumentEntryConfidentialityCode", "('N^^2.16.840.1.113883.5.25')", 2),
        ("$XDSDocumentEntryConfidentialityCode", "('R^^2.16.840.1.113883.5.25')", 0),
        (
            "$XDSDocumentEntryFormatCode",
            "('urn:ihe:iti:xds:2017:mimeTypeSufficient^^1.3.6.1.4.1.19376.1.2.3')",
            2,
        ),
        ("$XDSDocumentEntryFormatCode", "('urn:ihe:pcc:xphr:2007^^1.3.6.1.4.1.19376.1.2.3')", 0),
    ],
)
def test_iti18_get_submission_set_and_contents_filters_its_members(xds, name, value, members):
    """Issue #19, point 4: GetSubmissionSetAndContents' FormatCode and ConfidentialityCode
    were accepted and ignored. They select the DocumentEntries (and their HasMember
    associations) the answer holds; the SubmissionSet is always in it."""
    _, nir = xds.patient(211)
    request = deposit(xds, nir, documents=[b"<a/>", b"<b/>"])
    objects = ask(
        xds,
        nir,
        GET_SUBMISSION_SET_AND_CONTENTS,
        [("$XDSSubmissionSetUniqueId", f"'{request.submission_set_unique_id}'"), (name, value)],
    )
    expected = {"RegistryPackage": 1, "ExtrinsicObject": members, "Association": members}
    assert kinds(objects) == {kind: n for kind, n in expected.items() if n}


REFERENCE_ID_SLOT = "urn:ihe:iti:xds:2013:referenceIdList"


def deposit_with_reference_ids(api: Xds, nir: str, reference_ids: list[str]):
    """An inline ITI-41 whose DocumentEntry carries a referenceIdList Slot."""
    request = build_iti41(nir=nir, mtom=False, security=api.security(GP, nir))
    root = etree.fromstring(request.envelope)
    entry = next(root.iter(f"{RIM}ExtrinsicObject"))
    slot = etree.Element(f"{RIM}Slot", name=REFERENCE_ID_SLOT)
    values = etree.SubElement(slot, f"{RIM}ValueList")
    for reference_id in reference_ids:
        etree.SubElement(values, f"{RIM}Value").text = reference_id
    entry.insert(0, slot)
    response = api.client.post(
        "/xds/repository",
        data=etree.tostring(root, xml_declaration=True, encoding="UTF-8"),
        headers={"Content-Type": request.content_type},
    )
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:2000]
    return request


@pytest.mark.parametrize("query_id", [FIND_DOCUMENTS, FIND_DOCUMENTS_BY_REFERENCE_ID])
def test_iti18_reference_id_option(xds, query_id):
    """Issue #19, point 4: FindDocuments' $XDSDocumentEntryReferenceIdList was accepted and
    ignored, and FindDocumentsByReferenceId answered XDSUnknownStoredQuery (ITI TF-2a
    3.18.4.1.2.3.7.14, the Reference ID Option). Each finds the entries whose referenceIdList
    holds one of the values given."""
    _, nir = xds.patient(212)
    order = "2013001^^^&1.2.3.4.5.6&ISO^urn:ihe:iti:xds:2013:order"
    tagged = deposit_with_reference_ids(xds, nir, [order])
    deposit(xds, nir)  # no referenceIdList: not found
    objects = ask(
        xds,
        nir,
        query_id,
        [
            ("$XDSDocumentEntryPatientId", f"'{patient_cx(nir)}'"),
            ("$XDSDocumentEntryStatus", APPROVED),
            ("$XDSDocumentEntryReferenceIdList", f"('{order}', 'another^^^&1.2.3&ISO')"),
        ],
    )
    assert set(answered(objects, "ExtrinsicObject")) == {tagged.document_unique_ids["Document01"]}


def test_iti18_find_documents_by_reference_id_needs_its_reference_ids(xds):
    _, nir = xds.patient(213)
    response = xds.soap(
        "/xds/registry",
        v.ACTION_ITI18,
        adhoc(
            FIND_DOCUMENTS_BY_REFERENCE_ID,
            [
                ("$XDSDocumentEntryPatientId", f"'{patient_cx(nir)}'"),
                ("$XDSDocumentEntryStatus", APPROVED),
            ],
        ),
        xds.security(GP, nir),
    )
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSStoredQueryMissingParam"])


def test_iti18_get_documents_by_as_many_entry_uuids_as_a_slot_holds(xds):
    """ITI TF-2a 3.18.4.1.2.3.7.5 GetDocuments: a slot's values are an OR-list of any length;
    this registry reads up to 100 a slot. Each entryUUID is searched under the current and
    the earlier-version identifier systems: 51 to 100 of them made a search of 102 to 200
    values, refused with a FHIR search's message; now run in parts and merged."""
    _, nir = xds.patient(251)
    request = deposit(xds, nir)
    known = entry_uuids(xds, nir, request)
    unknown = [f"urn:uuid:{uuid.uuid4()}" for _ in range(100 - len(known))]
    named = [*unknown[:40], *known.values(), *unknown[40:]]
    request = adhoc(GET_DOCUMENTS, [])
    value_list = etree.SubElement(
        etree.SubElement(
            request.find(f"{RIM}AdhocQuery"), f"{RIM}Slot", name="$XDSDocumentEntryEntryUUID"
        ),
        f"{RIM}ValueList",
    )
    for entry_uuid in named:  # one rim:Value each: a Value holds at most 4,096 characters
        etree.SubElement(value_list, f"{RIM}Value").text = f"('{entry_uuid}')"
    response = xds.soap("/xds/registry", v.ACTION_ITI18, request, xds.security(GP, nir))
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:3000]
    root, _ = envelope_of(response)
    found = {e.get("id") for e in root.iter(f"{RIM}ExtrinsicObject")}
    assert found == set(known.values())


def test_iti18_a_slot_of_more_values_than_the_registry_reads_is_refused_naming_it(xds):
    """A Slot holds at most 100 values (`parse.MAX_SLOT_VALUES`, as many as a FHIR search
    parameter): 5,000 uniqueIds in one GetDocuments made one search of 5,000 values, then,
    run in parts, 50 searches for one request. XDSStoredQueryParamNumber names the slot."""
    _, nir = xds.patient(252)
    value = "(" + ",".join(f"'1.2.250.1.999.{n}'" for n in range(101)) + ")"
    response = xds.soap(
        "/xds/registry",
        v.ACTION_ITI18,
        adhoc(GET_DOCUMENTS, [("$XDSDocumentEntryUniqueId", value)]),
        xds.security(GP, nir),
    )
    status, errors = registry_status(response)
    assert status == v.RESPONSE_FAILURE, response.get_data()[:2000]
    assert errors == ["XDSStoredQueryParamNumber"], errors
    assert b"$XDSDocumentEntryUniqueId holds 101 values" in response.get_data()
