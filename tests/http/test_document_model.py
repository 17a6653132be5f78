"""One document model, one rule set, at every door (issue #19 deliverable 1 and point 8; issue
#20 deliverable 2, ITI-105 Simplified Publish).

The contract table: the same invalid document sent through each door that writes a
DocumentReference (REST POST naming a stored Binary, ITI-105 with the bytes inline, a
conditional create, a batch entry, PUT of a stored document, a transaction without a
SubmissionSet, ITI-65 declaring the https:// or the older http:// MHD canonicals or no
profile at all, and ITI-41 where XDS can carry the fault) is refused the same way: 422
naming the element in the OperationOutcome (the XDS error code for ITI-65 and ITI-41), and
nothing is stored. Before, only ITI-65 declaring the https:// canonicals and ITI-41 ran
these checks: a plain POST without DMP metadata answered 201 (issue #19 point 8).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree

from ihe_xds import vocabulary as v
from ihe_xds.errors import XDS_ERROR_SYSTEM
from tests.dmp_codes import with_admitted_class
from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_xds_endpoints import GP, Xds, registry_status
from tests.support.documents import (
    CDA,
    binary,
    dmp_document,
    new_entry_uuid,
    new_unique_id,
    sha1_base64,
    transaction,
)
from tests.xds_builders import CDA as XDS_CDA
from tests.xds_builders import build_iti41

RIM = f"{{{v.NS_RIM}}}"
MHD_HTTPS = (
    "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Comprehensive.ProvideBundle"
)
MHD_HTTP = MHD_HTTPS.replace("https://", "http://")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "external" / "pdsm4dmp"
ITI105_EXAMPLE = "DocumentReference-example-td2-iti105-publication-simplifiee.json"
_ENTRY_PREFIX = re.compile(r"^Bundle\.entry\[\d+\](\.resource)?\.?")


# -- the world -------------------------------------------------------------------------------


@dataclass
class World:
    """Patient A's record (GP its médecin traitant and the author of its documents), with a
    current document, a superseded one, and patient B's record with a document."""

    xds: Xds
    token: str
    patient: str = ""
    nir: str = ""
    other_patient: str = ""
    current: dict = field(default_factory=dict)
    superseded: dict = field(default_factory=dict)
    others: dict = field(default_factory=dict)

    @property
    def client(self):
        return self.xds.client

    def post(self, path: str, body: dict, **headers: str):
        return self.client.post(
            path,
            data=json.dumps(body),
            headers=auth(self.token, **{"Content-Type": FHIR_JSON, **headers}),
        )

    def read(self, path: str):
        response = self.client.get(f"/fhir/{path}", headers=auth(self.token))
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def deposit(self, patient: str, **changes) -> dict:
        """A valid document of `patient`, deposited by an ITI-65; the stored resource."""
        document = dmp_document(patient, "", author=GP, **changes)
        bundle = transaction(patient, document, with_submission_set=True)
        response = self.post("/fhir", bundle)
        assert response.status_code == 200, response.get_data(as_text=True)
        location = response.get_json()["entry"][1]["response"]["location"]
        return self.read("/".join(location.split("/")[:2]))

    def documents(self, patient: str) -> set[str]:
        bundle = self.read(f"DocumentReference?patient={patient}&_count=100")
        return {e["resource"]["id"] for e in bundle.get("entry", [])}


def entry_uuid(document: dict) -> str:
    return next(i["value"] for i in document["identifier"] if i["value"].startswith("urn:uuid:"))


@pytest.fixture
def world(app, client, tokens, data_dir) -> World:
    xds = Xds(app, client, tokens, data_dir)
    world = World(xds, tokens.practitioner(GP))
    world.patient, world.nir = xds.patient(61)
    world.other_patient, _ = xds.patient(62)
    world.current = world.deposit(world.patient)
    world.superseded = world.deposit(world.patient)
    replacement = world.deposit(
        world.patient,
        relatesTo=[
            {
                "code": "replaces",
                "target": {"reference": f"DocumentReference/{world.superseded['id']}"},
            }
        ],
    )
    assert replacement["relatesTo"][0]["code"] == "replaces"
    assert world.read(f"DocumentReference/{world.superseded['id']}")["status"] == "superseded"
    world.others = world.deposit(world.other_patient)
    return world


