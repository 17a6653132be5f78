"""What an ITI-18 request names: the values of its slots that may name a registry object.

The ITI-18 AuditEvent keeps the request as asked (its base64 `query`), so a GetDocuments by
the uniqueId of a document hidden from its patient names that document in the patient's
trace, whether or not the query found it. Its event carries the labels of what these values
name (`AuditHooks.entities_named_by`). Read from the raw request, so that a slot the parser
ignored or refused, which the event shows all the same, counts too.
"""

from __future__ import annotations

from lxml import etree

from fhir_server.search.parameters import MAX_TESTS
from ihe_xds.stored_query.kinds import QUERIES
from ihe_xds.stored_query.parameters import (
    ASSOCIATION,
    CODE,
    METADATA_LEVEL,
    OBJECT_TYPE,
    PATIENT,
    STATUS,
    TIME,
    parse_value,
)
from ihe_xds.vocabulary import NS_RIM

# Slots of these kinds name no registry object (a patient, codes, times, statuses...): no
# lookup for them, the values of a FindDocuments.
_NAMES_NOTHING = frozenset({PATIENT, STATUS, CODE, TIME, OBJECT_TYPE, ASSOCIATION, METADATA_LEVEL})

# The most values a request may name and still be looked up, as many as a FHIR search may
# hold: the request is read raw, its size bounded by the body's alone (32 MB, a million
# values), and the parser takes 100 values a slot, so a query needs no more.
MAX_NAMED = MAX_TESTS


def checkable(values: list[str]) -> bool:
    """Whether the values a request names are few enough to be looked up. When they are
    not, its event keeps the query id but not the request (fail closed: nothing it holds
    goes unchecked into a trace)."""
    return len(values) <= MAX_NAMED


def named_values(body: etree._Element) -> list[str]:
    """The values of the request's slots that may name a document, a SubmissionSet or a
    Folder (by uniqueId or entryUUID), in order, once each."""
    found: list[str] = []
    for adhoc in body.iter(f"{{{NS_RIM}}}AdhocQuery"):
        definition = QUERIES.get((adhoc.get("id") or "").strip())
        params = definition.params if definition is not None else {}
        for slot in adhoc.iter(f"{{{NS_RIM}}}Slot"):
            if params.get((slot.get("name") or "").strip()) in _NAMES_NOTHING:
                continue
            for value in slot.iter(f"{{{NS_RIM}}}Value"):
                found += _values(value.text or "")
    return list(dict.fromkeys(value for value in found if value))


def _values(raw: str) -> list[str]:
    """The values one rim:Value holds, or its text as it is when it does not parse."""
    try:
        values, _ = parse_value(raw)
    except ValueError:
        return [raw.strip().strip("()").strip().strip("'")]
    return [value.strip() for value in values if isinstance(value, str)]
