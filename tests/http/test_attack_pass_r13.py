"""Attack pass on R13 (the habilitation matrix) through every door and spelling (R18).

The world of tests/http/test_habilitation_types.py: an annex cell says a pharmacien (21)
may not read the type 11506-3 (class 10); the patient authorized the pharmacist and a
médecin (10, who reads every type). What a user checks: whatever the door or the spelling
of the type, the pharmacist neither reads nor learns of a document of that type more than
of an id that names nothing, and the médecin (the control) still does.

What got through:

- A document whose `type` carries two J66 codings, one the role reads (11488-4) and one it
  may not (11506-3), in either order, was served to the pharmacist (read, search, ITI-18):
  the R13 clause asked for *a* readable coding. Such a document is now excluded (fail
  closed: the rules cannot tell which of the two is its type).
- A `type` of a readable J66 coding and a coding of a system J66 draws from (LOINC,
  TRE_A05, TRE_A12) that J66 does not have (18842-5) was accepted at deposit and served to
  the pharmacist: R13 reads such a type for no restricted role, but beside a readable one
  it was ignored. It is now refused at deposit (422, every door judging DocumentReference
  value sets: `dmp_value_sets.type_problem`).

- The médecin's message to the pharmacist about (or attaching) a document of the excluded
  type was served to the pharmacist, naming the document's id. A message took the
  MASQUE_PS and INVISIBLE_* labels of what it names (R14), not its type. A message now
  carries in `meta.tag` the J66 types of the documents it names (and of the message it
  answers), and is hidden from a profession that may not read one of them.

What held (the controls below keep it covered): read, vread and instance history of the
document, its Binary, batch GET entries, searches by `type` (every system spelling),
`type:not`, `_id`, `_has`, `relatesto` and its chains, `_include` and `_revinclude` of
`relatesto` (the relation to the excluded document is left out of what is served),
`_summary=count`; a type changed
by its author from readable to excluded (no version served) and back (the excluded version
not served); PATCH, PUT with If-Match, DELETE, conditional PATCH and DELETE, a relatesTo
(appends, replaces, transforms, signs) and a message naming the document, each answered as
for a missing id and leaving the document as it was; the type written under its OID, its
NOS URL, a trailing slash or with `userSelected` (stored under the one canonical system,
excluded alike), a system in another case or a code with spaces (refused at deposit);
ITI-18 GetDocuments and ITI-43 by its uniqueId, answered as for an unknown uniqueId; an
ITI-41 by the pharmacist (who may deposit the type) replacing (RPLC) or appending to it,
an ITI-57 status or metadata update of it, answered as for an unknown entryUUID.
"""

from __future__ import annotations

import uuid

import pytest
from lxml import etree

from fhir_server.auth.vihf import WSSE, mint_vihf
from ihe_xds import vocabulary as v
from ihe_xds.stored_query import GET_DOCUMENTS
from tests.http.conftest import FHIR_JSON, INS_SYSTEM, auth
from tests.http.test_attack_pass_xds import deposit, errors
from tests.http.test_habilitation_types import (
    DOCTOR,
    HIDDEN_TYPE,
    LOINC,
    PHARMACIST,
    SEEN_TYPE,
    World,
    annex_world,
    unique_id,
)
from tests.http.test_xds_endpoints import Xds, envelope_of, registry_status
from tests.http.test_xds_update_document_set import (
    ITI57,
    entry_of,
    metadata_update,
    status_update,
)
from tests.support.documents import dmp_document

MISSING = "no-such-document"
LOINC_OID = "urn:oid:2.16.840.1.113883.6.1"
LOINC_NOS = "https://mos.esante.gouv.fr/NOS/TRE_A04-Loinc/FHIR/TRE-A04-Loinc"
PATCH_JSON = "application/json-patch+json"


@pytest.fixture(scope="module")
def world(tmp_path_factory, http_engine):
    """One server with the annex cell, for the module (each test writes documents of its
    own, under unique identifiers)."""
    world = annex_world(tmp_path_factory.mktemp("r13"))
    yield world
    world.close()


_serial = iter(range(1000, 10**6))


