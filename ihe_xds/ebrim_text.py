"""rim:ExtrinsicObject written straight to text, for ITI-18 LeafClass answers.

Building an lxml tree of about a hundred elements per DocumentEntry, only to serialise it a
moment later, was the largest cost of a FindDocuments answer (issue 6). `entry_text` writes
the same markup as `etree.tostring` writes for `ebrim.entry_to_element(entry)` once it sits
in the rim:RegistryObjectList of a query:AdhocQueryResponse (where `rim` is declared), byte
for byte: same elements and attribute order, same character escaping, UTF-8.

It only handles what it can write exactly: every value a `str` of characters XML allows.
Anything else (a value lxml would refuse or convert) raises `NotPlainText`, and the caller
builds the answer with lxml as before, so odd data keeps its former outcome.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ihe_xds.ebrim import (
    ENTRY_CODE_FIELDS,
    ENTRY_CODE_LIST_FIELDS,
    ENTRY_LIST_SLOT_FIELDS,
    ENTRY_SLOT_FIELDS,
    Author,
    Coded,
    DocumentEntry,
    StableIds,
)
from ihe_xds.vocabulary import (
    DE_AUTHOR,
    DE_LIMITED_METADATA,
    DE_PATIENT_ID,
    DE_UNIQUE_ID,
    EXTERNAL_IDENTIFIER_NAMES,
    OBJECT_TYPE_CLASSIFICATION,
    OBJECT_TYPE_EXTERNAL_IDENTIFIER,
)


class NotPlainText(Exception):
    """A value this writer cannot put in text exactly as lxml would; use the lxml path."""


# Characters outside XML 1.0 (lxml refuses them), and those libxml2 escapes.
_NOT_XML = "\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff"
_ATTRIBUTE_SPECIAL = re.compile(f'[{_NOT_XML}&<>"\\n\\r\\t]').search
_TEXT_SPECIAL = re.compile(f"[{_NOT_XML}&<>\\r]").search
_INVALID = re.compile(f"[{_NOT_XML}]").search

# Escaping is chained str.replace, "&" first (no later replacement writes an "&" that a
# former one would see): several times faster than str.translate with a mapping, which
# looks every character up in a dict. Values with "&" are common (CX patient ids).


def _attribute(value: object) -> str:
    if type(value) is not str:
        raise NotPlainText(f"attribute value of type {type(value).__name__}")
    if _ATTRIBUTE_SPECIAL(value) is None:
        return value
    if _INVALID(value) is not None:
        raise NotPlainText("a character XML does not allow")
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
        .replace("\t", "&#9;")
    )


def _text(value: object) -> str:
    if type(value) is not str:
        raise NotPlainText(f"text of type {type(value).__name__}")
    if _TEXT_SPECIAL(value) is None:
        return value
    if _INVALID(value) is not None:
        raise NotPlainText("a character XML does not allow")
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _slot(out: list[str], name: object, values: Iterable[object]) -> None:
    values = [v for v in values if v]
    if values:
        out.append(f'<rim:Slot name="{_attribute(name)}"><rim:ValueList>')
        for value in values:
            out.append(f"<rim:Value>{_text(value)}</rim:Value>")
        out.append("</rim:ValueList></rim:Slot>")


def _single_slot(out: list[str], name: str, value: object) -> None:
    """A one-value slot whose `name` is one of ours (nothing to escape)."""
    if value:
        out.append(
            f'<rim:Slot name="{name}"><rim:ValueList><rim:Value>{_text(value)}'
            "</rim:Value></rim:ValueList></rim:Slot>"
        )


def _localized(out: list[str], local: str, value: object) -> None:
    if value:
        out.append(f'<rim:{local}><rim:LocalizedString value="{_attribute(value)}"/></rim:{local}>')


def _element(out: list[str], tag: str, start: str, inner: list[str]) -> None:
    """Append `start` (a start tag without its ">") closed around `inner`, or "/>" if empty."""
    if inner:
        out.append(f"{start}>{''.join(inner)}</rim:{tag}>")
    else:
        out.append(f"{start}/>")


def _classification_start(
    ids: StableIds, owner_attribute: str, scheme: str, index: int, code: str
) -> str:
    return (
        f'<rim:Classification id="{ids(scheme, str(index))}"'
        f' objectType="{OBJECT_TYPE_CLASSIFICATION}" classificationScheme="{scheme}"'
        f' classifiedObject="{owner_attribute}" nodeRepresentation="{code}"'
    )


def _coded(
    out: list[str], ids: StableIds, owner_attribute: str, scheme: str, coded: Coded, index: int
) -> None:
    start = _classification_start(ids, owner_attribute, scheme, index, _attribute(coded.code))
    inner = ""
    if coded.scheme:
        inner = (
            '<rim:Slot name="codingScheme"><rim:ValueList><rim:Value>'
            f"{_text(coded.scheme)}</rim:Value></rim:ValueList></rim:Slot>"
        )
    if coded.display:
        inner += f'<rim:Name><rim:LocalizedString value="{_attribute(coded.display)}"/></rim:Name>'
    out.append(f"{start}>{inner}</rim:Classification>" if inner else f"{start}/>")


def _author(
    out: list[str], ids: StableIds, owner_attribute: str, author: Author, index: int
) -> None:
    start = _classification_start(ids, owner_attribute, DE_AUTHOR, index, "")
    inner: list[str] = []
    _single_slot(inner, "authorPerson", author.person)
    _slot(inner, "authorInstitution", author.institutions)
    _slot(inner, "authorRole", author.roles)
    _slot(inner, "authorSpecialty", author.specialties)
    _slot(inner, "authorTelecommunication", author.telecoms)
    _element(out, "Classification", start, inner)


def _external_id(
    out: list[str], ids: StableIds, owner_attribute: str, scheme: str, value: object
) -> None:
    if not value:
        return
    start = (
        f'<rim:ExternalIdentifier id="{ids(scheme)}"'
        f' objectType="{OBJECT_TYPE_EXTERNAL_IDENTIFIER}" registryObject="{owner_attribute}"'
        f' identificationScheme="{scheme}" value="{_attribute(value)}"'
    )
    inner: list[str] = []
    _localized(inner, "Name", EXTERNAL_IDENTIFIER_NAMES.get(scheme))
    _element(out, "ExternalIdentifier", start, inner)


def entry_text(entry: DocumentEntry) -> str:
    """The rim:ExtrinsicObject of `entry`, as serialised inside an AdhocQueryResponse.

    Raises NotPlainText when a value is not a str of XML characters.
    """
    owner_attribute = _attribute(entry.id)  # a str of XML characters from here on
    ids = StableIds.of(entry.id)  # the ids of its classifications and identifiers
    start = [f'<rim:ExtrinsicObject id="{owner_attribute}"']
    start.append(f' objectType="{_attribute(entry.object_type)}"')
    for name, value in (
        ("mimeType", entry.mime_type),
        ("status", entry.status),
        ("home", entry.home),
        ("lid", entry.logical_id),
    ):
        if value:
            start.append(f' {name}="{_attribute(value)}"')
    out: list[str] = []
    for slot_name, attr in ENTRY_SLOT_FIELDS:
        _single_slot(out, slot_name, getattr(entry, attr))
    for slot_name, attr in ENTRY_LIST_SLOT_FIELDS:
        _slot(out, slot_name, getattr(entry, attr))
    for slot in entry.extra_slots:
        _slot(out, slot.name, slot.values)
    _localized(out, "Name", entry.title)
    _localized(out, "Description", entry.comments)
    if entry.version:
        out.append(f'<rim:VersionInfo versionName="{_attribute(entry.version)}"/>')
    for index, author in enumerate(entry.authors):
        _author(out, ids, owner_attribute, author, index)
    for scheme, attr in ENTRY_CODE_FIELDS:
        coded = getattr(entry, attr)
        if coded is not None:
            _coded(out, ids, owner_attribute, scheme, coded, 0)
    for scheme, attr in ENTRY_CODE_LIST_FIELDS:
        for index, coded in enumerate(getattr(entry, attr)):
            _coded(out, ids, owner_attribute, scheme, coded, index)
    if entry.limited_metadata:
        out.append(
            f'<rim:Classification id="{ids(DE_LIMITED_METADATA)}"'
            f' classifiedObject="{owner_attribute}" classificationNode="{DE_LIMITED_METADATA}"/>'
        )
    _external_id(out, ids, owner_attribute, DE_PATIENT_ID, entry.patient_id)
    _external_id(out, ids, owner_attribute, DE_UNIQUE_ID, entry.unique_id)
    return (
        f"{''.join(start)}>{''.join(out)}</rim:ExtrinsicObject>" if out else f"{''.join(start)}/>"
    )