# -- the shapes of invalid documents ---------------------------------------------------------


Mutate = Callable[[dict, World], None]
XdsMutate = Callable[[bytes, "etree._Element", World], bytes]


@dataclass(frozen=True)
class Shape:
    """An invalid document: how to break a valid one (FHIR, and XDS when XDS can carry the
    fault), the element named (relative to the DocumentReference), the XDS codes."""

    name: str
    mutate: Mutate
    field: str
    mhd_code: str
    xds_mutate: XdsMutate | None = None
    xds_code: str | None = None
    put_field: str | None = None  # a PUT names what it may not change, when it is that


def _append(target: Callable[[World], str]) -> Mutate:
    def mutate(document: dict, world: World) -> None:
        document["relatesTo"] = [
            {"code": "appends", "target": {"reference": f"DocumentReference/{target(world)}"}}
        ]

    return mutate


def _xds_append(target: Callable[[World], str]) -> XdsMutate:
    def mutate(body: bytes, root: etree._Element, world: World) -> bytes:
        etree.SubElement(
            root.find(f".//{RIM}RegistryObjectList"),
            f"{RIM}Association",
            id="as-relation",
            associationType=v.ASSOC_APND,
            sourceObject="Document01",
            targetObject=target(world),
        )
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    return mutate


def _xds_slot(name: str, value: Callable[[bytes], str]) -> XdsMutate:
    def mutate(body: bytes, root: etree._Element, world: World) -> bytes:
        entry = root.find(f".//{RIM}ExtrinsicObject")
        slot = next(s for s in entry.findall(f"{RIM}Slot") if s.get("name") == name)
        slot.find(f"{RIM}ValueList/{RIM}Value").text = value(XDS_CDA)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    return mutate


def _xds_entry_id(entry_id: Callable[[World], str]) -> XdsMutate:
    def mutate(body: bytes, root: etree._Element, world: World) -> bytes:
        return body.replace(b'"Document01"', f'"{entry_id(world)}"'.encode())

    return mutate


def _xds_no_author(body: bytes, root: etree._Element, world: World) -> bytes:
    entry = root.find(f".//{RIM}ExtrinsicObject")
    for classification in entry.findall(f"{RIM}Classification"):
        if classification.get("classificationScheme") == v.DE_AUTHOR:
            entry.remove(classification)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _set(path: str, value) -> Mutate:
    def mutate(document: dict, world: World) -> None:
        node = document
        *parents, last = path.split(".")
        for name in parents:
            node = node[int(name)] if name.isdigit() else node[name]
        node[last] = value

    return mutate


def _delete(name: str) -> Mutate:
    return lambda document, world: document.pop(name)


REPOSITORY = "XDSRepositoryMetadataError"
REGISTRY = "XDSRegistryMetadataError"
HELD = "urn:uuid:" + str(uuid.UUID(int=0x19))

