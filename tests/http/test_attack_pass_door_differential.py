"""Attack pass by differential testing across doors (R06-R18).

The rule: what a requester may not read is unreachable through every door, and what they may
read is answered the same way by every door. One minor's record holds documents with the facts
the rules read: MASQUE_PS under the `urn:oid:` and the NOS URL spelling of TRE_A07 and in
`meta.security` only, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX, current / superseded /
entered-in-error, two authors, types a pharmacist may or may not read, a replacement naming the
document it replaces, a masked replacement of a visible document, an addendum to a document
hidden from the patient, a SubmissionSet List naming them all. For each requester (the
patient, a parent, the médecin traitant, an authorized médecin, an authorized pharmacist, the
author of most documents, the author of a masked and of a deleted document, a practitioner
named in no Consent, a blocked one, one in bris de glace, one in centre 15, a system client)
the set of documents each door shows is compared with the set the REST read of
`DocumentReference/<id>` serves, and that with the rules:

- the read in XML, as HEAD, conditional; vread, instance `_history`; Binary read by id, its
  `_history`, and through the document's `attachment.url` (ITI-68);
- search by patient (ITI-67) paged, by every status, `_id`, chained INS, `_has`, `_elements`,
  `_summary`, `_include` / `_revinclude` (`*`, relatesto, List:item), in XML, POST `_search`,
  the Patient's `_revinclude`, batch Bundle GETs, `_summary=count` and `_total`;
- List read and `List?_include=List:item` (ITI-66);
- ITI-18 FindDocuments (LeafClass and ObjectRef), GetDocuments, GetAll,
  GetSubmissionSetAndContents, GetDocumentsAndAssociations, GetRelatedDocuments; ITI-43;
- `$validate` of an instance, the AuditEvent searches, and the closed doors (type and system
  history, system search).

Every answer served (2xx, less the echo of what was asked) must name no document the read
refuses: not its id, its Binary's, its title, its uniqueId, its entryUUID, its type or its
label. The patient's side reads the trail and the notifications after accesses by every
door, an emergency access among them (R16, R17), and they name no document hidden from it.

Differences the rules make legitimate are stated where they are allowed, with their rule.
No door was found showing more than the read (see the report of branch `doors`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree

from fhir_server.auth.tokens import AuthSettings
from fhir_server.auth.vihf import load_or_create_structure_credential, mint_vihf
from fhir_server.config import load_settings
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY, SYSTEM_IDNAT_PS, SYSTEM_V3_ROLE_CODE
from ihe_xds import vocabulary as v
from ihe_xds.stored_query.ids import (
    FIND_DOCUMENTS,
    GET_ALL,
    GET_DOCUMENTS,
    GET_DOCUMENTS_AND_ASSOCIATIONS,
    GET_RELATED_DOCUMENTS,
    GET_SUBMISSION_SET_AND_CONTENTS,
)
from tests.dmp_codes import type_of_class
from tests.http.conftest import (
    FHIR_JSON,
    INS_SYSTEM,
    Tokens,
    a_patient,
    auth,
    create_test_app,
    deny,
    dmp_consent,
    internal_put,
    permit,
    valid_nir,
)
from tests.http.test_xds_endpoints import envelope_of
from tests.http.test_xds_stored_queries import adhoc
from tests.support.documents import binary, dmp_document, submission_set, transaction

RIM = f"{{{v.NS_RIM}}}"
BASE = "http://127.0.0.1:8080"
NOS_TRE_A07 = (
    "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
    "TRE-A07-StatutVisibiliteDocument"
)

GP = "810000000110"  # médecin traitant (R08)
AUTHORIZED = "810000000120"  # authorized by the patient (R10), author of nothing
AUTHOR = "810000000140"  # authorized, author of most documents
MASKED_AUTHOR = "810000000150"  # authorized, author of the NOS-spelled masked document
BLOCKED = "810000000130"  # blocked (R09)
STRANGER = "810000000199"  # named in no Consent (R10)
EMERGENCY = "810000000177"
REGULATOR = "810000000188"  # named in no Consent, a SAMU regulator in centre_15 (R12)
PHARMACIST = "810000000160"  # authorized, a pharmacien (R13: reads some types only)  # named in no Consent, in bris de glace (R11)

PATIENT_NUMBER = 41
NIR = valid_nir(PATIENT_NUMBER)


def _id(name: str) -> str:
    number = sum(ord(c) * 31**i for i, c in enumerate(name)) % 10**12
    return f"0c0c0c0c-0000-4000-8000-{number:012d}"


PATIENT = _id("patient")
PARENT = _id("parent")
LIST_ID = _id("submission-set")
SUBMISSION_SET_UNIQUE_ID = "1.2.250.1.213.1.4.8.77777.1.1"


@dataclass(frozen=True)
class Doc:
    """One document of the record: the facts the rules read, and how to recognise it."""

    class_code: str
    label: str | None = None
    label_system: str = SYSTEM_DMP_CONFIDENTIALITY
    status: str = "current"
    author: str = AUTHOR
    replaces: str | None = None
    relation: str = "replaces"  # the relatesTo code naming `replaces`
    in_meta: bool = False  # the label in `meta.security` only (R14: both are read)

    def unique_id(self, key: str) -> str:
        return f"1.2.250.1.213.1.4.8.77777.{sum(map(ord, key))}.{len(key)}"


# The classes (so the types) of the hidden documents are used by no other document, so that
# a type code in an answer can only name that document.
DOCS: dict[str, Doc] = {
    "plain": Doc("10"),
    "masked-oid": Doc("31", label="MASQUE_PS"),
    "masked-nos": Doc("42", label="MASQUE_PS", label_system=NOS_TRE_A07, author=MASKED_AUTHOR),
    "masked-meta": Doc("43", label="MASQUE_PS", in_meta=True),
    "invisible-patient": Doc("52", label="INVISIBLE_PATIENT"),
    "invisible-rl": Doc("45", label="INVISIBLE_REPRESENTANTS_LEGAUX"),
    "replaced": Doc("11", status="superseded"),
    "replacement": Doc("11", replaces="replaced", author=MASKED_AUTHOR),
    # An addendum (APND) to a document hidden from the patient's side: it carries content
    # of its own, so no label (R14), and names the hidden one.
    "addendum": Doc("10", replaces="invisible-patient", relation="appends"),
    # A visible document replaced by one masked from professionals (R14).
    "replaced-by-masked": Doc("90", status="superseded"),
    "masked-replacement": Doc("90", label="MASQUE_PS", replaces="replaced-by-masked"),
    "in-error": Doc("44", status="entered-in-error", author=MASKED_AUTHOR),
}


RELATIONS = [{key, spec.replaces} for key, spec in DOCS.items() if spec.replaces]
assert len({spec.unique_id(key) for key, spec in DOCS.items()}) == len(DOCS)


def doc_id(key: str) -> str:
    return _id(f"doc-{key}")


def binary_id(key: str) -> str:
    return _id(f"bin-{key}")


def title(key: str) -> str:
    return f"Titre-{key}-9f3"


def document(key: str) -> dict:
    spec = DOCS[key]
    resource = dmp_document(
        PATIENT,
        f"Binary/{binary_id(key)}",
        author=spec.author,
        class_code=spec.class_code,
        title=title(key),
        status=spec.status,
        masterIdentifier={"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{spec.unique_id(key)}"},
    )
    if spec.label and spec.in_meta:
        resource["meta"] = {"security": [{"system": spec.label_system, "code": spec.label}]}
    elif spec.label:
        resource["securityLabel"].append(
            {"coding": [{"system": spec.label_system, "code": spec.label}]}
        )
    if spec.replaces:
        resource["relatesTo"] = [
            {
                "code": spec.relation,
                "target": {"reference": f"DocumentReference/{doc_id(spec.replaces)}"},
            }
        ]
    return resource


def seed(service) -> None:
    put = internal_put(service)
    put(
        a_patient(
            PATIENT_NUMBER,
            birthDate="2016-04-02",
            generalPractitioner=[{"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}],
        ),
        PATIENT,
    )
    put(
        {
            "resourceType": "RelatedPerson",
            "patient": {"reference": f"Patient/{PATIENT}"},
            "relationship": [{"coding": [{"system": SYSTEM_V3_ROLE_CODE, "code": "PRN"}]}],
            "name": [{"family": "Durand", "given": ["Paul"]}],
        },
        PARENT,
    )
    put(
        dmp_consent(
            PATIENT,
            permit(AUTHORIZED),
            permit(AUTHOR),
            permit(MASKED_AUTHOR),
            permit(PHARMACIST),
            deny(BLOCKED),
        ),
        _id("consent"),
    )
    for key in DOCS:
        put(binary(), binary_id(key))
        put(document(key), doc_id(key))
    put(
        submission_set(
            PATIENT,
            [f"DocumentReference/{doc_id(k)}" for k in DOCS],
            identifier=[
                {
                    "use": "usual",
                    "system": "urn:ietf:rfc:3986",
                    "value": f"urn:oid:{SUBMISSION_SET_UNIQUE_ID}",
                }
            ],
        ),
        LIST_ID,
    )


# -- the requesters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Requester:
    token: Callable[[Tokens], str]
    idnat: str | None = None  # a practitioner: also asks the IHE faces with a VIHF
    mode: str = "normal"
    reason: str | None = None
    reads_trail: bool = False  # the patient's side (R16): reads the AuditEvents of the record
    profession: str = "10"  # TRE_G15: médecin


def _parent_token(tokens: Tokens) -> str:
    return tokens.issuer.issue(
        subject=PARENT,
        scopes="patient/*.cruds",
        fhir_user=f"RelatedPerson/{PARENT}",
        patient=PATIENT,
    )


REQUESTERS = {
    "patient": Requester(lambda t: t.patient(PATIENT), reads_trail=True),
    "representative": Requester(_parent_token, reads_trail=True),
    "medecin-traitant": Requester(lambda t: t.practitioner(GP), GP),
    "authorized": Requester(lambda t: t.practitioner(AUTHORIZED), AUTHORIZED),
    "pharmacist": Requester(
        lambda t: t.practitioner(PHARMACIST, profession="21"), PHARMACIST, profession="21"
    ),
    "author": Requester(lambda t: t.practitioner(MASKED_AUTHOR), MASKED_AUTHOR),
    "outside-care-team": Requester(lambda t: t.practitioner(STRANGER), STRANGER),
    "blocked": Requester(lambda t: t.practitioner(BLOCKED), BLOCKED),
    "bris-de-glace": Requester(
        lambda t: t.practitioner(EMERGENCY, mode="bris_de_glace", reason="urgence vitale"),
        EMERGENCY,
        mode="bris_de_glace",
        reason="urgence vitale",
    ),
    "centre-15": Requester(
        lambda t: t.practitioner(REGULATOR, mode="centre_15"), REGULATOR, mode="centre_15"
    ),
    "author-of-most": Requester(lambda t: t.practitioner(AUTHOR), AUTHOR),
    "system": Requester(lambda t: t.system(organization_type="healthcare_facility")),
}

# What the rules let each requester read, by R06..R15 (the control: the differential alone
# would pass if every door hid everything).
# A document deleted logically (entered-in-error) is read by its author only (PDSm4DMP
# TD3.3c, access-rules "What a refusal reveals").
MASKED = {"masked-oid", "masked-nos", "masked-meta", "masked-replacement"}
EXPECTED_READ = {
    "patient": set(DOCS) - {"invisible-patient", "in-error"},  # R06, R14
    "representative": set(DOCS) - {"invisible-patient", "invisible-rl", "in-error"},  # R07
    "medecin-traitant": set(DOCS) - {"in-error"},  # R08: MASQUE_PS does not hide from them
    "authorized": set(DOCS) - MASKED - {"in-error"},  # R10, R14
    "author": set(DOCS) - MASKED | {"masked-nos"},  # R14: their own masked, deleted documents
    "pharmacist": None,  # R13: the habilitation matrix's types, less the masked ones
    "outside-care-team": set(),  # R10
    "blocked": set(),  # R09
    "bris-de-glace": set(DOCS) - MASKED - {"in-error"},  # R11: masks stay
    "centre-15": set(DOCS) - MASKED - {"in-error"},  # R12: masks stay
    # R14: the masked documents they wrote; not the one another wrote, nor its deletion.
    "author-of-most": set(DOCS) - {"masked-nos", "in-error"},
    "system": set(),  # R15: systems never read the record's content
}


# -- the world ---------------------------------------------------------------------------------


@dataclass
class World:
    client: object
    tokens: Tokens
    service: object
    credential: object
    audience: str
    repository_id: str
    answers: list[str] = field(default_factory=list)  # what the requester was told

    def get(self, token: str, url: str, **headers: str):
        return self.record(self.client.get(url, headers=auth(token, **headers)))

    def post(self, token: str, url: str, body: str, content_type: str = FHIR_JSON):
        return self.record(
            self.client.post(url, data=body, headers=auth(token, **{"Content-Type": content_type}))
        )

    def record(self, response):
        """Keeps the text of a served answer. A refusal or a not-found (and a batch entry's,
        an XDS RegistryError's, a Bundle's self link) echoes what was asked, and answers alike for a hidden and an
        unknown id (R18, shown by test_r18_matrix): it is left out."""
        if response.status_code != 200:
            return response
        text = response.get_data(as_text=True)
        if text.startswith("{"):
            body = json.loads(text)
            if body.get("resourceType") == "Bundle":
                body.pop("link", None)  # the self link echoes the query asked
                body["entry"] = [
                    e
                    for e in body.get("entry", [])
                    if str((e.get("response") or {}).get("status", "200")).startswith("2")
                ]
            text = json.dumps(body)
        elif "RegistryError" in text:
            root, _ = envelope_of(response)
            for error in list(root.iter(f"{{{v.NS_RS}}}RegistryErrorList")):
                error.getparent().remove(error)
            text = etree.tostring(root, encoding="unicode")
        self.answers.append(text)
        return response

    def soap(self, path: str, action: str, body: etree._Element, requester: Requester):
        assertion = mint_vihf(
            self.credential,
            practitioner_id=requester.idnat,
            profession=requester.profession,
            audience=self.audience,
            mode=requester.mode,
            reason=requester.reason,
            patient_ins=f"{INS_SYSTEM}|{NIR}",
        )
        envelope = etree.Element(
            f"{{{v.NS_SOAP12}}}Envelope", nsmap={"soap": v.NS_SOAP12, "wsa": v.NS_WSA}
        )
        header = etree.SubElement(envelope, f"{{{v.NS_SOAP12}}}Header")
        etree.SubElement(header, f"{{{v.NS_WSA}}}Action").text = action
        etree.SubElement(header, f"{{{v.NS_WSA}}}MessageID").text = "urn:uuid:" + _id(action)
        wsse = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
        etree.SubElement(header, f"{{{wsse}}}Security", nsmap={"wsse": wsse}).append(assertion)
        etree.SubElement(envelope, f"{{{v.NS_SOAP12}}}Body").append(body)
        data = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
        return self.record(
            self.client.post(
                path, data=data, headers={"Content-Type": "application/soap+xml; charset=UTF-8"}
            )
        )


def _build_world(data_dir: Path) -> tuple[object, World]:
    settings = load_settings({"data_dir": data_dir, "max_body_bytes": 200_000}, environ={})
    app = create_test_app(settings)
    runtime = app.extensions["fhir"]
    seed(runtime.service)
    world = World(
        app.test_client(),
        Tokens(data_dir),
        runtime.service,
        load_or_create_structure_credential(data_dir),
        AuthSettings(data_dir=data_dir).effective_audience,
        runtime.settings.xds_repository_id,
    )
    return app, world


@pytest.fixture
def world(tmp_path):
    """A record per test: every request adds to the audit log, which the MongoDB engine
    (on mongomock) scans, so that a record shared by the matrix made the last requesters'
    doors several times slower than the first ones'."""
    app, built = _build_world(tmp_path / "var")
    # Every document read once by the médecin traitant, so the trail names each (R16).
    gp = built.tokens.practitioner(GP)
    for key in set(DOCS) - {"in-error"}:
        assert built.get(gp, f"/fhir/DocumentReference/{doc_id(key)}").status_code == 200, key
    for who in ("medecin-traitant", "author"):
        ids = ",".join(f"'{spec.unique_id(k)}'" for k, spec in DOCS.items())
        request = adhoc(GET_DOCUMENTS, [("$XDSDocumentEntryUniqueId", f"({ids})")])
        root, _ = envelope_of(built.soap("/xds/registry", v.ACTION_ITI18, request, REQUESTERS[who]))
        for extrinsic in root.iter(f"{RIM}ExtrinsicObject"):
            for identifier in extrinsic.iter(f"{RIM}ExternalIdentifier"):
                if identifier.get("identificationScheme") == v.DE_UNIQUE_ID:
                    ENTRY_UUIDS[KEY_OF_UNIQUE_ID[identifier.get("value")]] = extrinsic.get("id")
    assert set(ENTRY_UUIDS) == set(DOCS)
    yield built
    app.extensions["fhir"].store.close()


