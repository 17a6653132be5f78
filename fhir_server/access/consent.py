"""The patient's Consent resources, read as DMP access rules (R09-R12).

Only the shapes listed in docs/access-rules.md are understood: scope patient-privacy, a root
`permit` provision, and one level of nested exceptions that either name practitioners
(actor role IRCP + IdNat_PS identifier; deny = blocked, permit = authorized) or oppose an
access mode (deny with purpose v3-ActReason BTG or ETREAT). Anything else would change the
meaning of the Consent in ways the policy cannot honour, so it is refused with an
OperationOutcome pointing at the offending element rather than silently ignored.

Combining several Consents of one patient (`ConsentRules.combine`): authorizations and
blocks are unions, oppositions are or-ed, and a deny always wins over a permit for the same
practitioner, whatever Consent or provision each comes from (R09 over R10). The patient's
initial consent (`access.initial_consent`) is collected when any active Consent in force says
so.
"""

from __future__ import annotations

import re
from calendar import monthrange
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fhir_server.access.constraints import reference_target
from fhir_server.access.days import PATIENT_TIMEZONE
from fhir_server.access.initial_consent import (
    INITIAL_CONSENT,
    SYSTEM_DMP_CONSENT_CATEGORY,
    carries_initial_consent,
)
from fhir_server.errors import FhirError, error
from fhir_server.resources.normal_form import idnat_ps_problem
from fhir_server.resources.served import REQUIRED_CODES
from fhir_server.terminology import (
    PURPOSE_BY_MODE,
    SYSTEM_ACT_REASON,
    SYSTEM_CONSENT_SCOPE,
    SYSTEM_IDNAT_PS,
    SYSTEM_PARTICIPATION_TYPE,
)

PATIENT_PRIVACY = "patient-privacy"
SYSTEM_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
POLICY_OPTIN = "OPTIN"
ROLE_IRCP = "IRCP"
# The categories a DMP Consent is read under: LOINC 59284-0 (Patient consent) and the
# patient's initial consent (`access.initial_consent`). A research or advance-directive
# Consent naming a professional is not an authorization to read the record.
SYSTEM_LOINC = "http://loinc.org"
CATEGORY_PATIENT_CONSENT = "59284-0"
CONSENT_CATEGORIES = frozenset(
    {(SYSTEM_LOINC, CATEGORY_PATIENT_CONSENT), (SYSTEM_DMP_CONSENT_CATEGORY, INITIAL_CONSENT)}
)
# The uses of an actor's identifier that say it names the practitioner now (FHIR R4
# Identifier.use is a modifier: `old` is no longer valid, `temp` a stand-in).
IDENTIFIER_USES_IN_FORCE = frozenset({"usual", "official", "secondary"})
# A Reference.type naming a practitioner (relative to the FHIR StructureDefinition base).
PRACTITIONER_TYPES = frozenset(
    {"Practitioner", "http://hl7.org/fhir/StructureDefinition/Practitioner"}
)
# A Consent's dateTime written as a date (no zone) may be today's date anywhere, up to 14
# hours ahead of UTC (UTC+14, as `record.latest_date`); one with a time carries a zone (FHIR)
# and is an instant, a few minutes of clock skew allowed.
_LOCAL_AHEAD = timedelta(hours=14)
_CLOCK_SKEW = timedelta(minutes=5)
# The access modes a patient may oppose, coded as the audit codes them (v3-ActReason).
PURPOSE_BTG = PURPOSE_BY_MODE["bris_de_glace"]
PURPOSE_ETREAT = PURPOSE_BY_MODE["centre_15"]
CONSENT_STATUSES = REQUIRED_CODES["Consent"]["status"]

# Elements of a provision that would restrict or widen it in ways we do not evaluate.
_UNSUPPORTED_PROVISION_ELEMENTS = (
    "action",
    "securityLabel",
    "class",
    "code",
    "dataPeriod",
    "data",
    "modifierExtension",
)


