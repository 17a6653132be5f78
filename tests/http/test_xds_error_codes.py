"""One test per error code of ihe-xds-reference.md "Error codes and when they apply", over HTTP.

Every code of the table that this combined registry/repository can produce is provoked by
a real request to /xds/repository or /xds/registry and read back from the RegistryResponse
or AdhocQueryResponse, never from the Python objects.

Codes of the table not produced as the table describes, and why:
- XDSRepositoryDuplicateUniqueIdInMessage: the server is one actor (registry and repository
  together) and checks uniqueIds once, while validating the metadata; two objects sharing a
  uniqueId in one message are therefore reported as XDSRegistryDuplicateUniqueIdInMessage
  (tested below), the registry variant, whichever of the two objects is a document.
- XDSResultNotSinglePatient: no request can make a LeafClass answer span patients, for three
  reasons: every ITI-18 search a professional makes is confined to one patient (the query's,
  or the one the VIHF resource-id names; otherwise R04 refuses the search), the gate drops
  `_include`d resources of other records, and deposits refuse relations to another
  patient's document (XDSPatientIdDoesNotMatch). The registry still checks it: one test
  makes the searches return two records (monkeypatched) to check the answer, another shows
  a cross-record relation planted in the store staying out of LeafClass answers.
- XDSRegistryError / XDSRepositoryError are produced by injected failures (monkeypatched to
  raise): no well-formed request makes the server fail unexpectedly (see test_xds_fuzz.py).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable

import orjson
import pytest
from lxml import etree

from fhir_server.access.requester import INTERNAL
from fhir_server.config import load_settings
from ihe_xds import vocabulary as v
from ihe_xds.stored_query import FIND_DOCUMENTS, GET_RELATED_DOCUMENTS
from tests.http.conftest import Tokens, auth, create_test_app, valid_nir
from tests.http.test_attack_pass_xds import deposit as deposit_related
from tests.http.test_xds_endpoints import (
    GP,
    OTHER_PS,
    Xds,
    envelope_of,
    registry_status,
)
from tests.xds_builders import CDA, build_iti41, patient_cx

RIM = f"{{{v.NS_RIM}}}"


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


def deposit_mutated(
    api: Xds,
    nir: str,
    mutate: Callable[[etree._Element], None],
    resource_id: bool = True,
    **kwargs,
):
    """An inline (non-MTOM) ITI-41 whose envelope `mutate` changed before it is sent
    (`resource_id=False`: a VIHF that names no patient)."""
    security = api.security(GP, nir if resource_id else None)
    request = build_iti41(nir=nir, mtom=False, security=security, **kwargs)
    root = etree.fromstring(request.envelope)
    mutate(root)
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    response = api.client.post(
        "/xds/repository", data=body, headers={"Content-Type": request.content_type}
    )
    return request, response


def adhoc(query_id: str, slots: list[tuple[str, list[str]]], return_type: str = "LeafClass"):
    request = etree.Element(
        f"{{{v.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": v.NS_QUERY, "rim": v.NS_RIM}
    )
    etree.SubElement(request, f"{{{v.NS_QUERY}}}ResponseOption", returnType=return_type)
    query = etree.SubElement(request, f"{RIM}AdhocQuery", id=query_id)
    for name, values in slots:
        slot = etree.SubElement(query, f"{RIM}Slot", name=name)
        value_list = etree.SubElement(slot, f"{RIM}ValueList")
        for value in values:
            etree.SubElement(value_list, f"{RIM}Value").text = value
    return request


def query(api: Xds, body: etree._Element, nir: str | None, idnat: str = GP):
    return api.soap("/xds/registry", v.ACTION_ITI18, body, api.security(idnat, nir))


def find_documents_slots(nir: str) -> list[tuple[str, list[str]]]:
    return [
        ("$XDSDocumentEntryPatientId", [f"'{patient_cx(nir)}'"]),
        ("$XDSDocumentEntryStatus", [f"('{v.STATUS_APPROVED}')"]),
    ]


def entry_uuid_of_deposit(api: Xds, patient_id: str, unique_id: str) -> str:
    bundle = api.client.get(
        f"/fhir/DocumentReference?patient={patient_id}&_count=50",
        headers=auth(api.tokens.practitioner(GP)),
    ).get_json()
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        if resource["masterIdentifier"]["value"] == f"urn:oid:{unique_id}":
            return next(
                i["value"] for i in resource["identifier"] if i["value"].startswith("urn:uuid:")
            )
    raise AssertionError(f"{unique_id} not stored")


def errors_of(response) -> list[etree._Element]:
    root, _ = envelope_of(response)
    return root.findall(f".//{{{v.NS_RS}}}RegistryError")


def assert_failure(response, code: str) -> list[etree._Element]:
    assert response.status_code == 200, response.get_data()[:500]
    status, codes = registry_status(response)
    assert status == v.RESPONSE_FAILURE, (status, codes)
    assert code in codes, codes
    return [e for e in errors_of(response) if e.get("errorCode") == code]


# -- ITI-41 metadata ----------------------------------------------------------------------------


def test_xdsregistrymetadataerror_invalid_confidentiality_code(xds):
    _, nir = xds.patient(101)

    def mutate(root):
        for classification in root.iter(f"{RIM}Classification"):
            if classification.get("classificationScheme") == v.DE_CONFIDENTIALITY_CODE:
                classification.set("nodeRepresentation", "Z")

    _, response = deposit_mutated(xds, nir, mutate)
    errors = assert_failure(response, "XDSRegistryMetadataError")
    assert any("Z" in e.get("codeContext") for e in errors)


def test_xdsrepositorymetadataerror_hash_not_matching_the_document(xds):
    _, nir = xds.patient(102)
    real = hashlib.sha1(CDA).hexdigest()  # noqa: S324 - XDS fixes SHA-1

    def mutate(root):
        for slot in root.iter(f"{RIM}Slot"):
            if slot.get("name") == "hash":
                slot.find(f"{RIM}ValueList/{RIM}Value").text = "0" * 40

    _, response = deposit_mutated(xds, nir, mutate)
    errors = assert_failure(response, "XDSRepositoryMetadataError")
    assert any(real in e.get("codeContext") for e in errors)


def test_xdsrepositorymetadataerror_size_not_matching_the_document(xds):
    _, nir = xds.patient(103)

    def mutate(root):
        for slot in root.iter(f"{RIM}Slot"):
            if slot.get("name") == "size":
                slot.find(f"{RIM}ValueList/{RIM}Value").text = str(len(CDA) + 1)

    _, response = deposit_mutated(xds, nir, mutate)
    assert_failure(response, "XDSRepositoryMetadataError")


def test_xdsmissingdocument_entry_without_its_document(xds):
    _, nir = xds.patient(104)

    def mutate(root):
        document = root.find(f".//{{{v.NS_XDSB}}}Document")
        document.getparent().remove(document)

    _, response = deposit_mutated(xds, nir, mutate)
    errors = assert_failure(response, "XDSMissingDocument")
    assert "Document01" in errors[0].get("location")


def test_xdsmissingdocumentmetadata_document_without_its_entry(xds):
    _, nir = xds.patient(105)

    def mutate(root):
        request = root.find(f".//{{{v.NS_XDSB}}}ProvideAndRegisterDocumentSetRequest")
        extra = etree.SubElement(request, f"{{{v.NS_XDSB}}}Document", id="Document99")
        extra.text = "PGEvPg=="  # <a/>

    _, response = deposit_mutated(xds, nir, mutate)
    errors = assert_failure(response, "XDSMissingDocumentMetadata")
    assert "Document99" in errors[0].get("location")


def test_xdsunknownpatientid_patient_not_in_the_registry(xds):
    _, response = xds.deposit(valid_nir(177))
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSUnknownPatientId"])


def test_xdsunknownpatientid_closed_record(xds):
    from fhir_server.terminology import EXT_RECORD_STATUS

    _, nir = xds.patient(106, extension=[{"url": EXT_RECORD_STATUS, "valueCode": "closed"}])
    _, response = xds.deposit(nir)
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSUnknownPatientId"])


def test_xdspatientiddoesnotmatch_entry_patient_differs_from_the_submission_set(xds):
    _, nir = xds.patient(107)
    xds.patient(108)
    _, response = xds.deposit(nir, entry_patient_cx=patient_cx(valid_nir(108)))
    assert_failure(response, "XDSPatientIdDoesNotMatch")


def test_xdspatientiddoesnotmatch_replacing_another_patients_document(xds):
    """The médecin traitant of both records, with a VIHF naming no patient (a VIHF naming B
    binds the request to B: A's document is then answered as unknown, XDSReplaceFailed)."""
    patient_a, nir_a = xds.patient(109)
    _, nir_b = xds.patient(110)
    first, _ = xds.deposit(nir_a)
    target = entry_uuid_of_deposit(xds, patient_a, first.document_unique_ids["Document01"])
    request = build_iti41(
        nir=nir_b, replaces=target, documents=[b"<v2/>"], security=xds.security(GP)
    )
    response = xds.client.post(
        "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
    )
    errors = assert_failure(response, "XDSPatientIdDoesNotMatch")
    assert target in errors[0].get("location")
    # The other patient's document is untouched.
    assert registry_status(xds.find_documents(nir_a))[0] == v.RESPONSE_SUCCESS


def test_xdsregistryduplicateuniqueidinmessage_two_entries_share_a_uniqueid(xds):
    _, nir = xds.patient(111)
    shared = []

    def mutate(root):
        for identifier in root.iter(f"{RIM}ExternalIdentifier"):
            if identifier.get("identificationScheme") == v.DE_UNIQUE_ID:
                shared.append(identifier.get("value"))
                identifier.set("value", shared[0])

    _, response = deposit_mutated(xds, nir, mutate, documents=[b"<a/>", b"<b/>"])
    assert len(shared) == 2 and shared[0] != shared[1]
    errors = assert_failure(response, "XDSRegistryDuplicateUniqueIdInMessage")
    assert shared[0] in errors[0].get("codeContext")


def test_xdsnonidenticalhash_known_uniqueid_with_other_content(xds):
    _, nir = xds.patient(112)
    first, response = xds.deposit(nir)
    assert registry_status(response)[0] == v.RESPONSE_SUCCESS
    unique_id = first.document_unique_ids["Document01"]

    def reuse(root):
        for identifier in root.iter(f"{RIM}ExternalIdentifier"):
            if identifier.get("identificationScheme") == v.DE_UNIQUE_ID:
                identifier.set("value", unique_id)

    _, response = deposit_mutated(xds, nir, reuse, documents=[b"<other/>"])
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSNonIdenticalHash"])
    # The same content under the same uniqueId is accepted again (IHE allows it).
    _, response = deposit_mutated(xds, nir, reuse)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])