# -- the doors ---------------------------------------------------------------------------------

KEY_OF_ID = {doc_id(k): k for k in DOCS}
KEY_OF_BINARY = {binary_id(k): k for k in DOCS}
KEY_OF_UNIQUE_ID = {spec.unique_id(k): k for k, spec in DOCS.items()}
ENTRY_UUIDS: dict[str, str] = {}  # the XDS entryUUID of each document, as the registry gives it


def _keys(ids) -> set[str]:
    return {KEY_OF_ID[i] for i in ids if i in KEY_OF_ID}


def _bundle_documents(bundle: dict) -> set[str]:
    return _keys(
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("resource", {}).get("resourceType") == "DocumentReference"
    )


def _follow(world: World, token: str, url: str) -> list[dict]:
    """Every page of a search: the Bundles (an empty list when the search is refused)."""
    response = world.get(token, url)
    if response.status_code != 200:
        return []
    pages = [response.get_json()]
    while link := next(
        (x["url"] for x in pages[-1].get("link", []) if x["relation"] == "next"), None
    ):
        page = world.get(token, link.removeprefix(BASE))
        assert page.status_code == 200, page.get_data(as_text=True)
        pages.append(page.get_json())
    return pages


def _searched(world: World, token: str, query: str) -> set[str]:
    found: set[str] = set()
    for page in _follow(world, token, f"/fhir/DocumentReference?{query}"):
        found |= _bundle_documents(page)
    return found


