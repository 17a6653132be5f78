"""Secure messaging wired into the gate: checking a message before it is stored, and
setting ``received`` when a recipient first opens it.

Who may read a message is the policy's business (``access.policy``: sender and recipients,
and the patient's representatives within R07, as query constraints so that searches and
totals hide the rest). This module adds what needs the store: the message being answered
(``inResponseTo``) must be one the author can read, attachments must be DocumentReferences of
the same record that the author can read, and a message about a labelled document carries
that document's DMP labels in ``meta.security`` (so R07/R14 hide the message wherever they
hide the document).

It also keeps conversations (``audit.conversations``): a message without a category of ours
gets the message category; an answer gets ``partOf`` = the first message of its conversation;
the patient opens a conversation only with one of their pharmacies (named on the Patient); an
answer in a conversation a professional closed is refused (409, ``conversation-closed``).

Decided here: ``received`` is set when a recipient (or a representative for the patient
recipient) opens the message with a read; listing messages with a search does not count.
Closing is checked when the answer is written, against the closures stored by then: a closure
and an answer written at the same instant may both be stored (the answer then stands, before
the closure in the thread).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from fhir_server.access.constraints import compartment_of, reference_target
from fhir_server.access.decision import Permit
from fhir_server.access.policy import DmpPolicy
from fhir_server.access.record import PatientRecord
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.balp import security_labels_of
from fhir_server.audit.conversations import (
    CATEGORY_CLOSURE,
    RULE_CLOSED,
    declared_root,
    pharmacies_of,
)
from fhir_server.audit.messaging import (
    acting_keys,
    category_codes,
    fill_default_category,
    mark_received,
    may_read_message,
    named_documents,
    validate_message,
    validate_reply,
)
from fhir_server.audit.notifications import CATEGORY_MESSAGE, SYSTEM_COMMUNICATION_CATEGORY
from fhir_server.errors import FhirError, Issue
from fhir_server.search.extract import extract, sort_values
from fhir_server.search.query import Node, ReferenceTest, TokenTest, all_of
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import versions
from fhir_server.service.following import following
from fhir_server.store.base import ResourceStore, StoredResource, VersionConflict
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY, SYSTEM_NAMED_DOCUMENT_TYPE

# An internal search: (resource type, where, count) -> rows (type, id, body).
InternalSearch = Callable[[str, Node, int], list[tuple[str, str, bytes]]]

# How far up `inResponseTo` a message stored without `partOf` is followed to its conversation's
# first message (messages stored before conversations were tracked).
MAX_THREAD_WALK = 256


def check_message(
    store: ResourceStore,
    policy: DmpPolicy,
    requester: Requester,
    message: dict,
    record: PatientRecord | None,
    search: InternalSearch,
) -> None:
    """Raise a FhirError when `requester` may not send `message`; complete it otherwise.

    `message` is changed in place before it is stored: the message category when it names
    none of ours, ``partOf`` on an answer, in ``meta.security`` the DMP labels of the
    documents it names (anywhere: payload, ``about``, ``basedOn``, an extension) and of the
    message it answers. What it answers and names must be of its record and readable by its
    author, as a read of them would judge (`_readable`), or it is answered as unknown (404).
    `search` finds the closures of a conversation (no access constraints).
    """
    if requester.kind is ActorKind.INTERNAL:
        return
    fill_default_category(message)
    represented = (
        [record.patient_id]
        if record is not None
        and requester.kind is ActorKind.REPRESENTATIVE
        and requester.subject_id in record.representatives
        else []
    )
    issues = validate_message(
        requester,
        message,
        represented_patients=represented,
        representatives_of_patient=record.representatives if record is not None else None,
        pharmacies_of_patient=pharmacies_of(record.patient if record is not None else None),
    )
    _raise(issues)
    reps = record.representatives if record is not None else frozenset()
    minor = bool(record and record.minor)
    acting = acting_keys(requester) | {f"Patient/{p}" for p in represented}
    roots: set[str] = set()
    # An answer is about the message it answers: it takes that message's DMP labels, so that
    # a message answering one hidden from a reader is hidden from them too; served, it named
    # the hidden message (inResponseTo, partOf) and told the patient, before the
    # announcement, that a message about a document invisible to them was there (R14, R18).
    labels: list[dict] = []
    named_types: list[dict] = []  # R13: the types of the documents named, as meta.tag
    for i, ref in enumerate(message.get("inResponseTo") or []):
        target = reference_target(ref.get("reference"))
        original = store.read(*target) if target else None
        if (
            original is None
            or original.deleted
            or not may_read_message(requester, original.json(), reps, minor)
            or not _readable(policy, requester, "Communication", original, record, store)
        ):
            raise FhirError(
                404,
                [
                    Issue(
                        "error",
                        "not-found",
                        f"{ref.get('reference')} is not known",
                        (f"Communication.inResponseTo[{i}]",),
                    )
                ],
            )
        # R07: a representative answers as the patient they act for.
        as_participant = (
            {**message, "sender": {"reference": f"Patient/{represented[0]}"}}
            if represented
            else message
        )
        _raise(validate_reply(as_participant, original.json(), acting))
        roots.add(_conversation_root(store, original))
        labels += dmp_labels(original.json())
        named_types += _named_type_tags(original.json())
    if roots:
        _join_conversation(message, roots, search)
    named = [
        (f"payload[{i}]", target)
        for i, payload in enumerate(message.get("payload") or [])
        if (target := reference_target((payload.get("contentReference") or {}).get("reference")))
    ]
    # A document the message is about (`about`, `basedOn`...) is judged and labelled as an
    # attachment: named there, an INVISIBLE_PATIENT document was served, unlabelled, to the
    # patient the message was sent to (R14).
    named += [(path, ("DocumentReference", doc)) for path, doc in named_documents(message)]
    for where, target in named:
        document = store.read(*target)
        if document is None or not _readable(policy, requester, target[0], document, record, store):
            raise FhirError(
                404,
                [
                    Issue(
                        "error",
                        "not-found",
                        f"{target[0]}/{target[1]} is not known",
                        (f"Communication.{where}",),
                    )
                ],
            )
        labels += dmp_labels(document.json())
        if target[0] == "DocumentReference":
            named_types += _type_tags(policy, document.json())
    _tag_named_types(message, named_types)
    add_labels(message, labels)
    if CATEGORY_CLOSURE in category_codes(message) and dmp_labels(message):
        # A closure binds every participant of the conversation (their answers are then
        # refused, 409): one hidden from some of them by its labels (about, or answering,
        # what is kept from them) told them, by that 409, that a message they could not read
        # was in their conversation (R14, R18). The professional closes with a message
        # every participant reads.
        raise FhirError(
            422,
            [
                Issue(
                    "error",
                    "business-rule",
                    "MSSanté citoyenne: a closing message is read by every participant of the "
                    "conversation; it names no labelled document and answers no labelled "
                    "message",
                    ("Communication.category",),
                )
            ],
        )


def _type_tags(policy: DmpPolicy, document: dict) -> list[dict]:
    """The `meta.tag` codings naming the J66 types of a document a message names (R13): a
    message about (or attaching) a document of a type a profession may not read is hidden
    from that profession's professionals, as the document is (`DmpPolicy._constraints`);
    served, it named the document's id to whom a read of it answers as for a missing one."""
    concept = document.get("type")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    tags = []
    for coding in codings if isinstance(codings, list) else []:
        if not isinstance(coding, dict):
            continue
        system, code = coding.get("system"), coding.get("code")
        key = (
            policy.j66_type(system, code)
            if isinstance(system, str) and isinstance(code, str)
            else None
        )
        if key is not None:
            tags.append({"system": SYSTEM_NAMED_DOCUMENT_TYPE, "code": f"{key[0]}|{key[1]}"})
    return tags