SHAPES = [
    Shape(
        "no author (DMP metadata)",
        _delete("author"),
        "author",
        REPOSITORY,
        _xds_no_author,
        REGISTRY,
    ),
    Shape(
        "a hash that is not the bytes' SHA-1",
        _set("content.0.attachment.hash", base64.b64encode(b"\0" * 20).decode()),
        "content[0].attachment.hash",
        REPOSITORY,
        _xds_slot("hash", lambda content: "0" * 40),
        REPOSITORY,
    ),
    Shape(
        "a size that is not the bytes'",
        _set("content.0.attachment.size", len(CDA) + 1),
        "content[0].attachment.size",
        REPOSITORY,
        _xds_slot("size", lambda content: str(len(content) + 1)),
        REPOSITORY,
    ),
    Shape(
        "a malformed entryUUID",
        _set("identifier", [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1234-not-a-uuid"}]),
        "identifier[0].value",
        REPOSITORY,
        _xds_entry_id(lambda world: "urn:uuid:1234-not-a-uuid"),
        REGISTRY,
    ),
    Shape(
        "the entryUUID of a document the registry holds",
        lambda document, world: document.update(
            identifier=[{"system": "urn:ietf:rfc:3986", "value": entry_uuid(world.current)}]
        ),
        "identifier[0].value",
        REGISTRY,
        _xds_entry_id(lambda world: entry_uuid(world.current)),
        REGISTRY,
        put_field="identifier",
    ),
    Shape(
        "a malformed uniqueId",
        _set("masterIdentifier", {"system": "urn:ietf:rfc:3986", "value": "urn:oid:not-an-oid"}),
        "masterIdentifier.value",
        REPOSITORY,
    ),
    Shape(
        "a sourcePatientInfo naming no contained resource (ref-1)",
        _set("context.sourcePatientInfo", {"reference": "#nobody"}),
        "context.sourcePatientInfo.reference",
        REPOSITORY,
    ),
    Shape(
        "an addendum to a document the registry does not hold",
        _append(lambda world: str(uuid.uuid4())),
        "relatesTo[0].target",
        REGISTRY,
        _xds_append(lambda world: new_entry_uuid()),
        REGISTRY,
        put_field="relatesTo",
    ),
    Shape(
        "an addendum to a superseded (Deprecated) document",
        _append(lambda world: world.superseded["id"]),
        "relatesTo[0].target",
        "XDSRegistryDeprecatedDocumentError",
        _xds_append(lambda world: entry_uuid(world.superseded)),
        "XDSRegistryDeprecatedDocumentError",
        put_field="relatesTo",
    ),
    Shape(
        "an addendum to another patient's document",
        _append(lambda world: world.others["id"]),
        "relatesTo[0].target",
        "XDSPatientIdDoesNotMatch",
        _xds_append(lambda world: entry_uuid(world.others)),
        "XDSPatientIdDoesNotMatch",
        put_field="relatesTo",
    ),
]


# -- the doors -------------------------------------------------------------------------------


@dataclass
class Refusal:
    status: int
    fields: set[str]
    codes: set[str]


def _outcome_refusal(status: int, outcome: dict) -> Refusal:
    fields, codes = set(), set()
    for issue in outcome.get("issue", []):
        for expression in issue.get("expression", []):
            fields.add(_ENTRY_PREFIX.sub("", expression).removeprefix("DocumentReference."))
        for coding in issue.get("details", {}).get("coding", []):
            if coding.get("system") == XDS_ERROR_SYSTEM:
                codes.add(coding["code"])
    return Refusal(status, fields, codes)


def _refusal(response) -> Refusal:
    return _outcome_refusal(response.status_code, response.get_json())


def _stored_binary(world: World) -> str:
    response = world.post("/fhir/Binary", binary(CDA))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"]


def rest_post(world: World, shape: Shape) -> Refusal:
    document = dmp_document(world.patient, f"Binary/{_stored_binary(world)}", author=GP)
    shape.mutate(document, world)
    return _refusal(world.post("/fhir/DocumentReference", document))


def iti105(world: World, shape: Shape) -> Refusal:
    document = dmp_document(world.patient, author=GP)  # the bytes inline
    shape.mutate(document, world)
    return _refusal(world.post("/fhir/DocumentReference", document))


def conditional_create(world: World, shape: Shape) -> Refusal:
    document = dmp_document(world.patient, f"Binary/{_stored_binary(world)}", author=GP)
    shape.mutate(document, world)
    condition = f"patient={world.patient}&identifier=urn:ietf:rfc:3986|{new_unique_id()}"
    return _refusal(world.post("/fhir/DocumentReference", document, **{"If-None-Exist": condition}))


def batch(world: World, shape: Shape) -> Refusal:
    document = dmp_document(world.patient, f"Binary/{_stored_binary(world)}", author=GP)
    shape.mutate(document, world)
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": document, "request": {"method": "POST", "url": "DocumentReference"}}
        ],
    }
    response = world.post("/fhir", bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    (entry,) = response.get_json()["entry"]
    return _outcome_refusal(int(entry["response"]["status"][:3]), entry["response"]["outcome"])


def put(world: World, shape: Shape) -> Refusal:
    stored = world.deposit(world.patient)
    document = copy.deepcopy(stored)
    shape.mutate(document, world)
    response = world.client.put(
        f"/fhir/DocumentReference/{stored['id']}",
        data=json.dumps(document),
        headers=auth(world.token, **{"Content-Type": FHIR_JSON}),
    )
    return _refusal(response)


def _bundle_door(*, with_submission_set: bool, profile: str | None):
    def door(world: World, shape: Shape) -> Refusal:
        binary_url = new_entry_uuid()
        document = dmp_document(world.patient, binary_url, author=GP)
        shape.mutate(document, world)
        bundle = transaction(
            world.patient, document, with_submission_set=with_submission_set, profile=profile
        )
        return _refusal(world.post("/fhir", bundle))

    return door


FHIR_DOORS = {
    "REST POST": rest_post,
    "ITI-105": iti105,
    "conditional create": conditional_create,
    "batch entry": batch,
    "PUT": put,
    "transaction": _bundle_door(with_submission_set=False, profile=None),
    "ITI-65 https": _bundle_door(with_submission_set=True, profile=MHD_HTTPS),
    "ITI-65 http": _bundle_door(with_submission_set=True, profile=MHD_HTTP),
    "ITI-65 no profile": _bundle_door(with_submission_set=True, profile=None),
}
ITI65_DOORS = {"ITI-65 https", "ITI-65 http", "ITI-65 no profile"}


def iti41(world: World, shape: Shape) -> tuple[str, list[str]]:
    # A VIHF that names no patient, as the FHIR doors' token: another record's document is
    # then known to its médecin traitant (a bound VIHF is answered as for an unknown one).
    security = world.xds.security(GP, None)
    request = build_iti41(nir=world.nir, mtom=False, security=security)
    root = etree.fromstring(request.envelope)
    body = shape.xds_mutate(request.envelope, root, world)
    response = world.client.post(
        "/xds/repository", data=body, headers={"Content-Type": request.content_type}
    )
    assert response.status_code == 200, response.get_data()[:500]
    return registry_status(response)


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_every_door_refuses_the_same_invalid_document_the_same_way(world, shape):
    """Issue #19 deliverable 1: the same checks at every door, whatever profile or canonical
    the client declares (point 8: a plain POST without DMP metadata answered 201, a
    transaction without SubmissionSet or an ITI-65 under the http:// canonicals was stored)."""
    before = world.documents(world.patient)
    verdicts = {}
    for name, door in FHIR_DOORS.items():
        refusal = door(world, shape)
        expected = shape.put_field if name == "PUT" and shape.put_field else shape.field
        verdicts[name] = (refusal.status, expected in refusal.fields)
        if name in ITI65_DOORS:
            verdicts[name] += (shape.mhd_code in refusal.codes,)
    if shape.xds_mutate is not None:
        status, codes = iti41(world, shape)
        verdicts["ITI-41"] = (status == v.RESPONSE_FAILURE, shape.xds_code in codes)
    expected = {
        name: (422, True, True) if name in ITI65_DOORS else (422, True) for name in FHIR_DOORS
    }
    if shape.xds_mutate is not None:
        expected["ITI-41"] = (True, True)
    assert verdicts == expected
    # Nothing was stored by any door: the one new document is the PUT door's own deposit,
    # still at its first version.
    (deposited,) = world.documents(world.patient) - before
    assert world.read(f"DocumentReference/{deposited}")["meta"]["versionId"] == "1"


# -- ITI-105 Simplified Publish (issue #20 deliverable 2) ------------------------------------


def _audited_creates(world: World, tokens) -> set[str]:
    """The resources whose create the patient's audit trail records."""
    bundle = world.client.get(
        f"/fhir/AuditEvent?patient={world.patient}&subtype=create&_count=200",
        headers=auth(tokens.patient(world.patient)),
    ).get_json()
    return {
        entity["what"]["reference"].split("/_history/")[0]
        for entry in bundle.get("entry", [])
        for entity in entry["resource"].get("entity", [])
        if "reference" in entity.get("what", {})
    }


def test_iti105_makes_the_binary_computes_size_and_hash_and_assigns_the_entryuuid(world, tokens):
    """IHE ITI-105: the Document Recipient makes the Binary of the inline bytes, sets
    attachment.url, computes size and hash, and the registry assigns the entryUUID; the
    Binary belongs to the document (Binary.securityContext) and the write is audited."""
    document = dmp_document(world.patient, content=CDA, author=GP)
    attachment = document["content"][0]["attachment"]
    del attachment["size"], attachment["hash"]
    response = world.post("/fhir/DocumentReference", document)
    assert response.status_code == 201, response.get_data(as_text=True)
    stored = response.get_json()
    assert (
        response.headers["Location"]
        .split("/_history")[0]
        .endswith(f"DocumentReference/{stored['id']}")
    )
    attachment = stored["content"][0]["attachment"]
    assert "data" not in attachment
    binary_id = attachment["url"].removeprefix("Binary/")
    assert attachment["url"] == f"Binary/{binary_id}"
    assert attachment["size"] == len(CDA)
    assert attachment["hash"] == sha1_base64(CDA)
    assert re.fullmatch(r"urn:uuid:[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", entry_uuid(stored))
    raw = world.client.get(
        f"/fhir/Binary/{binary_id}", headers=auth(world.token, Accept="application/octet-stream")
    )
    assert raw.status_code == 200 and raw.get_data() == CDA
    resource = world.read(f"Binary/{binary_id}?_format=json")
    assert resource["securityContext"] == {"reference": f"DocumentReference/{stored['id']}"}
    assert f"DocumentReference/{stored['id']}" in _audited_creates(world, tokens)


def test_iti105_replacement_supersedes_the_replaced_document_in_the_same_write(world):
    """ITI-105 with relatesTo replaces supersedes the replaced document, as ITI-65 does."""
    old = world.current
    document = dmp_document(
        world.patient,
        author=GP,
        relatesTo=[{"code": "replaces", "target": {"reference": f"DocumentReference/{old['id']}"}}],
    )
    response = world.post("/fhir/DocumentReference", document)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert world.read(f"DocumentReference/{old['id']}")["status"] == "superseded"
    assert response.get_json()["status"] == "current"
    # Replacing it again fails: it is no longer current, and nothing is written.
    before = world.documents(world.patient)
    again = world.post(
        "/fhir/DocumentReference",
        {**document, "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": new_unique_id()}},
    )
    assert again.status_code == 422
    assert _refusal(again).codes == {"XDSReplaceFailed"}
    assert _refusal(again).fields == {"relatesTo[0].target"}
    assert world.documents(world.patient) == before