def door_read(world: World, token: str) -> set[str]:
    return {
        k
        for k in DOCS
        if world.get(token, f"/fhir/DocumentReference/{doc_id(k)}").status_code == 200
    }


def door_read_variants(world: World, token: str) -> set[str]:
    """The read answered in XML, as HEAD, and conditionally (`If-None-Match` of the stored
    version, `If-Modified-Since` in the future): a 304 shows the document is
    there as a 200 does."""
    shown = set()
    variants = [
        ("GET", "?_format=xml", {}),
        ("HEAD", "", {}),
        ("GET", "", {"If-None-Match": 'W/"1"'}),
        ("GET", "", {"If-Modified-Since": "Wed, 21 Oct 2099 07:28:00 GMT"}),
    ]
    for key in DOCS:
        for method, suffix, headers in variants:
            url = f"/fhir/DocumentReference/{doc_id(key)}{suffix}"
            response = world.client.open(url, method=method, headers=auth(token, **headers))
            if response.status_code in (200, 304):
                shown.add(key)
    return shown


def door_vread(world: World, token: str) -> set[str]:
    """Documents one of whose versions a vread serves (each was written once, so version 1)."""
    shown = set()
    for key in DOCS:
        url = f"/fhir/DocumentReference/{doc_id(key)}/_history/1"
        if world.get(token, url).status_code == 200:
            shown.add(key)
    return shown