def test_xdsreplacefailed_replacing_an_unknown_document(xds):
    _, nir = xds.patient(113)
    _, response = xds.deposit(nir, replaces=f"urn:uuid:{uuid.uuid4()}")
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSReplaceFailed"])


def test_xdsreplacefailed_replacing_a_document_that_is_not_current(xds):
    patient_id, nir = xds.patient(114)
    first, _ = xds.deposit(nir)
    target = entry_uuid_of_deposit(xds, patient_id, first.document_unique_ids["Document01"])
    _, response = xds.deposit(nir, replaces=target, documents=[b"<v2/>"])
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    _, response = xds.deposit(nir, replaces=target, documents=[b"<v3/>"])
    errors = assert_failure(response, "XDSReplaceFailed")
    assert "not current" in errors[0].get("codeContext")


# -- ITI-43 ---------------------------------------------------------------------------------------


def test_xdsdocumentuniqueiderror_retrieve_of_an_unknown_document(xds):
    _, nir = xds.patient(115)
    response = xds.retrieve(["1.2.250.1.999.4.31337.1"], nir=nir)
    errors = assert_failure(response, "XDSDocumentUniqueIdError")
    assert "1.2.250.1.999.4.31337.1" in errors[0].get("location")


def test_xdsunknownrepositoryid_retrieve_naming_another_repository(xds):
    _, nir = xds.patient(116)
    request, _ = xds.deposit(nir)
    response = xds.retrieve(
        [request.document_unique_ids["Document01"]], nir=nir, repository="1.2.3.4.5"
    )
    errors = assert_failure(response, "XDSUnknownRepositoryId")
    assert "1.2.3.4.5" in errors[0].get("codeContext")
    assert envelope_of(response)[1].attachments == {}


