"""Response bodies: RegistryResponse, AdhocQueryResponse, ITI-43 request and response.

Status rule: no error -> Success (warnings still listed); errors and some results (ITI-18
objects, ITI-43 documents) -> PartialSuccess; errors and nothing else -> Failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from ihe_xds.ebrim import (
    Association,
    DocumentEntry,
    Folder,
    SubmissionSet,
    association_to_element,
    entry_to_element,
    folder_to_element,
    object_ref_element,
    submission_set_to_element,
)
from ihe_xds.ebrim_text import NotPlainText, entry_text
from ihe_xds.errors import (
    SEVERITY_ERROR,
    SEVERITY_WARNING,
    XDS_REPOSITORY_METADATA_ERROR,
    MalformedMessage,
    RegistryError,
    registry_error,
)
from ihe_xds.mtom import Attachment, new_content_id
from ihe_xds.soap import response_envelope
from ihe_xds.vocabulary import (
    NS_QUERY,
    NS_RIM,
    NS_RS,
    NS_XDSB,
    NS_XOP,
    RESPONSE_FAILURE,
    RESPONSE_PARTIAL_SUCCESS,
    RESPONSE_SUCCESS,
    q,
)

RegistryObject = DocumentEntry | SubmissionSet | Folder | Association


def response_status(errors: list[RegistryError], has_results: bool = False) -> str:
    if not any(e.severity == SEVERITY_ERROR for e in errors):
        return RESPONSE_SUCCESS
    return RESPONSE_PARTIAL_SUCCESS if has_results else RESPONSE_FAILURE


def _error_list(parent: etree._Element, errors: list[RegistryError]) -> None:
    if not errors:
        return
    highest = (
        SEVERITY_ERROR if any(e.severity == SEVERITY_ERROR for e in errors) else SEVERITY_WARNING
    )
    error_list = etree.SubElement(parent, q(NS_RS, "RegistryErrorList"), highestSeverity=highest)
    for error in errors:
        element = etree.SubElement(
            error_list,
            q(NS_RS, "RegistryError"),
            errorCode=error.error_code,
            codeContext=error.code_context,
            severity=error.severity,
        )
        if error.location:
            element.set("location", error.location)


def registry_response(errors: list[RegistryError], *, status: str | None = None) -> etree._Element:
    """rs:RegistryResponse for ITI-41 / ITI-42 (status computed unless given)."""
    element = etree.Element(
        q(NS_RS, "RegistryResponse"),
        status=status or response_status(errors),
        nsmap={"rs": NS_RS},
    )
    _error_list(element, errors)
    return element


def _object_element(obj: RegistryObject) -> etree._Element:
    if isinstance(obj, DocumentEntry):
        return entry_to_element(obj)
    if isinstance(obj, SubmissionSet):
        return submission_set_to_element(obj)
    if isinstance(obj, Folder):
        return folder_to_element(obj)
    return association_to_element(obj)


def adhoc_query_response(
    objects: list[RegistryObject],
    errors: Sequence[RegistryError] = (),
    *,
    return_type: str = "LeafClass",
) -> etree._Element:
    """query:AdhocQueryResponse: full objects (LeafClass) or rim:ObjectRef (ObjectRef)."""
    element, object_list = _adhoc_query_element(list(errors), has_results=bool(objects))
    for obj in objects:
        object_list.append(
            _object_element(obj) if return_type == "LeafClass" else object_ref_element(obj.id)
        )
    return element


def _adhoc_query_element(
    errors: list[RegistryError], *, has_results: bool
) -> tuple[etree._Element, etree._Element]:
    """An AdhocQueryResponse with its errors and an empty rim:RegistryObjectList (returned too)."""
    element = etree.Element(
        q(NS_QUERY, "AdhocQueryResponse"),
        status=response_status(errors, has_results=has_results),
        nsmap={"query": NS_QUERY, "rim": NS_RIM, "rs": NS_RS},
    )
    _error_list(element, errors)
    return element, etree.SubElement(element, q(NS_RIM, "RegistryObjectList"))


@dataclass(slots=True)
class QueryAnswer:
    """An ITI-18 answer on its way to the wire.

    `objects_text`, when set, is the content of the (then empty) rim:RegistryObjectList of
    `element`, already serialised by ebrim_text: a LeafClass answer of DocumentEntries is
    written as text instead of being built as an lxml tree and serialised (issue 6).
    """

    element: etree._Element
    objects_text: str | None = None


def adhoc_query_answer(
    objects: list[RegistryObject],
    errors: Sequence[RegistryError] = (),
    *,
    return_type: str = "LeafClass",
) -> QueryAnswer:
    """The AdhocQueryResponse of `adhoc_query_response`, in the form `answer_envelope` sends."""
    entries = [o for o in objects if isinstance(o, DocumentEntry)]
    if return_type == "LeafClass" and objects and len(entries) == len(objects):
        try:
            text = "".join([entry_text(entry) for entry in entries])
        except NotPlainText:
            pass  # values only lxml writes (or refuses) as before: build the tree
        else:
            element, _ = _adhoc_query_element(list(errors), has_results=True)
            return QueryAnswer(element, text)
    return QueryAnswer(adhoc_query_response(objects, errors, return_type=return_type))


_EMPTY_OBJECT_LIST = b"<rim:RegistryObjectList/>"


def answer_envelope(answer: QueryAnswer, request_action: str, relates_to: str | None) -> bytes:
    """The response envelope of an ITI-18 answer: `response_envelope` bytes, the written
    objects put in place of the empty rim:RegistryObjectList (the last element of the body,
    and the only place its start tag can occur: text and attributes escape "<")."""
    envelope = response_envelope(request_action, relates_to, answer.element)
    if answer.objects_text is None:
        return envelope
    head, marker, tail = envelope.rpartition(_EMPTY_OBJECT_LIST)
    if not marker:
        raise ValueError("the AdhocQueryResponse has no empty rim:RegistryObjectList")
    return b"".join(
        (
            head,
            b"<rim:RegistryObjectList>",
            answer.objects_text.encode("utf-8"),
            b"</rim:RegistryObjectList>",
            tail,
        )
    )


# --------------------------------------------------------------------------- ITI-43


# DocumentRequests in one ITI-43 request. Each is answered with the whole document, so one
# request naming the same document many times multiplied it: 1,000 DocumentRequests
# (199 KB) took 0.44 s and answered 623 KB for a 600-byte document; a 32 MB body holds
# 170,000. A consultation retrieves a few documents at a time.
MAX_DOCUMENT_REQUESTS = 100


@dataclass(frozen=True, slots=True)
class DocumentRequest:
    repository_unique_id: str
    document_unique_id: str
    home_community_id: str | None = None


@dataclass(frozen=True, slots=True)
class RetrievedDocument:
    repository_unique_id: str
    document_unique_id: str
    mime_type: str
    data: bytes
    home_community_id: str | None = None


class NotARetrieve(MalformedMessage):
    """The element is not a RetrieveDocumentSetRequest (SOAP Fault, Sender)."""


def parse_retrieve_request(
    element: etree._Element,
) -> tuple[list[DocumentRequest], list[RegistryError]]:
    """The DocumentRequests of an ITI-43 request, and the errors of incomplete or repeated
    ones (each DocumentRequest is answered with the whole document: a document named a
    hundred times was answered a hundred times, 100 MB for a 1 MB document); none and one
    error when it holds more than MAX_DOCUMENT_REQUESTS."""
    if element.tag != q(NS_XDSB, "RetrieveDocumentSetRequest"):
        raise NotARetrieve(f"{etree.QName(element).localname} is not a RetrieveDocumentSetRequest")
    items = element.findall(q(NS_XDSB, "DocumentRequest"))
    if len(items) > MAX_DOCUMENT_REQUESTS:
        return [], [
            registry_error(
                XDS_REPOSITORY_METADATA_ERROR,
                f"the request has {len(items)} DocumentRequests; the limit is"
                f" {MAX_DOCUMENT_REQUESTS} (MAX_DOCUMENT_REQUESTS)",
                "RetrieveDocumentSetRequest",
            )
        ]
    requests: list[DocumentRequest] = []
    errors: list[RegistryError] = []
    for index, item in enumerate(items):
        values = {}
        for local in ("HomeCommunityId", "RepositoryUniqueId", "DocumentUniqueId"):
            child = item.find(q(NS_XDSB, local))
            text = (child.text or "").strip() if child is not None else ""
            values[local] = text or None
        if not values["RepositoryUniqueId"] or not values["DocumentUniqueId"]:
            errors.append(
                registry_error(
                    XDS_REPOSITORY_METADATA_ERROR,
                    "a DocumentRequest needs RepositoryUniqueId and DocumentUniqueId",
                    f"DocumentRequest[{index}]",
                )
            )
            continue
        request = DocumentRequest(
            values["RepositoryUniqueId"], values["DocumentUniqueId"], values["HomeCommunityId"]
        )
        if request in requests:
            errors.append(
                registry_error(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"DocumentRequest[{index}] repeats an earlier DocumentRequest of document"
                    f" {request.document_unique_id}; each document is answered once",
                    f"DocumentRequest[{index}]",
                )
            )
            continue
        requests.append(request)
    if not requests and not errors:
        errors.append(
            registry_error(
                XDS_REPOSITORY_METADATA_ERROR, "no DocumentRequest", "RetrieveDocumentSetRequest"
            )
        )
    return requests, errors


def retrieve_response(
    documents: list[RetrievedDocument], errors: Sequence[RegistryError] = ()
) -> tuple[etree._Element, list[Attachment]]:
    """xdsb:RetrieveDocumentSetResponse with one xop:Include per document, and the parts.

    Wrap the element with `soap.response_envelope` and pack it with
    `mtom.build_mtom_response(envelope, attachments)`.
    """
    errors = list(errors)
    element = etree.Element(
        q(NS_XDSB, "RetrieveDocumentSetResponse"),
        nsmap={"xdsb": NS_XDSB, "rs": NS_RS, "xop": NS_XOP},
    )
    element.append(
        registry_response(errors, status=response_status(errors, has_results=bool(documents)))
    )
    attachments = []
    for document in documents:
        response = etree.SubElement(element, q(NS_XDSB, "DocumentResponse"))
        if document.home_community_id:
            etree.SubElement(
                response, q(NS_XDSB, "HomeCommunityId")
            ).text = document.home_community_id
        etree.SubElement(
            response, q(NS_XDSB, "RepositoryUniqueId")
        ).text = document.repository_unique_id
        etree.SubElement(
            response, q(NS_XDSB, "DocumentUniqueId")
        ).text = document.document_unique_id
        etree.SubElement(response, q(NS_XDSB, "mimeType")).text = document.mime_type
        content = etree.SubElement(response, q(NS_XDSB, "Document"))
        content_id = new_content_id()
        etree.SubElement(content, q(NS_XOP, "Include"), href=f"cid:{content_id}")
        attachments.append(Attachment(content_id, document.mime_type, document.data))
    return element, attachments