def door_history(world: World, token: str) -> set[str]:
    shown = set()
    for key in DOCS:
        response = world.get(token, f"/fhir/DocumentReference/{doc_id(key)}/_history")
        if response.status_code == 200 and response.get_json().get("entry"):
            shown.add(key)
    return shown


def door_search(world: World, token: str) -> set[str]:
    return _searched(world, token, f"patient={PATIENT}&_count=3")


def door_search_every_status(world: World, token: str) -> set[str]:
    return _searched(
        world, token, f"patient={PATIENT}&status=current,superseded,entered-in-error&_count=100"
    )


def door_search_elements(world: World, token: str) -> set[str]:
    return _searched(world, token, f"patient={PATIENT}&_elements=id,status&_count=100")


def door_search_include(world: World, token: str) -> set[str]:
    """`_include` of the subject and `_revinclude` of the Lists: the documents matched, and
    those a List brought in names (`entry.item`)."""
    found: set[str] = set()
    query = f"patient={PATIENT}&_include=DocumentReference:subject&_revinclude=List:item&_count=100"
    for page in _follow(world, token, f"/fhir/DocumentReference?{query}"):
        found |= _bundle_documents(page)
        found |= _list_items(page)
    return found


def door_search_relatesto(world: World, token: str) -> set[str]:
    """The documents found by a search naming each target of a relation, and the targets
    their `relatesTo` names."""
    found: set[str] = set()
    for key in {spec.replaces for spec in DOCS.values() if spec.replaces}:
        query = f"patient={PATIENT}&relatesto=DocumentReference/{doc_id(key)}&_count=100"
        for page in _follow(world, token, f"/fhir/DocumentReference?{query}"):
            found |= _bundle_documents(page)
            for entry in page.get("entry", []):
                for relation in entry["resource"].get("relatesTo", []):
                    target = relation["target"].get("reference", "")
                    found |= _keys([target.rsplit("/", 1)[-1]])
    return found


