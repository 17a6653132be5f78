"""Attack pass: how TIME is spelled in what the access rules and the audit trail decide on
(R07's age and guardianships, R09-R10's Consent periods, R16's trail read through ITI-18).

What got through (each reproduced over HTTP, each test failing on main):

- A leap second. FHIR's dateTime and instant admit `23:59:60`, which no reader of this
  server holds (Python's datetime stops at :59). A DocumentReference whose
  `context.period.end` or `attachment.creation` was a leap second was stored (201), and from
  then every ITI-18 LeafClass answer of its record, by anyone, was an internal error
  (XDSRegistryError "internal server error"); its `date` so spelled was indexed as no date
  (a search by date missed it). A guardianship (`RelatedPerson.period`) ending on one was
  stored and read as no period at all. A leap second is now refused at write (4xx, the
  element named), at every door the FHIR model checks; one stored before is spelled :59 in
  an XDS answer (`tests/unit/test_access_periods.py`).
- A `Patient.birthDate` still to come (an identity feed's `2099` for `1999`) was stored and
  read as a minor's, of negative age (R07): every RelatedPerson PRN or GUARD of the patient
  (a parent of the adult's childhood) acted as the patient again. Refused at write (422,
  `Patient.birthDate`, R07), read as no minor's. Born on 29 February, one was 18 on 1 March
  of a common year, not the earliest day it can mean (28 February): now the 28th.
- The ends of the calendar. A RelatedPerson ending on `9999-12-31` (the "no end" identity
  feeds write) made every request on the minor's record a 500, the child's own read
  included: the day's end was reached from the next day, past the calendar; an instant its
  zone moves past year 9999 or before year 1 did the same, and a Consent so bounded (or
  dated year 1) was a 500 at write. Held at the calendar's end now. In an ITI-18 answer
  such an instant made every LeafClass answer of the record an internal error, and a year
  before 1000 was written without its leading zeros (`0999` as `999`).
- Date-bounded periods read as whole UTC days (unit tests, `test_access_periods.py`): a
  guardianship or an authorization ending on the 7th held an hour after it ended in Paris
  (two in summer), a block beginning on the 8th let its professional in for that hour. A
  date is now that day in France (`access.days`), as R17 counts days.
- XDS times: a stored query time parameter of month 13, 29 February of a common year, hour
  25, minute 60, a leap second or fullwidth digits was refused under the name of the FHIR
  search it became, or answered Success ($XDSDocumentEntryServiceStartTimeTo, compared as
  text), fullwidth digits read as the year; an ITI-41 creationTime of 31 February or in
  fullwidth digits passed the registry's check and was refused after mapping under a FHIR
  path. Each is refused under its own name now. A FHIR search date in Arabic-Indic or
  fullwidth digits was read as the year it spells: 400.
- A VIHF validity instant whose zone is beyond ±14:00 (up to ±23:59 read) is refused.

What held (tried, no hole): zone-less dateTimes and times without seconds in a Period or a
birthDate with a time are refused by the model (400); a Consent period or `dateTime` with a
leap second was already 422 naming the element; search `date`/`_lastUpdated` with every
prefix (`sa`, `eb`, `ap`, `ne`), partial precision, offsets up to ±14:00 at year 1 and 9999,
more than six fraction digits: answered, never a 500 (offsets beyond 14:00, `T10Z`, a
negative year: 400); `_since` at year 1 +14:00 and 9999 -14:00: answered; tokens' `exp`,
`nbf`, `iat` as NaN, Infinity or 1e400 (the JSON parser refuses them: 401), a client
assertion's beyond 64 bits (read as a float); a cached token's or VIHF's window checked on
every use; VIHF instants with a leap second or `24:00:00` (401); R17's day taken from the
server's clock in Europe/Paris (no client-spelled instant reaches it); the record cache keyed
by the latest date anywhere (a minor turning 18 is read again).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from fhir_server.access.record import latest_date
from fhir_server.auth import vihf
from fhir_server.auth.tokens import AuthenticationError
from fhir_server.terminology import SYSTEM_V3_ROLE_CODE
from ihe_xds import vocabulary as v
from ihe_xds.stored_query import FIND_DOCUMENTS
from tests.http import test_attack_pass_consents as consents
from tests.http.conftest import FHIR_JSON, a_patient, auth, dmp_consent, permit
from tests.http.test_attack_pass_authentication import requester_of, vihf_signed_after
from tests.http.test_attack_pass_xds import errors
from tests.http.test_attack_pass_xds_spellings import deposit_with
from tests.http.test_normal_form import PATIENT_B
from tests.http.test_xds_endpoints import GP, Xds, envelope_of, registry_status
from tests.http.test_xds_stored_queries import adhoc
from tests.support.documents import dmp_document
from tests.xds_builders import patient_cx

LEAP = "2026-06-30T23:59:60Z"
IDENTITY_SCOPES = "system/Patient.crus system/RelatedPerson.cru"

# Patient A (médecin traitant GP) and patient B (adult, authorizes AUTHORIZED).
record = consents.record
STRANGER = consents.STRANGER


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


def find_documents(api: Xds, nir: str, return_type: str):
    query = adhoc(
        FIND_DOCUMENTS,
        [
            ("$XDSDocumentEntryPatientId", f"'{patient_cx(nir)}'"),
            ("$XDSDocumentEntryStatus", f"('{v.STATUS_APPROVED}')"),
        ],
        return_type,
    )
    return api.soap("/xds/registry", v.ACTION_ITI18, query, api.security(GP, nir))


def _leap_document(patient_id: str, where: str) -> dict:
    document = dmp_document(patient_id)
    if where == "DocumentReference.date":
        document["date"] = LEAP
    elif where == "DocumentReference.context.period.end":
        document.setdefault("context", {})["period"] = {
            "start": "2026-06-30T23:00:00Z",
            "end": LEAP,
        }
    else:
        document["content"][0]["attachment"]["creation"] = LEAP
    return document


@pytest.mark.parametrize(
    "where",
    [
        "DocumentReference.date",
        "DocumentReference.context.period.end",
        "DocumentReference.content[0].attachment.creation",
    ],
)
def test_r16_r18_a_leap_second_in_a_document_is_refused_and_iti18_still_answers(xds, where):
    """`23:59:60` is a FHIR instant the server cannot read: the document so dated was stored,
    and every ITI-18 LeafClass answer of the record was then an internal error. Refused at
    write naming the element; the record's FindDocuments answers."""
    patient_id, nir = xds.patient(61)
    response = xds.client.post(
        "/fhir/DocumentReference",
        data=json.dumps(_leap_document(patient_id, where)),
        headers=auth(xds.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert where in {path for issue in outcome["issue"] for path in issue.get("expression", [])}
    for return_type in ("ObjectRef", "LeafClass"):
        answer = find_documents(xds, nir, return_type)
        assert registry_status(answer) == (v.RESPONSE_SUCCESS, []), errors(answer)


def related_person(patient_id: str, **period: str) -> dict:
    return {
        "resourceType": "RelatedPerson",
        "patient": {"reference": f"Patient/{patient_id}"},
        "active": True,
        "relationship": [{"coding": [{"system": SYSTEM_V3_ROLE_CODE, "code": "PRN"}]}],
        "period": period,
    }


def test_r07_a_guardianship_ending_on_a_leap_second_is_refused(client, tokens, record):
    """A RelatedPerson whose period ends at `23:59:60` was stored and read as no period at
    all (its representative counted for nothing, the feed told nothing). Refused, naming
    the element."""
    feed = tokens.system("feed", IDENTITY_SCOPES, "health_insurer")
    response = client.post(
        "/fhir/RelatedPerson",
        data=json.dumps(related_person(PATIENT_B, end=LEAP)),
        headers=auth(feed, **{"Content-Type": FHIR_JSON}),
    )
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    paths = {p for issue in response.get_json()["issue"] for p in issue.get("expression", [])}
    assert "RelatedPerson.period.end" in paths


def _next_year() -> str:
    return str(latest_date(datetime.now(UTC)).year + 1)


@pytest.mark.parametrize(
    "birth",
    [
        pytest.param(lambda: "2999-01-01", id="far-future"),
        pytest.param(_next_year, id="next-year-as-a-year"),
        pytest.param(lambda: f"{_next_year()}-01", id="next-year-month"),
    ],
)
def test_r07_a_birth_date_still_to_come_is_refused(client, tokens, record, birth):
    """A birthDate in the future was stored and read as a minor's (negative age): every
    RelatedPerson PRN or GUARD of the adult acted as the patient again (R07). Refused at
    create and at update (422, Patient.birthDate); nothing is written."""
    feed = tokens.system("feed", IDENTITY_SCOPES, "health_insurer")
    headers = auth(feed, **{"Content-Type": FHIR_JSON})
    created = client.post(
        "/fhir/Patient", data=json.dumps(a_patient(71, birthDate=birth())), headers=headers
    )
    assert created.status_code == 422, created.get_data(as_text=True)
    issue = created.get_json()["issue"][0]
    assert issue["expression"] == ["Patient.birthDate"]
    assert issue["code"] == "invalid"
    found = client.get(
        "/fhir/Patient?birthdate=ge1900", headers=auth(tokens.system("feed", IDENTITY_SCOPES))
    ).get_json()
    assert all(entry["resource"].get("birthDate") != birth() for entry in found.get("entry", []))
    current = client.get(f"/fhir/Patient/{PATIENT_B}", headers=headers).get_json()
    updated = client.put(
        f"/fhir/Patient/{PATIENT_B}",
        data=json.dumps({**current, "birthDate": birth()}),
        headers=headers,
    )
    assert updated.status_code == 422, updated.get_data(as_text=True)
    after = client.get(f"/fhir/Patient/{PATIENT_B}", headers=headers).get_json()
    assert after["birthDate"] == current["birthDate"]


def test_r07_a_child_born_today_anywhere_is_accepted(client, tokens, record):
    """Control: a birthDate of today on the latest date anywhere (UTC+14) is no future one."""
    feed = tokens.system("feed", IDENTITY_SCOPES, "health_insurer")
    today = latest_date(datetime.now(UTC)).isoformat()
    created = client.post(
        "/fhir/Patient",
        data=json.dumps(a_patient(72, birthDate=today)),
        headers=auth(feed, **{"Content-Type": FHIR_JSON}),
    )
    assert created.status_code == 201, created.get_data(as_text=True)


TIME_PARAMETERS = [
    "$XDSDocumentEntryCreationTimeFrom",
    "$XDSDocumentEntryServiceStartTimeTo",
    "$XDSDocumentEntryServiceStopTimeTo",
]


def find_documents_from(api: Xds, nir: str, parameter: str, value: str):
    query = adhoc(
        FIND_DOCUMENTS,
        [
            ("$XDSDocumentEntryPatientId", f"'{patient_cx(nir)}'"),
            ("$XDSDocumentEntryStatus", f"('{v.STATUS_APPROVED}')"),
            (parameter, value),
        ],
        "ObjectRef",
    )
    return api.soap("/xds/registry", v.ACTION_ITI18, query, api.security(GP, nir))


@pytest.mark.parametrize("parameter", TIME_PARAMETERS)
@pytest.mark.parametrize(
    "value", ["20261301", "20260229", "2026123125", "202612312360", "20261231235960", "２０２６"]
)
def test_r18_an_xds_time_parameter_naming_no_instant_is_refused_under_its_name(
    xds, parameter, value
):
    """Month 13, 29 February of a common year, hour 25, minute 60, a leap second, fullwidth
    digits: ServiceStartTimeTo answered Success (compared as text), the others were refused
    under the name of the FHIR search they became (`creation`, `period`), and fullwidth
    digits were read as the year. Each is refused naming the stored query parameter."""
    _, nir = xds.patient(63)
    response = find_documents_from(xds, nir, parameter, value)
    status, codes = registry_status(response)
    assert status == v.RESPONSE_FAILURE, errors(response)
    assert codes == ["XDSRegistryMetadataError"]
    assert parameter in errors(response)[0][1]


@pytest.mark.parametrize("parameter", TIME_PARAMETERS)
@pytest.mark.parametrize("value", ["2028", "20280229", "20281231235959"])
def test_r18_an_xds_time_parameter_of_the_calendar_is_answered(xds, parameter, value):
    """Control: a year, 29 February of a leap year, the last second of a day."""
    _, nir = xds.patient(64)
    response = find_documents_from(xds, nir, parameter, value)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), errors(response)


def _slot_value(slot_name: str, value: str):
    def edit(root) -> None:
        rim = f"{{{v.NS_RIM}}}"
        entry = root.find(f".//{rim}ExtrinsicObject[@id='Document01']")
        for slot in entry.findall(f"{rim}Slot"):
            if slot.get("name") == slot_name:
                slot.find(f"{rim}ValueList/{rim}Value").text = value
                return
        raise AssertionError(f"no slot {slot_name}")

    return edit


@pytest.mark.parametrize("slot", ["creationTime", "serviceStartTime"])
@pytest.mark.parametrize("value", ["20260231", "20260229", "２０２６１２０７"])
def test_r18_an_iti41_time_naming_no_day_is_refused_under_its_slot(xds, slot, value):
    """31 February, 29 February of a common year, fullwidth digits passed the registry's
    check of the slot and were refused only after mapping, as XDSRepositoryMetadataError
    naming `Bundle.entry[1]: DocumentReference...`: refused as the registry's metadata
    error naming the DocumentEntry's slot, nothing stored."""

    _, nir = xds.patient(65)
    request, response = deposit_with(xds, nir, _slot_value(slot, value))
    status, codes = registry_status(response)
    assert status == v.RESPONSE_FAILURE
    assert codes == ["XDSRegistryMetadataError"]
    root, _ = envelope_of(response)
    (error,) = root.iter(f"{{{v.NS_RS}}}RegistryError")
    assert error.get("location", "").endswith(f" {slot}"), errors(response)
    unique_id = request.document_unique_ids["Document01"]
    assert (
        xds.runtime.service.documents_with_unique_id("urn:ietf:rfc:3986", f"urn:oid:{unique_id}")
        == []
    )


# -- the ends of the calendar ----------------------------------------------------------------


@pytest.mark.parametrize(
    "period",
    [
        {"end": "9999-12-31"},
        {"end": "9999-12-31T23:59:59-14:00"},
        {"start": "0001-01-01T00:00:00+14:00"},
    ],
    ids=["open-ended-date", "open-ended-instant-west", "year-one-instant-east"],
)
def test_r07_a_guardianship_to_the_end_of_the_calendar_counts(client, tokens, record, period):
    """`9999-12-31`, the "no end" identity feeds write: the day's end was reached from the
    next day, past the calendar, and the OverflowError made every request on the minor's
    record a 500 (the parent's, the child's); an instant whose zone moves it past either
    end did the same. The guardianship counts, held at the calendar's end."""
    feed = tokens.system("feed", IDENTITY_SCOPES, "health_insurer")
    headers = auth(feed, **{"Content-Type": FHIR_JSON})
    child = client.post(
        "/fhir/Patient", data=json.dumps(a_patient(73, birthDate="2015-05-05")), headers=headers
    )
    assert child.status_code == 201, child.get_data(as_text=True)
    child_id = child.get_json()["id"]
    parent = client.post(
        "/fhir/RelatedPerson", data=json.dumps(related_person(child_id, **period)), headers=headers
    )
    assert parent.status_code == 201, parent.get_data(as_text=True)
    parent_id = parent.get_json()["id"]
    own = client.get(f"/fhir/Patient/{child_id}", headers=auth(tokens.patient(child_id)))
    assert own.status_code == 200, own.get_data(as_text=True)
    token = tokens.issuer.issue(
        subject=parent_id,
        scopes="patient/*.rs",
        fhir_user=f"RelatedPerson/{parent_id}",
        patient=child_id,
    )
    as_parent = client.get(f"/fhir/Patient/{child_id}", headers=auth(token))
    assert as_parent.status_code == 200, as_parent.get_data(as_text=True)


@pytest.mark.parametrize(
    ("element", "value"),
    [
        ("period.end", "9999-12-31"),
        ("period.end", "9999"),
        ("period.end", "9999-12-31T23:59:59-14:00"),
        ("period.start", "0001-01-01T00:00:00+14:00"),
        ("dateTime", "0001-01-01"),
    ],
)
def test_r10_a_consent_at_the_ends_of_the_calendar_is_read(client, tokens, record, element, value):
    """A Consent period ending on `9999-12-31` (or an instant moved past the calendar by its
    zone), a `dateTime` of year 1: an OverflowError, a 500 at write; `9999` was refused as
    no dateTime. Each is a Consent the rules read: 201, the authorization in force."""
    consent = dmp_consent(PATIENT_B, permit(STRANGER))
    if element == "dateTime":
        consent["dateTime"] = value
    else:
        consent["provision"]["period"] = {element.split(".")[1]: value}
    response = client.post(
        "/fhir/Consent",
        data=json.dumps(consent),
        headers=auth(tokens.patient(PATIENT_B), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    read = client.get(
        f"/fhir/DocumentReference?patient={PATIENT_B}", headers=auth(tokens.practitioner(STRANGER))
    )
    assert read.status_code == 200, read.get_data(as_text=True)


@pytest.mark.parametrize(
    "value", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"], ids=["west", "east"]
)
def test_r16_r18_a_document_dated_at_the_ends_of_the_calendar_leaves_iti18_answering(xds, value):
    """A DocumentReference whose service period ends at an instant its zone moves past year
    9999 (or before year 1) was stored, and every ITI-18 LeafClass answer of the record was
    then an internal error: the time is held at the calendar's end."""
    patient_id, nir = xds.patient(66)
    document = dmp_document(patient_id)
    document.setdefault("context", {})["period"] = {"start": "2026-06-30T23:00:00Z", "end": value}
    if value.startswith("0001"):
        document["context"]["period"] = {"start": value, "end": "2026-06-30T23:00:00Z"}
    response = xds.client.post(
        "/fhir/DocumentReference",
        data=json.dumps(document),
        headers=auth(xds.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    answer = find_documents(xds, nir, "LeafClass")
    assert registry_status(answer) == (v.RESPONSE_SUCCESS, []), errors(answer)


@pytest.mark.parametrize(
    "query",
    [
        "AuditEvent?date=ge\u0662\u0660\u0662\u0666",
        "AuditEvent?date=ge\uff12\uff10\uff12\uff16",
        "AuditEvent?_lastUpdated=gt\u0662\u0660\u0662\u0666-12-07",
    ],
    ids=["arabic-indic", "fullwidth", "last-updated"],
)
def test_r16_a_search_date_in_other_digits_is_refused_naming_the_parameter(
    client, tokens, record, query
):
    """A date search in Arabic-Indic or fullwidth digits was read as the year they spell (the
    patient's trail searched with a value no FHIR date is): refused, 400 naming it."""
    response = client.get(f"/fhir/{query}", headers=auth(tokens.patient(PATIENT_B)))
    assert response.status_code == 400, response.get_data(as_text=True)
    (issue,) = response.get_json()["issue"]
    assert issue["expression"][0] in ("date", "_lastUpdated")


# -- R01: VIHF validity instants ------------------------------------------------------------


@pytest.mark.parametrize(
    "instant",
    ["2099-12-31T00:00:00+15:00", "2099-12-31T00:00:00-23:59", "2099-12-31T00:00:00+14:01"],
)
def test_r01_vihf_validity_instant_with_a_zone_no_xs_datetime_has_is_refused(
    data_dir, monkeypatch, instant
):
    """An xs:dateTime's zone is at most 14 hours from UTC (XML Schema §D.2.1); Python's
    reader took up to 23:59, an instant no signer's software writes: refused, as a date alone
    or the basic format already were."""

    def edit(assertion) -> None:
        assertion.find(f"{{{vihf.SAML}}}Conditions").set("NotOnOrAfter", instant)

    security = vihf_signed_after(data_dir, monkeypatch, edit)
    with pytest.raises(AuthenticationError, match="malformed validity instant"):
        requester_of(data_dir, security)


@pytest.mark.parametrize("instant", ["2099-12-31T00:00:00+14:00", "2099-12-31T00:00:00-14:00"])
def test_r01_vihf_validity_instant_at_the_widest_zones_is_read(data_dir, monkeypatch, instant):
    """Control: ±14:00 are zones an xs:dateTime has."""

    def edit(assertion) -> None:
        assertion.find(f"{{{vihf.SAML}}}Conditions").set("NotOnOrAfter", instant)

    requester = requester_of(data_dir, vihf_signed_after(data_dir, monkeypatch, edit))
    assert requester.subject_id
