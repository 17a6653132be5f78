"""The label merge of a metadata update (issue #20: "labels are merged, never silently
dropped: a replace of /securityLabel/0 must not lose the others"), and the FHIRPath Patch
subset (fhirpatch.html), as pure functions."""

from __future__ import annotations

import pytest

from fhir_server.errors import FhirError
from fhir_server.resources.metadata_update import merge_labels, settle
from fhir_server.resources.patch import apply_fhirpath_patch, apply_json_patch
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY as A07

V3 = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


def doc(*codes: str, meta: tuple[str, ...] = ()) -> dict:
    resource: dict = {"resourceType": "DocumentReference", "id": "d", "status": "current"}
    if codes:
        resource["securityLabel"] = [
            {"coding": [{"system": V3 if len(c) == 1 else A07, "code": c}]} for c in codes
        ]
    if meta:
        resource["meta"] = {"security": [{"system": A07, "code": c} for c in meta]}
    return resource


def codes(resource: dict) -> list[str]:
    return [c["code"] for concept in resource.get("securityLabel", []) for c in concept["coding"]]


@pytest.mark.parametrize(
    ("before", "requested", "after", "why"),
    [
        (("N",), ("MASQUE_PS",), ["MASQUE_PS", "N"], "the level is kept beside the mask"),
        (("MASQUE_PS", "N"), ("N", "N"), ["N"], "a TRE_A07 label gone is removed; N once"),
        (("N",), ("R",), ["R"], "a level replaced by another level"),
        (("N", "INVISIBLE_PATIENT"), ("N",), ["N"], "INVISIBLE_PATIENT removed"),
        (("R", "MASQUE_PS"), (), ["R"], "removing every label removes the TRE_A07 ones only"),
        (("N",), ("N", "MASQUE_PS", "MASQUE_PS"), ["N", "MASQUE_PS"], "a label written twice"),
    ],
)
def test_label_merge(before, requested, after, why):
    assert codes(merge_labels(doc(*before), doc(*requested))) == after, why


def test_a_removed_label_leaves_meta_security_too():
    merged = merge_labels(doc("N", "MASQUE_PS", meta=("MASQUE_PS",)), doc("N", meta=("MASQUE_PS",)))
    assert "meta" not in merged or not merged["meta"].get("security")


def test_settle_refuses_another_element_405_naming_it():
    changed = {**doc("N"), "description": "x"}
    with pytest.raises(FhirError) as refused:
        settle(doc("N"), changed)
    assert refused.value.status == 405
    assert refused.value.issues[0].expression == ("DocumentReference.description",)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("DocumentReference.securityLabel[1]", ["N"]),
        ("DocumentReference.securityLabel.where(coding.code = 'MASQUE_PS')", ["N"]),
        ("DocumentReference.securityLabel.where(coding.code = 'ABSENT')", ["N", "MASQUE_PS"]),
    ],
)
def test_fhirpath_delete(path, expected):
    parameters = one_operation({"name": "type", "valueCode": "delete"}, path)
    assert codes(apply_fhirpath_patch(doc("N", "MASQUE_PS"), parameters)) == expected


def test_fhirpath_replace_of_a_code_found_by_system():
    """The PDSm st_maj.md example path."""
    parameters = one_operation(
        {"name": "type", "valueCode": "replace"},
        f"DocumentReference.securityLabel.coding.where(system='{V3}').code",
        {"name": "value", "valueCode": "R"},
    )
    assert codes(apply_fhirpath_patch(doc("N", "MASQUE_PS"), parameters)) == ["R", "MASQUE_PS"]


def one_operation(kind: dict, path: str, *more: dict) -> dict:
    parts = [kind, {"name": "path", "valueString": path}, *more]
    return {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": parts}]}


def test_json_patch_pdsm4dmp_extension_selector():
    url = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
    archived = {
        **doc("N"),
        "extension": [
            {"url": "http://x", "valueBoolean": True},
            {"url": url, "valueBoolean": False},
        ],
    }
    patched = apply_json_patch(
        archived,
        [{"op": "replace", "path": f"/extension[url:'{url}']/valueBoolean", "value": True}],
    )
    assert patched["extension"][1] == {"url": url, "valueBoolean": True}
    assert archived["extension"][1]["valueBoolean"] is False, "the stored version is untouched"


ARCHIVED_URL = (
    "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
)
TD33D_ARCHIVE = [  # PDSm4DMP transaction_td3.3d.md, "Requête (archivage)", verbatim
    {"op": "replace", "path": f"/extension[url:'{ARCHIVED_URL}']/valueBoolean", "value": True}
]


@pytest.mark.parametrize(
    "extensions", [None, [{"url": "http://x", "valueString": "y"}]], ids=["none", "another"]
)
def test_json_patch_td33d_archive_of_a_never_archived_document_sets_the_extension(extensions):
    """PDSm4DMP TD3.3d archives with `replace` of the isArchived value; a document never
    archived has no such extension (absent: not archived), so the replace gives it one
    instead of failing as RFC 6902 would for a missing target (it answered 422)."""
    document = doc("N") if extensions is None else {**doc("N"), "extension": extensions}
    patched = apply_json_patch(document, TD33D_ARCHIVE)
    assert patched["extension"] == (extensions or []) + [
        {"url": ARCHIVED_URL, "valueBoolean": True}
    ]


def test_json_patch_other_path_into_an_absent_extension_is_still_refused():
    with pytest.raises(FhirError) as refused:
        apply_json_patch(
            doc("N"),
            [{"op": "replace", "path": f"/extension[url:'{ARCHIVED_URL}']/url", "value": "x"}],
        )
    assert refused.value.status == 422


@pytest.mark.parametrize("kind", ["delete", "replace"])
def test_fhirpath_delete_or_replace_of_the_whole_resource_is_refused(kind):
    """fhirpatch.html operations apply to elements: the resource itself is not one; without
    this check the operation changed nothing and answered 200."""
    more = [{"name": "value", "valueCode": "x"}] if kind == "replace" else []
    parameters = one_operation({"name": "type", "valueCode": kind}, "DocumentReference", *more)
    with pytest.raises(FhirError) as refused:
        apply_fhirpath_patch(doc("N"), parameters)
    assert refused.value.status == 422


@pytest.mark.parametrize("value", ["restricted", ["restricted"]], ids=["string", "list-of-string"])
def test_a_security_label_that_is_no_codeable_concept_is_refused_naming_it(value):
    """PDSm st_maj.md's example PATCH replaces /securityLabel with "restricted": refused 400
    naming DocumentReference.securityLabel (it was read character by character)."""
    with pytest.raises(FhirError) as refused:
        settle(doc("N"), {**doc("N"), "securityLabel": value})
    assert refused.value.status == 400
    (issue,) = refused.value.issues
    assert issue.expression[0].startswith("DocumentReference.securityLabel")
    assert "CodeableConcept" in issue.diagnostics