# -- ITI-18 ---------------------------------------------------------------------------------------


def test_xdsunknownstoredquery_unknown_query_id(xds):
    _, nir = xds.patient(117)
    unknown = f"urn:uuid:{uuid.uuid4()}"
    response = query(xds, adhoc(unknown, find_documents_slots(nir)), nir)
    errors = assert_failure(response, "XDSUnknownStoredQuery")
    assert unknown in errors[0].get("codeContext")


def test_xdsstoredquerymissingparam_required_status_missing(xds):
    _, nir = xds.patient(118)
    slots = find_documents_slots(nir)[:1]
    response = query(xds, adhoc(FIND_DOCUMENTS, slots), nir)
    errors = assert_failure(response, "XDSStoredQueryMissingParam")
    assert errors[0].get("location") == "$XDSDocumentEntryStatus"


def test_xdsstoredqueryparamnumber_patient_id_given_twice(xds):
    _, nir = xds.patient(119)
    slots = find_documents_slots(nir)
    response = query(xds, adhoc(FIND_DOCUMENTS, [slots[0], *slots]), nir)
    errors = assert_failure(response, "XDSStoredQueryParamNumber")
    assert errors[0].get("location") == "$XDSDocumentEntryPatientId"


def test_xdsstoredqueryparamnumber_patient_id_as_a_list(xds):
    _, nir = xds.patient(120)
    slots = [
        ("$XDSDocumentEntryPatientId", [f"('{patient_cx(nir)}','{patient_cx(valid_nir(121))}')"]),
        ("$XDSDocumentEntryStatus", [f"('{v.STATUS_APPROVED}')"]),
    ]
    response = query(xds, adhoc(FIND_DOCUMENTS, slots), nir)
    assert_failure(response, "XDSStoredQueryParamNumber")


