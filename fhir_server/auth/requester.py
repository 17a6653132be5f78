"""Claims -> Requester: the one place that decides who is asking.

Both faces come here: the REST face with a validated token's claims, the XDS face with the
claims a VIHF assertion's attributes map to (fhir_server.auth.vihf). The access policy then
never knows which face a request came through.

Which actor a set of claims names, in order:
1. `extensions.ihe_iua.national_provider_identifier` -> practitioner (IdNat_PS). A
   `fhirUser` of Patient/x alongside it is the patient in context, not the user.
2. `fhirUser` Patient/x -> patient x; RelatedPerson/x -> representative x.
3. no `fhirUser`, and `system/` scopes -> system (client credentials), named by client_id.
Anything else (e.g. fhirUser Practitioner/x with no IdNat_PS) is refused: a practitioner
the access rules cannot identify by IdNat_PS could never be checked against a Consent.

The values the rules compare are validated here, never trimmed (`auth.identifiers`): the
IdNat_PS, the patient in context (`patient`, a Patient id) and the patient's INS
(`extensions.dmp.patient_identifier`, `urn:oid:<INS OID>|<INS>`, which a VIHF's resource-id
maps to). A malformed one makes the credentials unacceptable: the request is bound to the
patient they name (`service.gate`), so a value that could not be resolved must not quietly
leave it unbound.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from fhir_server.access.policy.tables import PAYER_TYPES, RECORD_ADMIN_TYPES
from fhir_server.access.requester import AccessMode, ActorKind, Requester
from fhir_server.auth.identifiers import fhir_id_error, idnat_ps_error, ins_token
from fhir_server.auth.tokens import AuthenticationError
from fhir_server.resources.normal_form import NormalForm, default_aliases, fold
from fhir_server.terminology import (
    OID_TRE_R38_SPECIALTY,
    PURPOSE_BY_MODE,
    SYSTEM_ACCESS_MODE,
    SYSTEM_IDNAT_STRUCT,
    SYSTEM_PROFESSION,
)

# Our extension claims (decided here): extensions.dmp.{access_mode, access_reason, specialty,
# organization_type}.
DMP_EXTENSION = "dmp"
IUA_EXTENSION = "ihe_iua"


def _object(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AuthenticationError(f"token claim {name} must be an object")
    return value


def _text(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise AuthenticationError(f"token claim {name} must be a string")
    return value


def _codings(value: Any, name: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise AuthenticationError(f"token claim {name} must be a list of codings")
    codings = [c for c in value if isinstance(c, Mapping)]
    if len(codings) != len(value):
        raise AuthenticationError(f"token claim {name} must be a list of codings")
    return codings


_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")


def _reference(fhir_user: str | None, base_url: str | None) -> tuple[str | None, str | None]:
    """fhirUser may be relative (Patient/1) or absolute on this server's base
    (https://x/fhir/Patient/1, in any spelling the normal form reads as this base). An
    absolute one on another base names a user of another server: as for any foreign
    reference (`resources.normal_form`), it names no local Patient or RelatedPerson and is
    refused rather than read as the local resource with the same id."""
    if not fhir_user:
        return None, None
    if "://" in fhir_user[:8]:
        local = NormalForm(base_url).local_reference(fhir_user) if base_url else fhir_user
        if "://" in local[:8]:
            raise AuthenticationError(
                f"token claim fhirUser {fhir_user!r} names a resource of another server "
                f"than this one ({base_url or 'no base configured'})"
            )
        fhir_user = local
    # Exactly `Type/id`: read by its last two segments, a fhirUser with anything before them
    # (a space before another server's URL, one slash after the scheme, a scheme-relative
    # `//host/...`, another prefix) named the local resource with the same id.
    parts = fhir_user.rstrip("/").split("/")
    if len(parts) != 2 or not _RESOURCE_TYPE.fullmatch(parts[0]) or fhir_id_error(parts[1]):
        raise AuthenticationError("token claim fhirUser must be a reference Type/id")
    return parts[0], parts[1]


def _one_code(codings: list[Mapping[str, Any]], system: str, what: str) -> str | None:
    """The code of `system` the codings give, or None; AuthenticationError when they give
    two different ones: read as the first, the order of the claims chose it (fail closed)."""
    codes = {
        c["code"] for c in codings if c.get("system") == system and isinstance(c.get("code"), str)
    }
    if len(codes) > 1:
        raise AuthenticationError(f"the credentials name more than one {what}: {sorted(codes)}")
    return next(iter(codes), None)


_MODE_FORM = (
    f"access mode (purpose_of_use, TRE_R248 {SYSTEM_ACCESS_MODE}) must be normal, "
    "bris_de_glace or centre_15"
)
# The codes that say an emergency access in another spelling than TRE_R248's: its codes, and
# the v3-ActReason codes the audit writes for those modes (BTG, ETREAT), compared in any case.
_EMERGENCY = (AccessMode.BRIS_DE_GLACE, AccessMode.CENTRE_15)
_MODE_LOOKALIKES = frozenset(
    code.casefold() for mode in _EMERGENCY for code in (mode.value, PURPOSE_BY_MODE[mode.value])
)


def _purpose_mode(coding: Mapping[str, Any]) -> str | None:
    """The TRE_R248 code of one purpose_of_use coding (its system in any spelling of the
    alias table), or None for a purpose of another system. A purpose that says an access mode
    the rules would not read (a near miss of TRE_R248's system, a mode code under another
    system or none, a TRE_R248 coding without its code) refuses the token: read as normal, a
    declared bris de glace or centre 15 would go unnotified and unaudited as such (R11, R12)."""
    system, code = coding.get("system"), coding.get("code")
    aliases = default_aliases()
    if isinstance(system, str) and aliases.near_miss(system) is not None:
        raise AuthenticationError(f"{_MODE_FORM}: system {system!r} is a near miss")
    if isinstance(system, str) and aliases.canonical(system) == SYSTEM_ACCESS_MODE:
        if not isinstance(code, str):
            raise AuthenticationError(f"{_MODE_FORM}: a TRE_R248 purpose needs its code")
        return code
    if isinstance(code, str) and code.strip().casefold() in _MODE_LOOKALIKES:
        raise AuthenticationError(f"{_MODE_FORM}: {code!r} under system {system!r}")
    return None


def _access_mode(iua: Mapping[str, Any], dmp: Mapping[str, Any]) -> AccessMode:
    """The access mode: the TRE_R248 purpose_of_use, else `extensions.dmp.access_mode`, else
    normal. Two modes that disagree (two purposes, or a purpose and the extension) refuse
    the token rather than one of them being taken by order."""
    purposes = _codings(iua.get("purpose_of_use"), "purpose_of_use")
    codes = {code for code in map(_purpose_mode, purposes) if code is not None}
    declared = _text(dmp.get("access_mode"), "extensions.dmp.access_mode")
    if declared is not None:
        codes.add(declared)
    if len(codes) > 1:
        raise AuthenticationError(f"{_MODE_FORM}: the token names several ({sorted(codes)})")
    if not codes:
        return AccessMode.NORMAL
    try:
        return AccessMode(codes.pop())
    except ValueError:
        raise AuthenticationError(_MODE_FORM) from None


def _organization_id(value: str | None) -> str | None:
    """`urn:oid:1.2.250.1.71.4.2.2|1000000001` -> `1000000001` (the IdNat_Struct).

    The practitioner acts for the organization it names (its organisational mailbox), which
    is known by its IdNat_Struct: an identifier of another system, or of none, may carry the
    same digits and is refused rather than read as one (the system in any spelling of the
    alias table)."""
    if value is None:
        return None
    system, bar, identifier = value.rpartition("|")
    if not bar or not identifier or default_aliases().canonical(system) != SYSTEM_IDNAT_STRUCT:
        raise AuthenticationError(
            f"token claim subject_organization_id must be {SYSTEM_IDNAT_STRUCT}|<IdNat_Struct>"
        )
    return identifier


# The organization types the rules name (R05 payers, R15 record administrators).
RULED_ORGANIZATION_TYPES = PAYER_TYPES | RECORD_ADMIN_TYPES


def _folded_type(value: str) -> str:
    return "_".join(value.replace("-", " ").replace("_", " ").casefold().split())


_RULED_BY_FOLDED = {_folded_type(t): t for t in RULED_ORGANIZATION_TYPES}


def organization_type(value: str | None) -> str | None:
    """The organization type as the rules compare it, exactly.

    A type the rules name, spelled otherwise (`Employer`, `mutual-insurer`, `health_insurer `),
    refuses the credentials: read as written it was no payer, so R05 did not refuse an
    employer's or an insurer's read of a Patient, nor its deposits (fail closed). A type the
    rules do not name (hospital, laboratory ...) is kept as written."""
    if value is None:
        return None
    ruled = _RULED_BY_FOLDED.get(_folded_type(value))
    if ruled is not None and ruled != value:
        raise AuthenticationError(
            f"organization type {value!r} must be spelled {ruled!r} (extensions.dmp."
            "organization_type)"
        )
    return value


def _checked(value: str | None, problem: str | None, name: str) -> str | None:
    if value is not None and problem is not None:
        raise AuthenticationError(f"token claim {name}: {problem}")
    return value


def _context_patient(claims: Mapping[str, Any]) -> str | None:
    """The SMART patient context (`patient`): a Patient id, validated."""
    value = _text(claims.get("patient"), "patient")
    return _checked(value, fhir_id_error(value), "patient")


def _patient_identifier(dmp: Mapping[str, Any]) -> str | None:
    """The patient's INS in context (`extensions.dmp.patient_identifier`), validated."""
    name = "extensions.dmp.patient_identifier"
    value = _text(dmp.get("patient_identifier"), name)
    return _checked(value, ins_token(value)[1] if value is not None else None, name)


def _national_provider_identifier(iua: Mapping[str, Any]) -> str | None:
    """The practitioner's IdNat_PS, validated: never trimmed, never partly accepted."""
    name = "extensions.ihe_iua.national_provider_identifier"
    value = iua.get("national_provider_identifier")
    if value is None or value == "":
        return None
    return _checked(_text(value, name), idnat_ps_error(value), f"{name} (IdNat_PS)")


def _subject_roles(value: Any) -> list[Mapping[str, Any]]:
    """The subject_role codings, each system in its canonical spelling (the alias table).

    R13 reads the TRE_G15 profession as the role under `urn:oid:1.2.250.1.71.1.2.7` and the
    specialty as any other role. TRE_G15 under its NOS URL or bare OID was read as the
    specialty: a token naming `21` (pharmacien) under the OID and `10` (médecin) under the
    URL was a pharmacien, the other order a médecin, where the VIHF face refuses two
    professions. Every spelling is now the profession; a near miss of a known system (another
    case, scheme or a trailing slash) refuses the credentials (fail closed)."""
    aliases = default_aliases()
    roles = []
    for coding in _codings(value, "subject_role"):
        system = coding.get("system")
        if isinstance(system, str):
            missed = aliases.near_miss(system)
            if missed is not None:
                raise AuthenticationError(
                    f"token claim subject_role: system {system!r} is a near miss of "
                    f"{missed.name} ({missed.canonical})"
                )
            coding = {**coding, "system": aliases.canonical(system)}
        roles.append(coding)
    return roles


# The specialty code systems the habilitation matrix reads (`HabilitationMatrix.roles_of`
# reads a specialty as its TRE_R01 savoir-faire code, J65's): TRE_R01 itself, and TRE_R38
# (spécialités ordinales, the VIHF's specialty Role, whose codes are the same SMxx codes).
_NOS = "https://mos.esante.gouv.fr/NOS/"
SPECIALTY_SYSTEMS = frozenset(
    {
        f"{_NOS}TRE_R01-EnsembleSavoirFaire-CISIS/FHIR/TRE-R01-EnsembleSavoirFaire-CISIS",
        f"{_NOS}TRE_R38-SpecialiteOrdinale/FHIR/TRE-R38-SpecialiteOrdinale",
        f"urn:oid:{OID_TRE_R38_SPECIALTY}",
        OID_TRE_R38_SPECIALTY,
    }
)
# TRE_G16 (professions en formation: students): J65 has its codes, the matrix no row for
# them, and its codes are TRE_G15's (10, 21, 40, 50).
SYSTEM_STUDENT_PROFESSION = f"{_NOS}TRE_G16-ProfessionFormation/FHIR/TRE-G16-ProfessionFormation"
_SPECIALTY_FOLDS = {fold(s): s for s in SPECIALTY_SYSTEMS}


def _is_specialty_system(system: Any) -> bool:
    """Whether `system` is an accepted spelling of TRE_R01 / TRE_R38 (`urn:oid:` in any
    case); a near miss of one (another case, scheme, a trailing slash) refuses the
    credentials; TRE_G16 in any spelling refuses them (`_specialty`)."""
    if not isinstance(system, str):
        return False
    if system in SPECIALTY_SYSTEMS or (
        system[:8].lower() == "urn:oid:" and system[8:] in SPECIALTY_SYSTEMS
    ):
        return True
    folded = fold(system)
    if folded == fold(SYSTEM_STUDENT_PROFESSION):
        raise AuthenticationError(
            "token claim subject_role: a TRE_G16 profession en formation (student) is no "
            "role the habilitation matrix has: refused, not read as a specialty"
        )
    if folded in _SPECIALTY_FOLDS:
        raise AuthenticationError(
            f"token claim subject_role: system {system!r} is a near miss of "
            f"{_SPECIALTY_FOLDS[folded]}"
        )
    return False


def _specialty(roles: list[Mapping[str, Any]], dmp: Mapping[str, Any]) -> str | None:
    """The practitioner's specialty: `extensions.dmp.specialty`, or the code of a
    subject_role of a specialty system the matrix reads (TRE_R01, or a VIHF's TRE_R38 Role).

    R13 reads the specialty's J65 roles: two different ones (two roles, or a role and the
    extension) were read as the extension or the first role, so that the order of the claims
    chose the document types served. They refuse the credentials.

    Any role whose system was not TRE_G15 used to be read as a TRE_R01 specialty code, so a
    TRE_G16 student profession `10`, or a TRE_R85 role, was looked up as a savoir-faire.
    Now, as for a purpose_of_use (`_purpose_mode`): a role of a system the rules do not read
    (TRE_R85, TRE_R21, a structure's own codes...) is ignored, because a specialty only adds
    to its profession's row (`HabilitationMatrix.readable`), so ignoring one gives fewer
    document types, never more; what the rules would misread is refused: a near miss of a
    specialty system, and TRE_G16, whose codes are TRE_G15's and for which the matrix has no
    row (read as the profession it would give a student a professional's types)."""
    codes = {
        c["code"]
        for c in roles
        if _is_specialty_system(c.get("system")) and isinstance(c.get("code"), str) and c["code"]
    }
    declared = _text(dmp.get("specialty"), "extensions.dmp.specialty")
    if declared is not None:
        codes.add(declared)
    if len(codes) > 1:
        raise AuthenticationError(f"the credentials name more than one specialty: {sorted(codes)}")
    return next(iter(codes), None)


def requester_from_claims(claims: Mapping[str, Any], base_url: str | None = None) -> Requester:
    """The Requester named by validated claims; AuthenticationError if they name nobody.
    `base_url`: this server's FHIR base, on which an absolute `fhirUser` must stand."""
    extensions = _object(claims.get("extensions"), "extensions")
    iua = _object(extensions.get(IUA_EXTENSION), "extensions.ihe_iua")
    dmp = _object(extensions.get(DMP_EXTENSION), "extensions.dmp")
    scope = _text(claims.get("scope"), "scope") or ""
    scopes = tuple(scope.split())
    client_id = _text(claims.get("client_id"), "client_id")
    common: dict[str, Any] = {
        "scopes": scopes,
        "client_id": client_id,
        "token_id": _text(claims.get("jti"), "jti"),
        "organization_type": organization_type(
            _text(dmp.get("organization_type"), "extensions.dmp.organization_type")
        ),
        "access_reason": _text(dmp.get("access_reason"), "extensions.dmp.access_reason"),
    }
    user_type, user_id = _reference(_text(claims.get("fhirUser"), "fhirUser"), base_url)
    context_patient = _context_patient(claims)
    npi = _national_provider_identifier(iua)
    if user_type == "Patient" and context_patient not in (None, user_id):
        # A patient's own token, or a practitioner's with a Patient fhirUser, naming another
        # patient in context: the patient's token was read as its fhirUser, the
        # practitioner's as its `patient`, the other one ignored (fail closed).
        raise AuthenticationError("token claims fhirUser and patient name two different patients")
    if npi is not None and user_type not in (None, "Patient"):
        raise AuthenticationError(
            f"a practitioner token (IdNat_PS) with a fhirUser of type {user_type} names two users"
        )

    if npi is not None:
        roles = _subject_roles(iua.get("subject_role"))
        profession = _one_code(roles, SYSTEM_PROFESSION, "subject_role profession (TRE_G15)")
        if profession is None:
            raise AuthenticationError(
                "practitioner token needs a subject_role profession (TRE_G15)"
            )
        specialty = _specialty(roles, dmp)
        extra = {
            k: v
            for k, v in (
                ("person_id", iua.get("person_id")),
                ("home_community_id", iua.get("home_community_id")),
                ("patient_identifier", _patient_identifier(dmp)),
            )
            if isinstance(v, str) and v
        }
        return Requester(
            kind=ActorKind.PRACTITIONER,
            subject_id=npi,
            display_name=_text(iua.get("subject_name"), "subject_name") or "",
            profession=profession,
            specialty=specialty,
            organization_id=_organization_id(
                _text(iua.get("subject_organization_id"), "subject_organization_id")
            ),
            organization_name=_text(iua.get("subject_organization"), "subject_organization"),
            access_mode=_access_mode(iua, dmp),
            patient_id=context_patient or (user_id if user_type == "Patient" else None),
            extra=extra,
            **common,
        )
    name = _text(claims.get("name"), "name") or ""
    # The INS in context binds a representative or a system as it binds a practitioner
    # (`access.binding`): it was read for practitioners only, so a system token naming
    # patient B's INS deposited in, and read, any record.
    ins = _patient_identifier(dmp)
    bound = {"patient_identifier": ins} if ins else {}
    if user_type == "Patient":
        return Requester(
            kind=ActorKind.PATIENT,
            subject_id=user_id or "",
            display_name=name,
            patient_id=user_id,
            **common,
        )
    if user_type == "RelatedPerson":
        return Requester(
            kind=ActorKind.REPRESENTATIVE,
            subject_id=user_id or "",
            display_name=name,
            patient_id=context_patient,
            extra=bound,
            **common,
        )
    if user_type is not None:
        raise AuthenticationError(
            f"fhirUser of type {user_type} is not an actor here; practitioners are identified"
            " by extensions.ihe_iua.national_provider_identifier"
        )
    if any(s.startswith("system/") for s in scopes):
        subject = client_id or _text(claims.get("sub"), "sub")
        if not subject:
            raise AuthenticationError("system token needs client_id")
        return Requester(
            kind=ActorKind.SYSTEM,
            subject_id=subject,
            display_name=name or subject,
            patient_id=context_patient,
            extra=bound,
            **common,
        )
    raise AuthenticationError("token names no actor (fhirUser, IdNat_PS or system scopes)")
