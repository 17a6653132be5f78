"""parse_search: HTTP parameters -> SearchQuery, per the FHIR R4 search page sections."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.errors import FhirError
from fhir_server.search.normalize import date_range
from fhir_server.search.parameters import parse_search
from fhir_server.search.query import (
    And,
    Chain,
    DateTest,
    Has,
    IdTest,
    Include,
    Missing,
    Not,
    NumberTest,
    Or,
    Prefix,
    ReferenceTest,
    SortKey,
    StringMatch,
    StringTest,
    SummaryMode,
    TokenMatch,
    TokenTest,
    TotalMode,
    UriMatch,
    UriTest,
)
from fhir_server.search.registry import SearchRegistry

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
INS = "urn:oid:1.2.250.1.213.1.4.8"


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.load(PROFILES)


def where(registry, resource_type, *params, **kwargs):
    return parse_search(resource_type, list(params), registry, **kwargs).query.where


def error_of(registry, resource_type, *params, **kwargs) -> FhirError:
    with pytest.raises(FhirError) as caught:
        parse_search(resource_type, list(params), registry, **kwargs)
    assert caught.value.status == 400
    return caught.value


# -- token ---------------------------------------------------------------------------------


def test_token_system_bar_code(registry):
    assert where(registry, "Patient", ("identifier", f"{INS}|123")) == TokenTest(
        "identifier", system=INS, code="123"
    )


def test_token_bar_code_means_no_system(registry):
    assert where(registry, "Patient", ("identifier", "|123")) == TokenTest(
        "identifier", None, "123"
    )


def test_token_system_bar_means_any_code_in_system(registry):
    assert where(registry, "Patient", ("identifier", f"{INS}|")) == TokenTest(
        "identifier", INS, None
    )


def test_token_code_alone_matches_any_system(registry):
    assert where(registry, "DocumentReference", ("status", "current")) == TokenTest(
        "status", code="current", any_system=True
    )


def test_token_modifier_not_text_of_type(registry):
    assert where(registry, "DocumentReference", ("status:not", "current,superseded")) == Not(
        Or(
            (
                TokenTest("status", code="current", any_system=True),
                TokenTest("status", code="superseded", any_system=True),
            )
        )
    )
    assert where(registry, "DocumentReference", ("type:text", "Compte Rendu")) == TokenTest(
        "type", match=TokenMatch.TEXT, text="compte rendu", value="Compte Rendu"
    )
    assert where(registry, "Patient", ("identifier:of-type", "http://t|NH|123")) == TokenTest(
        "identifier", system="http://t", code="NH", match=TokenMatch.OF_TYPE, value="123"
    )


def test_token_escaped_bar_and_comma_are_literal(registry):
    assert where(registry, "Patient", ("identifier", r"a\|b\,c")) == TokenTest(
        "identifier", code="a|b,c", any_system=True
    )


def test_comma_is_or_and_repetition_is_and(registry):
    node = where(registry, "DocumentReference", ("status", "current,superseded"), ("type", "x"))
    assert isinstance(node, And) and isinstance(node.parts[0], Or) and len(node.parts) == 2


# -- string, uri -------------------------------------------------------------------------------


def test_string_default_is_normalized_prefix_exact_and_contains_modifiers(registry):
    assert where(registry, "Patient", ("name", "ZOÉ")) == StringTest(
        "name", "zoe", StringMatch.START
    )
    assert where(registry, "Patient", ("name:exact", "Zoé")) == StringTest(
        "name", "Zoé", StringMatch.EXACT
    )
    assert where(registry, "Patient", ("name:contains", "oé")) == StringTest(
        "name", "oe", StringMatch.CONTAINS
    )


def test_uri_above_below(registry):
    assert where(registry, "Patient", ("_profile:below", "http://a/")) == UriTest(
        "_profile", "http://a/", UriMatch.BELOW
    )
    assert where(registry, "Patient", ("_profile:above", "http://a/b")) == UriTest(
        "_profile", "http://a/b", UriMatch.ABOVE
    )


# -- date, number ------------------------------------------------------------------------------


def test_date_prefixes_carry_the_precision_range(registry):
    low, high = date_range("2024-03")
    for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"):
        assert where(registry, "DocumentReference", ("date", f"{prefix}2024-03")) == DateTest(
            "date", Prefix(prefix), low, high
        )
    assert where(registry, "DocumentReference", ("date", "2024-03")).prefix is Prefix.EQ


def test_date_prefix_ap_widens_by_a_tenth_of_the_distance_to_now(registry):
    low, high = date_range("2024-01-01")
    now = high + 10 * 86_400_000_000  # ten days after the value
    node = where(registry, "DocumentReference", ("date", "ap2024-01-01"), now=now)
    gap = (now - (low + high) // 2) // 10
    assert (node.low, node.high) == (low - gap, high + gap)


def test_number_eq_is_a_precision_range_and_gt_is_exact(tmp_path):
    (tmp_path / "search-parameters").mkdir()
    number = {
        "resourceType": "SearchParameter", "url": "http://t/birth-order", "code": "birth-order",
        "base": ["Patient"], "type": "number", "expression": "Patient.multipleBirth.ofType(integer)",
    }  # fmt: skip
    (tmp_path / "search-parameters" / "t.json").write_text(json.dumps(number))
    registry = SearchRegistry.load(tmp_path)
    assert where(registry, "Patient", ("birth-order", "100")) == NumberTest(
        "birth-order", Prefix.EQ, Decimal("99.5"), Decimal("100.5")
    )
    assert where(registry, "Patient", ("birth-order", "gt100")) == NumberTest(
        "birth-order", Prefix.GT, Decimal("100"), Decimal("100")
    )
    # `ap`: 10% of the value (search.html#prefix); the engines match what overlaps this range.
    assert where(registry, "Patient", ("birth-order", "ap105")) == NumberTest(
        "birth-order", Prefix.AP, Decimal("94.5"), Decimal("115.5")
    )
    assert "birth-order" in error_of(registry, "Patient", ("birth-order", "ten")).message


# -- reference -------------------------------------------------------------------------------


def test_reference_id_type_id_type_modifier_and_url(registry):
    assert where(registry, "DocumentReference", ("subject", "123")) == ReferenceTest(
        "subject", None, "123"
    )
    assert where(registry, "DocumentReference", ("subject", "Patient/123")) == ReferenceTest(
        "subject", "Patient", "123"
    )
    assert where(registry, "DocumentReference", ("subject:Patient", "123")) == ReferenceTest(
        "subject", "Patient", "123"
    )
    assert where(
        registry, "DocumentReference", ("subject", "http://x/fhir/Patient/1")
    ) == ReferenceTest("subject", url="http://x/fhir/Patient/1")
    assert where(
        registry, "DocumentReference", ("subject", "https://dmp.example/fhir/Patient/1"),
        base_url="https://dmp.example/fhir",
    ) == ReferenceTest("subject", "Patient", "1")  # fmt: skip


def test_reference_identifier_modifier(registry):
    assert where(
        registry, "DocumentReference", ("author:identifier", "urn:oid:1|8101")
    ) == ReferenceTest("author", identifier_system="urn:oid:1", identifier_value="8101")


def test_reference_to_a_type_outside_targets_is_invalid(registry):
    assert "subject" in error_of(registry, "DocumentReference", ("subject", "Consent/1")).message


# -- chains, _has, missing ----------------------------------------------------------------------


def test_chain_patient_identifier(registry):
    assert where(registry, "DocumentReference", ("patient.identifier", f"{INS}|1")) == Chain(
        "patient", "Patient", TokenTest("identifier", INS, "1")
    )


def test_chain_with_type_modifier_and_several_levels(registry):
    assert where(
        registry, "DocumentReference", ("subject:Patient.link:Patient.gender", "male")
    ) == Chain(
        "subject",
        "Patient",
        Chain("link", "Patient", TokenTest("gender", code="male", any_system=True)),
    )


def test_chain_over_several_served_targets_is_an_or(registry):
    node = where(registry, "AuditEvent", ("agent.identifier", "x"))
    assert node == Or(
        (
            Chain("agent", "Patient", TokenTest("identifier", code="x", any_system=True)),
            Chain("agent", "RelatedPerson", TokenTest("identifier", code="x", any_system=True)),
        )
    )


def test_has_reverse_chain_and_nesting(registry):
    assert where(registry, "Patient", ("_has:DocumentReference:patient:status", "current")) == Has(
        "DocumentReference", "patient", TokenTest("status", code="current", any_system=True)
    )
    nested = where(
        registry,
        "DocumentReference",
        ("_has:List:item:_has:Communication:part-of:status", "completed"),
    )
    assert nested == Has(
        "List",
        "item",
        Has("Communication", "part-of", TokenTest("status", code="completed", any_system=True)),
    )


def test_missing_modifier(registry):
    assert where(registry, "Patient", ("birthdate:missing", "true")) == Missing("birthdate", True)
    assert (
        "birthdate:missing" in error_of(registry, "Patient", ("birthdate:missing", "yes")).message
    )


def test_id_parameter(registry):
    assert where(registry, "Patient", ("_id", "a,b")) == IdTest(("a", "b"))
    assert where(registry, None, ("_id", "a")) == IdTest(("a",))


# -- errors and lenient handling ----------------------------------------------------------------


def test_unknown_parameter_is_400_not_supported_naming_it(registry):
    error = error_of(registry, "Patient", ("shoe-size", "42"))
    assert error.issues[0].code == "not-supported" and "shoe-size" in error.message


def test_lenient_handling_ignores_unknown_parameters_and_reports_them(registry):
    parsed = parse_search(
        "Patient", [("shoe-size", "42"), ("gender", "male")], registry, lenient=True
    )
    assert parsed.ignored == ["shoe-size"]
    assert parsed.query.where == TokenTest("gender", code="male", any_system=True)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("date", "2024-13-01"),
        ("date", "xx2024"),
        ("status", "a|b|c"),
        ("status", "|"),
        ("status:in", "http://vs"),
        ("status:bogus", "x"),
        ("subject", "not a reference"),
        ("identifier:of-type", "a|b"),
    ],
)
def test_malformed_value_is_400_even_when_lenient(registry, param, value):
    error = error_of(registry, "DocumentReference", (param, value), lenient=True)
    assert param in error.message


def test_system_level_search_supports_only_resource_parameters(registry):
    node = where(registry, None, ("_tag", "a"), ("_lastUpdated", "gt2024"))
    assert isinstance(node, And)
    assert error_of(registry, None, ("status", "current")).issues[0].code == "not-supported"


# -- result parameters -------------------------------------------------------------------------


def test_result_parameters(registry):
    query = parse_search(
        "DocumentReference",
        [
            ("_sort", "-date,_id"), ("_count", "5000"), ("_total", "accurate"), ("_summary", "count"),
            ("_elements", "status,type"), ("_include", "DocumentReference:subject:Patient"),
            ("_include:iterate", "List:item"), ("_revinclude", "List:item"), ("_format", "json"),
            ("_pretty", "true"),
        ],
        registry,
    ).query  # fmt: skip
    assert query.sort == (SortKey("date", True), SortKey("_id"))
    assert query.count == 1000
    assert query.total is TotalMode.ACCURATE and query.summary is SummaryMode.COUNT
    assert query.elements == ("status", "type")
    assert query.includes == (
        Include("DocumentReference", "subject", "Patient"),
        Include("List", "item", None, iterate=True),
        Include("List", "item", "DocumentReference", reverse=True),
    )
    assert parse_search("Patient", [], registry).query.count == 20


def test_include_star_expands_to_every_reference_parameter(registry):
    includes = parse_search("List", [("_include", "*")], registry).query.includes
    assert {i.param for i in includes} == {"encounter", "item", "patient", "source", "subject"}


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("_count", "-1"),
        ("_count", "²"),  # a digit to str.isdigit, not to int()
        ("_total", "maybe"),
        ("_summary", "yes"),
        ("_sort", "shoe-size"),
        ("_include", "Foo:bar"),
    ],
)
def test_bad_result_parameter_values_are_400(registry, param, value):
    assert param in error_of(registry, "DocumentReference", (param, value)).message


_keys = st.sampled_from(
    ["status", "date", "subject", "patient.identifier", "_has:List:item:code", "type:text",
     "identifier:of-type", "_sort", "_count", "_include", "subject:Patient", "_id", "x.y",
     "_has", "_has:A:b", "relationship", "period:missing"]
) | st.text(max_size=20)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["DocumentReference", "Patient", "List", None]),
    st.lists(st.tuples(_keys, st.text(max_size=30)), max_size=4),
    st.booleans(),
)
def test_parse_search_raises_only_fhir_error(registry, resource_type, params, lenient):
    try:
        parse_search(resource_type, params, registry, lenient=lenient)
    except FhirError as error:
        assert error.status == 400


def test_ap_widens_a_date_by_a_tenth_of_its_distance_to_now(registry):
    """search.html#prefix `ap` on dates: 10% of the gap between now and the value, on each
    side of the value's range (the spec's recommendation, `search.parameters`)."""
    low, high = date_range("2016-01-01")
    now = high + 1 + 3_650 * 86_400_000_000  # ten years after the day
    gap = (now - (low + high) // 2) // 10
    assert where(registry, "DocumentReference", ("date", "ap2016-01-01"), now=now) == DateTest(
        "date", Prefix.AP, low - gap, high + gap
    )
