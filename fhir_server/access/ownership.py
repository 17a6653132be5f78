"""Who owns a Binary, and which Binaries a DocumentReference names (architecture invariant 8).

A Binary is the content of the document it was deposited with, and it is readable exactly
when that document is. The owner is recorded at write, in `Binary.securityContext` (FHIR R4:
"the resource that provides the security context", here a Reference `DocumentReference/<id>`):
never inferred from whatever happens to point at the Binary, since anyone allowed to deposit
can write a DocumentReference naming any Binary (issue #18, finding 1).

Pure: the service gathers the stored facts and decides what to do with these answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fhir_server.access.constraints import reference_target

# A relative literal reference to a Binary of this server (the normal form: references to
# this server's own base are made relative before anything is judged).
_RELATIVE_BINARY = re.compile(r"^Binary/([A-Za-z0-9\-.]{1,64})\Z")
_RELATIVE_DOCUMENT = re.compile(r"^DocumentReference/([A-Za-z0-9\-.]{1,64})\Z")

ATTACHMENT_URL = "DocumentReference.content[{position}].attachment.url"
SECURITY_CONTEXT = "Binary.securityContext"


def has_owner(binary: dict) -> bool:
    """Whether the Binary records an owner (any securityContext at all: one the server cannot
    read owns it too, and then nothing may read it)."""
    return binary.get("securityContext") is not None


def owner_id(binary: dict) -> str | None:
    """The id of the DocumentReference owning `binary`, or None when its securityContext is
    absent or names anything else (which grants nothing)."""
    context = binary.get("securityContext")
    if not isinstance(context, dict):
        return None
    match = _RELATIVE_DOCUMENT.match(str(context.get("reference") or ""))
    return match.group(1) if match else None


def owner_reference(document_id: str) -> dict:
    """The securityContext of a Binary owned by DocumentReference `document_id`."""
    return {"reference": f"DocumentReference/{document_id}"}


def binary_id_of(url: object) -> str | None:
    """The id of the local Binary an attachment url names (relative `Binary/<id>`), or None."""
    match = _RELATIVE_BINARY.match(url) if isinstance(url, str) else None
    return match.group(1) if match else None


def named_binaries(document: dict) -> list[tuple[int, str]]:
    """(content position, Binary id) of each `content[i].attachment.url` naming a local Binary."""
    named = []
    content = document.get("content")
    for position, item in enumerate(content if isinstance(content, list) else []):
        attachment = item.get("attachment") if isinstance(item, dict) else None
        binary_id = binary_id_of((attachment or {}).get("url"))
        if binary_id:
            named.append((position, binary_id))
    return named


def subject_patient(document: dict) -> str | None:
    """The Patient id a DocumentReference's subject names (its record), or None."""
    subject = document.get("subject")
    target = reference_target(subject.get("reference")) if isinstance(subject, dict) else None
    return target[1] if target is not None and target[0] == "Patient" else None


def one_patient(documents: Iterable[dict]) -> str | None:
    """The one patient whose record every document is in (by subject), or None if they are
    not all of one record (or there are none)."""
    patients = {subject_patient(document) for document in documents}
    if len(patients) != 1:
        return None
    return patients.pop()