def _named_type_tags(resource: dict) -> list[dict]:
    """The R13 tags of a message (`_type_tags`): an answer takes those of what it answers."""
    return [
        {"system": SYSTEM_NAMED_DOCUMENT_TYPE, "code": c["code"]}
        for c in (resource.get("meta") or {}).get("tag") or []
        if isinstance(c, dict)
        and c.get("system") == SYSTEM_NAMED_DOCUMENT_TYPE
        and isinstance(c.get("code"), str)
    ]


def _tag_named_types(message: dict, tags: list[dict]) -> None:
    """Set the message's R13 tags to `tags`: those a client sent under the system are the
    server's to set, and dropped."""
    meta = message.get("meta")
    sent = meta.get("tag") if isinstance(meta, dict) else None
    kept = [
        c
        for c in (sent if isinstance(sent, list) else [])
        if not (isinstance(c, dict) and c.get("system") == SYSTEM_NAMED_DOCUMENT_TYPE)
    ]
    unique = list({c["code"]: c for c in tags}.values())
    if not kept and not unique:
        if isinstance(meta, dict):
            meta.pop("tag", None)
        return
    message.setdefault("meta", {})["tag"] = [*kept, *unique]


def add_labels(message: dict, labels: list[dict]) -> bool:
    """Add `labels` (DMP codings) to the message's `meta.security` (in place); whether any
    was missing. Labels are only ever added to a message (fail closed)."""
    added = False
    for label in labels:
        security = (message.get("meta") or {}).get("security") or []
        if any(
            isinstance(c, Mapping)
            and c.get("system") == label["system"]
            and c.get("code") == label["code"]
            for c in security
        ):
            continue
        meta = message.setdefault("meta", {})
        meta.setdefault("security", []).append(
            {k: label[k] for k in ("system", "code", "display") if label.get(k)}
        )
        added = True
    return added


def names_document(message: dict, document_id: str) -> bool:
    """Whether the message names DocumentReference `document_id`: an attachment
    (`payload.contentReference`) or anywhere else `check_message` judges it as one."""
    for payload in message.get("payload") or []:
        if isinstance(payload, Mapping):
            reference = (payload.get("contentReference") or {}).get("reference")
            if reference_target(reference) == ("DocumentReference", document_id):
                return True
    return any(named == document_id for _, named in named_documents(message))