def test_xdspatientiddoesnotmatch_appending_to_another_patients_document(xds):
    """APND (like RPLC and XFRM) keeps the new entry in the original's record (ITI TF-3 4.2.2)."""
    _, nir_a = xds.patient(122)
    patient_b, nir_b = xds.patient(123)
    original, _ = xds.deposit(nir_b)
    target = entry_uuid_of_deposit(xds, patient_b, original.document_unique_ids["Document01"])

    def appends(root):
        objects = root.find(f".//{RIM}RegistryObjectList")
        etree.SubElement(
            objects,
            f"{RIM}Association",
            id="as-apnd",
            associationType=v.ASSOC_APND,
            sourceObject="Document01",
            targetObject=target,
        )

    _, response = deposit_mutated(xds, nir_a, appends, resource_id=False)
    errors = assert_failure(response, "XDSPatientIdDoesNotMatch")
    assert target in errors[0].get("location")


def test_xdsresultnotsinglepatient_leafclass_spanning_two_patients(xds, monkeypatch):
    """Unreachable through the gate (see the module docstring): the searches are made to
    return two records' documents, to check the answer the registry then gives."""
    patient_a, nir_a = xds.patient(129)
    patient_b, nir_b = xds.patient(130)
    xds.deposit(nir_a)
    xds.deposit(nir_b)
    both = [
        orjson.loads(body)
        for patient in (patient_a, patient_b)
        for _, _, body, _ in xds.runtime.service.search(
            INTERNAL, "DocumentReference", [("patient", patient)]
        ).matches
    ]
    assert {d["subject"]["reference"] for d in both} == {
        f"Patient/{patient_a}",
        f"Patient/{patient_b}",
    }
    monkeypatch.setattr("ihe_xds.transactions._run_search", lambda *a, **k: (both, []))
    leaf = xds.find_documents(nir_a)
    assert_failure(leaf, "XDSResultNotSinglePatient")
    assert envelope_of(leaf)[0].findall(f".//{RIM}ExtrinsicObject") == []
    refs = xds.find_documents(nir_a, return_type="ObjectRef")
    assert registry_status(refs) == (v.RESPONSE_SUCCESS, [])
    assert len(envelope_of(refs)[0].findall(f".//{RIM}ObjectRef")) == 2