def door_search_chained(world: World, token: str) -> set[str]:
    """By the patient's INS (chained) and `_has` of the SubmissionSet naming the documents."""
    return _searched(world, token, f"patient.identifier={INS_SYSTEM}|{NIR}&_count=100") | _searched(
        world, token, f"patient={PATIENT}&_has:List:item:code=submissionset&_count=100"
    )


def door_search_by_id(world: World, token: str) -> set[str]:
    ids = ",".join(doc_id(k) for k in DOCS)
    return _searched(world, token, f"patient={PATIENT}&_id={ids}&_count=100")


def door_search_summary(world: World, token: str) -> set[str]:
    return _searched(world, token, f"patient={PATIENT}&_summary=true&_total=accurate&_count=4")


def door_patient_revinclude(world: World, token: str) -> set[str]:
    """The documents a search of the Patient brings in (`_revinclude`)."""
    found: set[str] = set()
    query = f"_id={PATIENT}&_revinclude=DocumentReference:subject&_revinclude=List:subject"
    for page in _follow(world, token, f"/fhir/Patient?{query}"):
        found |= _bundle_documents(page) | _list_items(page)
    return found


def door_search_xml(world: World, token: str) -> set[str]:
    """The search answered in XML: the documents whose id an entry carries."""
    response = world.get(
        token,
        f"/fhir/DocumentReference?patient={PATIENT}&_count=100",
        Accept="application/fhir+xml",
    )
    if response.status_code != 200:
        return set()
    root = etree.fromstring(response.get_data())
    fhir = "{http://hl7.org/fhir}"
    return _keys(
        node.get("value")
        for node in root.iter(f"{fhir}DocumentReference")
        for node in node.findall(f"{fhir}id")
    )


def door_include_relatesto(world: World, token: str) -> set[str]:
    """`_include` of the documents a document relates to, and `_include=*`."""
    found: set[str] = set()
    for include in ("DocumentReference:relatesto", "*"):
        query = f"patient={PATIENT}&_include={include}&_count=100"
        for page in _follow(world, token, f"/fhir/DocumentReference?{query}"):
            found |= _bundle_documents(page)
    return found


# Doors the server keeps closed to every client (refused whoever asks, so they show less than
# the read; listed so that one opened some day is compared with the others): the
# system-level search (`_type`), the type and the system history.
CLOSED_DOORS = (
    f"/fhir?_type=DocumentReference&patient={PATIENT}",
    "/fhir/DocumentReference/_history?_count=100",
    "/fhir/_history?_count=100",
)


def door_binary_history(world: World, token: str) -> set[str]:
    """Binary `_history` (the vread of each version: test_r18_matrix)."""
    shown = set()
    for key in DOCS:
        answer = world.get(token, f"/fhir/Binary/{binary_id(key)}/_history")
        if answer.status_code == 200 and answer.get_json().get("entry"):
            shown.add(key)
    return shown


def door_audit_events(world: World, token: str) -> set[str]:
    """The AuditEvents the requester may search: answered or refused, never naming a hidden
    document (checked on every answer, `assert_names_nothing_hidden`). Contributes no
    document: the trail names what was accessed, read or not (R16)."""
    for url in (
        f"/fhir/AuditEvent?patient={PATIENT}&_count=200",
        f"/fhir/AuditEvent?entity=DocumentReference/{doc_id('plain')}&_count=200",
    ):
        _follow(world, token, url)
    return set()


def door_count(world: World, token: str) -> int | None:
    """`_summary=count` by patient, of every status: one total, or None when refused."""
    totals = set()
    for query in ("", "&status=current,superseded,entered-in-error"):
        url = f"/fhir/DocumentReference?patient={PATIENT}{query}&_summary=count"
        response = world.get(token, url)
        totals.add(response.get_json().get("total") if response.status_code == 200 else None)
    assert len(totals) == 1, totals
    return totals.pop()


def door_post_search(world: World, token: str) -> set[str]:
    response = world.post(
        token,
        "/fhir/DocumentReference/_search",
        f"patient={PATIENT}&_count=100",
        "application/x-www-form-urlencoded",
    )
    return _bundle_documents(response.get_json()) if response.status_code == 200 else set()