def answers_any(message: dict, message_ids: set[str]) -> bool:
    """Whether the message answers one of `message_ids` or is in the thread one of them
    opened (`inResponseTo`, `partOf`): an answer takes the labels of what it answers."""
    for element in ("inResponseTo", "partOf"):
        for ref in message.get(element) or []:
            target = (
                reference_target((ref or {}).get("reference")) if isinstance(ref, Mapping) else None
            )
            if target is not None and target[0] == "Communication" and target[1] in message_ids:
                return True
    return False


def dmp_labels(resource: dict) -> list[dict]:
    """The DMP labels (TRE_A07) of a resource, wherever it carries them."""
    return [
        dict(c)
        for c in security_labels_of(resource)
        if isinstance(c, Mapping) and c.get("system") == SYSTEM_DMP_CONFIDENTIALITY
    ]


def _readable(
    policy: DmpPolicy,
    requester: Requester,
    resource_type: str,
    stored: StoredResource,
    record: PatientRecord | None,
    store: ResourceStore,
) -> bool:
    """Whether `requester` may read `stored`, a resource of the message's record, as a read
    of it would judge (R06-R14, R18): what a message answers or names is one of its record
    that its author may read, or it is answered as unknown (404)."""
    if stored.deleted or record is None:
        return False
    resource = stored.json()
    return record.patient_id in compartment_of(resource) and isinstance(
        policy.decide_read(requester, resource_type, resource, record, following(store.read)),
        Permit,
    )


def received_on_read(
    store: ResourceStore,
    registry: SearchRegistry,
    clock: Callable[[], int],
    requester: Requester,
    stored: StoredResource,
    record: PatientRecord | None,
) -> StoredResource | None:
    """The new version with ``received`` set when this read is a recipient's first; else None."""
    message = stored.json()
    if CATEGORY_MESSAGE not in category_codes(message) or message.get("received"):
        return None
    represents = (
        [record.patient_id]
        if record is not None
        and requester.kind is ActorKind.REPRESENTATIVE
        and requester.subject_id in record.representatives
        else []
    )
    now = datetime.fromtimestamp(clock() / 1_000_000, tz=UTC)
    updated = mark_received(message, now, reader=requester, reader_represents=represents)
    if updated is None:
        return None
    try:
        with store.transaction() as tx:
            current = tx.read(stored.resource_type, stored.id)
            if current is None or current.version != stored.version:
                return None  # someone else's first read won
            new = versions.stamp(updated, stored.id, stored.version + 1, clock())
            entries = extract(updated, registry)
            tx.write(
                versions.indexed_write(
                    new, updated, "PUT", stored.version, entries, sort_values(entries)
                )
            )
    except VersionConflict:
        return None
    return new


def _conversation_root(store: ResourceStore, original: StoredResource) -> str:
    """``Communication/<id>`` of the first message of the conversation `original` is in."""
    current = original.json()
    current_id = original.id
    for _ in range(MAX_THREAD_WALK):
        root = declared_root(current)
        if root:
            return root
        parents = [
            target
            for ref in current.get("inResponseTo") or []
            if (target := reference_target(ref.get("reference"))) and target[0] == "Communication"
        ]
        parent = store.read(*parents[0]) if parents else None
        if parent is None or parent.deleted:
            break
        current, current_id = parent.json(), parent.id
    return f"Communication/{current_id}"


def _join_conversation(message: dict, roots: set[str], search: InternalSearch) -> None:
    """Set ``partOf`` on an answer; refuse it in a closed conversation or across two."""
    if len(roots) > 1:
        _raise(
            [
                Issue(
                    "error",
                    "value",
                    "an answer belongs to one conversation; these messages are in "
                    f"{len(roots)} conversations",
                    ("Communication.inResponseTo",),
                )
            ]
        )
    root = next(iter(roots))
    given = declared_root(message)
    if message.get("partOf") and (given != root or len(message["partOf"]) != 1):
        _raise(
            [
                Issue(
                    "error",
                    "value",
                    f"partOf is set by the server to the conversation's first message ({root})",
                    ("Communication.partOf",),
                )
            ]
        )
    if _closed(root, search):
        raise FhirError(
            409,
            [
                Issue(
                    "error",
                    "business-rule",
                    "MSSanté citoyenne: this conversation was closed by the professional; "
                    "nothing more can be written in it",
                    ("Communication.inResponseTo",),
                    details_code=RULE_CLOSED,
                )
            ],
        )
    message["partOf"] = [{"reference": root}]


def _closed(root: str, search: InternalSearch) -> bool:
    """Whether a closing message was stored in the conversation that `root` opened."""
    root_type, root_id = root.split("/", 1)
    where = all_of(
        ReferenceTest("part-of", root_type, root_id),
        TokenTest("category", SYSTEM_COMMUNICATION_CATEGORY, CATEGORY_CLOSURE),
    )
    return bool(search("Communication", where, 1))


def _raise(issues: list[Issue], status: int | None = None) -> None:
    if not issues:
        return
    if status is None:
        status = 403 if any(issue.code == "forbidden" for issue in issues) else 400
    raise FhirError(status, issues)
