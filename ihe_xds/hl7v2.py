"""The HL7 v2 data types XDS metadata carries as strings: CX, XCN, XON, XTN and times.

Only the components XDS and the DMP use are read (ITI TF-3 4.2.3.1.7 and the DMP forms
in the reference: `<NIR>^^^&1.2.250.1.213.1.4.8&ISO^NH`, `<IdNatPS>^Nom^Prénom^^^^^^&
1.2.250.1.71.4.2.1&ISO^D^^^IDNPS`, `Nom^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^<id>`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from ihe_xds.codes import is_oid


@dataclass(frozen=True, slots=True)
class CX:
    """A CX identifier as XDS uses it: id value, assigning authority OID, optional type code."""

    value: str
    authority_oid: str
    type_code: str | None = None

    def to_hl7(self) -> str:
        text = f"{self.value}^^^&{self.authority_oid}&ISO"
        return f"{text}^{self.type_code}" if self.type_code else text


def parse_cx(text: str | None) -> tuple[CX | None, str | None]:
    """(CX, None) when `text` is `ID^^^&OID&ISO[^type]`, else (None, what is wrong)."""
    if not text:
        return None, "empty patient identifier"
    if any(ord(c) < 32 for c in text) or len(text) > 256:
        return None, "identifier with control characters or too long"
    components = text.split("^")
    if len(components) < 4:
        return None, "a CX needs the form ID^^^&OID&ISO"
    if len(components) > 5 and any(components[5:]):
        return None, "a patient CX carries only ID, assigning authority and type code"
    value, second, third, authority = components[:4]
    type_code = components[4] if len(components) > 4 and components[4] else None
    if not value or "&" in value:
        return None, "the CX has no identifier value"
    if second or third:
        return None, "CX components 2 and 3 must be empty"
    parts = authority.split("&")
    if len(parts) != 3 or parts[0] or parts[2] != "ISO" or not is_oid(parts[1]):
        return None, "the CX assigning authority must be &OID&ISO"
    return CX(value, parts[1], type_code), None


@dataclass(frozen=True, slots=True)
class XCN:
    """A person: id, family, given names, suffix, prefix, assigning authority, types."""

    id: str | None = None
    family: str | None = None
    given: tuple[str, ...] = ()
    suffix: str | None = None
    prefix: str | None = None
    authority_namespace: str | None = None
    authority_oid: str | None = None
    name_type: str | None = None
    id_type: str | None = None

    def to_hl7(self) -> str:
        return xcn_to_hl7(
            self.id,
            self.family,
            self.given,
            self.suffix,
            self.prefix,
            self.authority_namespace,
            self.authority_oid,
            self.name_type,
            self.id_type,
        )


def xcn_to_hl7(
    id: str | None,
    family: str | None,
    given: tuple[str, ...],
    suffix: str | None,
    prefix: str | None,
    authority_namespace: str | None,
    authority_oid: str | None,
    name_type: str | None,
    id_type: str | None,
) -> str:
    """`XCN(...).to_hl7()` without building the XCN: an ITI-18 LeafClass answer writes one
    per author of every entry."""
    authority = ""
    if authority_oid or authority_namespace:
        authority = f"{authority_namespace or ''}&{authority_oid or ''}&ISO"
    components = [
        id,
        family,
        given[0] if given else None,
        " ".join([g for g in given[1:] if g]) or None,
        suffix,
        prefix,
        None,
        None,
        authority,
        name_type,
        None,
        None,
        id_type,
    ]
    return _join(components)


def parse_xcn(text: str) -> XCN:
    c = _components(text, 13)
    authority = c[8].split("&") + ["", "", ""]
    given = tuple(g for g in (c[2], c[3]) if g)
    return XCN(
        id=c[0] or None,
        family=c[1] or None,
        given=given,
        suffix=c[4] or None,
        prefix=c[5] or None,
        authority_namespace=authority[0] or None,
        authority_oid=authority[1] or None,
        name_type=c[9] or None,
        id_type=c[12] or None,
    )


@dataclass(frozen=True, slots=True)
class XON:
    """An organization: name, assigning authority OID, identifier type code, identifier."""

    name: str | None = None
    authority_oid: str | None = None
    id_type: str | None = None
    id: str | None = None

    def to_hl7(self) -> str:
        authority = f"&{self.authority_oid}&ISO" if self.authority_oid else None
        return _join(
            [self.name, None, None, None, None, authority, self.id_type, None, None, self.id]
        )


def parse_xon(text: str) -> XON:
    c = _components(text, 10)
    authority = c[5].split("&") + ["", "", ""]
    return XON(
        name=c[0] or None,
        authority_oid=authority[1] or None,
        id_type=c[6] or None,
        id=c[9] or None,
    )


def _components(text: str, count: int) -> list[str]:
    parts = text.split("^")
    return parts + [""] * (count - len(parts))


def _join(components: list[str | None]) -> str:
    text = "^".join([c or "" for c in components])
    return text.rstrip("^")


# Times: YYYYMMDD[hhmm[ss]] (UTC), the form the reference fixes for submissions.
# ASCII digits (`\d` also reads fullwidth and Arabic-Indic ones), matched whole (`$` let a
# trailing newline through).
_XDS_TIME = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})(?:([0-9]{2})([0-9]{2})(?:([0-9]{2}))?)?")


def xds_time_error(text: str | None) -> str | None:
    """None when `text` is a valid YYYYMMDD[hhmm[ss]] time, else a message."""
    if not text:
        return "empty time"
    match = _XDS_TIME.fullmatch(text)
    if not match:
        return f"{text!r} is not of the form YYYYMMDD[hhmm[ss]]"
    year, month, day, hour, minute, second = match.groups()
    try:
        # 31 February or 29 February of a common year passed the month and day bounds and
        # were refused after mapping under a FHIR path, not the slot's name.
        datetime(int(year), int(month), int(day))
    except ValueError:
        return f"{text!r} has an impossible month or day"
    if hour is not None and (int(hour) > 23 or int(minute) > 59 or (second and int(second) > 59)):
        return f"{text!r} has an impossible hour, minute or second"
    return None


def xds_time_to_fhir(text: str) -> str:
    """YYYYMMDD[hhmm[ss]] (UTC) -> FHIR dateTime (seconds added when only minutes are given)."""
    match = _XDS_TIME.fullmatch(text)
    if not match:
        raise ValueError(f"not an XDS time: {text!r}")
    year, month, day, hour, minute, second = match.groups()
    if hour is None:
        return f"{year}-{month}-{day}"
    return f"{year}-{month}-{day}T{hour}:{minute}:{second or '00'}Z"


_FHIR_DATETIME = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def fhir_to_xds_time(text: str) -> str:
    """FHIR date/dateTime/instant -> YYYYMMDD[hhmmss] in UTC (XDS times are UTC)."""
    match = _FHIR_DATETIME.match(text)
    if not match:
        raise ValueError(f"not a FHIR dateTime: {text!r}")
    year, month, day, hour, minute, second, zone = match.groups()
    if hour is None:
        return f"{year}{month or ''}{day or ''}"
    # A leap second (`23:59:60`, FHIR-valid, refused at write since, `resources.model`) stored
    # before is spelled as the last second XDS and datetime() can hold: it made every ITI-18
    # LeafClass answer of its record an internal error.
    second = "59" if second == "60" else second
    # datetime() still checks the date; a UTC time is then its own digits, which spares the
    # arithmetic on every time of an ITI-18 answer.
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
    if not zone or zone == "Z":
        return f"{year}{month}{day}{hour}{minute}{second or '00'}"
    sign = 1 if zone[0] == "+" else -1
    offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        moment = moment - sign * offset
    except OverflowError:
        # An instant its zone moves past year 9999 or before year 1 (`9999-12-31T23:59:59
        # -14:00`, FHIR-valid) made every ITI-18 LeafClass answer of its record an internal
        # error: held at that end of the calendar, as the access rules hold it.
        return "99991231235959" if sign < 0 else "00010101000000"
    # Written digit by digit: strftime writes a year before 1000 without its leading zeros
    # (`0999` as `999`), a time XDS reads as another one.
    return (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"
        f"{moment.hour:02d}{moment.minute:02d}{moment.second:02d}"
    )