def door_batch(world: World, token: str) -> set[str]:
    body = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            *(
                {"request": {"method": "GET", "url": f"DocumentReference/{doc_id(k)}"}}
                for k in DOCS
            ),
            *(
                {"request": {"method": "GET", "url": f"DocumentReference/{doc_id(k)}/_history/1"}}
                for k in DOCS
            ),
            {
                "request": {
                    "method": "GET",
                    "url": f"DocumentReference?patient={PATIENT}&_count=100",
                }
            },
        ],
    }
    response = world.post(token, "/fhir", json.dumps(body))
    if response.status_code != 200:
        return set()
    found: set[str] = set()
    for entry in response.get_json().get("entry", []):
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "DocumentReference":
            found |= _keys([resource["id"]])
        elif resource.get("resourceType") == "Bundle":
            found |= _bundle_documents(resource)
    return found


def door_binary(world: World, token: str) -> set[str]:
    return {
        k
        for k in DOCS
        if world.get(token, f"/fhir/Binary/{binary_id(k)}", Accept="*/*").status_code == 200
    }


def door_binary_by_url(world: World, token: str) -> set[str]:
    """ITI-68: the content through the `attachment.url` of each document the read serves."""
    shown = set()
    for key in DOCS:
        response = world.get(token, f"/fhir/DocumentReference/{doc_id(key)}")
        if response.status_code != 200:
            continue
        url = response.get_json()["content"][0]["attachment"]["url"]
        if world.get(token, f"/fhir/{url}", Accept="*/*").status_code == 200:
            shown.add(KEY_OF_BINARY[url.rsplit("/", 1)[-1]])
    return shown


def _list_items(bundle: dict) -> set[str]:
    return _keys(
        item["item"]["reference"].rsplit("/", 1)[-1]
        for e in bundle.get("entry", [])
        if e.get("resource", {}).get("resourceType") == "List"
        for item in e["resource"].get("entry", [])
    )


def door_list_read(world: World, token: str) -> set[str]:
    response = world.get(token, f"/fhir/List/{LIST_ID}")
    if response.status_code != 200:
        return set()
    return _list_items({"entry": [{"resource": response.get_json()}]})


def door_list_include(world: World, token: str) -> set[str]:
    found: set[str] = set()
    for page in _follow(world, token, f"/fhir/List?patient={PATIENT}&_include=List:item"):
        found |= _bundle_documents(page) | _list_items(page)
    return found


def _leaf_documents(response) -> set[str]:
    root, _ = envelope_of(response)
    found = set()
    for extrinsic in root.iter(f"{RIM}ExtrinsicObject"):
        for identifier in extrinsic.iter(f"{RIM}ExternalIdentifier"):
            if identifier.get("identificationScheme") == v.DE_UNIQUE_ID:
                found.add(KEY_OF_UNIQUE_ID.get(identifier.get("value"), "?"))
    return found


def door_iti18_find(world: World, requester: Requester) -> set[str]:
    statuses = f"('{v.STATUS_APPROVED}','{v.STATUS_DEPRECATED}')"
    request = adhoc(
        FIND_DOCUMENTS,
        [
            ("$XDSDocumentEntryPatientId", f"'{NIR}^^^&1.2.250.1.213.1.4.8&ISO^NH'"),
            ("$XDSDocumentEntryStatus", statuses),
        ],
    )
    response = world.soap("/xds/registry", v.ACTION_ITI18, request, requester)
    return _leaf_documents(response)


def door_iti18_find_object_refs(world: World, requester: Requester) -> set[str]:
    """FindDocuments answering ObjectRefs: the entryUUIDs of the documents."""
    slots = [("$XDSDocumentEntryPatientId", PATIENT_CX), ("$XDSDocumentEntryStatus", ALL_STATUSES)]
    response = world.soap(
        "/xds/registry", v.ACTION_ITI18, adhoc(FIND_DOCUMENTS, slots, "ObjectRef"), requester
    )
    root, _ = envelope_of(response)
    key_of_entry_uuid = {entry_uuid: key for key, entry_uuid in ENTRY_UUIDS.items()}
    return {key_of_entry_uuid.get(r.get("id"), "?") for r in root.iter(f"{RIM}ObjectRef")}


def door_iti18_get(world: World, requester: Requester) -> set[str]:
    ids = ",".join(f"'{spec.unique_id(k)}'" for k, spec in DOCS.items())
    request = adhoc(GET_DOCUMENTS, [("$XDSDocumentEntryUniqueId", f"({ids})")])
    response = world.soap("/xds/registry", v.ACTION_ITI18, request, requester)
    return _leaf_documents(response)


def _xds_query(world: World, requester: Requester, query_id: str, slots) -> set[str]:
    response = world.soap("/xds/registry", v.ACTION_ITI18, adhoc(query_id, slots), requester)
    return _leaf_documents(response)


ALL_STATUSES = f"('{v.STATUS_APPROVED}','{v.STATUS_DEPRECATED}')"
PATIENT_CX = f"'{NIR}^^^&1.2.250.1.213.1.4.8&ISO^NH'"


def door_iti18_get_all(world: World, requester: Requester) -> set[str]:
    slots = [
        ("$patientId", PATIENT_CX),
        ("$XDSDocumentEntryStatus", ALL_STATUSES),
        ("$XDSSubmissionSetStatus", ALL_STATUSES),
        ("$XDSFolderStatus", ALL_STATUSES),
    ]
    return _xds_query(world, requester, GET_ALL, slots)


def door_iti18_submission_set(world: World, requester: Requester) -> set[str]:
    slots = [("$XDSSubmissionSetUniqueId", f"'{SUBMISSION_SET_UNIQUE_ID}'")]
    return _xds_query(world, requester, GET_SUBMISSION_SET_AND_CONTENTS, slots)


