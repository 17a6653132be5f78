"""A single `POST DocumentReference` as the transaction the registry writes (ITI-105).

IHE ITI-105 Simplified Publish (PDSm `PDSm_SimplifiedPublish`) sends one DocumentReference
with the document inline in `content.attachment.data`; the Document Recipient makes the
Binary, sets `attachment.url`, computes the size and hash (or checks those given), and
assigns what the registry assigns. Any `POST DocumentReference` is handled the same way (with
inline data or naming a Binary already stored): it becomes a transaction Bundle, processed
by `service.bundles` like any transaction, so that one atomic write creates the Binary (owned
by the document, `service.ownership`), the DocumentReference, and the supersede of what
`relatesTo.replaces` names, each judged and audited as a transaction's entries are, and the
document rules (`documents.registry`) run as for every write.
"""

from __future__ import annotations

import copy
import uuid

from fhir_server.documents import model, rules
from fhir_server.errors import FhirError, Issue, bad_request

DOCUMENT_ENTRY = 0  # the DocumentReference is the Bundle's first entry, its Binaries follow


def as_transaction(document: dict, if_none_exist: str | None = None) -> dict:
    """The transaction Bundle of a POSTed DocumentReference (module docstring). Raises 422
    when inline data is no base64 or does not match the size or hash given with it."""
    if not isinstance(document, dict) or document.get("resourceType") != "DocumentReference":
        raise bad_request("the body must be a DocumentReference", "resourceType")
    document = copy.deepcopy(document)
    document.pop("id", None)  # a create ignores the id of the body (FHIR R4 http.html#create)
    binaries = []
    issues: list[Issue] = []
    for position, attachment in model.attachments(document):
        if "data" not in attachment:
            continue
        where = f"DocumentReference.content[{position}].attachment"
        content = model.decode(attachment.get("data"))
        if content is None:
            issues.append(
                Issue("error", "value", f"{where}.data is not base64", (f"{where}.data",))
            )
            continue
        issues += rules.size_and_hash_issues(attachment, content, where)
        full_url = f"urn:uuid:{uuid.uuid4()}"
        binary = {"resourceType": "Binary", "data": attachment.pop("data")}
        if attachment.get("contentType"):
            binary["contentType"] = attachment["contentType"]
        attachment["url"] = full_url
        attachment["size"] = len(content)
        attachment["hash"] = model.sha1_base64(content)
        binaries.append(
            {
                "fullUrl": full_url,
                "resource": binary,
                "request": {"method": "POST", "url": "Binary"},
            }
        )
    if issues:
        raise FhirError(422, issues)
    model.assign_entry_uuid(document)
    request = {"method": "POST", "url": "DocumentReference"}
    if if_none_exist is not None:
        request["ifNoneExist"] = if_none_exist
    entry = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": document, "request": request}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [entry, *binaries]}


def as_single_write_error(exc: FhirError, bundle: dict) -> FhirError:
    """A refusal of the transaction, told in the terms of the POSTed DocumentReference: the
    client sent no Bundle, so no issue names one of its entries (a Binary made of inline data
    is named by the attachment it came from)."""
    binary_of = {
        f"Bundle.entry[{index}]": _attachment_of(bundle, raw.get("fullUrl"))
        for index, raw in enumerate(bundle["entry"])
        if index != DOCUMENT_ENTRY
    }
    document_where = f"Bundle.entry[{DOCUMENT_ENTRY}]"
    issues = []
    for issue in exc.issues:
        expressions = []
        diagnostics = issue.diagnostics
        for expression in issue.expression:
            for where, attachment in binary_of.items():
                if expression == where or expression.startswith(where + "."):
                    expression = f"{attachment}.data"
                    diagnostics = diagnostics.replace(where, attachment, 1)
            if expression == document_where:
                continue
            expression = expression.replace(f"{document_where}.resource.", "")
            if expression not in expressions:
                expressions.append(expression)
        diagnostics = diagnostics.removeprefix(f"{document_where}: ")
        diagnostics = diagnostics.replace(f"{document_where}.resource.", "")
        issues.append(
            Issue(
                issue.severity,
                issue.code,
                diagnostics,
                tuple(expressions),
                issue.details_code,
                issue.details_system,
            )
        )
    return FhirError(exc.status, issues, exc.headers)


def _attachment_of(bundle: dict, full_url: str | None) -> str:
    document = bundle["entry"][DOCUMENT_ENTRY]["resource"]
    for position, attachment in model.attachments(document):
        if full_url is not None and attachment.get("url") == full_url:
            return f"DocumentReference.content[{position}].attachment"
    return "DocumentReference.content"
