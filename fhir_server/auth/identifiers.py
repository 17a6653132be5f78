"""The identifiers a token or a VIHF carries, checked before any rule compares them.

The access rules compare the practitioner's IdNat_PS with the ids a Consent or
`Patient.generalPractitioner` names, and bind a request to the patient the credentials name
(SMART `patient` claim, VIHF resource-id INS). A value that is compared must be compared as
it is: an IdNat_PS with a surrounding space would be stripped on one side (the Consent) and
not on the other (the token), and a blocked practitioner would get in (issue #18, finding
12). So these values are validated, never trimmed: a malformed one makes the credentials
unacceptable (401 on the FHIR face, a SOAP Fault on the XDS face), with a message saying
which form is expected and never echoing the value.
"""

from __future__ import annotations

import re

from fhir_server.resources.ins import nir_key_error
from fhir_server.terminology import INS_OIDS, OID_INS_NIA

# IdNat_PS (ANS, "identifiant national de personne physique"): a type digit and the id
# - 8 + RPPS (11 digits);
# - 0 + ADELI (9 characters; 2A / 2B for Corsica);
# - 1-7 + the structure's id (FINESS, SIREN, SIRET, cabinet) + "/" + the structure's own id.
_IDNAT_PS = re.compile(r"8\d{11}|0(?:\d{2}|2[AB])\d{7}|[1-7][0-9A-Z]{9,14}/[0-9A-Za-z._-]{1,40}")
IDNAT_PS_FORM = (
    "an IdNat_PS without spaces: 8 + the 11-digit RPPS, 0 + the ADELI number, or a type digit,"
    " the structure's id, '/' and the structure's own id"
)
# FHIR `id` (R4 datatype): what the SMART `patient` claim holds.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# CX of the VIHF resource-id: `INS^^^&OID&ISO`, optionally followed by the type code (^NH).
_INS_CX = re.compile(r"([^\s^&|]+)\^\^\^&([0-9]+(?:\.[0-9]+)*)&ISO(?:\^[A-Z]{1,5})?")
INS_CX_FORM = "the patient's INS as INS^^^&OID&ISO (an INS OID, no spaces)"


def idnat_ps_error(value: object) -> str | None:
    """What is wrong with an IdNat_PS, or None when it has one of the national forms."""
    if not isinstance(value, str) or not _IDNAT_PS.fullmatch(value):
        return f"must be {IDNAT_PS_FORM}"
    return None


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
    if not value or value != value.strip() or any(c.isspace() for c in value):
        return "must hold the INS matricule without spaces"
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
    "IDNAT_PS_FORM",
    "INS_CX_FORM",
    "fhir_id_error",
    "idnat_ps_error",
    "ins_cx_token",
    "ins_error",
    "ins_token",
]