def door_iti18_documents_and_associations(world: World, requester: Requester) -> set[str]:
    ids = ",".join(f"'{spec.unique_id(k)}'" for k, spec in DOCS.items())
    slots = [("$XDSDocumentEntryUniqueId", f"({ids})")]
    return _xds_query(world, requester, GET_DOCUMENTS_AND_ASSOCIATIONS, slots)


def door_iti18_related(world: World, requester: Requester) -> set[str]:
    """GetRelatedDocuments of each end of a relation (RPLC, APND): both ends."""
    found: set[str] = set()
    for key, spec in DOCS.items():
        if not any(key in pair for pair in RELATIONS):
            continue
        slots = [
            ("$XDSDocumentEntryUniqueId", f"'{spec.unique_id(key)}'"),
            ("$AssociationTypes", f"('{v.ASSOC_RPLC}','{v.ASSOC_APND}')"),
        ]
        found |= _xds_query(world, requester, GET_RELATED_DOCUMENTS, slots)
    return found


def door_iti43(world: World, requester: Requester) -> set[str]:
    request = etree.Element(f"{{{v.NS_XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": v.NS_XDSB})
    for key, spec in DOCS.items():
        item = etree.SubElement(request, f"{{{v.NS_XDSB}}}DocumentRequest")
        etree.SubElement(item, f"{{{v.NS_XDSB}}}RepositoryUniqueId").text = world.repository_id
        etree.SubElement(item, f"{{{v.NS_XDSB}}}DocumentUniqueId").text = spec.unique_id(key)
    response = world.soap("/xds/repository", v.ACTION_ITI43, request, requester)
    root, _ = envelope_of(response)
    return {
        KEY_OF_UNIQUE_ID.get(r.findtext(f"{{{v.NS_XDSB}}}DocumentUniqueId"), "?")
        for r in root.iter(f"{{{v.NS_XDSB}}}DocumentResponse")
    }


FHIR_DOORS = {
    "read-xml-head-conditional": door_read_variants,
    "vread": door_vread,
    "history": door_history,
    "search-paged": door_search,
    "search-every-status": door_search_every_status,
    "search-elements": door_search_elements,
    "search-include-revinclude": door_search_include,
    "search-by-id": door_search_by_id,
    "search-chained-has": door_search_chained,
    "search-summary-total": door_search_summary,
    "search-xml": door_search_xml,
    "patient-revinclude": door_patient_revinclude,
    "search-include-relatesto": door_include_relatesto,
    "binary-history": door_binary_history,
    "post-search": door_post_search,
    "batch-get": door_batch,
    "binary": door_binary,
    "binary-by-attachment-url": door_binary_by_url,
    "list-read": door_list_read,
    "list-include-item": door_list_include,
}
XDS_DOORS = {
    "iti18-find": door_iti18_find,
    "iti18-get": door_iti18_get,
    "iti18-find-object-refs": door_iti18_find_object_refs,
    "iti18-get-all": door_iti18_get_all,
    "iti18-submission-set-and-contents": door_iti18_submission_set,
    "iti18-documents-and-associations": door_iti18_documents_and_associations,
    "iti43": door_iti43,
}

# The XDS queries by patient ask for Approved and Deprecated entries: a document deleted
# logically (entered-in-error, read by its author only) is a Deleted entry
# (urn:asip:ci-sis:2010:StatusType:Deleted) that they leave out by their own criteria, not by
# the rules; GetDocuments, GetSubmissionSetAndContents and ITI-43 serve it to its author.
NOT_IN_DEFAULT = {name: set() for name in XDS_DOORS} | {
    name: {"in-error"} for name in ("iti18-find", "iti18-find-object-refs", "iti18-get-all")
}


# -- the matrix --------------------------------------------------------------------------------


@pytest.mark.parametrize("who", list(REQUESTERS))
def test_r18_every_door_shows_what_the_read_shows(world, who):
    """Every door agrees with the REST read; the read agrees with the rules."""
    requester = REQUESTERS[who]
    token = requester.token(world.tokens)
    world.answers.clear()
    read = door_read(world, token)
    expected = EXPECTED_READ[who]
    if expected is None:  # R13: some of the authorized practitioner's documents
        expected = read
        assert set() < read < EXPECTED_READ["authorized"], "the habilitation reads no type"
    assert read == expected, "the read does not follow the rules"
    shown = {name: door(world, token) for name, door in FHIR_DOORS.items()}
    if requester.idnat:
        shown |= {
            name: door(world, requester) | NOT_IN_DEFAULT[name] & read
            for name, door in XDS_DOORS.items()
        }
    differences = {name: sorted(found ^ read) for name, found in shown.items() if found != read}
    assert differences == {}, f"doors disagreeing with the read of {sorted(read)}"
    # A search by `relatesto` (and GetRelatedDocuments) finds the record's relations whose
    # two ends the read serves, and nothing else (R14: a hidden target is an unknown id).
    related = set().union(*(pair for pair in RELATIONS if pair <= read))
    assert door_search_relatesto(world, token) == related
    if requester.idnat:
        assert door_iti18_related(world, requester) == related
    door_audit_events(world, token)
    # `$validate` of an instance answers alike for a hidden and an unknown id.
    unknown = _id("nothing")
    validations = {
        key: [
            world.post(
                token,
                f"/fhir/DocumentReference/{i}/$validate",
                json.dumps(document(key) | {"id": i}),
            )
            .get_data(as_text=True)
            .replace(i, "<id>")
            for i in (doc_id(key), unknown)
        ]
        for key in set(DOCS) - read
    }
    assert all(hidden == missing for hidden, missing in validations.values())
    assert {url: world.get(token, url).status_code for url in CLOSED_DOORS} == {
        url: 400 if url.startswith("/fhir?") else 403 for url in CLOSED_DOORS
    }
    count = door_count(world, token)
    assert count in (None, len(read)), "_summary=count counts another set than the read"
    paged = world.get(token, f"/fhir/DocumentReference?patient={PATIENT}&_total=accurate&_count=2")
    assert (paged.get_json() or {}).get("total") in (None, len(read)), "the total counts more"
    assert_names_nothing_hidden(world, read)