def test_cross_patient_relations_stay_out_of_leafclass_answers(xds):
    """Why XDSResultNotSinglePatient cannot arise through the gate: a relation to another
    record (made here directly in the store, since deposits refuse it) never brings the other
    patient's entry; with the VIHF naming patient A, not even the association to it."""
    patient_a, nir_a = xds.patient(131)
    patient_b, nir_b = xds.patient(132)
    mine, _ = xds.deposit(nir_a)
    theirs, _ = xds.deposit(nir_b)
    target = entry_uuid_of_deposit(xds, patient_b, theirs.document_unique_ids["Document01"])
    service = xds.runtime.service
    stored = service.find(
        INTERNAL,
        "DocumentReference",
        [("identifier", f"urn:ietf:rfc:3986|urn:oid:{mine.document_unique_ids['Document01']}")],
    )[0]
    theirs_id = service.find(
        INTERNAL, "DocumentReference", [("identifier", f"urn:ietf:rfc:3986|{target}")]
    )[0].id
    resource = stored.json()
    resource["relatesTo"] = [
        {
            "code": "appends",
            "target": {
                "reference": f"DocumentReference/{theirs_id}",
                "identifier": {"system": "urn:ietf:rfc:3986", "value": target},
            },
        }
    ]
    service.update(INTERNAL, "DocumentReference", resource["id"], resource)
    slots = [
        ("$XDSDocumentEntryUniqueId", [f"('{mine.document_unique_ids['Document01']}')"]),
        ("$AssociationTypes", [f"('{v.ASSOC_APND}')"]),
    ]
    response = query(xds, adhoc(GET_RELATED_DOCUMENTS, slots), nir_a)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    root, _ = envelope_of(response)
    patients = {
        e.get("value")
        for e in root.iter(f"{RIM}ExternalIdentifier")
        if e.get("identificationScheme") == v.DE_PATIENT_ID
    }
    assert patients == {patient_cx(nir_a)} or all(p.startswith(nir_a) for p in patients)
    # The VIHF names patient A: B's record is outside the request (issue #18, finding 11),
    # so even the association naming B's entry is left out, as for a hidden document.
    assert [a.get("targetObject") for a in root.iter(f"{RIM}Association")] == []
    assert target not in response.get_data(as_text=True)


@pytest.fixture
def small_xds(data_dir):
    """An app whose FHIR_XDS_MAX_RESULTS is 2."""
    settings = load_settings(
        {"data_dir": data_dir, "max_body_bytes": 200_000, "xds_max_results": 2}, environ={}
    )
    application = create_test_app(settings)
    yield Xds(application, application.test_client(), Tokens(data_dir), data_dir)
    application.extensions["fhir"].store.close()