@dataclass(frozen=True, slots=True)
class ConsentRules:
    """The access rules of one patient, from all their active Consents."""

    permitted: frozenset[str] = frozenset()  # IdNat_PS named in permit provisions
    blocked: frozenset[str] = frozenset()  # IdNat_PS named in deny provisions
    oppose_bris_de_glace: bool = False  # deny provision with purpose BTG
    oppose_centre_15: bool = False  # deny provision with purpose ETREAT
    # The patient's initial consent to the care team's access was collected (CE 15/10/2025).
    initial_consent: bool = False

    def combine(self, other: ConsentRules) -> ConsentRules:
        return ConsentRules(
            permitted=self.permitted | other.permitted,
            blocked=self.blocked | other.blocked,
            oppose_bris_de_glace=self.oppose_bris_de_glace or other.oppose_bris_de_glace,
            oppose_centre_15=self.oppose_centre_15 or other.oppose_centre_15,
            initial_consent=self.initial_consent or other.initial_consent,
        )

    def is_blocked(self, idnat_ps: str) -> bool:
        return idnat_ps in self.blocked

    def is_authorized(self, idnat_ps: str) -> bool:
        """Named in a permit and in no deny: a deny always wins."""
        return idnat_ps in self.permitted and idnat_ps not in self.blocked


NO_RULES = ConsentRules()


def combine_rules(rules: Iterable[ConsentRules]) -> ConsentRules:
    result = NO_RULES
    for item in rules:
        result = result.combine(item)
    return result


def consent_patient_id(consent: dict) -> str | None:
    """The logical id of the Patient a Consent is about (`Consent.patient`), if local."""
    target = reference_target((consent.get("patient") or {}).get("reference"))
    return target[1] if target is not None and target[0] == "Patient" else None


def interpret_consent(consent: dict, now: datetime | None = None) -> ConsentRules:
    """The rules a Consent contributes at instant `now` (default: the current time).

    Raises FhirError 422 (code "invalid" for a malformed element, "processing" for a
    well-formed but unsupported one) whose issue expression is the FHIRPath of the element.
    The whole Consent is checked even when it is inactive, so that a draft that could never
    be activated is refused on write; inactive Consents then contribute no rules.
    """
    now = _aware(now or datetime.now(UTC))
    if consent.get("resourceType") != "Consent":
        raise _invalid("Not a Consent resource", "Consent")
    status = consent.get("status")
    if status not in CONSENT_STATUSES:
        raise _invalid(f"Consent.status {status!r} is not a Consent status", "Consent.status")
    _check_scope(consent.get("scope"))
    _check_categories(consent.get("category"))
    _check_policy(consent)
    _check_date_time(consent.get("dateTime"), now)
    _refuse_modifier_extensions(consent, "Consent")
    if consent_patient_id(consent) is None:
        raise _invalid(
            "Consent.patient must reference the Patient whose record this is", "Consent.patient"
        )
    root = consent.get("provision")
    if not isinstance(root, dict):
        raise _invalid(
            "Consent.provision (a root permit provision) is required", "Consent.provision"
        )
    rules = _interpret_root(root, now)
    if status != "active":
        return NO_RULES
    if carries_initial_consent(consent) and _period_covers(
        root.get("period"), now, "Consent.provision.period"
    ):
        rules = rules.combine(ConsentRules(initial_consent=True))
    return rules


def period_bounds(consent: dict) -> list[datetime]:
    """The instants at which the Consent's periods (the root's and the nested provisions')
    begin or cease to be in force: whoever keeps the rules it contributes must read it again
    at the first of them still to come. Bounds that are no dateTime are left out (the
    Consent was refused at write, or is read as uninterpretable)."""
    root = consent.get("provision")
    provisions = [root] if isinstance(root, dict) else []
    nested = root.get("provision") if isinstance(root, dict) else None
    provisions += [p for p in nested if isinstance(p, dict)] if isinstance(nested, list) else []
    bounds = [bound for provision in provisions for bound in _bounds(provision.get("period"))]
    issued = _earliest_issue(consent.get("dateTime"))
    return bounds if issued is None else [*bounds, issued]