def hidden_names(read: set[str]) -> dict[str, list[str]]:
    """What would name each document not in `read`: its ids, its Binary's, its title, its
    uniqueId and entryUUID, its type code, and its DMP label where no document read has it."""
    shown_labels = {DOCS[k].label for k in read}
    names = {}
    for key in set(DOCS) - read:
        spec = DOCS[key]
        names[key] = [doc_id(key), binary_id(key), title(key), spec.unique_id(key)]
        names[key] += [ENTRY_UUIDS[key].removeprefix("urn:uuid:")]
        if not any(DOCS[k].class_code == spec.class_code for k in read):
            names[key] += [c["code"] for c in type_of_class(spec.class_code)["coding"]]
        if spec.label and spec.label not in shown_labels:
            names[key].append(spec.label)
    return names


def assert_names_nothing_hidden(world: World, read: set[str]) -> None:
    """No served answer of the test names a document not in `read`."""
    leaks = {
        key: sorted({n for n in names for text in world.answers if n in text})
        for key, names in hidden_names(read).items()
    }
    assert leaks == {key: [] for key in leaks}, "a served answer names a hidden document"


TRAIL_HIDES_LABELS = {
    "patient": ["INVISIBLE_PATIENT"],
    "representative": ["INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"],
}
TRAIL_HIDES = {
    "patient": {"invisible-patient"},
    "representative": {"invisible-patient", "invisible-rl"},
}


def _names_of(key: str) -> list[str]:
    spec = DOCS[key]
    names = [doc_id(key), binary_id(key), title(key), spec.unique_id(key)]
    names += [
        c["code"] for c in dmp_document(PATIENT, class_code=spec.class_code)["type"]["coding"]
    ]
    if spec.label and spec.label != "MASQUE_PS":
        names.append(spec.label)
    return names


@pytest.mark.parametrize("who", list(TRAIL_HIDES))
def test_r16_the_trail_names_no_document_hidden_from_its_reader(world, who):
    """What the patient's side sees of the record, of the accesses (R16) and of the deposits
    and emergency accesses notified (R17) names no document hidden from it: not its id, its
    Binary's, its title, its uniqueId, its type or its label."""
    # Accesses by every door, so that the trail has an event of each kind naming every
    # document: the médecin traitant's searches and IHE queries, an emergency access (R11,
    # notified to the patient, R17) reading and retrieving each document.
    for accessor in ("medecin-traitant", "bris-de-glace"):
        requester = REQUESTERS[accessor]
        practitioner = requester.token(world.tokens)
        for door in (door_read, door_search, door_binary, door_list_include, door_batch):
            door(world, practitioner)
        for door in (door_iti18_find, door_iti18_submission_set, door_iti43):
            door(world, requester)
    # Deposits through the REST face (a transaction with its SubmissionSet), notified to the
    # patient's side (R17) unless hidden from it.
    deposited = {}
    for label in ("INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX", "MASQUE_PS"):
        deposited[label] = f"Depot-{label}-5c1"
        labelled = dmp_document(PATIENT, None, author=AUTHOR, label=label, title=deposited[label])
        response = world.post(
            world.tokens.practitioner(AUTHOR),
            "/fhir",
            json.dumps(transaction(PATIENT, labelled, with_submission_set=True)),
        )
        assert response.status_code == 200, response.get_data(as_text=True)
    token = REQUESTERS[who].token(world.tokens)
    text = ""
    for url in (
        f"/fhir/List?patient={PATIENT}&_count=200",
        f"/fhir/DocumentReference?patient={PATIENT}&_count=200",
        f"/fhir/AuditEvent?patient={PATIENT}&_count=200",
        f"/fhir/Communication?subject=Patient/{PATIENT}&_count=200",
    ):
        for page in _follow(world, token, url):
            text += json.dumps(page)
    assert doc_id("plain") in text, "the trail of the visible document's read is missing"
    assert "urgence vitale" in text, "the notification of the emergency access is missing"
    assert deposited["MASQUE_PS"] in text, "the document masked from professionals is missing"
    leaks = {key: [n for n in _names_of(key) if n in text] for key in TRAIL_HIDES[who]}
    leaks |= {label: deposited[label] in text for label in TRAIL_HIDES_LABELS[who]}
    assert leaks == {key: [] for key in TRAIL_HIDES[who]} | dict.fromkeys(
        TRAIL_HIDES_LABELS[who], False
    )
