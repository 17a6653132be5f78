"""Document type / class pairs the DMP admits, for test data.

A DMP document's type is in JDV_J66, its class in JDV_J57, and the two agree per ASS_X16
(profiles/terminology/nos/): a test that needs a document of some class takes its type from
here. tests/unit/test_nos_terminology.py checks every pair against the official files.
"""

from __future__ import annotations

LOINC = "http://loinc.org"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"

# TRE_A03 class code -> (type system, type code) of JDV_J66 that ASS_X16 maps to that class.
TYPE_OF_CLASS: dict[str, tuple[str, str]] = {
    "10": (LOINC, "11488-4"),  # CR ou fiche de consultation ou de visite
    "11": (LOINC, "34133-9"),  # Synthèse d'épisode de soins
    "31": (LOINC, "18748-4"),  # CR d'imagerie médicale
    "42": (LOINC, "57833-6"),  # Prescription de produits de santé
    "43": (LOINC, "60593-1"),  # Dispensation médicamenteuse
    "44": (LOINC, "18776-5"),  # Plan personnalisé de soins
    "45": (LOINC, "80565-5"),  # CR d'administration de médicaments
    "52": (LOINC, "89601-9"),  # Certificat médical
    "60": (TRE_A05, "REMB"),  # Données de remboursement
    "90": (TRE_A05, "EXPPAT_2"),  # Autre document du patient
}


def type_of_class(class_code: str) -> dict:
    """The `type` CodeableConcept of a document of TRE_A03 class `class_code`."""
    system, code = TYPE_OF_CLASS[class_code]
    return {"coding": [{"system": system, "code": code}]}


CLASS_OF_TYPE = {kind: class_code for class_code, kind in TYPE_OF_CLASS.items()}


def with_admitted_class(resource: dict) -> dict:
    """`resource` (a DocumentReference, or a Bundle holding some) with each document's TRE_A03
    class set to the one ASS_X16 gives its type, in place.

    Why: the published PDSm4DMP examples (tests/fixtures/external/pdsm4dmp) file the Consult
    note 11488-4 under class 11 (Synthèse), a pair ASS_X16 refuses (11488-4 is a compte rendu,
    class 10); a test that deposits them as valid data corrects the class, and
    tests/http/test_dmp_value_sets.py shows the example as published refused for that reason.
    """
    if resource.get("resourceType") == "Bundle":
        for entry in resource.get("entry", []):
            with_admitted_class(entry.get("resource") or {})
        return resource
    if resource.get("resourceType") != "DocumentReference":
        return resource
    kinds = [(c.get("system"), c.get("code")) for c in resource.get("type", {}).get("coding", [])]
    class_code = next((CLASS_OF_TYPE[k] for k in kinds if k in CLASS_OF_TYPE), None)
    for category in resource.get("category", []) if class_code else []:
        for coding in category.get("coding", []):
            if coding.get("system", "").endswith(
                ("TRE-A03-ClasseDocument", "1.2.250.1.213.1.1.4.1")
            ):
                coding["code"] = class_code
                coding.pop("display", None)
    return resource
