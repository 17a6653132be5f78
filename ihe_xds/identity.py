"""Who is calling the XDS face: the VIHF in `wsse:Security`, turned into a Requester.

The /xds endpoints sit outside /fhir, so the bearer-token hook never runs for them; every
request is authenticated here instead, with the same Requester the FHIR face would build
from a token (fhir_server/auth/vihf.py maps the VIHF attributes to token claims).

Refusals follow IHE XUA (ITI TF-2b 3.40.4.2): a missing, unsigned, untrusted, tampered,
expired or mis-addressed assertion is answered with a SOAP 1.2 Fault, code Sender, with the
WS-Security 1.1 subcodes `wsse:InvalidSecurity` (no usable header) or
`wsse:FailedAuthentication` (an assertion that does not verify). No RegistryResponse is
written: without an identity there is no registry request to answer.

The trust (signer certificates, audience, leeway) is built once per application from the
settings, not per request: loading certificates is file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from fhir_server.access.requester import Requester
from fhir_server.auth.tokens import AuthenticationError, AuthSettings
from fhir_server.auth.vihf import VihfTrust, vihf_requester
from ihe_xds.soap import SoapFault

SUBCODE_INVALID_SECURITY = "wsse:InvalidSecurity"
SUBCODE_FAILED_AUTHENTICATION = "wsse:FailedAuthentication"


class XdsAuthenticationError(SoapFault):
    """The request carries no acceptable VIHF (SOAP Fault, Sender)."""

    def __init__(self, reason: str, subcode: str) -> None:
        super().__init__(reason, code="Sender", subcode=subcode)


@dataclass(frozen=True)
class XdsIdentity:
    """Authenticates XDS requests against one VihfTrust."""

    trust: VihfTrust

    @classmethod
    def from_auth_settings(cls, settings: AuthSettings, *, trust_local: bool = True) -> XdsIdentity:
        """The trust of the server's auth settings (plus the local structure certificate,
        which `fhir-server token --vihf` signs with, when `trust_local`)."""
        return cls(VihfTrust.from_settings(settings, trust_local=trust_local))

    def requester(self, security: etree._Element | None) -> Requester:
        """The Requester of a request whose `wsse:Security` header is `security`.

        Raises XdsAuthenticationError with a reason a client can act on; the reason never
        includes key material or the assertion itself.
        """
        if security is None:
            raise XdsAuthenticationError(
                "the request has no wsse:Security header with a VIHF assertion (XUA)",
                SUBCODE_INVALID_SECURITY,
            )
        try:
            return vihf_requester(security, self.trust)
        except AuthenticationError as exc:
            raise XdsAuthenticationError(
                f"VIHF refused: {exc.message}", SUBCODE_FAILED_AUTHENTICATION
            ) from None
