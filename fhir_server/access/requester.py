"""Who is asking: the one value every service call carries.

A Requester is built from a bearer token's claims (FHIR) or from a VIHF assertion (XDS) by
the same function in `fhir_server.auth`, so the access policy never knows which face the
request came through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ActorKind(StrEnum):
    PATIENT = "patient"
    REPRESENTATIVE = "representative"
    PRACTITIONER = "practitioner"
    SYSTEM = "system"
    # The server itself (start-up loaders, retention job, benchmarks' unconstrained baseline).
    # Never built from a token.
    INTERNAL = "internal"


class AccessMode(StrEnum):
    """TRE_R248_ModeAcces (urn:oid:1.2.250.1.213.1.1.4.248)."""

    NORMAL = "normal"
    BRIS_DE_GLACE = "bris_de_glace"
    CENTRE_15 = "centre_15"


@dataclass(frozen=True)
class Requester:
    kind: ActorKind
    # Patient id (PATIENT), RelatedPerson id (REPRESENTATIVE), IdNat_PS (PRACTITIONER),
    # client id (SYSTEM).
    subject_id: str
    display_name: str = ""
    # SMART scopes as granted (raw strings); parsed by fhir_server.auth.scopes.
    scopes: tuple[str, ...] = ()
    # Practitioner context (IHE IUA / VIHF).
    profession: str | None = None  # TRE_G15 code, e.g. "10" médecin, "21" pharmacien
    specialty: str | None = None  # e.g. "SM54"
    organization_id: str | None = None
    organization_name: str | None = None
    # insurer | mutual_insurer | employer | health_insurer | hospital | laboratory | admin ...
    organization_type: str | None = None
    access_mode: AccessMode = AccessMode.NORMAL
    access_reason: str | None = None
    # The patient a token is bound to (patient scopes, VIHF resource-id), if any.
    patient_id: str | None = None
    client_id: str | None = None
    token_id: str | None = None
    # Not hashed (a dict), still compared: a Requester can key a cache of decisions.
    extra: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def reference(self) -> str:
        """The FHIR-style reference naming this requester in audit and provenance."""
        match self.kind:
            case ActorKind.PATIENT:
                return f"Patient/{self.subject_id}"
            case ActorKind.REPRESENTATIVE:
                return f"RelatedPerson/{self.subject_id}"
            case ActorKind.PRACTITIONER:
                return f"Practitioner/{self.subject_id}"
            case _:
                return f"Device/{self.subject_id}"

    @property
    def structure_idnat(self) -> str | None:
        """The IdNat_Struct of the organization a practitioner's token names, or None.

        A practitioner acts for that organization's organisational mailbox in secure
        messaging (a pharmacy's team answers its patients as the pharmacy).
        """
        if self.kind is not ActorKind.PRACTITIONER or not self.organization_id:
            return None
        return self.organization_id  # the token's claim without its system (auth.requester)


INTERNAL = Requester(kind=ActorKind.INTERNAL, subject_id="fhir-server", display_name="FHIR server")
