"""The official NOS terminologies as data (issue #20, deliverable 5).

What a user of the server checks: the ANS files of profiles/terminology/nos/ are the ones
loaded (no hand copy stands beside them); a system is recognised under both its canonical
URL and its OID (CodeSystem.identifier), and stored under the one spelling the access rules
read; JDV_J58 admits exactly three of TRE_A07's five codes; JDV_J66 / JDV_J57 / ASS_X16 say
which document types and classes go together, the same for FHIR and XDS.
"""

from __future__ import annotations

import json

import pytest

from fhir_server.resources.dmp_value_sets import (
    J57_URL,
    J58_URL,
    J66_URL,
    X16_URL,
    DmpValueSets,
)
from fhir_server.resources.normal_form import default_aliases
from fhir_server.resources.nos import official_spellings, read_official
from fhir_server.resources.profiles import PROFILES_DIR, ProfileRegistry
from ihe_xds.codes import scheme_for_system, system_for_scheme
from tests.dmp_codes import TYPE_OF_CLASS

NOS_DIR = PROFILES_DIR / "terminology" / "nos"
A07_URL = (
    "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
    "TRE-A07-StatutVisibiliteDocument"
)
A07_OID = "urn:oid:1.2.250.1.213.1.1.4.13"
A03_OID = "urn:oid:1.2.250.1.213.1.1.4.1"
A03_URL = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
LOINC = "http://loinc.org"


@pytest.fixture(scope="module")
def registry() -> ProfileRegistry:
    return ProfileRegistry.load(PROFILES_DIR)


@pytest.fixture(scope="module")
def value_sets(registry) -> DmpValueSets:
    return DmpValueSets.from_registry(registry)


def official() -> list[dict]:
    return read_official(PROFILES_DIR / "terminology")


# --------------------------------------------------------------------------- the files


def test_every_official_file_is_published_by_the_ans_and_accounted_for_in_source():
    """nos/SOURCE.md names each file, its repository and commit; the files are the ANS's."""
    source = (NOS_DIR / "SOURCE.md").read_text(encoding="utf-8")
    assert "b8b0cc32cc5e1471d417d6d3a3dd17bfb0fce3e9" in source  # IG-NOS commit
    assert "26c48252035f88c9a5c89ee02d45090513b77438" in source  # ig-terminlogie-de-sante
    files = sorted(p.name for p in NOS_DIR.glob("*.json"))
    assert len(files) == len(official()) >= 10
    for name in files:
        resource = json.loads((NOS_DIR / name).read_text(encoding="utf-8"))
        assert resource["publisher"] == "ANS", name
        assert f"`{name}`" in source, name


def test_the_registry_loads_the_official_value_sets_and_concept_map(registry):
    assert {J58_URL, J57_URL, J66_URL} <= set(registry.expansions)
    assert X16_URL in registry.concept_maps


def test_no_hand_copy_stands_beside_an_official_artifact():
    """One artifact per canonical URL: the hand transcriptions the NOS files replace are gone."""
    ours = [
        json.loads(p.read_text(encoding="utf-8"))
        for p in (PROFILES_DIR / "terminology").glob("*.json")
        if p.name != "system-aliases.json"
    ]
    official_urls = {r["url"] for r in official()}
    assert not official_urls & {r["url"] for r in ours}


def test_the_dmp_profile_binds_the_official_value_sets(registry):
    sd = next(
        sd
        for sd in registry.structure_definitions()
        if sd["url"].endswith("/dmp-document-reference")
    )
    bindings = {
        element["id"]: element["binding"]["valueSet"]
        for element in sd["differential"]["element"]
        if "binding" in element
    }
    assert bindings["DocumentReference.type"] == J66_URL
    assert bindings["DocumentReference.category"] == J57_URL
    assert bindings["DocumentReference.securityLabel"] == J58_URL


# --------------------------------------------------------------------------- spellings


@pytest.mark.parametrize(
    "code_system",
    [r for r in official() if r["resourceType"] == "CodeSystem"],
    ids=lambda r: r.get("id"),
)
def test_url_and_oid_of_every_official_code_system_name_one_system(code_system):
    """Both spellings a file declares resolve, in the alias table, to one canonical."""
    table = default_aliases()
    spellings = official_spellings(code_system)
    canonicals = {table.canonical(s) for s in spellings}
    assert len(canonicals) == 1, canonicals
    assert all(table.spec(s) is not None for s in spellings)


def test_the_stored_forms_the_access_rules_read_are_kept():
    """TRE_A07 and TRE_A03 stay stored under their urn:oid (the access issue's normal form)."""
    table = default_aliases()
    assert table.canonical(A07_URL) == table.canonical(A07_OID) == A07_OID
    assert table.canonical(A03_URL) == table.canonical(A03_OID) == A03_OID
    assert table.canonical("https://mos.esante.gouv.fr/NOS/TRE_A04-Loinc/FHIR/TRE-A04-Loinc") == (
        LOINC
    )


