"""The identifiers a token or a VIHF carries, checked before any rule compares them.

The access rules compare the practitioner's IdNat_PS with the ids a Consent or
`Patient.generalPractitioner` names, and bind a request to the patient the credentials name
(SMART `patient` claim, VIHF resource-id INS). A value that is compared must be compared as
it is: an IdNat_PS with a surrounding space would be stripped on one side (the Consent) and
not on the other (the token), and a blocked practitioner would get in (issue #18, finding
12). So these values are validated, never trimmed: a malformed one makes the credentials
unacceptable (401 on the FHIR face, a SOAP Fault on the XDS face), with a message saying
which form is expected. The IdNat_PS and INS checks are those of `resources.normal_form`,
which every resource's identifiers go through at the door: one function for both sides.
"""

from __future__ import annotations

import re

from fhir_server.resources.ins import nir_key_error
from fhir_server.resources.normal_form import idnat_ps_problem, ins_problem
from fhir_server.terminology import INS_OIDS, OID_INS_NIA

# FHIR `id` (R4 datatype): what the SMART `patient` claim holds.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# CX of the VIHF resource-id: `INS^^^&OID&ISO`, optionally followed by the type code (^NH).
_INS_CX = re.compile(r"([^\s^&|]+)\^\^\^&([0-9]+(?:\.[0-9]+)*)&ISO(?:\^[A-Z]{1,5})?")
INS_CX_FORM = "the patient's INS as INS^^^&OID&ISO (an INS OID, no spaces)"


def idnat_ps_error(value: object) -> str | None:
    """What is wrong with an IdNat_PS, or None: the very check a Consent's or a
    generalPractitioner's IdNat_PS gets at the door (`resources.normal_form`), so that the
    values the rules compare are accepted or refused alike on every side."""
    return idnat_ps_problem(value)


def fhir_id_error(value: object) -> str | None:
    """What is wrong with a FHIR resource id, or None."""
    if not isinstance(value, str) or not _FHIR_ID.fullmatch(value):
        return "must be a Patient id (1-64 letters, digits, '-' or '.')"
    return None


def ins_error(oid: str, value: str) -> str | None:
    """What is wrong with an INS (assigning authority OID and matricule), or None.

    The same checks as an XDS patientId and a Patient's INS identifier: an INS OID, and for
    the NIR-based ones (all but the NIA) the NIR's shape and key.
    """
    if oid not in INS_OIDS:
        return f"must name an INS assigning authority ({', '.join(INS_OIDS)})"
    problem = ins_problem(value)
    if problem is not None:
        return problem
    if oid != OID_INS_NIA:
        return nir_key_error(value)
    return None


def ins_token(value: object) -> tuple[str | None, str | None]:
    """(`urn:oid:OID|INS`, None) for a valid `system|value` INS, else (None, the problem)."""
    if not isinstance(value, str):
        return None, "must be a string urn:oid:<INS OID>|<INS>"
    system, bar, ins = value.partition("|")
    if not bar or not system.startswith("urn:oid:"):
        return None, "must be urn:oid:<INS OID>|<INS>"
    problem = ins_error(system.removeprefix("urn:oid:"), ins)
    return (None, problem) if problem else (value, None)


def ins_cx_token(cx: object) -> tuple[str | None, str | None]:
    """(`urn:oid:OID|INS`, None) for a valid resource-id CX, else (None, the problem)."""
    if not isinstance(cx, str):
        return None, f"must be {INS_CX_FORM}"
    found = _INS_CX.fullmatch(cx)
    if found is None:
        return None, f"must be {INS_CX_FORM}"
    value, oid = found.group(1), found.group(2)
    problem = ins_error(oid, value)
    return (None, problem) if problem else (f"urn:oid:{oid}|{value}", None)


__all__ = [
    "INS_CX_FORM",
    "fhir_id_error",
    "idnat_ps_error",
    "ins_cx_token",
    "ins_error",
    "ins_token",
]
