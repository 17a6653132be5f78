"""SOAP 1.2 envelopes with WS-Addressing: reading requests, writing responses and faults.

The `wsse:Security` header is handed over untouched (an lxml element) to the identity layer
(VIHF); this module never interprets it.
"""

from __future__ import annotations

import codecs
import uuid
from dataclasses import dataclass

from lxml import etree

from ihe_xds.errors import MalformedMessage
from ihe_xds.vocabulary import NS_SOAP11, NS_SOAP12, NS_WSA, NS_WSSE, REQUEST_ROOTS, q
from ihe_xds.xml import DEFAULT_MAX_BYTES, parse_xml

WSA_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"
_UNDERSTOOD_HEADER_NAMESPACES = {
    NS_WSA,
    NS_WSSE,
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "http://docs.oasis-open.org/wss/oasis-wss-wssecurity-secext-1.1.xsd",
}


class SoapFault(MalformedMessage):
    """A request that gets a SOAP 1.2 Fault (Sender, Receiver, VersionMismatch, MustUnderstand)."""

    def __init__(self, reason: str, *, code: str = "Sender", subcode: str | None = None) -> None:
        super().__init__(reason, subcode=subcode)
        self.fault_code = code


@dataclass(slots=True)
class SoapEnvelope:
    """What the XDS face needs from a request envelope."""

    action: str | None
    message_id: str | None
    security: etree._Element | None  # the wsse:Security header element, as received
    body: etree._Element  # the one element child of soap:Body
    root: etree._Element


_ENVELOPE_11 = q(NS_SOAP11, "Envelope")
_ENVELOPE_12 = q(NS_SOAP12, "Envelope")
_HEADER = q(NS_SOAP12, "Header")
_BODY = q(NS_SOAP12, "Body")
_ACTION = q(NS_WSA, "Action")
_MESSAGE_ID = q(NS_WSA, "MessageID")
_MUST_UNDERSTAND = q(NS_SOAP12, "mustUnderstand")


def _split_tag(tag: str) -> tuple[str | None, str]:
    """(namespace or None, local name) of a Clark-notation tag, without an etree.QName."""
    if tag[:1] == "{":
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return None, tag


