"""R02: SMART scopes bound what a token may do (App Launch 2.0.0, scopes v1 and v2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.auth.scopes import ScopeError, ScopeSet


def test_r02_v2_letters_grant_exactly_their_interactions():
    scopes = ScopeSet.parse("patient/Observation.rs")
    assert scopes.allows("Observation", "read")
    assert scopes.allows("Observation", "search")
    assert not scopes.allows("Observation", "create")
    assert not scopes.allows("Observation", "update")
    assert not scopes.allows("Observation", "delete")
    assert not scopes.allows("DocumentReference", "read")


def test_r02_wildcard_resource_type_covers_every_type():
    scopes = ScopeSet.parse("user/*.cruds")
    for interaction in ("create", "read", "update", "delete", "search"):
        assert scopes.allows("DocumentReference", interaction)
        assert scopes.allows("Patient", interaction)


def test_r02_vread_and_history_count_as_read_and_patch_as_update():
    scopes = ScopeSet.parse("patient/DocumentReference.r system/Patient.u")
    assert scopes.allows("DocumentReference", "vread")
    assert scopes.allows("DocumentReference", "history")
    assert not scopes.allows("DocumentReference", "search")
    assert scopes.allows("Patient", "patch")


def test_r02_v1_read_is_rs_write_is_cud_star_is_all():
    assert ScopeSet.parse("patient/*.read") == ScopeSet.parse("patient/*.rs")
    assert ScopeSet.parse("user/Observation.write") == ScopeSet.parse("user/Observation.cud")
    assert ScopeSet.parse("system/*.*") == ScopeSet.parse("system/*.cruds")
    write = ScopeSet.parse("user/Observation.write")
    assert write.allows("Observation", "create") and not write.allows("Observation", "read")


def test_r02_system_default_scopes_allow_deposit_but_not_document_reads():
    scopes = ScopeSet.parse(
        "system/DocumentReference.c system/Binary.c system/List.c system/Patient.r"
    )
    assert scopes.allows("DocumentReference", "create")
    assert not scopes.allows("DocumentReference", "read")
    assert not scopes.allows("DocumentReference", "search")
    assert scopes.allows("Patient", "read")
    assert not scopes.allows("Patient", "search")


def test_r02_launch_and_openid_scopes_grant_nothing():
    scopes = ScopeSet.parse("openid fhirUser launch/patient offline_access")
    assert scopes.other == ("openid", "fhirUser", "launch/patient", "offline_access")
    assert not scopes.allows("Patient", "read")


def test_r02_granular_scope_constraints_are_returned_for_the_service():
    category = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    scopes = ScopeSet.parse(f"patient/Observation.rs?category={category}")
    assert scopes.allows("Observation", "search")
    assert scopes.constraints("Observation", "search") == [[("category", category)]]


def test_r02_unconstrained_scope_beats_granular_one():
    scopes = ScopeSet.parse("patient/Observation.rs?category=laboratory patient/*.rs")
    assert scopes.constraints("Observation", "read") == []


def test_r02_granular_scopes_are_alternatives_and_params_are_conjunctions():
    scopes = ScopeSet.parse(
        "user/Observation.s?category=vital-signs user/Observation.s?category=laboratory&status=final"
    )
    assert scopes.constraints("Observation", "search") == [
        [("category", "vital-signs")],
        [("category", "laboratory"), ("status", "final")],
    ]


def test_r02_constraints_without_a_grant_raise_rather_than_look_unconstrained():
    with pytest.raises(ScopeError):
        ScopeSet.parse("patient/Observation.r").constraints("Observation", "create")


def test_r02_contexts_say_which_grants_are_bound_to_the_patient():
    scopes = ScopeSet.parse("patient/*.rs user/Observation.r")
    assert scopes.contexts("Observation", "read") == {"patient", "user"}
    assert scopes.contexts("DocumentReference", "read") == {"patient"}
    assert scopes.contexts("DocumentReference", "create") == frozenset()


@pytest.mark.parametrize(
    "bad",
    [
        "patient/Observation",  # no permissions
        "patient/Observation.",  # empty permissions
        "patient/Observation.sr",  # letters out of order
        "patient/Observation.rr",
        "patient/Observation.x",
        "patient/observation.rs",  # not a resource type
        "user/*.read?category=x",  # constraints are v2 only
        "system/Observation.rs?category",  # no value
        "system/Observation.rs?=x",
    ],
)
def test_r02_malformed_resource_scope_is_a_scope_error(bad):
    with pytest.raises(ScopeError):
        ScopeSet.parse(bad)


def test_r02_intersection_narrows_requested_to_registered():
    registered = ScopeSet.parse("system/DocumentReference.c system/Patient.r")
    requested = ScopeSet.parse("system/*.cruds system/Observation.r")
    assert str(requested.intersect(registered)) == "system/DocumentReference.c system/Patient.r"
    assert not ScopeSet.parse("user/*.cruds").intersect(registered).resource_scopes


def test_r02_intersection_keeps_granular_constraints_of_both_sides():
    registered = ScopeSet.parse("system/Observation.rs?category=laboratory")
    requested = ScopeSet.parse("system/Observation.s?status=final")
    granted = requested.intersect(registered)
    assert granted.constraints("Observation", "search") == [
        [("status", "final"), ("category", "laboratory")]
    ]
    assert not granted.allows("Observation", "read")


@given(st.text())
def test_r02_parsing_arbitrary_text_raises_only_scope_error(text):
    try:
        parsed = ScopeSet.parse(text)
    except ScopeError:
        return
    assert ScopeSet.parse(str(parsed)) == parsed


_scope = st.builds(
    lambda ctx, rt, letters, params: (
        f"{ctx}/{rt}.{letters}" + ("?" + "&".join(f"{k}={v}" for k, v in params) if params else "")
    ),
    st.sampled_from(["patient", "user", "system"]),
    st.sampled_from(["*", "Observation", "DocumentReference", "Patient"]),
    st.sets(st.sampled_from("cruds"), min_size=1).map(
        lambda s: "".join(c for c in "cruds" if c in s)
    ),
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z-]{0,8}", fullmatch=True),
            st.from_regex(r"[a-z0-9|:/.]{1,12}", fullmatch=True),
        ),
        max_size=2,
    ),
)


@given(st.lists(_scope | st.sampled_from(["openid", "launch/patient", "fhirUser"]), max_size=5))
def test_r02_valid_v2_scopes_round_trip(scopes):
    parsed = ScopeSet.parse(" ".join(scopes))
    assert ScopeSet.parse(str(parsed)) == parsed
    # canonical v2 strings print back as given (duplicates removed; resource scopes first)
    assert sorted(str(parsed).split()) == sorted(set(scopes))
