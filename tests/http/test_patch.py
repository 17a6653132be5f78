"""PATCH of a DocumentReference: the DMP's TD3.3 metadata updates (issue #20, deliverable 1).

PDSm 3.1.1 `st_maj.md` (Flux 03/04): a conditional PATCH by identifier; only status,
securityLabel and PDSm_IsArchived may change (anything else: 405); If-Match honoured;
success is a new version. PDSm4DMP TD3.3a (mask/unmask: `replace /securityLabel/0`), TD3.3b
(INVISIBLE_PATIENT), TD3.3c (deletion: status entered-in-error), TD3.3d (archive).
Who may do what: dmp-access-rules.md R06/R07 (the patient, a minor's representatives:
MASQUE_PS), R14 (a professional lifts INVISIBLE_PATIENT), the author (archive, delete).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.http.conftest import FHIR_JSON, auth
from tests.http.metadata_world import (
    A07,
    A07_URL,
    IS_ARCHIVED,
    V3,
    build_world,
    fhirpath_patch,
    label,
    labels,
)


@pytest.fixture
def world(client, tokens):
    return build_world(client, tokens)


MASK = [{"op": "add", "path": "/securityLabel/-", "value": label("MASQUE_PS")}]
UNMASK_PS = [{"op": "remove", "path": "/securityLabel/1"}]  # [N, MASQUE_PS]
LIFT_INVISIBLE = [{"op": "remove", "path": "/securityLabel/1"}]  # [N, INVISIBLE_PATIENT]
ARCHIVE = [
    {"op": "add", "path": "/extension", "value": [{"url": IS_ARCHIVED, "valueBoolean": True}]}
]
DELETE = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
ADD_INVISIBLE = [{"op": "add", "path": "/securityLabel/-", "value": label("INVISIBLE_PATIENT")}]


# -- who may do what ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "initial", "change", "status", "rule"),
    [
        # R06: the patient masks and unmasks (MASQUE_PS) a professional's document...
        ("patient", ("N",), MASK, 200, None),
        ("patient", ("N", "MASQUE_PS"), UNMASK_PS, 200, None),
        # ...and changes nothing else of it.
        ("patient", ("N",), ARCHIVE, 403, "R06"),
        ("patient", ("N",), DELETE, 403, "R06"),
        ("patient", ("N",), ADD_INVISIBLE, 403, "R06"),
        # R14: a professional who may read it lifts INVISIBLE_PATIENT (after the announcement)...
        ("other", ("N", "INVISIBLE_PATIENT"), LIFT_INVISIBLE, 200, None),
        # ...and neither masks, archives nor deletes another's document.
        ("other", ("N",), MASK, 403, "R14"),
        ("other", ("N",), ARCHIVE, 403, "R14"),
        ("other", ("N",), DELETE, 403, "R14"),
        # The author archives and deletes (PDSm4DMP TD3.3c: "seul l'auteur").
        ("author", ("N",), ARCHIVE, 200, None),
        ("author", ("N",), DELETE, 200, None),
        ("author", ("N", "INVISIBLE_PATIENT"), LIFT_INVISIBLE, 200, None),
        # A professional the patient did not authorize (R10) changes nothing: the document
        # answers them as a missing one, as their read would (R18).
        ("stranger", ("N", "INVISIBLE_PATIENT"), LIFT_INVISIBLE, 404, None),
        # The patient does not see an INVISIBLE_PATIENT document: it is not there for them.
        ("patient", ("N", "INVISIBLE_PATIENT"), LIFT_INVISIBLE, 404, None),
    ],
)
def test_who_may_change_what(world, actor, initial, change, status, rule):
    document = world.deposit(*initial)
    response = world.patch(actor, document["id"], change)
    assert response.status_code == status, response.get_data(as_text=True)
    after = world.stored(document["id"])
    if status == 200:
        assert after["meta"]["versionId"] == "2"
        assert response.headers["ETag"] == 'W/"2"'
    else:
        assert after["meta"]["versionId"] == "1", "a refused PATCH wrote nothing"
        if rule:
            codes = [
                c.get("code")
                for issue in response.get_json()["issue"]
                for c in (issue.get("details") or {}).get("coding", [])
            ]
            assert rule in codes


PDSM4DMP = Path(__file__).resolve().parents[1] / "fixtures" / "external" / "pdsm4dmp"


@pytest.mark.parametrize("actor", ["lea", "representative"])
def test_r07_a_minor_and_her_representative_mask_and_unmask(world, actor):
    document = world.deposit("N", patient=world.lea)
    masked = world.patch(actor, document["id"], MASK)
    assert masked.status_code == 200, masked.get_data(as_text=True)
    assert (A07, "MASQUE_PS") in labels(masked.get_json())
    # the mask is removed at the index the answer shows it (TRE_A07 labels come first)
    index = next(
        i
        for i, concept in enumerate(masked.get_json()["securityLabel"])
        if concept["coding"][0]["code"] == "MASQUE_PS"
    )
    assert index == 0
    unmasked = world.patch(
        actor, document["id"], [{"op": "remove", "path": f"/securityLabel/{index}"}]
    )
    assert unmasked.status_code == 200, unmasked.get_data(as_text=True)
    assert labels(unmasked.get_json()) == {(V3, "N")}


# -- the patient masks: the professional no longer finds it; unmasking restores it ----------


def test_td33a_masked_document_is_gone_for_a_non_traitant_professional_and_back_when_unmasked(
    world,
):
    document = world.deposit("N")
    binary_url = world.client.get(
        f"/fhir/DocumentReference/{document['id']}", headers=auth(world.token("other"))
    )
    assert binary_url.status_code == 200 and world.finds("other", document["id"])
    # PDSm4DMP TD3.3a, as written: replace /securityLabel/0 with MASQUE_PS (NOS URL spelling).
    masked = world.patch(
        "patient",
        document["id"],
        [
            {
                "op": "replace",
                "path": "/securityLabel/0",
                "value": {"coding": [{"system": A07_URL, "code": "MASQUE_PS"}]},
            }
        ],
    )
    assert masked.status_code == 200, masked.get_data(as_text=True)
    assert not world.finds("other", document["id"])
    read = world.client.get(
        f"/fhir/DocumentReference/{document['id']}", headers=auth(world.token("other"))
    )
    assert read.status_code == 404
    assert world.finds("author", document["id"]), "the author still sees their document"
    # PDSm4DMP TD3.3a unmasking, as written: replace /securityLabel/0 with N.
    unmasked = world.patch(
        "patient",
        document["id"],
        [{"op": "replace", "path": "/securityLabel/0", "value": label("N")}],
    )
    assert unmasked.status_code == 200, unmasked.get_data(as_text=True)
    assert labels(unmasked.get_json()) == {(V3, "N")}
    assert world.finds("other", document["id"])


# -- labels are merged, never silently dropped -------------------------------------------------


def test_replacing_label_0_with_a_mask_keeps_the_confidentiality_level(world):
    """The PDSm4DMP masking example replaces whatever label stands first: the document's v3
    confidentiality level (here R) is kept beside the mask, not lost."""
    document = world.deposit("R")
    response = world.patch(
        "patient",
        document["id"],
        [{"op": "replace", "path": "/securityLabel/0", "value": label("MASQUE_PS")}],
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert labels(response.get_json()) == {(A07, "MASQUE_PS"), (V3, "R")}


def test_replacing_the_whole_label_list_keeps_the_labels_not_explicitly_removed(world):
    document = world.deposit("N", "INVISIBLE_PATIENT")
    response = world.patch(
        "author",
        document["id"],
        [{"op": "replace", "path": "/securityLabel", "value": [label("MASQUE_PS")]}],
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    # INVISIBLE_PATIENT was removed (a TRE_A07 label gone is a removal, the author may); the
    # level N, of another system, was not replaced by another level: it stays.
    assert labels(response.get_json()) == {(A07, "MASQUE_PS"), (V3, "N")}


def test_a_label_the_requester_may_not_remove_is_refused_not_dropped(world):
    """The patient masks with `replace /securityLabel/1` on [N, INVISIBLE_PATIENT]... the
    patient cannot even see it; the other professional replacing INVISIBLE_PATIENT by
    MASQUE_PS removes one (allowed) and adds one (not allowed): refused whole."""
    document = world.deposit("N", "INVISIBLE_PATIENT")
    response = world.patch(
        "other",
        document["id"],
        [{"op": "replace", "path": "/securityLabel/1", "value": label("MASQUE_PS")}],
    )
    assert response.status_code == 403
    assert labels(world.stored(document["id"])) == {(V3, "N"), (A07, "INVISIBLE_PATIENT")}


def test_changing_the_confidentiality_level_is_the_authors(world):
    document = world.deposit("N")
    change = [{"op": "replace", "path": "/securityLabel/0", "value": label("R")}]
    assert world.patch("patient", document["id"], change).status_code == 403
    response = world.patch("author", document["id"], change)
    assert response.status_code == 200
    assert labels(response.get_json()) == {(V3, "R")}


def test_a_removed_mask_in_meta_security_is_removed_there_too(world):
    """A label deposited in meta.security (which the normal form copies into securityLabel)
    is really removed: the unmasked document is found again."""
    document = world.document("N")
    document["meta"] = {"security": [{"system": A07, "code": "MASQUE_PS"}]}
    created = world.post(world.token("author"), document)
    assert created.status_code == 201, created.get_data(as_text=True)
    stored = created.get_json()
    index = [c["coding"][0]["code"] for c in stored["securityLabel"]].index("MASQUE_PS")
    response = world.patch(
        "patient", stored["id"], [{"op": "remove", "path": f"/securityLabel/{index}"}]
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert (A07, "MASQUE_PS") not in labels(response.get_json())
    assert not (response.get_json().get("meta") or {}).get("security")
    assert world.finds("other", stored["id"])


# -- FHIRPath Patch ----------------------------------------------------------------------------


def test_fhirpath_patch_of_pdsm_st_maj_archives_and_changes_labels(world):
    """The PDSm st_maj.md example shape: add the isArchived extension on DocumentReference,
    and FHIRPath paths with where()."""
    document = world.deposit("N", "INVISIBLE_PATIENT")
    body = fhirpath_patch(
        ("replace", "DocumentReference.status", {"valueCode": "current"}),
        (
            "delete",
            "DocumentReference.securityLabel.where(coding.code = 'INVISIBLE_PATIENT')",
        ),
        (
            "add",
            "DocumentReference",
            "extension",
            {
                "part": [
                    {"name": "url", "valueUri": IS_ARCHIVED},
                    {"name": "valueBoolean", "valueBoolean": True},
                ]
            },
        ),
    )
    response = world.patch("author", document["id"], body)
    assert response.status_code == 200, response.get_data(as_text=True)
    result = response.get_json()
    assert labels(result) == {(V3, "N")}
    assert result["extension"] == [{"url": IS_ARCHIVED, "valueBoolean": True}]
    # Then unarchived by replacing the extension's value, designated by its url.
    body = fhirpath_patch(
        (
            "replace",
            f"DocumentReference.extension('{IS_ARCHIVED}').value",
            {"valueBoolean": False},
        )
    )
    response = world.patch("author", document["id"], body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["extension"] == [{"url": IS_ARCHIVED, "valueBoolean": False}]


@pytest.mark.parametrize("form", ["json-patch", "fhirpath-patch"])
def test_the_patient_masks_with_either_format(world, form):
    document = world.deposit("N")
    body = (
        MASK
        if form == "json-patch"
        else fhirpath_patch(
            (
                "insert",
                "DocumentReference.securityLabel",
                0,
                {"valueCodeableConcept": label("MASQUE_PS")},
            )
        )
    )
    response = world.patch("patient", document["id"], body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert labels(response.get_json()) == {(V3, "N"), (A07, "MASQUE_PS")}
    assert not world.finds("other", document["id"])


def test_fhirpath_patch_in_fhir_xml(world):
    """PDSm st_maj.md: the Parameters comes as application/fhir+json or application/fhir+xml."""
    document = world.deposit("N")
    body = f"""<Parameters xmlns="http://hl7.org/fhir">
      <parameter><name value="operation"/>
        <part><name value="type"/><valueCode value="add"/></part>
        <part><name value="path"/><valueString value="DocumentReference"/></part>
        <part><name value="name"/><valueString value="securityLabel"/></part>
        <part><name value="value"/><valueCodeableConcept><coding>
          <system value="{A07}"/><code value="MASQUE_PS"/></coding></valueCodeableConcept></part>
      </parameter>
    </Parameters>"""
    response = world.client.patch(
        f"/fhir/DocumentReference/{document['id']}",
        data=body,
        headers=auth(
            world.token("patient"),
            **{"Content-Type": "application/fhir+xml", "Accept": FHIR_JSON},
        ),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert labels(response.get_json()) == {(V3, "N"), (A07, "MASQUE_PS")}


@pytest.mark.parametrize(
    ("operation", "where"),
    [
        ({"name": "operation", "part": [{"name": "type", "valueCode": "move"}]}, "parameter[0]"),
        (
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": "DocumentReference.securityLabel.first()"},
                    {"name": "value", "valueCode": "x"},
                ],
            },
            "parameter[0]",
        ),
        ({"name": "nonsense"}, "parameter[0]"),
    ],
)
def test_a_fhirpath_patch_the_server_cannot_read_is_refused(world, operation, where):
    document = world.deposit("N")
    body = {"resourceType": "Parameters", "parameter": [operation]}
    response = world.patch("author", document["id"], body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert where in json.dumps(response.get_json())
    assert world.stored(document["id"])["meta"]["versionId"] == "1"


# -- only status, securityLabel and isArchived -------------------------------------------------


@pytest.mark.parametrize(
    ("change", "element"),
    [
        (
            [{"op": "replace", "path": "/description", "value": "other"}],
            "DocumentReference.description",
        ),
        (
            [
                {
                    "op": "add",
                    "path": "/meta/security",
                    "value": [{"system": A07, "code": "MASQUE_PS"}],
                }
            ],
            "DocumentReference.meta",
        ),
        (
            [{"op": "replace", "path": "/identifier/0/value", "value": "urn:oid:1.2.3"}],
            "DocumentReference.identifier",
        ),
        (
            [{"op": "replace", "path": "/content/0/attachment/title", "value": "x"}],
            "DocumentReference.content",
        ),
        (
            [
                {
                    "op": "add",
                    "path": "/text",
                    "value": {
                        "status": "generated",
                        "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>',
                    },
                }
            ],
            "DocumentReference.text",
        ),
        (
            [
                {
                    "op": "add",
                    "path": "/extension",
                    "value": [{"url": "http://x", "valueBoolean": True}],
                }
            ],
            "DocumentReference.extension",
        ),
    ],
)
def test_pdsm_any_other_element_is_refused_405_naming_it(world, change, element):
    """PDSm st_maj.md Flux 04: elements other than status, securityLabel and PDSm_isArchived
    -> 405 Method Not Allowed. Even for the author, who may change anything by PUT."""
    document = world.deposit("N")
    response = world.patch("author", document["id"], change)
    assert response.status_code == 405, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == [element]
    assert world.stored(document["id"])["meta"]["versionId"] == "1"


def test_status_may_only_go_to_entered_in_error(world):
    document = world.deposit("N")
    response = world.patch(
        "author", document["id"], [{"op": "replace", "path": "/status", "value": "superseded"}]
    )
    assert response.status_code == 422
    assert response.get_json()["issue"][0]["expression"] == ["DocumentReference.status"]


def test_an_unknown_body_type_is_415(world):
    document = world.deposit("N")
    response = world.patch("author", document["id"], MASK, content_type="text/plain")
    assert response.status_code == 415


# -- conditional PATCH, If-Match ---------------------------------------------------------------


def test_conditional_patch_by_identifier_without_naming_the_patient(world):
    """PDSm: PATCH [base]/DocumentReference?identifier=system|value; the professional names
    no patient (their own search would be refused, R04)."""
    document = world.deposit("N")
    identifier = document["identifier"][0]
    response = world.patch(
        "author", f"?identifier={identifier['system']}|{identifier['value']}", ARCHIVE
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["id"] == document["id"]
    assert response.get_json()["extension"] == [{"url": IS_ARCHIVED, "valueBoolean": True}]


def test_conditional_patch_matching_nothing_is_404_and_two_is_412(world):
    world.deposit("N", unique="1.2.250.1.999.20.777")
    world.deposit("N", unique="1.2.250.1.999.20.777")
    missing = world.patch("author", "?identifier=urn:ietf:rfc:3986|urn:oid:9.9.9", ARCHIVE)
    assert missing.status_code == 404
    both = world.patch(
        "author", "?identifier=urn:ietf:rfc:3986|urn:oid:1.2.250.1.999.20.777", ARCHIVE
    )
    assert both.status_code == 412, both.get_data(as_text=True)


def test_conditional_patch_does_not_count_what_the_requester_may_not_read(world):
    """R18: the document masked from the other professional does not make two matches,
    and alone answers as a missing one."""
    world.deposit("N", unique="1.2.250.1.999.20.778")
    world.deposit("N", "MASQUE_PS", unique="1.2.250.1.999.20.778")
    target = "?identifier=urn:ietf:rfc:3986|urn:oid:1.2.250.1.999.20.778"
    response = world.patch("other", target, MASK)
    assert response.status_code == 403  # the one they see; masking is not theirs (R14)
    hidden = world.deposit("N", "MASQUE_PS", unique="1.2.250.1.999.20.779")
    assert hidden
    response = world.patch(
        "other", "?identifier=urn:ietf:rfc:3986|urn:oid:1.2.250.1.999.20.779", MASK
    )
    assert response.status_code == 404


def test_if_match_stale_is_412_current_is_200(world):
    document = world.deposit("N")
    assert world.patch("patient", document["id"], MASK, if_match='W/"1"').status_code == 200
    stale = world.patch("patient", document["id"], UNMASK_PS, if_match='W/"1"')
    assert stale.status_code == 412
    assert world.stored(document["id"])["meta"]["versionId"] == "2"
    assert world.patch("patient", document["id"], UNMASK_PS, if_match='W/"2"').status_code == 200


# -- the update's trace ------------------------------------------------------------------------


def test_a_patch_is_an_update_with_its_audit_event(world):
    document = world.deposit("N")
    assert world.patch("patient", document["id"], MASK).status_code == 200
    history = world.client.get(
        f"/fhir/DocumentReference/{document['id']}/_history", headers=auth(world.token("author"))
    ).get_json()
    assert history["total"] == 2 if "total" in history else len(history["entry"]) == 2
    events = world.client.get(
        f"/fhir/AuditEvent?patient={world.paul}&subtype=update",
        headers=auth(world.token("patient")),
    ).get_json()
    whats = {
        (entity.get("what") or {}).get("reference", "").split("/_history")[0]
        for entry in events.get("entry", [])
        for entity in entry["resource"].get("entity", [])
    }
    assert f"DocumentReference/{document['id']}" in whats


# -- PATCH in a transaction or batch (FHIR R4: Binary or Parameters) ---------------------------


def _binary_patch(operations: list) -> dict:
    return {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(json.dumps(operations).encode()).decode(),
    }


@pytest.mark.parametrize("bundle_type", ["transaction", "batch"])
def test_patch_entries_in_a_bundle(world, bundle_type):
    first, second = world.deposit("N"), world.deposit("N")
    identifier = second["identifier"][0]
    bundle = {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [
            {
                "resource": _binary_patch(MASK),
                "request": {"method": "PATCH", "url": f"DocumentReference/{first['id']}"},
            },
            {
                "resource": fhirpath_patch(
                    (
                        "add",
                        "DocumentReference",
                        "securityLabel",
                        {"valueCodeableConcept": label("MASQUE_PS")},
                    )
                ),
                "request": {
                    "method": "PATCH",
                    "url": f"DocumentReference?identifier={identifier['system']}|{identifier['value']}",
                    "ifMatch": 'W/"1"',
                },
            },
        ],
    }
    response = world.client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(world.token("patient"), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    statuses = [e["response"]["status"] for e in response.get_json()["entry"]]
    assert all(s.startswith("200") for s in statuses), statuses
    for document in (first, second):
        assert (A07, "MASQUE_PS") in labels(world.stored(document["id"]))
        assert not world.finds("other", document["id"])


def test_a_refused_patch_entry_rolls_the_transaction_back(world):
    first, second = world.deposit("N"), world.deposit("N")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _binary_patch(MASK),
                "request": {"method": "PATCH", "url": f"DocumentReference/{first['id']}"},
            },
            {
                "resource": _binary_patch(DELETE),  # the patient may not delete
                "request": {"method": "PATCH", "url": f"DocumentReference/{second['id']}"},
            },
        ],
    }
    response = world.client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(world.token("patient"), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 403
    assert "Bundle.entry[1]" in json.dumps(response.get_json())
    assert world.stored(first["id"])["meta"]["versionId"] == "1"


@pytest.mark.parametrize(
    ("label", "actor", "page"),
    [
        ("MASQUE_PS", "patient", "Page-td3.3a-2.json"),
        ("INVISIBLE_PATIENT", "author", "Page-td3.3b-2.json"),
    ],
)
def test_pdsm4dmp_unmask_and_lift_work_whatever_order_the_deposit_gave_the_labels(
    world, label, actor, page
):
    """PDSm4DMP TD3.3a (unmask) and TD3.3b (lift INVISIBLE_PATIENT) replace
    `/securityLabel/0` with N: a document deposited with its labels as [N, mask] (the order
    XDS and many clients give) is unmasked too, not answered 200 and left masked."""
    document = world.deposit("N", label)
    assert [c["coding"][0]["code"] for c in document["securityLabel"]] == [label, "N"]
    body = json.loads((PDSM4DMP / page).read_text(encoding="utf-8"))
    changed = world.patch(actor, document["id"], body)
    assert changed.status_code == 200, changed.get_data(as_text=True)
    assert labels(changed.get_json()) == {(V3, "N")}
    assert labels(world.stored(document["id"])) == {(V3, "N")}


@pytest.mark.parametrize("end", ["", "\n"], ids=["as-written", "line-end"])
def test_pdsm_extension_selector_is_read_to_its_last_character(world, end):
    """PDSm4DMP's `/extension[url:'...']/valueBoolean` selector is read to the path's last
    character: `$` also matched before a final newline, and `.../valueBoolean\\n` was applied
    as `.../valueBoolean` (a path read otherwise than written; refused, 400, fail closed)."""
    document = world.deposit("N")
    path = f"/extension[url:'{IS_ARCHIVED}']/valueBoolean{end}"
    response = world.patch(
        "author", document["id"], [{"op": "replace", "path": path, "value": True}]
    )
    if end:
        assert response.status_code == 400, response.get_data(as_text=True)
        assert world.stored(document["id"])["meta"]["versionId"] == "1"
    else:
        assert response.status_code == 200, response.get_data(as_text=True)
