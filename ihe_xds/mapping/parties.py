"""XDS people and organisations as contained FHIR resources, both ways.

An XDS author (ITI TF-3 4.2.3.1.4: authorPerson XCN, authorInstitution XON, authorRole,
authorSpecialty, authorTelecommunication XTN) becomes contained Practitioner /
PractitionerRole / Organization resources with ids `a<n>-practitioner`, `a<n>-role`,
`a<n>-org<k>`; the `a<n>-` prefix groups them back into the same XDS author. authorRole /
authorSpecialty of the form `code^display^OID` become codings, anything else stays as
CodeableConcept.text (lossless either way).

Each conversion stands next to its inverse, so that a value read back is the value written.
The DocumentEntry mapping (`to_fhir`, `from_fhir`) and the SubmissionSet List's authors and
intendedRecipients (`list_parties`) all read this module; it reads none of them, which is
what keeps the two directions and `list_parties` out of an import cycle.
"""

from __future__ import annotations

import re

from ihe_xds.codes import is_oid, scheme_for_system, system_for_scheme
from ihe_xds.ebrim import Author
from ihe_xds.hl7v2 import XON, parse_xcn, parse_xon, xcn_to_hl7

SYSTEM_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
SYSTEM_FR_V2_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
_FRENCH_ID_TYPES = {
    "IDNPS",
    "IDNST",
    "INS-NIR",
    "INS-NIA",
    "INS-C",
    "RPPS",
    "ADELI",
    "FINEG",
    "FINEJ",
    "SIRET",
}


def id_type_concept(code: str | None) -> dict | None:
    """An identifier type code (HL7 v2 table 0203, or its French extension) as Identifier.type."""
    if not code:
        return None
    system = SYSTEM_FR_V2_0203 if code in _FRENCH_ID_TYPES else SYSTEM_V2_0203
    return {"coding": [{"system": system, "code": code}]}


def id_type_code(identifier: dict) -> str | None:
    """The identifier type code of an Identifier, the inverse of `id_type_concept`."""
    codings = (identifier.get("type") or {}).get("coding") or []
    return codings[0].get("code") if codings else None


def ce_to_concept(text: str) -> dict:
    """authorRole / authorSpecialty: `code^display^OID` -> coding, anything else -> text."""
    parts = text.split("^")
    if len(parts) == 3 and parts[0] and is_oid(parts[2]):
        coding = {"system": system_for_scheme(parts[2]), "code": parts[0]}
        if parts[1]:
            coding["display"] = parts[1]
        return {"coding": [coding]}
    return {"text": text}


def concept_to_ce(concept: dict) -> str:
    codings = concept.get("coding") or []
    if codings:
        coding = codings[0]
        return f"{coding.get('code', '')}^{coding.get('display', '')}^{scheme_for_system(coding.get('system')) or ''}"
    return concept.get("text", "")


def xtn_to_telecom(text: str) -> dict:
    parts = text.split("^")
    if len(parts) >= 4 and parts[2] == "Internet" and parts[3]:
        return {"system": "email", "value": parts[3]}
    return {"system": "other", "value": text}


def telecom_to_xtn(contact: dict) -> str:
    if contact.get("system") == "email":
        return f"^^Internet^{contact.get('value', '')}"
    return contact.get("value", "")


_NAME_USE = {"L": "official", "D": "usual"}
_NAME_USE_BACK = {v: k for k, v in _NAME_USE.items()}


def _identifier(value: str, authority_oid: str | None, id_type: str | None) -> dict:
    """The id of an XCN or XON, with its assigning authority and type, as an Identifier."""
    identifier: dict = {"value": value}
    if authority_oid:
        identifier = {"system": f"urn:oid:{authority_oid}", **identifier}
    if id_type:
        identifier["type"] = id_type_concept(id_type)
    return identifier


def xcn_to_practitioner(person: str, resource_id: str) -> dict:
    practitioner: dict = {"resourceType": "Practitioner", "id": resource_id}
    if "^" not in person:
        practitioner["name"] = [{"text": person}]
        return practitioner
    xcn = parse_xcn(person)
    if xcn.id:
        identifier = _identifier(xcn.id, xcn.authority_oid, xcn.id_type)
        if xcn.authority_namespace:
            identifier["assigner"] = {"display": xcn.authority_namespace}
        practitioner["identifier"] = [identifier]
    name: dict = {}
    if xcn.name_type in _NAME_USE:
        name["use"] = _NAME_USE[xcn.name_type]
    if xcn.family:
        name["family"] = xcn.family
    if xcn.given:
        name["given"] = list(xcn.given)
    if xcn.prefix:
        name["prefix"] = [xcn.prefix]
    if xcn.suffix:
        name["suffix"] = [xcn.suffix]
    if name:
        practitioner["name"] = [name]
    return practitioner


