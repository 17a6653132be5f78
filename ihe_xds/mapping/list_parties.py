"""SubmissionSet authors and intendedRecipients on the MHD SubmissionSet List, both ways.

XDS gives a SubmissionSet any number of authors (each a person, institutions, roles,
specialties, telecoms) and of intendedRecipients (ITI TF-3 4.2.3.3.1 and 4.2.3.3.6);
FHIR's List.source holds one reference. What MHD prescribes (IHE MHD 4.2,
IHE.MHD.Minimal.SubmissionSet) and what this module writes:

- the first author: `List.source`, a reference to the contained PractitionerRole /
  Practitioner, as DocumentReference.author is written (`parties.author_to_resources`); an
  author that is an organisation only goes in `source.extension:authorOrg`
  (EXT_AUTHOR_ORG, MHD's rule: R4 List.source cannot name an Organization);
- everything List.source cannot hold (the first author's other institutions, the later
  authors): one extension EXT_SUBMISSION_SET_AUTHOR (ours, valueReference) per reference,
  in the order DocumentReference.author would list them. The contained resources of one
  XDS author share the `a<n>-` id prefix, which groups them back into that author;
- each intendedRecipient (`XON|XCN|XTN`): the MHD extension `ihe-intendedRecipient`
  (0..*), one per contained resource: an Organization `r<n>-org` for the XON, a
  Practitioner `r<n>-person` for the XCN, the XTN as the telecom of the person (of the
  organisation when there is no person; of a Practitioner known only by it when there is
  neither). The `r<n>-` prefix groups them back into one value.

Backward, references without those prefixes (an MHD client's own contained ids) each stand
for one author or recipient, except that List.source and its authorOrg are one author (a
person and the organisation they write for). References to resources that are not
contained cannot be read into HL7 v2 values and are skipped.
"""

from __future__ import annotations

import re

from fhir_server.resources.profiles import PROFILE_BASE
from ihe_xds.ebrim import Author
from ihe_xds.mapping.parties import (
    author_to_resources,
    authors_from_references,
    organization_to_xon,
    practitioner_to_xcn,
    telecom_to_xtn,
    xcn_to_practitioner,
    xon_to_organization,
    xtn_to_telecom,
)

EXT_AUTHOR_ORG = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-authorOrg"
EXT_INTENDED_RECIPIENT = (
    "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-intendedRecipient"
)
EXT_SUBMISSION_SET_AUTHOR = PROFILE_BASE + "xds-submissionset-author"
_RECIPIENT_GROUP = re.compile(r"^(r\d+-)")
_PERSON_TYPES = ("Practitioner", "Patient", "RelatedPerson")


# --------------------------------------------------------------------------- authors


def authors_to_list(authors: list[Author]) -> tuple[list[dict], dict | None, list[dict]]:
    """(contained resources, List.source or None, List extensions) for the authors."""
    contained: list[dict] = []
    references: list[list[dict]] = []
    for index, author in enumerate(authors):
        resources, refs = author_to_resources(author, index)
        contained += resources
        references.append(refs)
    source = None
    rest: list[dict] = []
    if references and references[0]:
        first, *others = references[0]
        first_author = authors[0]
        organisation_only = not (
            first_author.person
            or first_author.roles
            or first_author.specialties
            or first_author.telecoms
        )
        if organisation_only:
            source = {"extension": [{"url": EXT_AUTHOR_ORG, "valueReference": first}]}
        else:
            source = first
        rest += others
    for refs in references[1:]:
        rest += refs
    extensions = [{"url": EXT_SUBMISSION_SET_AUTHOR, "valueReference": ref} for ref in rest]
    return contained, source, extensions


def authors_from_list(list_resource: dict, contained: dict[str, dict]) -> list[Author]:
    """The XDS authors of a stored SubmissionSet List (module docstring)."""
    references: list[dict] = []
    keys: list[str | None] = []
    source = list_resource.get("source")
    if isinstance(source, dict):
        if source.get("reference"):
            references.append({"reference": source["reference"]})
            keys.append("source")
        for extension in source.get("extension") or []:
            if isinstance(extension, dict) and extension.get("url") == EXT_AUTHOR_ORG:
                references.append(extension.get("valueReference") or {})
                keys.append("source")
    for extension in list_resource.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == EXT_SUBMISSION_SET_AUTHOR:
            references.append(extension.get("valueReference") or {})
            keys.append(None)
    return authors_from_references(references, contained, keys)


# --------------------------------------------------------------------------- recipients


def recipients_to_list(recipients: list[str]) -> tuple[list[dict], list[dict]]:
    """(contained resources, List extensions) for the intendedRecipient values."""
    contained: list[dict] = []
    extensions: list[dict] = []
    for index, value in enumerate(recipients):
        organisation, _, rest = value.partition("|")
        person, _, telecom = rest.partition("|")
        prefix = f"r{index}-"
        resources = []
        org = xon_to_organization(organisation, prefix + "org") if organisation else None
        holder: dict | None = None
        if person or (telecom and org is None):
            holder = xcn_to_practitioner(person, prefix + "person") if person else None
            if holder is None:
                holder = {"resourceType": "Practitioner", "id": prefix + "person"}
        if org is not None:
            resources.append(org)
        if holder is not None:
            resources.append(holder)
        # with a telecom there is a holder, or else the organisation (see above)
        owner = holder if holder is not None else org
        if telecom and owner is not None:
            owner["telecom"] = [xtn_to_telecom(telecom)]
        for resource in resources:
            contained.append(resource)
            extensions.append(
                {
                    "url": EXT_INTENDED_RECIPIENT,
                    "valueReference": {"reference": f"#{resource['id']}"},
                }
            )
    return contained, extensions


def recipients_from_list(list_resource: dict, contained: dict[str, dict]) -> list[str]:
    """The XDS intendedRecipient values of a stored SubmissionSet List (module docstring)."""
    groups: dict[str, dict[str, dict]] = {}
    for position, extension in enumerate(list_resource.get("extension") or []):
        if not isinstance(extension, dict) or extension.get("url") != EXT_INTENDED_RECIPIENT:
            continue
        local = ((extension.get("valueReference") or {}).get("reference") or "").removeprefix("#")
        resource = contained.get(local)
        if resource is None:
            continue
        match = _RECIPIENT_GROUP.match(local)
        group = groups.setdefault(match.group(1) if match else f"ref{position}", {})
        kind = resource.get("resourceType")
        if kind == "Organization" and "org" not in group:
            group["org"] = resource
        elif kind in _PERSON_TYPES and "person" not in group:
            group["person"] = resource
    values = []
    for group in groups.values():
        org, person = group.get("org"), group.get("person")
        telecoms = (person or {}).get("telecom") or (org or {}).get("telecom") or []
        parts = [
            organization_to_xon(org) if org else "",
            practitioner_to_xcn(person) if person else "",
            telecom_to_xtn(telecoms[0]) if telecoms else "",
        ]
        value = "|".join(parts).rstrip("|")
        if value:
            values.append(value)
    return values


__all__ = [
    "EXT_AUTHOR_ORG",
    "EXT_INTENDED_RECIPIENT",
    "EXT_SUBMISSION_SET_AUTHOR",
    "authors_from_list",
    "authors_to_list",
    "recipients_from_list",
    "recipients_to_list",
]
