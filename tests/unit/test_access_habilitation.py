"""The habilitation matrix (R13) as data, checked at start-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_server.access.habilitation import (
    ALL,
    DEFAULT_MATRIX_PATH,
    HabilitationMatrixError,
    load_matrix,
)

# TRE_A03-ClasseDocument (ANS NOS, version 20231215120000).
TRE_A03_CODES = {"10", "11", "31", "42", "43", "44", "45", "52", "60", "90", "95", "99"}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def default_data() -> dict:
    return json.loads(DEFAULT_MATRIX_PATH.read_text(encoding="utf-8"))


def test_r13_default_matrix_loads_and_is_marked_placeholder():
    matrix = load_matrix()
    assert matrix.placeholder
    assert matrix.class_system == "urn:oid:1.2.250.1.213.1.1.4.1"
    assert set(matrix.known_classes) == TRE_A03_CODES


@pytest.mark.parametrize("profession", ["10", "50"])
def test_r13_medecin_and_sage_femme_read_every_class(profession):
    assert load_matrix().allowed_classes(profession, None) is ALL


def test_r13_other_professions_read_a_subset():
    matrix = load_matrix()
    nurse = matrix.allowed_classes("60", None)
    assert "42" in nurse and "44" in nurse
    assert "10" not in nurse and "60" not in nurse
    pharmacist = matrix.allowed_classes("21", None)
    assert {"42", "43"} <= pharmacist
    assert "60" not in pharmacist  # reimbursement data stay with médecins and sages-femmes


def test_r13_unknown_profession_reads_no_class():
    matrix = load_matrix()
    assert matrix.allowed_classes("31", None) == frozenset()
    assert matrix.allowed_classes(None, None) == frozenset()


def test_r13_specialty_adds_classes_to_its_profession(tmp_path):
    data = default_data()
    data["professions"]["60"]["specialties"] = {
        "IPA": {"display": "Infirmier en pratique avancée", "classes": ["10"]},
        "ALL": {"classes": "*"},
    }
    matrix = load_matrix(write(tmp_path, data))
    assert "10" in matrix.allowed_classes("60", "IPA")
    assert "42" in matrix.allowed_classes("60", "IPA")
    assert "10" not in matrix.allowed_classes("60", None)
    assert "10" not in matrix.allowed_classes("60", "unknown-specialty")
    assert matrix.allowed_classes("60", "ALL") is ALL


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.pop("professions"), "'professions' is a required property"),
        (lambda d: d["professions"]["60"].update(classes="all"), "/professions/60/classes"),
        (lambda d: d["professions"]["60"].update(classes=["4"]), "/professions/60/classes"),
        (lambda d: d["professions"].update({"6X": d["professions"]["60"]}), "/professions"),
        (lambda d: d["professions"]["21"].update(colour="blue"), "/professions/21"),
        (lambda d: d.update(classSystem="urn:oid:1.2.3"), "/classSystem"),
        (lambda d: d.update(status="final"), "/status"),
    ],
)
def test_r13_schema_rejects_a_broken_matrix_and_names_the_place(tmp_path, mutate, fragment):
    data = default_data()
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(HabilitationMatrixError) as caught:
        load_matrix(path)
    assert fragment in str(caught.value)
    assert str(path) in str(caught.value)


def test_r13_class_not_declared_in_the_catalogue_is_rejected(tmp_path):
    data = default_data()
    data["professions"]["60"]["classes"] = ["42", "77"]
    with pytest.raises(HabilitationMatrixError, match=r"/professions/60/classes.*77"):
        load_matrix(write(tmp_path, data))


def test_r13_missing_or_malformed_file_is_a_clear_error(tmp_path):
    with pytest.raises(HabilitationMatrixError, match="not found"):
        load_matrix(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json", encoding="utf-8")
    with pytest.raises(HabilitationMatrixError, match=r"not valid JSON \(line 1"):
        load_matrix(bad)