def read_envelope(
    data: bytes | etree._Element, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> SoapEnvelope:
    """Read a SOAP 1.2 envelope; raise XmlError (bad XML) or SoapFault (bad envelope)."""
    root = data if isinstance(data, etree._Element) else parse_xml(data, max_bytes=max_bytes)
    if root.tag == _ENVELOPE_11:
        raise SoapFault(
            "SOAP 1.1 envelopes are not supported; use SOAP 1.2", code="VersionMismatch"
        )
    if root.tag != _ENVELOPE_12:
        raise SoapFault("the message is not a SOAP 1.2 Envelope")
    header = body = None
    for child in root[:]:
        # One Header and one Body (SOAP 1.2 part 1 §5): the first of two was read, and an
        # intermediary reading the other saw another caller or another request.
        if child.tag == _HEADER:
            if header is not None:
                raise SoapFault("the SOAP Envelope has more than one Header")
            header = child
        elif child.tag == _BODY:
            if body is not None:
                raise SoapFault("the SOAP Envelope has more than one Body")
            body = child
    if body is None:
        raise SoapFault("the SOAP Envelope has no Body")
    children = [child for child in body if isinstance(child.tag, str)]
    if not children:
        raise SoapFault("the SOAP Body is empty")
    if len(children) > 1:
        # One request per message (WS-I Basic Profile R2201, as IHE ITI TF-2x V.3.1 asks):
        # the first was served and the others ignored, and a gateway judging the last saw
        # another request than the one served.
        raise SoapFault(
            f"the SOAP Body holds {len(children)} elements; a request message holds one"
        )
    action = message_id = None
    security = None
    seen: set[str] = set()
    if header is not None:
        for element in header[:]:
            tag = element.tag
            if not isinstance(tag, str):
                continue
            namespace, local = _split_tag(tag)
            if tag in (_ACTION, _MESSAGE_ID):
                # Each at most once (WS-Addressing 1.0 Core §3.1): the last of two Actions
                # was served, so a gateway admitting the first (a query) let through another
                # transaction (an update), and the answer's RelatesTo named the last MessageID.
                if tag in seen:
                    raise SoapFault(
                        f"the SOAP Header has more than one wsa:{_split_tag(tag)[1]} header",
                        subcode="wsa:InvalidAddressingHeader",
                    )
                seen.add(tag)
                value = (element.text or "").strip() or None
                if tag == _ACTION:
                    action = value
                else:
                    message_id = value
            elif local == "Security" and namespace in _UNDERSTOOD_HEADER_NAMESPACES:
                if security is not None:
                    # The last one was read: a gateway checking the first VIHF let through
                    # a request the server served as the second's practitioner.
                    raise SoapFault(
                        "the SOAP Header has more than one wsse:Security header",
                        subcode="wsse:InvalidSecurity",
                    )
                security = element
            must = element.get(_MUST_UNDERSTAND, "").strip().lower()
            if must in ("true", "1") and namespace not in _UNDERSTOOD_HEADER_NAMESPACES:
                raise SoapFault(
                    f"header {etree.QName(element).text} is not understood",
                    code="MustUnderstand",
                )
    return SoapEnvelope(action, message_id, security, children[0], root)


def check_action(envelope: SoapEnvelope, expected: tuple[str, ...] | None = None) -> str:
    """The request's action, once checked against the supported ones and the body root.

    Raises SoapFault(Sender, wsa:ActionNotSupported) for a missing or unknown action and
    SoapFault(Sender) when the body does not match the action.
    """
    known = expected if expected is not None else tuple(REQUEST_ROOTS)
    action = envelope.action
    if not action:
        raise SoapFault(
            "missing WS-Addressing Action header", subcode="wsa:MessageAddressingHeaderRequired"
        )
    if action not in known:
        raise SoapFault(f"unsupported action {action!r}", subcode="wsa:ActionNotSupported")
    if envelope.body.tag != REQUEST_ROOTS[action]:
        raise SoapFault(
            f"the Body holds {etree.QName(envelope.body).localname}, "
            f"not {etree.QName(REQUEST_ROOTS[action]).localname} as {action} requires"
        )
    return action


def check_http_action(action: str, http_actions: dict[str, str | None]) -> None:
    """The action the HTTP message names (the SOAP 1.2 media type's `action` parameter, the
    `start-info` of an MTOM package, a SOAP 1.1 `SOAPAction` header), where it names one, is
    the envelope's wsa:Action (WS-Addressing 1.0 SOAP Binding §4: they MUST match). A
    gateway routing or admitting by the HTTP action (a query) let through the transaction
    the envelope named (an update), served and audited as that one.

    Raises SoapFault(Sender, wsa:ActionMismatch) naming where the two disagree."""
    for where, named in http_actions.items():
        if named is None:
            continue
        named = named.strip().strip('"').strip()
        if named and named != action:
            raise SoapFault(
                f"the {where} names the action {named!r}, the envelope's wsa:Action {action!r}",
                subcode="wsa:ActionMismatch",
            )


def check_charset(charset: str | None, envelope: SoapEnvelope) -> None:
    """The `charset` the HTTP message gives the envelope (RFC 7303 §3.2: authoritative for
    an XML media type) is the encoding the envelope was read in (its XML declaration, its
    byte order mark, else UTF-8). The server read the declaration alone: an envelope sent as
    `charset=ISO-8859-1` was served as its UTF-8 reading, where a gateway honouring the
    header read other characters. Raises SoapFault(Sender) when they disagree."""
    if charset is None:
        return
    read_in = envelope.root.getroottree().docinfo.encoding or "UTF-8"
    try:
        same = codecs.lookup(charset).name == codecs.lookup(read_in).name
    except LookupError:
        same = False
    if not same:
        raise SoapFault(
            f"the Content-Type gives the envelope the charset {charset!r}, its XML is {read_in}"
        )


def _envelope(action: str, relates_to: str | None, body_child: etree._Element) -> etree._Element:
    nsmap = {"soap": NS_SOAP12, "wsa": NS_WSA}
    envelope = etree.Element(q(NS_SOAP12, "Envelope"), nsmap=nsmap)
    header = etree.SubElement(envelope, q(NS_SOAP12, "Header"))
    action_el = etree.SubElement(header, q(NS_WSA, "Action"))
    action_el.set(q(NS_SOAP12, "mustUnderstand"), "true")
    action_el.text = action
    etree.SubElement(header, q(NS_WSA, "MessageID")).text = f"urn:uuid:{uuid.uuid4()}"
    if relates_to:
        etree.SubElement(header, q(NS_WSA, "RelatesTo")).text = relates_to
    body = etree.SubElement(envelope, q(NS_SOAP12, "Body"))
    body.append(body_child)
    return envelope


def response_envelope(
    request_action: str, relates_to: str | None, body_child: etree._Element
) -> bytes:
    """The response envelope: Action = request action + "Response", RelatesTo = MessageID."""
    envelope = _envelope(request_action + "Response", relates_to, body_child)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def fault_envelope(
    code: str, reason: str, *, subcode: str | None = None, relates_to: str | None = None
) -> bytes:
    """A SOAP 1.2 Fault (code Sender / Receiver / VersionMismatch / MustUnderstand).

    The reason is sent as is: callers pass a sentence about the request, never a trace.
    """
    fault = etree.Element(q(NS_SOAP12, "Fault"), nsmap={"soap": NS_SOAP12, "wsa": NS_WSA})
    code_el = etree.SubElement(fault, q(NS_SOAP12, "Code"))
    etree.SubElement(code_el, q(NS_SOAP12, "Value")).text = f"soap:{code}"
    if subcode:
        sub = etree.SubElement(code_el, q(NS_SOAP12, "Subcode"))
        etree.SubElement(sub, q(NS_SOAP12, "Value")).text = subcode
    reason_el = etree.SubElement(fault, q(NS_SOAP12, "Reason"))
    text = etree.SubElement(reason_el, q(NS_SOAP12, "Text"))
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    text.text = reason
    envelope = _envelope(WSA_FAULT_ACTION, relates_to, fault)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def fault_for(exc: MalformedMessage, relates_to: str | None = None) -> bytes:
    """The Fault envelope for any MalformedMessage (XmlError, MtomError, SoapFault)."""
    return fault_envelope(exc.fault_code, exc.reason, subcode=exc.subcode, relates_to=relates_to)