def _binary_versions(world: World) -> int:
    store = world.xds.runtime.store
    return len(store.history("Binary", None, since=None, count=1000, cursor=None).entries)


def test_conditional_iti105_that_finds_its_document_writes_nothing(world):
    """A conditional create (If-None-Exist) of a document already held answers it (200) and
    makes no Binary of the inline bytes: one would belong to no document."""
    document = dmp_document(world.patient, author=GP)
    created = world.post("/fhir/DocumentReference", document)
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.get_json()["content"][0]["attachment"]["url"].startswith("Binary/")
    before = _binary_versions(world)
    condition = (
        f"patient={world.patient}&identifier=urn:ietf:rfc:3986|"
        + (document["masterIdentifier"]["value"])
    )
    again = world.post("/fhir/DocumentReference", document, **{"If-None-Exist": condition})
    assert again.status_code == 200, again.get_data(as_text=True)
    assert again.get_json()["id"] == created.get_json()["id"]
    assert _binary_versions(world) == before


def test_iti105_pdsm_example_is_refused_for_the_dmp_metadata_it_lacks(world):
    """The PDSm4DMP ITI-105 example (its INS replaced by the patient's) carries the document
    inline but lacks what the DMP requires of every document (class, authenticator,
    confidentiality, language, context...): refused, 422 naming each element, nothing
    stored. Completed with that metadata, it is published."""
    text = (FIXTURES / ITI105_EXAMPLE).read_text(encoding="utf-8")
    example = json.loads(text.replace("123456789012345", world.nir))
    before = world.documents(world.patient)
    response = world.post("/fhir/DocumentReference", example)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert {
        "category",
        "authenticator",
        "securityLabel",
        "content[0].attachment.language",
        "content[0].format",
        "context",
    } <= _refusal(response).fields
    assert world.documents(world.patient) == before
    completed = dmp_document(world.patient, author=GP, class_code="10")  # ASS_X16: 11488-4
    completed.update({k: example[k] for k in ("masterIdentifier", "subject", "type")})
    with_admitted_class(completed)  # the class ASS_X16 gives the example's type
    content = base64.b64decode(example["content"][0]["attachment"]["data"])
    completed["content"][0]["attachment"].update(
        data=example["content"][0]["attachment"]["data"],
        size=len(content),
        hash=sha1_base64(content),
    )
    published = world.post("/fhir/DocumentReference", completed)
    assert published.status_code == 201, published.get_data(as_text=True)
    assert published.get_json()["subject"] == {"reference": f"Patient/{world.patient}"}