def test_xdstoomanyresults_more_matches_than_the_configured_maximum(small_xds):
    _, nir = small_xds.patient(124)
    _, response = small_xds.deposit(nir, documents=[b"<a/>", b"<b/>"])
    assert registry_status(response)[0] == v.RESPONSE_SUCCESS
    assert registry_status(small_xds.find_documents(nir))[0] == v.RESPONSE_SUCCESS
    small_xds.deposit(nir, documents=[b"<c/>"])
    response = small_xds.find_documents(nir)
    errors = assert_failure(response, "XDSTooManyResults")
    assert "2" in errors[0].get("codeContext")
    assert envelope_of(response)[0].findall(f".//{RIM}ExtrinsicObject") == []


# -- access rules ---------------------------------------------------------------------------------


def test_localpolicyrestrictionerror_blocked_professional_query_and_deposit(xds):
    patient_id, nir = xds.patient(125)
    xds.deposit(nir)
    xds.block(patient_id, OTHER_PS)
    response = xds.find_documents(nir, idnat=OTHER_PS)
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["LocalPolicyRestrictionError"])
    _, response = xds.deposit(nir, idnat=OTHER_PS)
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["LocalPolicyRestrictionError"])


# -- unexpected failures --------------------------------------------------------------------------

SECRET = "boom-7f3a: /srv/secret/path.py line 42"


def _assert_clean_internal_error(response, code: str) -> None:
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and SECRET not in text and "RuntimeError" not in text
    errors = assert_failure(response, code)
    context = errors[0].get("codeContext")
    match = re.search(r"request id (\S+)", context)
    assert match, context
    assert re.fullmatch(r"[0-9a-fA-F-]{8,}", match.group(1).rstrip(".;"))


def _explode(*args, **kwargs):
    raise RuntimeError(SECRET)


def test_xdsrepositoryerror_unexpected_failure_during_a_deposit(xds, monkeypatch):
    _, nir = xds.patient(126)
    monkeypatch.setattr(xds.runtime.bundles, "process", _explode)
    _, response = xds.deposit(nir)
    _assert_clean_internal_error(response, "XDSRepositoryError")


def test_xdsrepositoryerror_unexpected_failure_during_a_retrieve(xds, monkeypatch):
    _, nir = xds.patient(127)
    request, _ = xds.deposit(nir)
    monkeypatch.setattr("ihe_xds.transactions._retrieve_one", _explode)
    response = xds.retrieve([request.document_unique_ids["Document01"]], nir=nir)
    _assert_clean_internal_error(response, "XDSRepositoryError")
    assert envelope_of(response)[1].attachments == {}


def test_xdsregistryerror_unexpected_failure_during_a_query(xds, monkeypatch):
    _, nir = xds.patient(128)
    xds.deposit(nir)
    monkeypatch.setattr("ihe_xds.transactions._run_search", _explode)
    _assert_clean_internal_error(xds.find_documents(nir), "XDSRegistryError")


def test_unexpected_failure_before_any_transaction_is_a_receiver_fault(xds, monkeypatch):
    """No registry request exists yet (the envelope is being read): a SOAP 1.2 Receiver
    fault, HTTP 500, with a request id and no trace (not the FHIR face's OperationOutcome)."""
    _, nir = xds.patient(133)
    monkeypatch.setattr("ihe_xds.http.read_envelope", _explode)
    _, response = xds.deposit(nir)
    text = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Traceback" not in text and SECRET not in text
    root = etree.fromstring(response.get_data())
    code = root.findtext(f".//{{{v.NS_SOAP12}}}Code/{{{v.NS_SOAP12}}}Value")
    reason = root.findtext(f".//{{{v.NS_SOAP12}}}Reason/{{{v.NS_SOAP12}}}Text")
    assert code == "soap:Receiver" and re.search(r"request id [0-9a-fA-F-]{8,}", reason)