def test_tre_r248_both_url_spellings_and_its_official_oid_are_one_system():
    table = default_aliases()
    spellings = (
        "https://mos.esante.gouv.fr/NOS/TRE_R248_ModeAcces/FHIR/TRE-R248-ModeAcces",
        "https://mos.esante.gouv.fr/NOS/TRE_R248-ModeAcces/FHIR/TRE-R248-ModeAcces",
        "urn:oid:1.2.250.1.213.1.1.4.336",
        "urn:oid:1.2.250.1.213.1.1.4.248",
    )
    assert {table.canonical(s) for s in spellings} == {"urn:oid:1.2.250.1.213.1.1.4.248"}


def test_the_closed_tre_a07_codes_of_the_table_are_those_of_the_official_file():
    a07 = next(r for r in official() if r["url"] == A07_URL)
    assert default_aliases().spec(A07_OID).codes == {c["code"] for c in a07["concept"]}
    assert len(a07["concept"]) == 5


def test_xds_and_fhir_name_an_official_system_alike():
    """ITI-41's codingScheme OID maps to the system the FHIR faces store, and back."""
    assert system_for_scheme("1.2.250.1.213.1.1.4.12") == (
        "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/"
        "TRE-A05-TypeDocComplementaire"
    )
    assert scheme_for_system(A07_URL) == "1.2.250.1.213.1.1.4.13"
    assert system_for_scheme("2.16.840.1.113883.6.1") == LOINC


# --------------------------------------------------------------------------- JDV_J58


def test_j58_admits_exactly_three_of_the_five_tre_a07_codes(registry, value_sets):
    a07 = registry.key(A07_URL)
    admitted = {code for system, code in registry.expansions[J58_URL].pairs if system == a07}
    assert admitted == {"INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX", "MASQUE_PS"}
    for code in ("MASQUE_PSOCIAL", "MASQUE_PT"):
        for system in (A07_URL, A07_OID, "1.2.250.1.213.1.1.4.13"):
            problem = value_sets.label_problem((system, code))
            assert problem and code in problem and "JDV_J58" in problem
    assert value_sets.label_problem((A07_OID, "MASQUE_PS")) is None
    assert (
        value_sets.label_problem(("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "N"))
        is None
    )


# --------------------------------------------------------------------------- J66, J57, ASS_X16


def test_every_j66_type_but_docpat09_has_a_j57_class_in_ass_x16(value_sets):
    """The published files disagree on one type (nos/SOURCE.md): ASS_X16 (2024) files
    DOCPAT09 under class 95, which JDV_J57 (2021) does not hold, so no class is admitted for
    it and a DOCPAT09 deposit is refused until the ANS aligns them."""
    orphans = {
        code
        for key in value_sets.types.pairs
        for code in [key[1]]
        if not value_sets.classes_of_type.get(key, frozenset()) & value_sets.classes.pairs
    }
    assert orphans == {"DOCPAT09"}


def test_ass_x16_pairs_accept_the_mapped_class_and_refuse_another(value_sets):
    assert value_sets.pair_problem([(LOINC, "11502-2")], [(A03_OID, "10")]) is None
    problem = value_sets.pair_problem([(LOINC, "11502-2")], [(A03_URL, "11")])
    assert problem and "11502-2" in problem and " 11 " in problem and "ASS_X16" in problem
    assert value_sets.pair_problem([(LOINC, "18748-4")], [(A03_OID, "31")]) is None
    assert (
        value_sets.pair_problem(
            [(TYPE_OF_CLASS["60"][0], "REMB")], [("urn:oid:1.2.250.1.213.1.1.4.1", "60")]
        )
        is None
    )


def test_type_outside_j66_and_class_outside_j57_are_named_with_their_value_set(value_sets):
    problem = value_sets.type_problem([(LOINC, "51851-4")])  # a LOINC document, not the DMP's
    assert problem and "51851-4" in problem and "JDV_J66" in problem
    problem = value_sets.class_problem([(A03_OID, "95")])  # TRE_A03 has 95, JDV_J57 does not
    assert problem and "95" in problem and "JDV_J57" in problem


@pytest.mark.parametrize("class_code", sorted(TYPE_OF_CLASS))
def test_the_test_datas_type_of_each_class_is_a_pair_ass_x16_admits(value_sets, class_code):
    kind = TYPE_OF_CLASS[class_code]
    assert value_sets.type_problem([kind]) is None
    assert value_sets.pair_problem([kind], [(A03_OID, class_code)]) is None


def test_a_fhir_document_with_a_disagreeing_pair_is_refused_naming_both(value_sets):
    document = {
        "resourceType": "DocumentReference",
        "type": {"coding": [{"system": LOINC, "code": "18748-4"}]},
        "category": [{"coding": [{"system": A03_OID, "code": "10"}]}],
        "securityLabel": [{"coding": [{"system": A07_OID, "code": "MASQUE_PT"}]}],
    }
    issues = value_sets.document_issues(document)
    assert [i.expression for i in issues] == [
        ("DocumentReference.securityLabel[0]",),
        ("DocumentReference.type",),
    ]
    assert "18748-4" in issues[1].diagnostics and " 10" in issues[1].diagnostics