def test_plain_post_without_dmp_metadata_is_refused(world):
    """Issue #19 point 8: a hospital system's plain POST DocumentReference with no DMP
    metadata answered 201."""
    response = world.post(
        "/fhir/DocumentReference",
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": f"Patient/{world.patient}"},
            "content": [{"attachment": {"contentType": "application/pdf", "data": "JVBERi0="}}],
        },
    )
    assert response.status_code == 422
    assert {"masterIdentifier", "type", "category", "author"} <= _refusal(response).fields


# -- ITI-65 gaps (issue #19 point 8) -----------------------------------------------------------


def _iti65(world: World, **list_changes) -> dict:
    bundle = transaction(
        world.patient, dmp_document(world.patient, "", author=GP), with_submission_set=True
    )
    bundle["entry"][0]["resource"].update(list_changes)
    return bundle


def test_iti65_submission_set_without_uniqueid_is_refused_as_iti41_refuses_it(world):
    """ITI TF-3 Table 4.3.1-3: SubmissionSet.uniqueId is required; MHD carries it as the
    List identifier of use usual. ITI-41 refused its absence, ITI-65 stored the List."""
    before = world.documents(world.patient)
    response = world.post("/fhir", _iti65(world, identifier=[]))
    assert response.status_code == 422
    refusal = _refusal(response)
    assert "List.identifier" in refusal.fields and "XDSRepositoryMetadataError" in refusal.codes
    assert world.documents(world.patient) == before
    # The same submission through ITI-41, without its SubmissionSet uniqueId.
    security = world.xds.security(GP, world.nir)
    request = build_iti41(nir=world.nir, mtom=False, security=security)
    body = request.envelope.replace(request.submission_set_unique_id.encode(), b"")
    xds = world.client.post(
        "/xds/repository", data=body, headers={"Content-Type": request.content_type}
    )
    status, codes = registry_status(xds)
    assert status == v.RESPONSE_FAILURE and "XDSRegistryMetadataError" in codes