def _renamed(old: str, new: str) -> Callable[[etree._Element], None]:
    """Rename a symbolic object id (every attribute naming it) to `new`."""

    def mutate(root: etree._Element) -> None:
        for element in root.iter():
            for name, value in element.attrib.items():
                if value == old:
                    element.set(name, new)

    return mutate


def test_xdsregistrymetadataerror_entry_id_that_is_no_uuid(xds):
    """Issue #19, point 1 (NIST toolkit): `urn:uuid:1234-not-a-uuid` was stored and returned
    as the entryUUID. An id given as a UUID becomes the entryUUID: it must be one."""
    patient_id, nir = xds.patient(131)
    _, response = deposit_mutated(xds, nir, _renamed("Document01", "urn:uuid:1234-not-a-uuid"))
    errors = assert_failure(response, "XDSRegistryMetadataError")
    assert any("urn:uuid:1234-not-a-uuid" in e.get("codeContext") for e in errors)
    assert xds.runtime.service.find(INTERNAL, "DocumentReference", [("patient", patient_id)]) == []


def test_xdsregistrymetadataerror_entry_uuid_already_in_the_registry(xds):
    """Issue #19, point 1: an entryUUID the registry holds was accepted again (for the same or
    another patient), and GetDocuments then answered two entries."""
    entry_uuid = f"urn:uuid:{uuid.uuid4()}"
    first_id, nir = xds.patient(132)
    _, response = deposit_mutated(xds, nir, _renamed("Document01", entry_uuid))
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    for n in (132, 133):  # the same patient, then another
        patient_id, other_nir = xds.patient(n) if n != 132 else (first_id, nir)
        _, again = deposit_mutated(xds, other_nir, _renamed("Document01", entry_uuid))
        errors = assert_failure(again, "XDSRegistryMetadataError")
        assert any(entry_uuid in e.get("codeContext") for e in errors)
    held = xds.runtime.service.find(
        INTERNAL, "DocumentReference", [("identifier", f"urn:ietf:rfc:3986|{entry_uuid}")]
    )
    assert len(held) == 1


@pytest.mark.parametrize("kind", [v.ASSOC_APND, v.ASSOC_XFRM], ids=["APND", "XFRM"])
def test_addendum_or_transform_names_an_approved_entry_of_the_registry(xds, kind):
    """Issue #19, point 2 (NIST toolkit): an APND or XFRM onto a Deprecated entry was
    accepted, where the toolkit expects XDSRegistryDeprecatedDocumentError; one naming an
    entryUUID the registry does not hold was accepted, leaving a dangling association
    (XDSRegistryMetadataError). Onto an Approved entry it succeeds."""
    _, nir = xds.patient(134)
    original, response = deposit_related(xds, nir, documents=[b"<original/>"])
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    held = xds.runtime.service.find(
        INTERNAL,
        "DocumentReference",
        [("identifier", f"urn:ietf:rfc:3986|urn:oid:{original.document_unique_ids['Document01']}")],
    )[0].json()
    target = next(i["value"] for i in held["identifier"] if i["value"].startswith("urn:uuid:"))
    unknown = f"urn:uuid:{uuid.uuid4()}"
    _, dangling = deposit_related(xds, nir, relation=(kind, unknown), documents=[b"<a/>"])
    assert any(
        unknown in e.get("codeContext")
        for e in assert_failure(dangling, "XDSRegistryMetadataError")
    )
    _, appended = deposit_related(xds, nir, relation=(kind, target), documents=[b"<b/>"])
    assert registry_status(appended) == (v.RESPONSE_SUCCESS, [])
    _, replaced = deposit_related(xds, nir, relation=(v.ASSOC_RPLC, target), documents=[b"<c/>"])
    assert registry_status(replaced) == (v.RESPONSE_SUCCESS, [])
    _, late = deposit_related(xds, nir, relation=(kind, target), documents=[b"<d/>"])
    assert any(
        target in e.get("codeContext")
        for e in assert_failure(late, "XDSRegistryDeprecatedDocumentError")
    )
