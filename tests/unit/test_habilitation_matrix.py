"""The habilitation matrix (R13) keyed on (JDV_J65 role, JDV_J66 type), checked at start-up.

What a user of the server checks (docs/access-rules.md, R13): the matrix file loads and
says which cells are placeholders; a role or type outside the official value sets, a broken
file or a bad line of the annex transcription stops the load with a message naming the
place; a transcribed cell overrides the placeholder of its row; lookups by (role, type) give
what the row's classes give through ASS_X16.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_server.access.constraints import matches
from fhir_server.access.habilitation import (
    ALL,
    DEFAULT_MATRIX_PATH,
    G15_URL,
    PLACEHOLDER,
    R01_URL,
    SCHEMA_PATH,
    TRANSCRIBED,
    HabilitationMatrixError,
)
from fhir_server.access.habilitation_loader import load_matrix
from fhir_server.cli import main as fhir_server
from tests.unit.test_access_rules import AUTHORIZED, POLICY, document, practitioner, record

G15_OID = "urn:oid:1.2.250.1.71.1.2.7"
LOINC = "http://loinc.org"
LOINC_OID = "urn:oid:2.16.840.1.113883.6.1"
TRE_A05 = "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
CONSULTATION = (LOINC, "11488-4")  # ASS_X16: class 10 (compte rendu)
PRESCRIPTION = (LOINC, "57833-6")  # class 42
IMAGING = (LOINC, "18748-4")  # class 31
REIMBURSEMENT = (TRE_A05, "REMB")  # class 60
HEADER = "role_system,role_code,type_system,type_code,allowed,source\n"
J65_ROLES, J66_TYPES = 399, 81  # the published value sets (profiles/terminology/nos/)


def default_data() -> dict:
    return json.loads(DEFAULT_MATRIX_PATH.read_text(encoding="utf-8"))


def write(tmp_path: Path, data: dict, annex: str | None = None) -> Path:
    """A matrix file (and, when given, its annex transcription) in tmp_path."""
    path = tmp_path / "matrix.json"
    if annex is not None:
        (tmp_path / "annex.csv").write_text(annex, encoding="utf-8")
        data = {**data, "annex": "annex.csv"}
    else:
        data = {k: v for k, v in data.items() if k != "annex"}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def load(path: Path):
    return load_matrix(path, SCHEMA_PATH)


def role(code: str) -> tuple[str, str]:
    return (G15_URL, code)


# -- the shipped matrix ---------------------------------------------------------------------


def test_r13_shipped_matrix_loads_with_every_cell_a_placeholder_until_the_annex_is_transcribed():
    matrix = load_matrix()
    coverage = matrix.coverage()
    assert (coverage.roles, coverage.types) == (J65_ROLES, J66_TYPES)
    assert coverage.cells == J65_ROLES * J66_TYPES
    assert coverage.transcribed == 0  # the shipped annex transcription holds no cell yet
    assert coverage.placeholder == coverage.cells
    assert matrix.cell(role("21"), PRESCRIPTION).status == PLACEHOLDER


@pytest.mark.parametrize("profession", ["10", "50"])
def test_r13_medecin_and_sage_femme_read_every_type(profession):
    matrix = load_matrix()
    readable = matrix.readable(matrix.roles_of(profession))
    assert readable.every_type and readable.untyped_classes is ALL
    assert matrix.cell(role(profession), REIMBURSEMENT).allowed


def test_r13_lookup_by_role_and_type_follows_the_rows_classes_through_ass_x16():
    matrix = load_matrix()
    # Infirmier (60): syntheses, prescriptions, care / medication chain; not reports.
    assert matrix.cell(role("60"), PRESCRIPTION).allowed
    assert not matrix.cell(role("60"), CONSULTATION).allowed
    # Pharmacien (21): reports and the medication chain; not reimbursement data.
    assert matrix.cell(role("21"), CONSULTATION).allowed
    assert not matrix.cell(role("21"), REIMBURSEMENT).allowed
    assert not matrix.cell(role("21"), IMAGING).allowed


def test_r13_lookup_accepts_every_spelling_of_the_role_and_type_systems():
    matrix = load_matrix()
    assert matrix.cell((G15_OID, "21"), (LOINC_OID, "11488-4")) == matrix.cell(
        role("21"), CONSULTATION
    )


def test_r13_role_not_in_the_file_or_not_in_j65_reads_nothing():
    matrix = load_matrix()
    assert not matrix.cell(role("31"), PRESCRIPTION).allowed  # assistant dentaire: no row
    assert matrix.readable(matrix.roles_of("31")).nothing
    assert matrix.roles_of("77") == ()  # not a J65 profession
    assert matrix.readable(matrix.roles_of(None)).nothing


def test_r13_a_specialty_of_j65_adds_its_row_to_the_professions(tmp_path):
    data = default_data()
    data["roles"][R01_URL] = {"SI01": {"display": "IPA", "classes": ["10"]}}
    matrix = load(write(tmp_path, data))
    nurse, ipa = matrix.roles_of("60"), matrix.roles_of("60", "SI01")
    assert CONSULTATION not in matrix.readable(nurse).types
    assert {CONSULTATION, PRESCRIPTION} <= matrix.readable(ipa).types
    assert matrix.roles_of("60", "not-a-savoir-faire") == nurse


# -- transcription ---------------------------------------------------------------------------


def test_r13_annex_transcription_overrides_a_placeholder_and_is_marked_transcribed(tmp_path):
    annex = HEADER + f'{G15_OID},21,{LOINC_OID},11488-4,non,"Arrêté 26/10/2023, annexe, l. 3"\n'
    matrix = load(write(tmp_path, default_data(), annex))
    cell = matrix.cell(role("21"), CONSULTATION)
    assert (cell.allowed, cell.status, cell.source) == (
        False,
        TRANSCRIBED,
        "Arrêté 26/10/2023, annexe, l. 3",
    )
    assert CONSULTATION not in matrix.readable(matrix.roles_of("21")).types
    # The rest of the row keeps its placeholder.
    assert matrix.cell(role("21"), PRESCRIPTION).status == PLACEHOLDER
    coverage = matrix.coverage()
    assert (coverage.transcribed, coverage.placeholder) == (1, coverage.cells - 1)


def test_r13_transcribed_cell_may_open_a_type_to_a_role_without_a_row(tmp_path):
    annex = HEADER + f"{G15_URL},31,{LOINC},57833-6,true,annexe\n"
    matrix = load(write(tmp_path, default_data(), annex))
    assert matrix.readable(matrix.roles_of("31")).types == {PRESCRIPTION}


def test_r13_cell_in_the_matrix_file_needs_a_source_when_transcribed(tmp_path):
    data = default_data()
    cell = {"system": LOINC, "code": "11488-4", "allowed": False, "status": "transcribed"}
    data["roles"][G15_URL]["21"]["types"] = [cell]
    with pytest.raises(HabilitationMatrixError, match=r"/roles/.*/21/types/0.*'source'"):
        load(write(tmp_path, data))
    cell["source"] = "annexe"
    assert load(write(tmp_path, data)).cell(role("21"), CONSULTATION).status == TRANSCRIBED


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (f"{G15_URL},77,{LOINC},11488-4,true,annexe", "line 2: the role 77"),
        (f"{G15_URL},21,{LOINC},1-8,true,annexe", "line 2: the type 1-8"),
        (f"{G15_URL},21,{LOINC},11488-4,maybe,annexe", "line 2, column allowed: 'maybe'"),
        (f"{G15_URL},21,{LOINC},11488-4,true,", "line 2, column source: empty"),
        (f"{G15_URL},21,{LOINC},11488-4", "line 2: 4 value(s) for 6 column(s)"),
    ],
)
def test_r13_bad_annex_line_stops_the_load_and_names_it(tmp_path, line, fragment):
    with pytest.raises(HabilitationMatrixError, match="annex.csv") as caught:
        load(write(tmp_path, default_data(), HEADER + line + "\n"))
    assert fragment in str(caught.value)


def test_r13_annex_cell_given_twice_is_refused_naming_both_lines(tmp_path):
    line = f"{G15_URL},21,{LOINC},11488-4,true,annexe\n"
    twice = HEADER + line + f"{G15_OID},21,{LOINC_OID},11488-4,true,annexe\n"
    with pytest.raises(HabilitationMatrixError, match="line 3: .* already given at line 2"):
        load(write(tmp_path, default_data(), twice))


def test_r13_annex_without_its_columns_or_file_is_a_clear_error(tmp_path):
    with pytest.raises(HabilitationMatrixError, match="line 1: column.*allowed"):
        load(write(tmp_path, default_data(), "role_system,role_code,type_system,type_code\n"))
    path = write(tmp_path, default_data())
    with pytest.raises(HabilitationMatrixError, match="annex transcription file not found"):
        load_matrix(path, SCHEMA_PATH, annex=tmp_path / "absent.csv")


# -- validation of the matrix file -----------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.pop("roles"), "'roles' is a required property"),
        (lambda d: d["roles"][G15_URL]["60"].update(classes="all"), "/60/classes"),
        (lambda d: d["roles"][G15_URL]["21"].update(colour="blue"), "/21"),
        (lambda d: d["valueSets"].update(types="urn:oid:1.2.3"), "/valueSets/types"),
        (lambda d: d["roles"][G15_URL]["21"].update(status="final"), "/21/status"),
        (
            lambda d: d["roles"][G15_URL]["21"].update(types=[{"system": LOINC, "code": "1"}]),
            "'allowed' is a required property",
        ),
    ],
)
def test_r13_schema_rejects_a_broken_matrix_and_names_the_place(tmp_path, mutate, fragment):
    data = default_data()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(HabilitationMatrixError) as caught:
        load(path)
    assert fragment in str(caught.value)
    assert str(path) in str(caught.value)


def test_r13_role_outside_j65_is_rejected_naming_the_row(tmp_path):
    data = default_data()
    data["roles"][G15_URL]["77"] = {"classes": "*"}
    with pytest.raises(HabilitationMatrixError, match=r"/roles/.*/77: the role 77 .* JDV_J65"):
        load(write(tmp_path, data))


def test_r13_type_outside_j66_is_rejected_naming_the_cell(tmp_path):
    data = default_data()
    data["roles"][G15_URL]["21"]["types"] = [{"system": LOINC, "code": "1-8", "allowed": True}]
    with pytest.raises(HabilitationMatrixError, match=r"/21/types/0: the type 1-8 .* JDV_J66"):
        load(write(tmp_path, data))


def test_r13_class_outside_j57_is_rejected_naming_the_row(tmp_path):
    data = default_data()
    data["roles"][G15_URL]["60"]["classes"] = ["42", "77"]
    with pytest.raises(HabilitationMatrixError, match=r"/60/classes: class code\(s\) 77"):
        load(write(tmp_path, data))


def test_r13_role_given_under_two_spellings_is_rejected(tmp_path):
    data = default_data()
    data["roles"][G15_OID] = {"21": {"classes": "*"}}
    with pytest.raises(HabilitationMatrixError, match="the role is given twice"):
        load(write(tmp_path, data))


def test_r13_missing_or_malformed_file_is_a_clear_error(tmp_path):
    with pytest.raises(HabilitationMatrixError, match="not found"):
        load_matrix(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json", encoding="utf-8")
    with pytest.raises(HabilitationMatrixError, match=r"not valid JSON \(line 1"):
        load_matrix(bad)


# -- the command -----------------------------------------------------------------------------


def test_r13_habilitation_check_prints_the_coverage_of_a_transcription(tmp_path, capsys):
    annex = tmp_path / "annex.csv"
    annex.write_text(HEADER + f"{G15_URL},21,{LOINC},11488-4,false,annexe\n", encoding="utf-8")
    assert fhir_server(["habilitation", "check", str(annex)]) == 0
    out = capsys.readouterr().out
    assert f"cells: {J65_ROLES * J66_TYPES}" in out
    assert "transcribed: 1" in out
    assert f"placeholder: {J65_ROLES * J66_TYPES - 1}" in out


def test_r13_habilitation_check_names_the_bad_line_and_fails(tmp_path, capsys):
    annex = tmp_path / "annex.csv"
    annex.write_text(HEADER + f"{G15_URL},21,{LOINC},1-8,false,annexe\n", encoding="utf-8")
    assert fhir_server(["habilitation", "check", str(annex)]) == 1
    assert "line 2: the type 1-8" in capsys.readouterr().err


# -- enforcement: the type decides, the class only for a document without a J66 type --------


def _typed(did: str, type_code: tuple[str, str] | None, category: str) -> dict:
    resource = document(did, category=category)
    if type_code:
        resource["type"] = {"coding": [{"system": type_code[0], "code": type_code[1]}]}
    return resource


def test_r13_policy_judges_a_document_by_its_j66_type_not_its_category():
    """A pharmacien reads class 10 but not class 31: an imaging report (18748-4, class 31
    per ASS_X16) filed under category 10 stays hidden; a consultation report under any
    category is read; a document with no J66 type is judged by its category."""
    pharmacist = practitioner(AUTHORIZED, profession="21")
    docs = [
        _typed("imaging-as-10", IMAGING, "10"),
        _typed("consultation", CONSULTATION, "10"),
        _typed("untyped-10", None, "10"),
        _typed("untyped-31", None, "31"),
    ]
    constraints = POLICY.decide_search(
        pharmacist, "DocumentReference", record(), patient_given=True
    ).constraints
    assert {d["id"] for d in docs if matches(constraints, d)} == {"consultation", "untyped-10"}
    hidden = POLICY.decide_read(pharmacist, "DocumentReference", docs[0], record())
    assert (hidden.rule, hidden.status) == ("R13", 404)