def practitioner_to_xcn(practitioner: dict) -> str:
    names = practitioner.get("name") or [{}]
    name = names[0]
    identifiers = practitioner.get("identifier") or []
    if not identifiers and set(name) <= {"text"} and name.get("text"):
        return name["text"]
    identifier = identifiers[0] if identifiers else {}
    system = identifier.get("system") or ""
    return xcn_to_hl7(
        id=identifier.get("value"),
        family=name.get("family"),
        given=tuple(name.get("given") or ()),
        suffix=(name.get("suffix") or [None])[0],
        prefix=(name.get("prefix") or [None])[0],
        authority_namespace=(identifier.get("assigner") or {}).get("display"),
        authority_oid=system[len("urn:oid:") :] if system.startswith("urn:oid:") else None,
        name_type=_NAME_USE_BACK.get(name.get("use")),
        id_type=id_type_code(identifier) if identifier else None,
    )


def xon_to_organization(institution: str, resource_id: str) -> dict:
    xon = parse_xon(institution)
    organization: dict = {"resourceType": "Organization", "id": resource_id}
    if xon.id:
        organization["identifier"] = [_identifier(xon.id, xon.authority_oid, xon.id_type)]
    if xon.name:
        organization["name"] = xon.name
    return organization


def organization_to_xon(organization: dict) -> str:
    identifiers = organization.get("identifier") or []
    identifier = identifiers[0] if identifiers else {}
    system = identifier.get("system") or ""
    return XON(
        name=organization.get("name"),
        authority_oid=system[len("urn:oid:") :] if system.startswith("urn:oid:") else None,
        id_type=id_type_code(identifier) if identifier else None,
        id=identifier.get("value"),
    ).to_hl7()


def author_to_resources(author: Author, index: int) -> tuple[list[dict], list[dict]]:
    """(contained resources, author references) for one XDS author."""
    prefix = f"a{index}-"
    contained: list[dict] = []
    practitioner_id = None
    if author.person:
        practitioner_id = prefix + "practitioner"
        contained.append(xcn_to_practitioner(author.person, practitioner_id))
    org_ids = []
    for k, institution in enumerate(author.institutions):
        org_id = f"{prefix}org{k}"
        org_ids.append(org_id)
        contained.append(xon_to_organization(institution, org_id))
    needs_role = bool(author.roles or author.specialties or author.telecoms) or (
        practitioner_id is not None and org_ids
    )
    references: list[dict] = []
    remaining_orgs = org_ids
    if needs_role:
        role: dict = {"resourceType": "PractitionerRole", "id": prefix + "role"}
        if practitioner_id:
            role["practitioner"] = {"reference": f"#{practitioner_id}"}
        if org_ids:
            role["organization"] = {"reference": f"#{org_ids[0]}"}
            remaining_orgs = org_ids[1:]
        if author.roles:
            role["code"] = [ce_to_concept(r) for r in author.roles]
        if author.specialties:
            role["specialty"] = [ce_to_concept(s) for s in author.specialties]
        if author.telecoms:
            role["telecom"] = [xtn_to_telecom(t) for t in author.telecoms]
        contained.append(role)
        references.append({"reference": f"#{prefix}role"})
    elif practitioner_id:
        references.append({"reference": f"#{practitioner_id}"})
    references += [{"reference": f"#{org_id}"} for org_id in remaining_orgs]
    return contained, references


# The "a<index>-" prefix of the contained resources one XDS author was written as.
_AUTHOR_GROUP = re.compile(r"^(a\d+-)")


def authors_from_references(
    references: list[dict], contained: dict[str, dict], keys: list[str | None] | None = None
) -> list[Author]:
    """XDS authors from author references: contained resources sharing an `a<n>-` id prefix
    are one author; any other reference is one author of its own, unless `keys` (one per
    reference) gives references the same key (List.source and its authorOrg)."""
    groups: dict[str, Author] = {}
    order: list[Author] = []
    for position, reference in enumerate(references):
        local = (reference.get("reference") or "").removeprefix("#")
        resource = contained.get(local)
        if resource is None:
            continue
        match = _AUTHOR_GROUP.match(local)
        forced = keys[position] if keys else None
        key = match.group(1) if match else (forced or f"ref{position}")
        author = groups.get(key)
        if author is None:
            author = groups[key] = Author()
            order.append(author)
        kind = resource.get("resourceType")
        if kind == "PractitionerRole":
            practitioner = contained.get(
                (resource.get("practitioner") or {}).get("reference", "").removeprefix("#")
            )
            if practitioner:
                author.person = practitioner_to_xcn(practitioner)
            organization = contained.get(
                (resource.get("organization") or {}).get("reference", "").removeprefix("#")
            )
            if organization:
                author.institutions.insert(0, organization_to_xon(organization))
            author.roles = [concept_to_ce(c) for c in resource.get("code") or []]
            author.specialties = [concept_to_ce(c) for c in resource.get("specialty") or []]
            author.telecoms = [telecom_to_xtn(t) for t in resource.get("telecom") or []]
        elif kind == "Practitioner":
            author.person = practitioner_to_xcn(resource)
        elif kind == "Organization":
            author.institutions.append(organization_to_xon(resource))
    return order