def test_iti65_submission_set_without_content_type_code_is_refused(world):
    """ITI TF-3 Table 4.3.1-3: SubmissionSet.contentTypeCode is required (MHD: the
    ihe-designationType extension); ITI-41 refused its absence, ITI-65 stored the List."""
    bundle = _iti65(world)
    submission_set = bundle["entry"][0]["resource"]
    submission_set["extension"] = [
        e for e in submission_set["extension"] if not e["url"].endswith("ihe-designationType")
    ]
    response = world.post("/fhir", bundle)
    assert response.status_code == 422
    refusal = _refusal(response)
    assert "List.extension" in refusal.fields and "XDSRepositoryMetadataError" in refusal.codes


def test_iti65_submission_set_source_naming_no_contained_resource_is_refused(world):
    """FHIR invariant ref-1 on the SubmissionSet (its author, List.source)."""
    response = world.post("/fhir", _iti65(world, source={"reference": "#nobody"}))
    assert response.status_code == 422
    refusal = _refusal(response)
    assert "List.source.reference" in refusal.fields
    assert "XDSRepositoryMetadataError" in refusal.codes


@pytest.mark.parametrize("with_submission_set", [True, False], ids=["ITI-65", "transaction"])
def test_two_documents_with_one_entryuuid_in_a_bundle_are_refused(world, with_submission_set):
    """ITI TF-3 4.1.12.1: an entryUUID names one object; both documents were accepted."""
    shared = new_entry_uuid()
    bundle = transaction(
        world.patient,
        dmp_document(world.patient, "", author=GP, entry_uuid=shared),
        with_submission_set=with_submission_set,
    )
    second = transaction(
        world.patient, dmp_document(world.patient, "", author=GP, entry_uuid=shared)
    )
    bundle["entry"] += second["entry"]
    if with_submission_set:
        bundle["entry"][0]["resource"]["entry"].append(
            {"item": {"reference": second["entry"][0]["fullUrl"]}}
        )
    before = world.documents(world.patient)
    response = world.post("/fhir", bundle)
    assert response.status_code == 422
    refusal = _refusal(response)
    assert "identifier" in refusal.fields and "XDSRepositoryMetadataError" in refusal.codes
    assert world.documents(world.patient) == before


