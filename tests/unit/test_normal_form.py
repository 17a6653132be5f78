"""The normal form (`resources.normal_form`), as properties (issue #18, "Shown by").

For every system the rules act on and each of its accepted spellings, the access decision on
a resource spelled that way, once normalized, equals the decision on the canonical spelling;
and a near miss of a spelling (another scheme, case, a trailing slash on an extension, a
masking code in lower case or under another system) is refused with 422.
"""

from __future__ import annotations

import copy
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.access.decision import Permit
from fhir_server.access.habilitation_loader import load_matrix
from fhir_server.access.policy import DmpPolicy
from fhir_server.access.record import build_record
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.errors import FhirError
from fhir_server.paths import profiles_dir
from fhir_server.resources.normal_form import NormalForm, default_aliases, fold, idnat_ps_problem
from fhir_server.terminology import EXT_RECORD_STATUS

A07 = "urn:oid:1.2.250.1.213.1.1.4.13"
A03 = "urn:oid:1.2.250.1.213.1.1.4.1"
IDNAT = "urn:oid:1.2.250.1.71.4.2.1"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
BASE = "https://dmp.example/fhir"

GP, AUTHOR, AUTHORIZED, BLOCKED, PHARMACIST = (
    "810000000010",
    "810000000040",
    "810000000020",
    "810000000030",
    "810000000050",
)

POLICY = DmpPolicy(
    load_matrix(
        profiles_dir() / "habilitation-matrix.json",
        profiles_dir() / "habilitation-matrix.schema.json",
    )
)
NORMAL = NormalForm(BASE)
TODAY = date(2026, 12, 6)


def _practitioner(idnat: str, profession: str = "10") -> Requester:
    return Requester(ActorKind.PRACTITIONER, idnat, scopes=("user/*.cruds",), profession=profession)


REQUESTERS = (
    Requester(ActorKind.PATIENT, "pa", scopes=("patient/*.cruds",), patient_id="pa"),
    _practitioner(GP),
    _practitioner(AUTHOR),
    _practitioner(AUTHORIZED),
    _practitioner(BLOCKED),
    _practitioner(PHARMACIST, "21"),
)


def spellings(canonical: str) -> st.SearchStrategy[str]:
    """Every accepted spelling of a system, `urn:oid:` in any case included."""
    known = default_aliases().spellings_of(canonical)
    oid_cases = st.sampled_from(("urn:oid:", "URN:OID:", "Urn:Oid:", "urn:OID:"))
    variants = [st.sampled_from(known)]
    if canonical.startswith("urn:oid:"):
        variants.append(oid_cases.map(lambda prefix: prefix + canonical[len("urn:oid:") :]))
    return st.one_of(variants)


def near_misses(canonical: str) -> st.SearchStrategy[str]:
    """Spellings the rules could mistake for `canonical`, that are none of its spellings."""
    known = set(default_aliases().spellings_of(canonical))
    urls = [s for s in known if "://" in s]

    def swap_scheme(url: str) -> str:
        return (
            url.replace("https://", "http://", 1)
            if url.startswith("https")
            else url.replace("http://", "https://", 1)
        )

    every = sorted(known)
    options = [
        st.sampled_from(every).map(lambda s: s + "/" if not s.endswith("/") else s + "/"),
        st.sampled_from(every).map(lambda s: " " + s),
    ]
    if urls:
        options += [st.sampled_from(urls).map(swap_scheme), st.sampled_from(urls).map(str.upper)]
    return st.one_of(options).filter(lambda s: s not in known and default_aliases().spec(s) is None)


def document(
    label: tuple[str, str] | None, klass: tuple[str, str], author: tuple[str, str]
) -> dict:
    resource = {
        "resourceType": "DocumentReference",
        "id": "d1",
        "status": "current",
        "category": [{"coding": [{"system": klass[0], "code": klass[1]}]}],
        "subject": {"reference": f"{BASE}/Patient/pa"},
        "author": [{"identifier": {"system": author[0], "value": author[1]}}],
        "content": [{"attachment": {"url": f"{BASE}/Binary/b1"}}],
    }
    if label is not None:
        resource["securityLabel"] = [{"coding": [{"system": label[0], "code": label[1]}]}]
    return resource