def document(world: World, *codings: dict, author: str = DOCTOR, **changes) -> dict:
    """A class-10 document of `codings` by `author` (the médecin: they read what they
    write, so that relations to it are accepted), under a uniqueId of its own."""
    serial = next(_serial)
    return dmp_document(
        world.patient_id,
        author=author,
        class_code="10",
        type={"coding": list(codings)},
        description=f"r13-{serial}",
        masterIdentifier={
            "system": "urn:ietf:rfc:3986",
            "value": f"urn:oid:1.2.250.1.999.13.{serial}",
        },
        **changes,
    )


def loinc(code: str, system: str = LOINC, **extra) -> dict:
    return {"system": system, "code": code, **extra}


def deposited(world: World, resource: dict, bearer: str | None = None) -> dict:
    response = world.client.post(
        "/fhir/DocumentReference",
        json=resource,
        headers=auth(bearer or doctor(world), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def pharmacist(world: World) -> str:
    return world.tokens.practitioner(PHARMACIST, profession="21")


def doctor(world: World) -> str:
    return world.tokens.practitioner(DOCTOR, profession="10")


def answer(response, *ids: str) -> tuple:
    """What a client compares: status, the body with the ids named replaced, ETag, Location."""
    body = response.get_data(as_text=True)
    for name in ids:
        body = body.replace(name, "<id>")
    return (
        response.status_code,
        body,
        response.headers.get("ETag"),
        response.headers.get("Location"),
    )


def search(world: World, bearer: str, query: str = "") -> dict:
    response = world.client.get(
        f"/fhir/DocumentReference?patient={world.patient_id}{query}", headers=auth(bearer)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def found(bundle: dict) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if "resource" in e}


def reads_as_missing(world: World, bearer: str, doc_id: str) -> None:
    """Read, vread and instance history of `doc_id` answer as those of an id naming
    nothing, and no search by patient finds it."""
    for path in ("", "/_history/1", "/_history"):
        shown = world.client.get(f"/fhir/DocumentReference/{doc_id}{path}", headers=auth(bearer))
        missing = world.client.get(f"/fhir/DocumentReference/{MISSING}{path}", headers=auth(bearer))
        assert answer(shown, doc_id) == answer(missing, MISSING), path
        assert shown.status_code == 404
    assert doc_id not in found(search(world, bearer, "&_count=100"))


# -- the hole: two codings, one excluded ----------------------------------------------------


@pytest.mark.parametrize("order", ["readable-first", "excluded-first"])
def test_r13_a_type_with_a_readable_and_an_excluded_coding_is_excluded(world, order):
    """Fail closed: a type that names both a type the role reads and one it may not is
    read as the excluded one, at REST (read, vread, history, search, count) and ITI-18;
    the médecin (the control) reads it."""
    codings = [loinc(SEEN_TYPE), loinc(HIDDEN_TYPE)]
    if order == "excluded-first":
        codings.reverse()
    resource = document(world, *codings)
    doc_id = deposited(world, resource)["id"]
    token = pharmacist(world)
    reads_as_missing(world, token, doc_id)
    count = search(world, token, "&_summary=count")["total"]
    assert count == len(found(search(world, token, "&_count=100")))
    assert doc_id not in found(search(world, token, f"&type={LOINC}|{SEEN_TYPE}&_count=100"))
    uid = resource["masterIdentifier"]["value"].removeprefix("urn:oid:")
    assert uid not in world.iti18_unique_ids(PHARMACIST, "21")
    # The control: the médecin reads it, and the pharmacist a document of the readable type.
    assert (
        world.client.get(
            f"/fhir/DocumentReference/{doc_id}", headers=auth(doctor(world))
        ).status_code
        == 200
    )
    assert uid in world.iti18_unique_ids(DOCTOR, "10")
    seen = deposited(world, document(world, loinc(SEEN_TYPE)))["id"]
    assert (
        world.client.get(f"/fhir/DocumentReference/{seen}", headers=auth(token)).status_code == 200
    )


TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"


@pytest.mark.parametrize(
    "outside",
    [loinc("18842-5"), loinc("18842-5", LOINC_OID), {"system": TRE_A05, "code": "ZZZZ"}],
    ids=["loinc", "loinc-oid", "tre-a05"],
)
def test_r13_a_type_coding_of_a_j66_system_outside_j66_is_refused_at_deposit(world, outside):
    """A coding of a system J66 draws from that J66 does not have is a type R13 reads for
    no restricted role; beside a readable J66 coding it was stored and ignored, and the
    pharmacist read the document. Refused (422) at creation and at update, naming it."""
    token = pharmacist(world)
    before = found(search(world, token, "&_count=100"))
    response = world.client.post(
        "/fhir/DocumentReference",
        json=document(world, loinc(SEEN_TYPE), outside),
        headers=auth(doctor(world), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert outside["code"] in response.get_data(as_text=True)
    stored = deposited(world, document(world, loinc(SEEN_TYPE)))
    changed = {**stored, "type": {"coding": [loinc(SEEN_TYPE), outside]}}
    response = world.client.put(
        f"/fhir/DocumentReference/{stored['id']}",
        json=changed,
        headers=auth(doctor(world), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert found(search(world, token, "&_count=100")) == before | {stored["id"]}


# -- controls: what held --------------------------------------------------------------------


@pytest.mark.parametrize(
    "coding",
    [
        loinc(HIDDEN_TYPE),
        loinc(HIDDEN_TYPE, LOINC_OID),
        loinc(HIDDEN_TYPE, LOINC_NOS),
        loinc(HIDDEN_TYPE, LOINC + "/"),
        loinc(HIDDEN_TYPE, userSelected=True),
    ],
    ids=["loinc", "oid", "nos-url", "trailing-slash", "user-selected"],
)
def test_r13_the_excluded_type_in_any_accepted_spelling_reads_as_missing(world, coding):
    """Every accepted spelling of the type's system is stored as the canonical one and
    excluded alike; the médecin reads it."""
    stored = deposited(world, document(world, coding))
    assert stored["type"]["coding"][0]["system"] == LOINC
    reads_as_missing(world, pharmacist(world), stored["id"])
    read = world.client.get(f"/fhir/DocumentReference/{stored['id']}", headers=auth(doctor(world)))
    assert read.status_code == 200


@pytest.mark.parametrize(
    "coding",
    [loinc(HIDDEN_TYPE, "HTTP://LOINC.ORG"), loinc(" " + HIDDEN_TYPE), loinc(HIDDEN_TYPE + " ")],
    ids=["system-upper-case", "leading-space", "trailing-space"],
)
def test_r13_a_type_spelling_the_rules_cannot_read_is_refused_at_deposit(world, coding):
    response = world.client.post(
        "/fhir/DocumentReference",
        json=document(world, loinc(SEEN_TYPE), coding),
        headers=auth(doctor(world), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code in (400, 422), response.get_data(as_text=True)


def test_r13_searches_by_type_answer_as_for_an_absent_type(world):
    """`type` (LOINC, OID), `type:not`, `_id`, `_has` and `relatesto` chains find nothing
    of the excluded document, as for a type or an id no document has."""
    hidden = deposited(world, document(world, loinc(HIDDEN_TYPE)))["id"]
    token = pharmacist(world)
    for query in (
        f"&type={LOINC}|{HIDDEN_TYPE}",
        f"&type={LOINC_OID}|{HIDDEN_TYPE}&_summary=count",
        f"&type={HIDDEN_TYPE}&_total=accurate",
        f"&_id={hidden}",
        f"&_has:DocumentReference:relatesto:type={HIDDEN_TYPE}",
        f"&relatesto:DocumentReference.type={LOINC}|{HIDDEN_TYPE}",
    ):
        assert search(world, token, query).get("total") == 0, query
    everything = found(search(world, token, "&_count=100"))
    assert found(search(world, token, f"&type:not={LOINC}|{HIDDEN_TYPE}&_count=100")) == everything
    assert hidden in found(search(world, doctor(world), f"&type={LOINC}|{HIDDEN_TYPE}&_count=100"))
    # A readable document appending to the excluded one, and the reverse: neither
    # `_include` nor `_revinclude` brings the excluded one, nor does the served relatesTo
    # name it.
    appends = {"code": "appends", "target": {"reference": f"DocumentReference/{hidden}"}}
    seen = deposited(world, document(world, loinc(SEEN_TYPE), relatesTo=[appends]))["id"]
    back = {"code": "appends", "target": {"reference": f"DocumentReference/{seen}"}}
    deposited(world, document(world, loinc(HIDDEN_TYPE), relatesTo=[back]))
    for include in ("_include", "_revinclude", "_include:iterate", "_revinclude:iterate"):
        query = f"&_id={seen}&{include}=DocumentReference:relatesto"
        assert found(search(world, token, query)) == {seen}, include
    read = world.client.get(f"/fhir/DocumentReference/{seen}", headers=auth(token))
    assert read.status_code == 200 and hidden not in read.get_data(as_text=True)


def test_r13_binary_and_batch_entries_answer_as_for_a_missing_id(world):
    stored = deposited(world, document(world, loinc(HIDDEN_TYPE)))
    binary = stored["content"][0]["attachment"]["url"].split("/")[1]
    token = pharmacist(world)
    shown = world.client.get(f"/fhir/Binary/{binary}", headers=auth(token))
    missing = world.client.get(f"/fhir/Binary/{MISSING}", headers=auth(token))
    assert answer(shown, binary) == answer(missing, MISSING)
    assert (
        world.client.get(f"/fhir/Binary/{binary}", headers=auth(doctor(world))).status_code == 200
    )

    def batch(doc_id: str, binary_id: str) -> list:
        urls = (
            f"DocumentReference/{doc_id}",
            f"DocumentReference/{doc_id}/_history/1",
            f"Binary/{binary_id}",
            f"DocumentReference?patient={world.patient_id}&_id={doc_id}",
        )
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": url}} for url in urls],
        }
        response = world.client.post(
            "/fhir", json=bundle, headers=auth(token, **{"Content-Type": FHIR_JSON})
        )
        assert response.status_code == 200
        entries = response.get_json()["entry"]
        return [answer_of(e, doc_id, binary_id) for e in entries]

    def answer_of(entry: dict, *ids: str) -> str:
        text = str(
            {k: v for k, v in entry.items() if k != "resource"}
            | {
                "resource": {
                    k: v
                    for k, v in (entry.get("resource") or {}).items()
                    if k not in ("id", "meta", "link")
                }
            }
        )
        for name in ids:
            text = text.replace(name, "<id>")
        return text

    assert batch(stored["id"], binary) == batch(MISSING, MISSING)


@pytest.mark.parametrize("direction", ["readable-then-excluded", "excluded-then-readable"])
def test_r13_a_type_changed_by_its_author_serves_no_excluded_version(world, direction):
    """Readable v1, excluded v2: no version is served (the current one is excluded).
    Excluded v1, readable v2: v2 is served, v1 is not, nor listed in the history."""
    first, second = (SEEN_TYPE, HIDDEN_TYPE)
    if direction == "excluded-then-readable":
        first, second = second, first
    stored = deposited(world, document(world, loinc(first)))
    changed = {**stored, "type": {"coding": [loinc(second)]}}
    response = world.client.put(
        f"/fhir/DocumentReference/{stored['id']}",
        json=changed,
        headers=auth(doctor(world), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    token = pharmacist(world)
    if second == HIDDEN_TYPE:
        reads_as_missing(world, token, stored["id"])
        vread2 = world.client.get(
            f"/fhir/DocumentReference/{stored['id']}/_history/2", headers=auth(token)
        )
        assert vread2.status_code == 404
        return
    base = f"/fhir/DocumentReference/{stored['id']}"
    assert world.client.get(base, headers=auth(token)).status_code == 200
    assert world.client.get(f"{base}/_history/2", headers=auth(token)).status_code == 200
    old = world.client.get(f"{base}/_history/1", headers=auth(token))
    missing = world.client.get(f"/fhir/DocumentReference/{MISSING}/_history/1", headers=auth(token))
    assert answer(old, stored["id"]) == answer(missing, MISSING)
    history = world.client.get(f"{base}/_history", headers=auth(token)).get_json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2"]
    assert history.get("total", 1) == 1


def test_r13_writes_naming_the_excluded_document_answer_as_for_a_missing_id(world):
    """PATCH, PUT with If-Match, DELETE, conditional PATCH and DELETE by its identifier, a
    relatesTo and a message naming it: the pharmacist (who may deposit) is answered as for
    an id naming nothing, and the document is left as it was."""
    stored = deposited(world, document(world, loinc(HIDDEN_TYPE)))
    doc_id = stored["id"]
    identifier = f"urn:ietf:rfc:3986|{stored['masterIdentifier']['value']}"
    token = pharmacist(world)
    client = world.client
    patch = [{"op": "replace", "path": "/description", "value": "changed"}]

    def writes(target: str, ident: str) -> list:
        put_body = {**stored, "id": target}
        criteria = f"/fhir/DocumentReference?patient={world.patient_id}&identifier={ident}"
        answers = [
            client.patch(
                f"/fhir/DocumentReference/{target}",
                json=patch,
                headers=auth(token, **{"Content-Type": PATCH_JSON, "If-Match": 'W/"1"'}),
            ),
            client.put(
                f"/fhir/DocumentReference/{target}",
                json=put_body,
                headers=auth(token, **{"Content-Type": FHIR_JSON, "If-Match": 'W/"1"'}),
            ),
            client.patch(criteria, json=patch, headers=auth(token, **{"Content-Type": PATCH_JSON})),
            client.delete(criteria, headers=auth(token)),
            client.delete(f"/fhir/DocumentReference/{target}", headers=auth(token)),
        ]
        for code in ("appends", "replaces", "transforms", "signs"):
            relation = {"code": code, "target": {"reference": f"DocumentReference/{target}"}}
            answers.append(
                client.post(
                    "/fhir/DocumentReference",
                    json=document(world, loinc(SEEN_TYPE), author=PHARMACIST, relatesTo=[relation]),
                    headers=auth(token, **{"Content-Type": FHIR_JSON}),
                )
            )
        message = {
            "resourceType": "Communication",
            "status": "completed",
            "subject": {"reference": f"Patient/{world.patient_id}"},
            "sender": {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": PHARMACIST}},
            "recipient": [
                {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": DOCTOR}}
            ],
            "about": [{"reference": f"DocumentReference/{target}"}],
            "payload": [{"contentString": "about this document"}],
        }
        answers.append(
            client.post(
                "/fhir/Communication",
                json=message,
                headers=auth(token, **{"Content-Type": FHIR_JSON}),
            )
        )
        return [answer(r, target, ident.rpartition("|")[2]) for r in answers]

    assert writes(doc_id, identifier) == writes(
        MISSING, "urn:ietf:rfc:3986|urn:oid:1.2.250.1.999.13.0"
    )
    now = client.get(f"/fhir/DocumentReference/{doc_id}", headers=auth(doctor(world)))
    assert now.status_code == 200 and now.get_json()["meta"]["versionId"] == "1"


def _registry_answer(response, *ids: str) -> tuple:
    root, package = envelope_of(response)
    text = b"".join(
        etree.tostring(e)
        for e in root.iter(f"{{{v.NS_RS}}}RegistryError", f"{{{v.NS_RIM}}}RegistryObjectList")
    ).decode()
    for name in ids:
        text = text.replace(name, "<id>")
    return response.status_code, registry_status(response)[0], text, sorted(package.attachments)


def test_r13_iti18_get_documents_and_iti43_answer_as_for_an_unknown_unique_id(world):
    resource = document(world, loinc(HIDDEN_TYPE))
    deposited(world, resource)
    uid = resource["masterIdentifier"]["value"].removeprefix("urn:oid:")
    unknown = "1.2.250.1.999.13.999999"

    def doors(target: str) -> list:
        return [
            _registry_answer(
                world.iti18(
                    PHARMACIST,
                    "21",
                    GET_DOCUMENTS,
                    [("$XDSDocumentEntryUniqueId", f"('{target}')")],
                ),
                target,
            ),
            _registry_answer(world.iti43(PHARMACIST, "21", target), target),
        ]

    assert doors(uid) == doors(unknown)
    shown = world.iti18(DOCTOR, "10", GET_DOCUMENTS, [("$XDSDocumentEntryUniqueId", f"('{uid}')")])
    assert uid.encode() in shown.get_data()
    assert unique_id(HIDDEN_TYPE) not in world.iti18_unique_ids(PHARMACIST, "21")


class PharmacistXds(Xds):
    """The XDS helpers, with the pharmacist's VIHF (profession 21) for PHARMACIST."""

    def security(self, idnat: str, nir: str | None = None, **kwargs) -> etree._Element:
        assertion = mint_vihf(
            self.credential,
            practitioner_id=idnat,
            profession="21" if idnat == PHARMACIST else "10",
            audience=self.audience,
            patient_ins=f"{INS_SYSTEM}|{nir}" if nir else None,
            **kwargs,
        )
        header = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
        header.append(assertion)
        return header


def test_r13_iti41_and_iti57_naming_the_excluded_document_answer_as_for_an_unknown_one(world):
    """The pharmacist may deposit documents of class 10 but not read 11506-3: their RPLC
    or APND of it, their ITI-57 status or metadata update of it, are answered as for an
    unknown entryUUID (the same errors, the id aside)."""
    api = PharmacistXds(
        world.app, world.client, world.tokens, world.app.extensions["fhir"].settings.data_dir
    )
    stored = deposited(world, document(world, loinc(HIDDEN_TYPE)))
    entry_uuid = next(
        i["value"] for i in stored["identifier"] if i["value"].startswith("urn:uuid:")
    )
    unique = stored["masterIdentifier"]["value"].removeprefix("urn:oid:")
    entry = entry_of(api, world.nir, unique, DOCTOR)
    assert entry is not None

    def answers(target: str) -> list:
        found = []
        for association in (v.ASSOC_RPLC, v.ASSOC_APND):
            _, response = deposit(api, world.nir, PHARMACIST, relation=(association, target))
            found.append((registry_status(response), errors(response)))
        named = etree.fromstring(
            etree.tostring(entry).replace(entry_uuid.encode(), target.encode())
        )
        for body in (
            status_update(world.nir, target, v.STATUS_APPROVED, v.STATUS_ARCHIVED),
            metadata_update(world.nir, named, [("N", "2.16.840.1.113883.5.25")]),
        ):
            response = api.soap("/xds/registry", ITI57, body, api.security(PHARMACIST, world.nir))
            found.append((response.status_code, registry_status(response), errors(response)))
        return [str(a).replace(target, "<id>") for a in found]

    hidden = answers(entry_uuid)
    assert hidden == answers(f"urn:uuid:{uuid.uuid4()}")
    assert all("Success" not in a for a in hidden)
    after = entry_of(api, world.nir, unique, DOCTOR)
    assert after is not None and after.get("status") == v.STATUS_APPROVED


def _message(world: World, sender: str, recipient: str, **elements) -> dict:
    ps = "urn:oid:1.2.250.1.71.4.2.1"
    return {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": f"Patient/{world.patient_id}"},
        "sender": {"identifier": {"system": ps, "value": sender}},
        "recipient": [{"identifier": {"system": ps, "value": recipient}}],
        "payload": [{"contentString": "about this document"}],
        **elements,
    }


def _sent(world: World, message: dict) -> str:
    response = world.client.post(
        "/fhir/Communication",
        json=message,
        headers=auth(doctor(world), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"]


@pytest.mark.parametrize("element", ["about", "attachment"])
def test_r13_a_message_naming_a_document_of_an_excluded_type_is_hidden_from_the_profession(
    world, element
):
    """The médecin's message to the pharmacist about (or attaching) a document of 11506-3
    was served to the pharmacist, naming the document's id, for which a read answers as for
    a missing one (R18). It is now hidden from them as the document is (as a message about
    a masked document is, R14): read as a missing id, not searched; the médecin's answer
    to it too. The control: a message about a document of a readable type is read."""
    hidden = deposited(world, document(world, loinc(HIDDEN_TYPE)))["id"]
    seen = deposited(world, document(world, loinc(SEEN_TYPE)))["id"]

    def naming(doc_id: str) -> dict:
        reference = {"reference": f"DocumentReference/{doc_id}"}
        if element == "about":
            return {"about": [reference]}
        return {"payload": [{"contentReference": reference}]}

    message = _sent(world, _message(world, DOCTOR, PHARMACIST, **naming(hidden)))
    answer_id = _sent(
        world,
        _message(
            world,
            DOCTOR,
            PHARMACIST,
            inResponseTo=[{"reference": f"Communication/{message}"}],
        ),
    )
    shown = _sent(world, _message(world, DOCTOR, PHARMACIST, **naming(seen)))
    token = pharmacist(world)
    for message_id in (message, answer_id):
        read = world.client.get(f"/fhir/Communication/{message_id}", headers=auth(token))
        missing = world.client.get(f"/fhir/Communication/{MISSING}", headers=auth(token))
        assert answer(read, message_id) == answer(missing, MISSING)
    listed = world.client.get(
        f"/fhir/Communication?patient={world.patient_id}&_count=100", headers=auth(token)
    )
    assert listed.status_code == 200
    ids = found(listed.get_json())
    assert shown in ids and not {message, answer_id} & ids
    assert hidden not in listed.get_data(as_text=True)
    assert (
        world.client.get(f"/fhir/Communication/{message}", headers=auth(doctor(world))).status_code
        == 200
    )