# -- what an update may change -----------------------------------------------------------------


@pytest.mark.parametrize(
    "locked",
    [
        ("masterIdentifier", lambda d, w: d["masterIdentifier"].update(value=new_unique_id())),
        (
            "identifier",
            lambda d, w: d.update(
                identifier=[{"system": "urn:ietf:rfc:3986", "value": new_entry_uuid()}]
            ),
        ),
        (
            "content[0].attachment.url",
            lambda d, w: d["content"][0]["attachment"].update(url=f"Binary/{_stored_binary(w)}"),
        ),
        (
            "relatesTo",
            lambda d, w: d.update(
                relatesTo=[
                    {
                        "code": "appends",
                        "target": {"reference": f"DocumentReference/{w.superseded['id']}"},
                    }
                ]
            ),
        ),
    ],
    ids=lambda locked: locked[0] if isinstance(locked, tuple) else None,
)
def test_an_update_keeps_what_names_the_document_its_record_bytes_and_associations(world, locked):
    """A PUT may change a document's metadata (status, labels, description), never its
    entryUUID, uniqueId, patient, bytes or associations: a writer who may update one document
    would otherwise move it into another record, point it at another document's Binary, or
    take another document's uniqueId."""
    path, change = locked
    stored = world.read(f"DocumentReference/{world.current['id']}")
    document = copy.deepcopy(stored)
    change(document, world)
    response = world.client.put(
        f"/fhir/DocumentReference/{stored['id']}",
        data=json.dumps(document),
        headers=auth(world.token, **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert path in _refusal(response).fields
    assert world.read(f"DocumentReference/{stored['id']}")["meta"]["versionId"] == "1"
    allowed = copy.deepcopy(stored)
    allowed["description"] = "Compte rendu relu"
    allowed["status"] = "entered-in-error"
    response = world.client.put(
        f"/fhir/DocumentReference/{stored['id']}",
        data=json.dumps(allowed),
        headers=auth(world.token, **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