def consent(actor_system: str, purpose_system: str, role_system: str, scope_system: str) -> dict:
    def actor(idnat: str) -> dict:
        return {
            "role": {"coding": [{"system": role_system, "code": "IRCP"}]},
            "reference": {"identifier": {"system": actor_system, "value": idnat}},
        }

    return {
        "resourceType": "Consent",
        "id": "c1",
        "status": "active",
        "scope": {"coding": [{"system": scope_system, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"{BASE}/Patient/pa"},
        "provision": {
            "type": "permit",
            "provision": [
                {"type": "permit", "actor": [actor(AUTHORIZED), actor(PHARMACIST)]},
                {"type": "deny", "actor": [actor(BLOCKED)]},
                {"type": "deny", "purpose": [{"system": purpose_system, "code": "BTG"}]},
            ],
        },
    }


PATIENT = {
    "resourceType": "Patient",
    "id": "pa",
    "birthDate": "1980-01-01",
    "generalPractitioner": [{"identifier": {"system": IDNAT, "value": GP}}],
}


def decisions(resource: dict, consent_resource: dict) -> list[tuple]:
    record = build_record(PATIENT, [consent_resource], [], TODAY)
    outcome = []
    for requester in REQUESTERS:
        decision = POLICY.decide_read(requester, "DocumentReference", resource, record)
        outcome.append(
            (requester.subject_id, isinstance(decision, Permit), getattr(decision, "rule", None))
        )
    return outcome


def normalized(resource: dict) -> dict:
    copied = copy.deepcopy(resource)
    NORMAL.apply(copied)
    return copied


LABELS = st.sampled_from((None, "MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"))


@settings(max_examples=150, deadline=None)
@given(
    label=LABELS,
    label_system=spellings(A07),
    class_code=st.sampled_from(("10", "31")),
    class_system=spellings(A03),
    author_system=spellings(IDNAT),
    actor_system=spellings(IDNAT),
    purpose_system=spellings(ACT_REASON),
    role_system=spellings(PARTICIPATION),
    scope_system=spellings(SCOPE),
)
def test_r14_r13_r09_decision_on_any_accepted_spelling_equals_canonical(
    label,
    label_system,
    class_code,
    class_system,
    author_system,
    actor_system,
    purpose_system,
    role_system,
    scope_system,
):
    """The decision for each actor is the same whichever accepted spelling each system came in."""
    canonical_doc = normalized(document(label and (A07, label), (A03, class_code), (IDNAT, AUTHOR)))
    canonical_consent = normalized(consent(IDNAT, ACT_REASON, PARTICIPATION, SCOPE))
    aliased_doc = normalized(
        document(
            label and (label_system, label), (class_system, class_code), (author_system, AUTHOR)
        )
    )
    aliased_consent = normalized(consent(actor_system, purpose_system, role_system, scope_system))
    assert aliased_doc == canonical_doc
    assert decisions(aliased_doc, aliased_consent) == decisions(canonical_doc, canonical_consent)


@settings(max_examples=100, deadline=None)
@given(system=st.sampled_from((A07, A03, IDNAT, ACT_REASON)).flatmap(near_misses))
def test_near_miss_of_a_rule_system_is_refused(system):
    """Deliverable 2: another scheme or case of a system the rules act on is refused, naming
    the canonical form."""
    resource = document((system, "MASQUE_PS"), (A03, "10"), (IDNAT, AUTHOR))
    with pytest.raises(FhirError) as refused:
        NORMAL.apply(resource)
    assert refused.value.status == 422
    canonical = default_aliases().spec(default_aliases().near_miss(system).canonical).canonical
    assert canonical in refused.value.message


@settings(max_examples=100, deadline=None)
@given(
    code=st.sampled_from(("MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX")).map(
        str.lower
    )
)
def test_r14_masking_code_in_another_case_is_refused(code):
    with pytest.raises(FhirError) as refused:
        NORMAL.apply(document((A07, code), (A03, "10"), (IDNAT, AUTHOR)))
    assert code.upper() in refused.value.message


@pytest.mark.parametrize(
    "url",
    [
        EXT_RECORD_STATUS + "/",
        EXT_RECORD_STATUS.replace("https", "http"),
        EXT_RECORD_STATUS.upper(),
    ],
)
def test_r03_record_status_extension_near_miss_is_refused(url):
    patient = {**PATIENT, "extension": [{"url": url, "valueCode": "opposed"}]}
    with pytest.raises(FhirError) as refused:
        NORMAL.apply(patient)
    assert EXT_RECORD_STATUS in refused.value.message


def test_references_to_own_base_become_relative_and_foreign_ones_stay():
    resource = document(None, (A03, "10"), (IDNAT, AUTHOR))
    resource["relatesTo"] = [
        {
            "code": "appends",
            "target": {"reference": "HTTPS://DMP.EXAMPLE:443/fhir/DocumentReference/d0"},
        },
        {
            "code": "appends",
            "target": {"reference": "https://elsewhere.example/fhir/DocumentReference/d0"},
        },
    ]
    NORMAL.apply(resource)
    assert resource["subject"]["reference"] == "Patient/pa"
    assert resource["content"][0]["attachment"]["url"] == "Binary/b1"
    assert [r["target"]["reference"] for r in resource["relatesTo"]] == [
        "DocumentReference/d0",
        "https://elsewhere.example/fhir/DocumentReference/d0",
    ]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (" 810000000010", "white space"),
        ("10000000010", "8" + "10000000010"),
        ("8100000000", "not an IdNat_PS"),
        ("810000000010", None),
        ("0123456789", None),
        ("012345678", "not an IdNat_PS"),
        ("0751234567", None),
        ("02A1234567", None),
        ("3123456789/ABC", None),
        ("4123456789/1", None),
    ],
)
def test_idnat_ps_values_are_checked_never_trimmed(value, problem):
    found = idnat_ps_problem(value)
    assert (found is None) if problem is None else (problem in found)


def test_fold_recognises_the_same_uri_in_another_spelling():
    assert fold("URN:OID:1.2.3") == fold("1.2.3") == fold("urn:oid:1.2.3")
    assert fold("http://a.example/X/") == fold("https://A.example/x")
