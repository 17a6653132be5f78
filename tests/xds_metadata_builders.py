"""An ITI-41 request carrying what issue #19 (point 3) found lost: extra metadata Slots on the
DocumentEntry and the SubmissionSet, several SubmissionSet authors (the first with two
institutions, a role, a specialty and a telecom; one an organisation only), several
intendedRecipients of each form ITI TF-3 4.2.3.3.6 gives, and DocumentEntry authors with two
institutions each. Built from `build_iti41(mtom=False)` by editing its envelope.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

from lxml import etree

from ihe_xds import vocabulary as v
from tests.xds_builders import (
    AUTHOR_INSTITUTION,
    AUTHOR_PERSON,
    AUTHOR_ROLE,
    AUTHOR_SPECIALTY,
    Iti41Request,
    build_iti41,
)

RIM = f"{{{v.NS_RIM}}}"
OTHER_INSTITUTION = "CLINIQUE DES LILAS^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^11234567891"
SECOND_PERSON = "810002222222^DURAND^Paul^^^Dr^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
LAB = "LABORATOIRE DU CENTRE^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^11234567892"
PHARMACIST = "21^Pharmacien^1.2.250.1.71.1.2.7"
EMAIL = "^^Internet^jean.martin@ch-test.fr"

# (person, institutions, roles, specialties, telecoms) of each SubmissionSet author.
SUBMISSION_SET_AUTHORS = [
    (
        AUTHOR_PERSON,
        [AUTHOR_INSTITUTION, OTHER_INSTITUTION],
        [AUTHOR_ROLE],
        [AUTHOR_SPECIALTY],
        [EMAIL],
    ),
    (SECOND_PERSON, [OTHER_INSTITUTION], [PHARMACIST], [], []),
    (None, [LAB], [], [], []),
]
ENTRY_AUTHORS = [
    (AUTHOR_PERSON, [AUTHOR_INSTITUTION, OTHER_INSTITUTION], [AUTHOR_ROLE], [AUTHOR_SPECIALTY], []),
    (SECOND_PERSON, [OTHER_INSTITUTION, LAB], [PHARMACIST], [], [EMAIL]),
]
# XON|XCN|XTN, XCN alone, XON alone, XTN alone (ITI TF-3 4.2.3.3.6).
INTENDED_RECIPIENTS = [
    "CH DESTINATAIRE^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^11234567893"
    "|810003333333^LEROY^Anne^^^Dr^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    "|^^Internet^anne.leroy@ch-dest.fr",
    "|810004444444^PETIT^Luc^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS",
    "CABINET DU PORT^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^11234567894",
    "||^^Internet^secretariat@cabinet-du-port.fr",
]
ENTRY_EXTRA = [
    ("urn:nist:extraDESlot", ["importantvalue"]),
    ("urn:dmp:test:codes", ["a", "b", "c"]),
]
SET_EXTRA = [("urn:nist:extraSSSlot", ["importantvalue"]), ("urn:foo:bar", ["baz", "qux"])]


def slot(parent: etree._Element, name: str, *values: str, index: int | None = None) -> None:
    element = etree.Element(f"{RIM}Slot", name=name)
    value_list = etree.SubElement(element, f"{RIM}ValueList")
    for value in values:
        etree.SubElement(value_list, f"{RIM}Value").text = value
    if index is None:
        parent.append(element)
    else:
        parent.insert(index, element)


def author(parent: etree._Element, owner: str, scheme: str, spec: tuple) -> None:
    person, institutions, roles, specialties, telecoms = spec
    element = etree.SubElement(
        parent,
        f"{RIM}Classification",
        id=f"cl-{uuid.uuid4().hex[:12]}",
        classificationScheme=scheme,
        classifiedObject=owner,
        nodeRepresentation="",
    )
    for name, values in (
        ("authorPerson", [person] if person else []),
        ("authorInstitution", institutions),
        ("authorRole", roles),
        ("authorSpecialty", specialties),
        ("authorTelecommunication", telecoms),
    ):
        if values:
            slot(element, name, *values)


def drop_authors(element: etree._Element, scheme: str) -> None:
    for child in element.findall(f"{RIM}Classification"):
        if child.get("classificationScheme") == scheme:
            element.remove(child)


def edited(request: Iti41Request, edit: Callable[[etree._Element], None]) -> Iti41Request:
    """`request` (inline, not MTOM) with its envelope changed by `edit(root)`."""
    root = etree.fromstring(request.envelope)
    edit(root)
    envelope = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return replace(request, envelope=envelope, body=envelope)


def rich(root: etree._Element) -> None:
    """Everything of the module docstring, on the request's DocumentEntries and SubmissionSet."""
    for entry in root.iter(f"{RIM}ExtrinsicObject"):
        drop_authors(entry, v.DE_AUTHOR)
        for spec in ENTRY_AUTHORS:
            author(entry, entry.get("id"), v.DE_AUTHOR, spec)
        for name, values in ENTRY_EXTRA:
            slot(entry, name, *values, index=0)
    package = root.find(f".//{RIM}RegistryPackage")
    drop_authors(package, v.SS_AUTHOR)
    for spec in SUBMISSION_SET_AUTHORS:
        author(package, package.get("id"), v.SS_AUTHOR, spec)
    slot(package, "intendedRecipient", *INTENDED_RECIPIENTS, index=1)
    for name, values in SET_EXTRA:
        slot(package, name, *values, index=0)


def rich_iti41(**kwargs) -> Iti41Request:
    return edited(build_iti41(mtom=False, **kwargs), rich)
