"""SearchParameter registry: R4 definitions + DMP/MHD additions, per served type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_server.search.fhirpath import compile_expression
from fhir_server.search.registry import SERVED_TYPES, SearchRegistry, expression_for

PROFILES = Path(__file__).resolve().parents[2] / "profiles"


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.load(PROFILES)


def test_resource_level_parameters_apply_to_every_served_type(registry):
    for resource_type in SERVED_TYPES:
        params = registry.for_type(resource_type)
        for code in ("_id", "_lastUpdated", "_tag", "_security", "_profile"):
            assert code in params, (resource_type, code)


def test_mhd_iti67_documentreference_parameters_are_all_supported(registry):
    # IHE MHD ITI-67 responder parameters (author.* are chains on a non-served type)
    for code in ("category", "creation", "date", "event", "facility", "format", "identifier",
                 "patient", "period", "related", "security-label", "setting", "status", "type",
                 "author-identifier"):  # fmt: skip
        assert registry.get("DocumentReference", code) is not None, code


def test_mhd_list_parameters_include_r4_and_ihe_extensions(registry):
    for code in ("code", "identifier", "date", "status", "source", "subject", "patient",
                 "sourceId", "designationType"):  # fmt: skip
        assert registry.get("List", code) is not None, code
    assert registry.get("List", "sourceId").type == "token"
    assert "ihe-sourceId" in registry.get("List", "sourceId").expression


def test_documentreference_creation_is_a_date_on_attachment_creation(registry):
    creation = registry.get("DocumentReference", "creation")
    assert creation.type == "date"
    assert creation.expression == "DocumentReference.content.attachment.creation"


def test_expression_is_restricted_to_the_type(registry):
    assert registry.get("Patient", "address").expression == "Patient.address"
    assert registry.get("RelatedPerson", "address").expression == "RelatedPerson.address"
    assert registry.get("DocumentReference", "patient").expression == (
        "DocumentReference.subject.where(resolve() is Patient)"
    )
    assert expression_for("A.x | B.y | (A.z as Quantity)", "A") == "A.x | (A.z as Quantity)"


def test_relatedperson_patient_parameter_is_defined(registry):
    patient = registry.get("RelatedPerson", "patient")
    assert patient is not None and patient.type == "reference" and patient.targets == ("Patient",)


def test_parameters_without_expression_are_not_advertised(registry):
    assert registry.get("Patient", "_text") is None
    assert registry.get("Patient", "_content") is None
    codes = {r["code"] for r in registry.resources()}
    assert "_text" not in codes and "_query" not in codes
    assert all(r["resourceType"] == "SearchParameter" for r in registry.resources())


def test_dmp_parameters_have_canonical_urls_under_dmp_server():
    bundle = json.loads((PROFILES / "search-parameters" / "dmp-mhd.json").read_text())
    for entry in bundle["entry"]:
        assert entry["resource"]["url"].startswith("https://dmp-server.fr/fhir/SearchParameter/")
        assert entry["fullUrl"] == entry["resource"]["url"]


def test_compartment_params_come_from_the_compartmentdefinition(registry):
    assert set(registry.compartment_params("DocumentReference")) == {"subject", "author"}
    assert registry.compartment_params("Patient") == ("link",)
    assert registry.compartment_params("Binary") == ()


def test_every_served_expression_compiles_without_fhirpathpy_fallback(registry):
    for resource_type in SERVED_TYPES:
        for definition in registry.for_type(resource_type).values():
            compile_expression(definition.expression)  # raises if outside the subset
