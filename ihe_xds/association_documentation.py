"""Association Documentation (ITI TF-3 4.2.2.2): the coded reason given on a relationship.

A document relationship Association (RPLC, APND, XFRM, XFRM_RPLC, signs) may carry a
Classification of scheme ASSOCIATION_DOCUMENTATION (urn:uuid:abd807a3-...) labelling it,
for instance why a document was replaced: nodeRepresentation the code, a codingScheme Slot,
a Name the display. XDS defines it on those associations only (the NIST toolkit's test 12370
expects a HasMember so labelled to be refused), and no other Classification on an
Association: either is refused (XDSRegistryMetadataError naming the Association and the
scheme) rather than read and dropped (issue #19, "No silent loss").

Kept: on the FHIR side a document relationship is a DocumentReference.relatesTo (two for an
XFRM_RPLC); each Association Documentation becomes one extension `EXT_ASSOCIATION_DOCUMENTATION`
(valueCoding) on it, and the backward mapping writes the Classification again in ITI-18
answers (GetAssociations, GetRelatedDocuments, GetSubmissionSetAndContents). MHD clients
read it there and may send it the same way in an ITI-65.
"""

from __future__ import annotations

from fhir_server.resources.profiles import PROFILE_BASE
from ihe_xds.codes import scheme_for_system, system_for_scheme
from ihe_xds.ebrim import Association, AssociationClassification, Coded
from ihe_xds.errors import XDS_REGISTRY_METADATA_ERROR, RegistryError, registry_error
from ihe_xds.vocabulary import ASSOCIATION_DOCUMENTATION, DOCUMENT_RELATIONSHIPS

EXT_ASSOCIATION_DOCUMENTATION = PROFILE_BASE + "xds-association-documentation"
_SECTION = "ITI TF-3 4.2.2.2"


def _short(association_type: str) -> str:
    return association_type.rsplit(":", 1)[-1] or "(none)"


def association_problems(association: Association) -> list[RegistryError]:
    """Why the Classifications of `association` cannot be accepted (empty: all can)."""
    problems = []
    where = f"Association {association.id}"
    for classification in association.classifications:
        scheme, coded = classification.scheme, classification.coded
        location = f"{where} Classification {scheme or '(no classificationScheme)'}"
        if scheme != ASSOCIATION_DOCUMENTATION:
            problems.append(
                registry_error(
                    XDS_REGISTRY_METADATA_ERROR,
                    f"classificationScheme {scheme!r} is not defined on an Association; the only "
                    f"one is Association Documentation {ASSOCIATION_DOCUMENTATION} ({_SECTION})",
                    location,
                )
            )
        elif association.type not in DOCUMENT_RELATIONSHIPS:
            problems.append(
                registry_error(
                    XDS_REGISTRY_METADATA_ERROR,
                    f"Association Documentation ({scheme}) is allowed on document relationships "
                    f"(RPLC, APND, XFRM, XFRM_RPLC, signs) only, not on this "
                    f"{_short(association.type)} Association ({_SECTION})",
                    location,
                )
            )
        elif not coded.code:
            problems.append(
                registry_error(
                    XDS_REGISTRY_METADATA_ERROR,
                    "Association Documentation without nodeRepresentation (the code)",
                    location,
                )
            )
        elif not coded.scheme:
            problems.append(
                registry_error(
                    XDS_REGISTRY_METADATA_ERROR,
                    f"Association Documentation code {coded.code} without codingScheme Slot",
                    location,
                )
            )
    return problems


def extensions_of(association: Association) -> list[dict]:
    """The relatesTo extensions carrying the Association Documentation of `association`."""
    extensions = []
    for classification in association.classifications:
        if classification.scheme != ASSOCIATION_DOCUMENTATION:
            continue  # refused by association_problems; never stored
        coded = classification.coded
        coding: dict = {"code": coded.code}
        system = system_for_scheme(coded.scheme)
        if system:
            coding = {"system": system, **coding}
        if coded.display:
            coding["display"] = coded.display
        extensions.append({"url": EXT_ASSOCIATION_DOCUMENTATION, "valueCoding": coding})
    return extensions


def classifications_of(relation: dict) -> list[AssociationClassification]:
    """The Association Documentation a stored relatesTo carries, in order: well-formed ones
    only (a valueCoding with a code), so an ITI-18 answer never carries an empty code."""
    found = []
    for extension in relation.get("extension") or []:
        if not isinstance(extension, dict) or extension.get("url") != EXT_ASSOCIATION_DOCUMENTATION:
            continue
        coding = extension.get("valueCoding")
        if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
            continue
        if not coding["code"]:
            continue
        found.append(
            AssociationClassification(
                ASSOCIATION_DOCUMENTATION,
                Coded(
                    code=coding["code"],
                    scheme=scheme_for_system(coding.get("system")),
                    display=coding.get("display"),
                ),
            )
        )
    return found


__all__ = [
    "EXT_ASSOCIATION_DOCUMENTATION",
    "association_problems",
    "classifications_of",
    "extensions_of",
]