def _bounds(period: object) -> list[datetime]:
    """The first instant of a period and the first instant after it, as far as written."""
    if not isinstance(period, dict):
        return []
    bounds = []
    for name, side in (("start", 0), ("end", 1)):
        value = period.get(name)
        try:
            instant = date_bound_window(
                value if side == 0 else None,
                value if side == 1 else None,
            )[side]
        except (ValueError, TypeError):
            continue
        if instant is not None:
            bounds.append(shifted(instant, timedelta(microseconds=side)))
    return bounds


def _refuse_modifier_extensions(node: object, path: str) -> None:
    """A modifierExtension anywhere in a Consent (its root, an actor, a scope...) may change
    what the Consent means (a negation, a condition): the rules would read it as if it were
    absent, so it is refused as a provision's is (FHIR: a modifier not understood is not
    ignored)."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _refuse_modifier_extensions(item, f"{path}[{index}]")
        return
    if not isinstance(node, dict):
        return
    if "modifierExtension" in node:
        raise _unsupported(
            "A modifierExtension changes what the Consent means in a way the DMP access rules "
            "do not evaluate",
            f"{path}.modifierExtension",
        )
    for key, child in node.items():
        if isinstance(child, dict | list) and key not in ("contained", "extension"):
            _refuse_modifier_extensions(child, f"{path}.{key}")


def _check_scope(scope: object) -> None:
    codings = scope.get("coding") if isinstance(scope, dict) else None
    if not isinstance(codings, list) or not codings:
        raise _invalid("Consent.scope must be patient-privacy", "Consent.scope")
    for index, coding in enumerate(codings):
        if not isinstance(coding, dict) or (
            coding.get("system") != SYSTEM_CONSENT_SCOPE or coding.get("code") != PATIENT_PRIVACY
        ):
            raise _unsupported(
                f"Only Consents with scope {SYSTEM_CONSENT_SCOPE}|{PATIENT_PRIVACY} are understood",
                f"Consent.scope.coding[{index}]",
            )


def _check_categories(categories: object) -> None:
    """Every coding of `Consent.category` is one the DMP rules read (`CONSENT_CATEGORIES`).
    A Consent of another category (research, an advance directive, a release of information)
    naming a professional in a permit was read as an R10 authorization to read the whole
    record (**decided here**, the rule book names only these: refused, 422 `processing`)."""
    if categories is None:
        return
    if not isinstance(categories, list):
        raise _invalid("Consent.category must be a list", "Consent.category")
    for index, concept in enumerate(categories):
        here = f"Consent.category[{index}]"
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(codings, list) or not codings:
            raise _unsupported(
                "A Consent category is read only as a coding the DMP access rules know "
                f"({SYSTEM_LOINC}|{CATEGORY_PATIENT_CONSENT}, "
                f"{SYSTEM_DMP_CONSENT_CATEGORY}|{INITIAL_CONSENT})",
                here,
            )
        for position, coding in enumerate(codings):
            if not isinstance(coding, dict) or (
                (coding.get("system"), coding.get("code")) not in CONSENT_CATEGORIES
            ):
                raise _unsupported(
                    "The DMP access rules read only Consents of category "
                    f"{SYSTEM_LOINC}|{CATEGORY_PATIENT_CONSENT} (patient consent) or "
                    f"{SYSTEM_DMP_CONSENT_CATEGORY}|{INITIAL_CONSENT}",
                    f"{here}.coding[{position}]",
                )


def _check_date_time(value: object, now: datetime) -> None:
    """`Consent.dateTime` says when the Consent was given. One still to come was read as given
    now: a professional's initial-consent declaration dated next year opened the record today
    (**decided here**: refused, 422 `invalid`; a stored one is read as uninterpretable until
    that date, `period_bounds` telling the record cache when to read it again)."""
    if value is None:
        return
    if not _is_datetime(value):
        raise _invalid("Consent.dateTime is not a FHIR dateTime", "Consent.dateTime")
    issued = _earliest_issue(value)
    if issued is not None and issued > now:
        raise _invalid(
            "Consent.dateTime is in the future: a Consent is not given before it is dated",
            "Consent.dateTime",
        )


def _earliest_issue(value: object) -> datetime | None:
    """The first instant at which a Consent dated `value` may have been given, clock skew
    and local time without a zone allowed for (None when `value` is no dateTime)."""
    if not isinstance(value, str) or not _is_datetime(value):
        return None
    first = instant_range(value)[0]
    zoned = "T" in value and (value.endswith("Z") or re.search(r"[+-]\d{2}:\d{2}$", value))
    return shifted(first, -(_CLOCK_SKEW if zoned else _LOCAL_AHEAD))


def _check_policy(consent: dict) -> None:
    """`Consent.policy` and `Consent.policyRule` name the rules a Consent is read under. The
    DMP rules read one: the record open to whom the patient authorizes, exceptions nested
    (v3-ActCode `OPTIN`, the patient's assent, which the shape above says). Another
    (`OPTOUT`, the patient's refusal to share; a policy by URI, "deny all") was stored and
    read as if it said OPTIN: the permits of a Consent its patient wrote to refuse were
    honoured (decided here: refused as an unsupported element, 422 `processing`)."""
    if "implicitRules" in consent:
        # A modifier element (FHIR R4 Resource.implicitRules): rules that change what the
        # Consent means, which the evaluator would not apply.
        raise _unsupported(
            "Consent.implicitRules changes what the Consent means in a way the DMP access "
            "rules do not evaluate",
            "Consent.implicitRules",
        )
    if consent.get("policy"):
        raise _unsupported(
            "Consent.policy names a policy the DMP access rules do not evaluate", "Consent.policy"
        )
    rule = consent.get("policyRule")
    if rule is None:
        return
    codings = rule.get("coding") if isinstance(rule, dict) else None
    if not isinstance(codings, list) or not codings:
        raise _unsupported(
            f"Consent.policyRule is read only as {SYSTEM_ACT_CODE}|{POLICY_OPTIN}",
            "Consent.policyRule",
        )
    for index, coding in enumerate(codings):
        if not isinstance(coding, dict) or (
            coding.get("system") != SYSTEM_ACT_CODE or coding.get("code") != POLICY_OPTIN
        ):
            raise _unsupported(
                f"Consent.policyRule is read only as {SYSTEM_ACT_CODE}|{POLICY_OPTIN} (the "
                "record open to the professionals the patient authorizes)",
                f"Consent.policyRule.coding[{index}]",
            )


def _interpret_root(root: dict, now: datetime) -> ConsentRules:
    path = "Consent.provision"
    if root.get("type") != "permit":
        raise _unsupported(
            "The root provision must be of type permit (the record is open to authorized "
            "professionals); opposition to the record itself is a record status, not a Consent",
            f"{path}.type",
        )
    for element in (*_UNSUPPORTED_PROVISION_ELEMENTS, "actor", "purpose"):
        if element in root:
            raise _unsupported(
                f"The root provision cannot carry {element}; put exceptions in nested provisions",
                f"{path}.{element}",
            )
    in_force = _period_covers(root.get("period"), now, f"{path}.period")
    nested = root.get("provision", [])
    if not isinstance(nested, list):
        raise _invalid("Consent.provision.provision must be a list", f"{path}.provision")
    rules = combine_rules(
        _interpret_nested(item, now, f"{path}.provision[{i}]") for i, item in enumerate(nested)
    )
    return rules if in_force else NO_RULES


def _interpret_nested(provision: object, now: datetime, path: str) -> ConsentRules:
    if not isinstance(provision, dict):
        raise _invalid("A nested provision must be an object", path)
    kind = provision.get("type")
    if kind not in ("permit", "deny"):
        raise _invalid("A nested provision needs a type, permit or deny", f"{path}.type")
    if "provision" in provision:
        raise _unsupported(
            "Provisions nested more than one level deep are not supported", f"{path}.provision"
        )
    for element in _UNSUPPORTED_PROVISION_ELEMENTS:
        if element in provision:
            raise _unsupported(
                f"Provision element {element} is not supported by the DMP access rules",
                f"{path}.{element}",
            )
    actors = provision.get("actor")
    purposes = provision.get("purpose")
    if actors and purposes:
        raise _unsupported(
            "A nested provision names either practitioners (actor) or an access mode (purpose), "
            "not both",
            path,
        )
    if not actors and not purposes:
        raise _invalid(
            "A nested provision must name practitioners (actor) or an access mode (purpose)", path
        )
    in_force = _period_covers(provision.get("period"), now, f"{path}.period")
    if actors:
        ids = _actor_ids(actors, f"{path}.actor")
        if not in_force:
            return NO_RULES
        if kind == "deny":
            return ConsentRules(blocked=ids)
        return ConsentRules(permitted=ids)
    codes = _purpose_codes(purposes, f"{path}.purpose")
    if kind != "deny":
        raise _unsupported(
            "A provision with a purpose can only be a deny (opposition to bris de glace or "
            "centre 15)",
            f"{path}.type",
        )
    if not in_force:
        return NO_RULES
    return ConsentRules(
        oppose_bris_de_glace=PURPOSE_BTG in codes, oppose_centre_15=PURPOSE_ETREAT in codes
    )


def _actor_ids(actors: object, path: str) -> frozenset[str]:
    if not isinstance(actors, list):
        raise _invalid("provision.actor must be a list", path)
    ids: set[str] = set()
    for index, actor in enumerate(actors):
        here = f"{path}[{index}]"
        if not isinstance(actor, dict):
            raise _invalid("An actor must be an object", here)
        codings = (actor.get("role") or {}).get("coding") or []
        # Every coding, not one of them: the codings of a concept say the same thing, and
        # IRCP beside another role (PRN, a parent) was read as IRCP alone.
        if not codings or not all(
            isinstance(c, dict)
            and c.get("system") == SYSTEM_PARTICIPATION_TYPE
            and c.get("code") == ROLE_IRCP
            for c in codings
        ):
            raise _unsupported(
                f"The actor role must be {SYSTEM_PARTICIPATION_TYPE}|{ROLE_IRCP}", f"{here}.role"
            )
        identifier = actor_identifier(actor)
        value = identifier.get("value") if isinstance(identifier, dict) else None
        if (
            not isinstance(identifier, dict)
            or identifier.get("system") != SYSTEM_IDNAT_PS
            or not isinstance(value, str)
        ):
            raise _invalid(
                f"The actor must be identified by an IdNat_PS identifier (system {SYSTEM_IDNAT_PS})",
                f"{here}.reference.identifier",
            )
        _check_actor_naming(actor, identifier, here)
        problem = idnat_ps_problem(value)
        if problem:
            # Compared exactly with the requester's IdNat_PS, which is checked the same way:
            # never trimmed on one side only (issue #18, finding 12).
            raise _invalid(problem, f"{here}.reference.identifier.value")
        literal = (actor.get("reference") or {}).get("reference")
        if literal is not None and literal != f"Practitioner/{value}":
            # `Practitioner/<IdNat_PS>` names a practitioner too (R08 reads it so): an actor
            # naming two would be read as one of them only.
            raise _invalid(
                f"The actor's reference {literal!r} does not name the practitioner of its "
                f"IdNat_PS identifier (Practitioner/{value}, or no reference)",
                f"{here}.reference.reference",
            )
        ids.add(value)
    return frozenset(ids)


def _check_actor_naming(actor: dict, identifier: dict, path: str) -> None:
    """An actor names a practitioner by their IdNat_PS, now: a reference typed Organization,
    CareTeam, Group or PractitionerRole, or an identifier no longer in force (`use` old or
    temp, a `period`), was read as a grant to (or a block of) the practitioner of that
    IdNat_PS everywhere and for good (**decided here**: refused, 422 `processing`)."""
    kind = (actor.get("reference") or {}).get("type")
    if kind is not None and kind not in PRACTITIONER_TYPES:
        raise _unsupported(
            f"The actor's reference is typed {kind!r}: the DMP access rules name a "
            "Practitioner by IdNat_PS only",
            f"{path}.reference.type",
        )
    use = identifier.get("use")
    if use is not None and use not in IDENTIFIER_USES_IN_FORCE:
        raise _unsupported(
            f"The actor's identifier has use {use!r}: the DMP access rules read an IdNat_PS "
            "in force (use usual, official or secondary)",
            f"{path}.reference.identifier.use",
        )
    if "period" in identifier:
        raise _unsupported(
            "The actor's identifier carries a period the DMP access rules do not evaluate",
            f"{path}.reference.identifier.period",
        )


def actor_identifier(actor: dict) -> Any:
    """The identifier naming a provision's actor (`actor.reference.identifier`): the
    practitioner's IdNat_PS in the shapes understood here."""
    return (actor.get("reference") or {}).get("identifier") or {}


def _purpose_codes(purposes: object, path: str) -> frozenset[str]:
    if not isinstance(purposes, list):
        raise _invalid("provision.purpose must be a list", path)
    codes: set[str] = set()
    for index, coding in enumerate(purposes):
        here = f"{path}[{index}]"
        if (
            not isinstance(coding, dict)
            or coding.get("system") != SYSTEM_ACT_REASON
            or coding.get("code") not in (PURPOSE_BTG, PURPOSE_ETREAT)
        ):
            raise _unsupported(
                f"Only the purposes {SYSTEM_ACT_REASON}|{PURPOSE_BTG} (bris de glace) and "
                f"|{PURPOSE_ETREAT} (centre 15) are understood",
                here,
            )
        codes.add(coding["code"])
    return frozenset(codes)


# --- periods ---------------------------------------------------------------------------

# ASCII digits, matched whole (`\d` reads other scripts' digits, `$` a trailing newline).
_DATETIME = re.compile(
    r"(?P<y>[0-9]{4})(?:-(?P<m>[0-9]{2})(?:-(?P<d>[0-9]{2})"
    r"(?:T(?P<time>[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)"
    r"(?P<tz>Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?"
)


# The first and last instants a datetime holds: a bound at either end of the calendar (an
# open-ended `9999-12-31`, as identity feeds write "no end") is read up to them, never past.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def shifted(instant: datetime, delta: timedelta) -> datetime:
    """`instant + delta`, held within the calendar (`EARLIEST`, `LATEST`)."""
    try:
        return instant + delta
    except OverflowError:
        return LATEST if delta > timedelta(0) else EARLIEST


def instant_range(value: str) -> tuple[datetime, datetime]:
    """The first and last instants of a FHIR date/dateTime at its precision (UTC if no zone).

    The end of a day, a month or a year is its last microsecond, written so rather than
    reached from the next one: `9999-12-31` (a feed's "no end") overflowed the calendar, and
    the OverflowError, which no caller expected, made every request on a record holding such
    a guardianship or Consent period a 500; `9999` and `9999-12` were refused as no dateTime.
    An instant whose zone moves it past either end of the calendar is held at that end."""
    match = _DATETIME.fullmatch(value)
    if not match:
        raise ValueError(value)
    year, month, day = int(match["y"]), match["m"], match["d"]
    if month is None:
        low = datetime(year, 1, 1, tzinfo=UTC)
        return low, datetime(year, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    if day is None:
        low = datetime(year, int(month), 1, tzinfo=UTC)
        last_day = monthrange(year, int(month))[1]
        return low, datetime(year, int(month), last_day, 23, 59, 59, 999999, tzinfo=UTC)
    if match["time"] is None:
        low = datetime(year, int(month), int(day), tzinfo=UTC)
        return low, datetime(year, int(month), int(day), 23, 59, 59, 999999, tzinfo=UTC)
    text = f"{match['y']}-{month}-{day}T{match['time']}"
    if len(match["time"]) == 5:
        text += ":00"
    tz = match["tz"] or "+00:00"
    local = datetime.fromisoformat(text + ("+00:00" if tz == "Z" else tz))
    offset = local.utcoffset() or timedelta(0)
    instant = shifted(local.replace(tzinfo=UTC), -offset)
    return instant, instant


def date_bound_window(
    start: str | None, end: str | None
) -> tuple[datetime | None, datetime | None]:
    """The first and last instants a period from `start` to `end` covers: a bound with a
    time is its instant (its zone applied), one written as a date (a month, a year: no time,
    no zone) that day in France (`days.PATIENT_TIMEZONE`), as R17 counts days. Read as a UTC
    day, an authorization or a guardianship ending on the 7th held until 01:00 on the 8th in
    Paris (02:00 in summer), and one beginning on the 8th opened an hour late. Raises
    ValueError or TypeError for a bound that is no dateTime."""
    first = last = None
    if start is not None:
        first = _bound(start, 0)
    if end is not None:
        last = _bound(end, 1)
    return first, last


def _bound(value: str, side: int) -> datetime:
    """The first (`side` 0) or last (1) instant of `value`, a date read in France."""
    instant = instant_range(value)[side]
    if "T" in value:
        return instant
    try:
        return instant.replace(tzinfo=PATIENT_TIMEZONE).astimezone(UTC)
    except OverflowError:  # year 1 in Paris begins before the calendar does in UTC
        return EARLIEST if side == 0 else LATEST


def _period_covers(period: object, now: datetime, path: str) -> bool:
    if period is None:
        return True
    if not isinstance(period, dict):
        raise _invalid("period must be a Period", path)
    start, end = period.get("start"), period.get("end")
    try:
        first, last = (
            instant_range(start)[0] if start is not None else None,
            (instant_range(end)[1] if end is not None else None),
        )
    except (ValueError, TypeError):
        bad = "start" if start is not None and not _is_datetime(start) else "end"
        raise _invalid(f"period.{bad} is not a FHIR dateTime", f"{path}.{bad}") from None
    if first is not None and last is not None and first > last:
        # FHIR per-1, compared as instants (zones applied): a period ending before it starts
        # is in force at no instant, and a block or an opposition written so was ignored.
        raise _invalid("period.start is after period.end (FHIR per-1)", path)
    # per-1 compares the bounds as written (dates as UTC days, as before they were read in
    # France): a stored Consent it accepted stays interpretable.
    first, last = date_bound_window(start, end)
    if first is not None and last is not None and first > last:
        # per-1 again on the bounds as coverage reads them (a date, that day in France): an
        # instant at 23:30 UTC to the same day as a date passed the UTC reading, yet ends
        # before it starts in Paris, and a block written so was stored and in force nowhere.
        raise _invalid("period.start is after period.end (FHIR per-1, dates in France)", path)
    if first is not None and first > now:
        return False
    return not (last is not None and last < now)


def _is_datetime(value: object) -> bool:
    try:
        instant_range(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
    return True


def _aware(instant: datetime) -> datetime:
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def _invalid(message: str, expression: str) -> FhirError:
    return error(422, "invalid", message, expression)


def _unsupported(message: str, expression: str) -> FhirError:
    return error(422, "processing", message, expression)
