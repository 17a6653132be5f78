"""The assertion's patient is the request's patient (issue #18, finding 11, deliverable 6).

A VIHF whose resource-id names patient Z, and a token whose patient context is Z, bind the
request to Z's record: ITI-18, ITI-43, ITI-41 and FHIR reads, searches and writes of another
patient's record are refused (and audited in that patient's trail), without a byte of the
other record in the answer. Credentials come from `fhir-server token` (`--vihf` for XDS),
as a user would make them. The identifiers the credentials carry are validated, not trimmed
(finding 12): an IdNat_PS with surrounding spaces is refused on both faces.

Both patients have the same médecin traitant (GP): without the binding, GP may read both
records, so every refusal here is the binding's.
"""

from __future__ import annotations

import argparse
import base64
import uuid

import pytest
from lxml import etree

from fhir_server.auth.cli import DEFAULT_SCOPES, add_token_command, token_claims
from fhir_server.auth.vihf import WSSE, mint_vihf
from fhir_server.cli import main
from fhir_server.resources.ins import nir_key
from ihe_xds import vocabulary as v
from ihe_xds.stored_query import FIND_DOCUMENTS, GET_DOCUMENTS
from tests.http.conftest import FHIR_JSON, INS_SYSTEM, auth
from tests.http.test_xds_endpoints import GP, Xds, envelope_of, fault_of, registry_status
from tests.support.documents import new_unique_id
from tests.xds_builders import CDA, build_iti41, patient_cx

RIM = f"{{{v.NS_RIM}}}"
BLOCKED = "810003333333"
LOCAL_POLICY = "LocalPolicyRestrictionError"


# -- credentials as `fhir-server token` makes them -------------------------------------------


@pytest.fixture
def cli(data_dir, capsys, no_auth_env):
    """`fhir-server token ...` run against the app's data dir; returns what it prints."""

    def run(*argv: str) -> str:
        code = main(["token", *argv, "--data-dir", str(data_dir)])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out.strip()

    return run


def minted_elsewhere(world, argv: list[str]) -> str:
    """The practitioner token `fhir-server token argv` describes, signed without the CLI's
    checks of its identifiers, as an external issuer's would be."""
    parser = argparse.ArgumentParser()
    add_token_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["token", *argv])
    return world.tokens.issuer.issue(
        scopes=DEFAULT_SCOPES["practitioner"], **token_claims(args, "practitioner")
    )


def ins(nir: str) -> str:
    return f"{INS_SYSTEM}|{nir}"


def security_of(assertion_xml: str) -> etree._Element:
    """A wsse:Security header around a VIHF as the CLI printed it."""
    header = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
    header.append(etree.fromstring(assertion_xml.encode()))
    return header


@pytest.fixture
def world(app, client, tokens, data_dir, cli):
    """Two patients Y and Z of the same GP, each with one document deposited by GP."""
    return World(Xds(app, client, tokens, data_dir), cli)


class World:
    def __init__(self, xds: Xds, cli) -> None:
        self.xds, self.cli, self.client, self.tokens = xds, cli, xds.client, xds.tokens
        self.y, self.nir_y = xds.patient(181)
        self.z, self.nir_z = xds.patient(182)
        self.deposit_y, response = xds.deposit(self.nir_y)
        assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
        self.deposit_z, response = xds.deposit(self.nir_z)
        assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
        self.unique_y = self.deposit_y.document_unique_ids["Document01"]
        self.unique_z = self.deposit_z.document_unique_ids["Document01"]
        self.doc_y = self._document(self.y)
        self.doc_z = self._document(self.z)

    def _document(self, patient_id: str) -> dict:
        found = self.client.get(
            f"/fhir/DocumentReference?patient={patient_id}",
            headers=auth(self.tokens.practitioner(GP)),
        )
        assert found.status_code == 200, found.get_data(as_text=True)
        return found.get_json()["entry"][0]["resource"]

    # -- XDS --------------------------------------------------------------------------

    def vihf(self, nir: str | None, idnat: str = GP) -> etree._Element:
        argv = ["--vihf", "--practitioner", idnat, "--profession", "10"]
        if nir:
            argv += ["--ins", ins(nir)]
        return security_of(self.cli(*argv))

    def find_documents(self, nir: str, vihf_nir: str | None):
        return self._query(
            FIND_DOCUMENTS,
            [
                ("$XDSDocumentEntryPatientId", f"'{patient_cx(nir)}'"),
                ("$XDSDocumentEntryStatus", f"('{v.STATUS_APPROVED}')"),
            ],
            vihf_nir,
        )

    def get_documents(self, entry_uuid: str, vihf_nir: str | None):
        return self._query(
            GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", f"('{entry_uuid}')")], vihf_nir
        )

    def _query(self, query_id: str, slots: list[tuple[str, str]], vihf_nir: str | None):
        request = etree.Element(
            f"{{{v.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": v.NS_QUERY, "rim": v.NS_RIM}
        )
        etree.SubElement(request, f"{{{v.NS_QUERY}}}ResponseOption", returnType="LeafClass")
        query = etree.SubElement(request, f"{RIM}AdhocQuery", id=query_id)
        for name, value in slots:
            slot = etree.SubElement(query, f"{RIM}Slot", name=name)
            etree.SubElement(etree.SubElement(slot, f"{RIM}ValueList"), f"{RIM}Value").text = value
        return self.xds.soap("/xds/registry", v.ACTION_ITI18, request, self.vihf(vihf_nir))

    def retrieve(self, unique_id: str, vihf_nir: str | None):
        request = etree.Element(
            f"{{{v.NS_XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": v.NS_XDSB}
        )
        item = etree.SubElement(request, f"{{{v.NS_XDSB}}}DocumentRequest")
        etree.SubElement(item, f"{{{v.NS_XDSB}}}RepositoryUniqueId").text = self.xds.repository_id
        etree.SubElement(item, f"{{{v.NS_XDSB}}}DocumentUniqueId").text = unique_id
        return self.xds.soap("/xds/repository", v.ACTION_ITI43, request, self.vihf(vihf_nir))

    # -- FHIR -------------------------------------------------------------------------

    def refusals(self, patient_id: str) -> list[dict]:
        """The refusal (outcome 8) AuditEvents the patient sees in their own trail."""
        response = self.client.get(
            f"/fhir/AuditEvent?patient={patient_id}&outcome=8&_count=100",
            headers=auth(self.tokens.patient(patient_id)),
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return [e["resource"] for e in response.get_json().get("entry", [])]

    def documents_of(self, patient_id: str) -> list[dict]:
        response = self.client.get(
            f"/fhir/DocumentReference?patient={patient_id}",
            headers=auth(self.tokens.practitioner(GP)),
        )
        return [e["resource"] for e in response.get_json().get("entry", [])]


def by_binding(event: dict) -> bool:
    """A refusal event whose denied rule is the binding's (R02) and names GP."""
    text = str(event)
    return "'valueString': 'R02'" in text and GP in text


def leaks(answer: str, world: World) -> list[str]:
    """What of patient Y's record appears in an answer given to a request bound to Z."""
    marks = {
        "Y's INS": world.nir_y,
        "Y's Patient id": f"Patient/{world.y}",
        "Y's document id": world.doc_y["id"],
        "Y's document uniqueId": world.unique_y,
        "Y's document content": CDA.decode("utf-8", "replace")[:60],
    }
    return [name for name, mark in marks.items() if mark and mark in answer]


def answer_text(response) -> str:
    """The whole answer, MIME parts included, as text (base64 parts decoded too)."""
    data = response.get_data()
    text = data.decode("utf-8", "replace")
    try:
        _, package = envelope_of(response)
        for attachment in package.attachments.values():
            text += attachment.data.decode("utf-8", "replace")
    except Exception:
        pass
    for chunk in text.split():
        if len(chunk) > 40:
            try:
                text += base64.b64decode(chunk, validate=True).decode("utf-8", "replace")
            except ValueError:
                continue
    return text


# -- XDS: ITI-18 ---------------------------------------------------------------------------


def test_r02_iti18_vihf_of_patient_z_cannot_find_documents_of_patient_y(world):
    """Finding 11: a VIHF naming Z listed Y's documents through FindDocuments. The query
    designating another patient than the VIHF's is refused (LocalPolicyRestrictionError),
    says nothing of Y's record, and the refusal is in Y's trail."""
    control = world.find_documents(world.nir_y, vihf_nir=world.nir_y)
    assert registry_status(control) == (v.RESPONSE_SUCCESS, [])
    assert world.unique_y in control.get_data(as_text=True)
    before = [e for e in world.refusals(world.y) if by_binding(e)]

    response = world.find_documents(world.nir_y, vihf_nir=world.nir_z)

    status, codes = registry_status(response)
    assert (status, codes) == (v.RESPONSE_FAILURE, [LOCAL_POLICY])
    root, _ = envelope_of(response)
    assert root.findall(f".//{RIM}ExtrinsicObject") == []
    assert root.findall(f".//{RIM}ObjectRef") == []
    assert leaks(answer_text(response), world) == []
    after = [e for e in world.refusals(world.y) if by_binding(e)]
    assert len(after) == len(before) + 1


def test_r02_iti18_refusal_is_the_same_for_an_unknown_patient(world):
    """The binding's refusal comes before the designated patient's record is looked at: an
    unknown INS gets the very same answer as Y's (no probing which INS exist)."""
    unknown = "2" + "990175" + "123456"
    unknown += f"{nir_key(unknown):02d}"
    known = world.find_documents(world.nir_y, vihf_nir=world.nir_z)
    missing = world.find_documents(unknown, vihf_nir=world.nir_z)
    assert (
        registry_status(missing) == registry_status(known) == (v.RESPONSE_FAILURE, [LOCAL_POLICY])
    )

    def context(response) -> list[str]:
        root, _ = envelope_of(response)
        return [e.get("codeContext") for e in root.iter(f"{{{v.NS_RS}}}RegistryError")]

    assert context(missing) == context(known)


def test_r02_iti18_get_documents_of_patient_y_by_uuid_answers_as_unknown(world):
    """GetDocuments names no patient: the query is confined to the VIHF's patient, so Y's
    entry asked for by its entryUUID is answered exactly like an entryUUID that does not
    exist, while the VIHF of Y does get it."""
    entry_uuid = next(
        i["value"]
        for i in world.doc_y.get("identifier", [])
        if str(i.get("value", "")).startswith("urn:uuid:")
    )
    control = world.get_documents(entry_uuid, vihf_nir=world.nir_y)
    assert registry_status(control) == (v.RESPONSE_SUCCESS, [])
    assert world.unique_y in control.get_data(as_text=True)

    theirs = world.get_documents(entry_uuid, vihf_nir=world.nir_z)
    unknown = world.get_documents(f"urn:uuid:{uuid.uuid4()}", vihf_nir=world.nir_z)

    assert registry_status(theirs) == registry_status(unknown)
    root, _ = envelope_of(theirs)
    assert root.findall(f".//{RIM}ExtrinsicObject") == []
    assert leaks(answer_text(theirs), world) == []


# -- XDS: ITI-43 ---------------------------------------------------------------------------


def test_r02_iti43_vihf_of_patient_z_cannot_retrieve_a_document_of_patient_y(world):
    """Finding 11: a VIHF naming Z retrieved Y's document. It is now answered exactly like a
    document that does not exist (XDSDocumentUniqueIdError, same wording), with no content,
    and the refusal is in Y's trail."""
    control = world.retrieve(world.unique_y, vihf_nir=world.nir_y)
    assert registry_status(control) == (v.RESPONSE_SUCCESS, [])
    assert CDA in control.get_data()
    before = [e for e in world.refusals(world.y) if by_binding(e)]

    response = world.retrieve(world.unique_y, vihf_nir=world.nir_z)
    missing_id = f"{world.unique_y}.999"
    missing = world.retrieve(missing_id, vihf_nir=world.nir_z)

    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSDocumentUniqueIdError"])
    assert registry_status(missing) == registry_status(response)

    def context(answer, unique_id: str) -> list[str]:
        root, _ = envelope_of(answer)
        return [
            (e.get("codeContext") or "").replace(unique_id, "<id>")
            for e in root.iter(f"{{{v.NS_RS}}}RegistryError")
        ]

    assert context(response, world.unique_y) == context(missing, missing_id)
    assert CDA not in response.get_data()
    assert leaks(answer_text(response).replace(world.unique_y, ""), world) == []
    after = [e for e in world.refusals(world.y) if by_binding(e)]
    assert len(after) > len(before)


def test_r02_iti43_vihf_without_resource_id_keeps_todays_behaviour(world):
    """A VIHF naming no patient is not bound (documented in ihe_xds.transactions): the
    retrieval is judged on the document's record alone, as before."""
    response = world.retrieve(world.unique_y, vihf_nir=None)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    assert CDA in response.get_data()


# -- XDS: ITI-41 ---------------------------------------------------------------------------


def test_r02_iti41_vihf_of_patient_z_cannot_deposit_into_the_record_of_patient_y(world):
    """A deposit for Y under a VIHF naming Z is refused (LocalPolicyRestrictionError) and
    stores nothing; the same deposit under Y's VIHF is accepted."""
    before = len(world.documents_of(world.y))
    request = build_iti41(nir=world.nir_y, security=world.vihf(world.nir_z))
    response = world.client.post(
        "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
    )
    assert registry_status(response) == (v.RESPONSE_FAILURE, [LOCAL_POLICY])
    assert len(world.documents_of(world.y)) == before
    assert [e for e in world.refusals(world.y) if by_binding(e)]

    accepted = build_iti41(nir=world.nir_y, security=world.vihf(world.nir_y))
    response = world.client.post(
        "/xds/repository", data=accepted.body, headers={"Content-Type": accepted.content_type}
    )
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    assert len(world.documents_of(world.y)) == before + 1


# -- XDS: identifiers in the assertion -----------------------------------------------------


def _signed(world: World, **overrides) -> etree._Element:
    arguments = {
        "practitioner_id": GP,
        "profession": "10",
        "audience": world.xds.audience,
        "patient_ins": ins(world.nir_z),
    }
    arguments.update(overrides)
    header = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
    header.append(mint_vihf(world.xds.credential, **arguments))
    return header


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"practitioner_id": f" {GP}"}, "IdNat_PS"),
        ({"practitioner_id": f"{GP} "}, "IdNat_PS"),
        ({"practitioner_id": "81000123"}, "IdNat_PS"),
        ({"patient_ins": f"{INS_SYSTEM}| 2990175123456"}, "resource-id"),
        ({"patient_ins": f"{INS_SYSTEM}|299017512345600"}, "resource-id"),
        ({"patient_ins": "urn:oid:1.2.3.4|299017512345600"}, "resource-id"),
    ],
    ids=["leading-space", "trailing-space", "short", "ins-space", "ins-bad-key", "not-an-ins"],
)
def test_r01_vihf_with_a_malformed_idnat_or_resource_id_is_refused(world, overrides, expected):
    """Finding 12 on the XDS face: the IdNat_PS and the INS of a signed VIHF are validated,
    never trimmed; a malformed one refuses the assertion (SOAP Fault naming the attribute)
    rather than being compared trimmed, or leaving the request unbound."""
    request = etree.Element(f"{{{v.NS_XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": v.NS_XDSB})
    item = etree.SubElement(request, f"{{{v.NS_XDSB}}}DocumentRequest")
    etree.SubElement(item, f"{{{v.NS_XDSB}}}RepositoryUniqueId").text = world.xds.repository_id
    etree.SubElement(item, f"{{{v.NS_XDSB}}}DocumentUniqueId").text = world.unique_y
    response = world.xds.soap(
        "/xds/repository", v.ACTION_ITI43, request, _signed(world, **overrides)
    )
    assert response.status_code == 400
    code, reason = fault_of(response)
    assert code.endswith("Sender")
    assert expected in reason
    assert CDA not in response.get_data()


# -- FHIR: a token with a patient context --------------------------------------------------


@pytest.fixture(params=["patient-id", "ins"])
def bound_token(request, world):
    """A practitioner token (GP) whose patient context is Z: by id (`--patient`) or by INS."""
    context = (
        ["--patient", world.z] if request.param == "patient-id" else ["--ins", ins(world.nir_z)]
    )
    return world.cli("--practitioner", GP, "--profession", "10", *context)


def test_r02_token_patient_context_reads_only_its_patient(world, bound_token):
    """Finding 11 on the FHIR face: a practitioner token whose context is Z read Y's record.
    Reads of Y's resources are now answered like missing ones (404, same wording), Z's are
    served, and each refusal is in Y's trail."""
    headers = auth(bound_token)
    own = world.client.get(f"/fhir/DocumentReference/{world.doc_z['id']}", headers=headers)
    assert own.status_code == 200
    before = [e for e in world.refusals(world.y) if by_binding(e)]

    binary_y = world.doc_y["content"][0]["attachment"]["url"].rsplit("Binary/", 1)[1]
    for template, hidden_id in (
        ("DocumentReference/{}", world.doc_y["id"]),
        ("Patient/{}", world.y),
        ("Binary/{}", binary_y),
        ("DocumentReference/{}/_history/1", world.doc_y["id"]),
        ("DocumentReference/{}/_history", world.doc_y["id"]),
    ):
        response = world.client.get(f"/fhir/{template.format(hidden_id)}", headers=headers)
        missing = world.client.get(f"/fhir/{template.format('no-such-id')}", headers=headers)
        assert response.status_code == missing.status_code == 404, template
        text = response.get_data(as_text=True)
        assert text.replace(hidden_id, "no-such-id") == missing.get_data(as_text=True)
        assert CDA.decode("utf-8", "replace")[:40] not in text
        assert world.nir_y not in text
        assert world.unique_y not in text
    after = [e for e in world.refusals(world.y) if by_binding(e)]
    assert len(after) >= len(before) + 5


def test_r02_token_patient_context_searches_only_its_patient(world, bound_token):
    """A search designating Y (by id, by INS, or an INS nobody has) is refused with the same
    403, naming nothing of Y's record; the search of Z is served."""
    headers = auth(bound_token)
    own = world.client.get(f"/fhir/DocumentReference?patient={world.z}", headers=headers)
    assert own.status_code == 200 and own.get_json()["entry"]
    unknown = "1" + "850575" + "000001"
    unknown += f"{nir_key(unknown):02d}"
    answers = []
    for query in (
        f"DocumentReference?patient={world.y}",
        f"DocumentReference?subject=Patient/{world.y}",
        f"DocumentReference?patient.identifier={INS_SYSTEM}|{world.nir_y}",
        f"List?patient={world.y}",
        f"Patient?_id={world.y}",
        f"Patient?identifier={INS_SYSTEM}|{world.nir_y}",
        f"DocumentReference?patient.identifier={INS_SYSTEM}|{unknown}",
    ):
        response = world.client.get(f"/fhir/{query}", headers=headers)
        assert response.status_code == 403, (query, response.get_data(as_text=True))
        text = response.get_data(as_text=True)
        assert leaks(text.replace(world.nir_y, "").replace(world.y, ""), world) == []
        assert world.doc_y["id"] not in text
        issue = response.get_json()["issue"][0]
        answers.append((issue["code"], issue["diagnostics"]))
    assert len(set(answers)) == 1
    assert "another patient" in answers[0][1]
    assert [e for e in world.refusals(world.y) if by_binding(e)]


def test_r02_token_patient_context_includes_stay_in_its_patient(world, bound_token):
    """A search of Z's documents cannot bring Y's resources in through `_include` or
    `_revinclude` either."""
    response = world.client.get(
        f"/fhir/DocumentReference?patient={world.z}&_include=DocumentReference:subject"
        "&_revinclude=List:item",
        headers=auth(bound_token),
    )
    assert response.status_code == 200
    ids = {e["resource"]["id"] for e in response.get_json()["entry"]}
    assert world.y not in ids and world.doc_y["id"] not in ids


def test_r02_token_patient_context_writes_only_its_patient(world, bound_token):
    """A deposit into Y's record is refused (403) and stores nothing; an update of Y's
    document answers like a missing one's read (404); a deposit for Z is accepted."""
    headers = auth(bound_token, **{"Content-Type": FHIR_JSON})
    before = len(world.documents_of(world.y))
    new = {
        k: v
        for k, v in world.doc_z.items()
        if k not in ("id", "meta", "masterIdentifier", "identifier")
    }
    new["masterIdentifier"] = {"system": "urn:ietf:rfc:3986", "value": new_unique_id()}
    new["subject"] = {"reference": f"Patient/{world.y}"}
    refused = world.client.post("/fhir/DocumentReference", json=new, headers=headers)
    assert refused.status_code == 403, refused.get_data(as_text=True)
    assert "another patient" in refused.get_json()["issue"][0]["diagnostics"]
    assert len(world.documents_of(world.y)) == before

    changed = dict(world.doc_y, description="changed under another patient's context")
    hidden = world.client.put(
        f"/fhir/DocumentReference/{world.doc_y['id']}", json=changed, headers=headers
    )
    assert hidden.status_code == 404, hidden.get_data(as_text=True)
    assert world.unique_y not in hidden.get_data(as_text=True)
    gone = world.client.delete(f"/fhir/DocumentReference/{world.doc_y['id']}", headers=headers)
    assert gone.status_code == 404
    assert len(world.documents_of(world.y)) == before
    assert [e for e in world.refusals(world.y) if by_binding(e)]

    new["subject"] = {"reference": f"Patient/{world.z}"}
    accepted = world.client.post("/fhir/DocumentReference", json=new, headers=headers)
    assert accepted.status_code == 201, accepted.get_data(as_text=True)


def test_r02_token_without_patient_context_keeps_todays_behaviour(world):
    """An unbound practitioner token (no `patient`, no INS) still reaches both records of
    which GP is the médecin traitant: the binding comes from the credentials only."""
    token = world.cli("--practitioner", GP, "--profession", "10")
    for doc in (world.doc_y, world.doc_z):
        response = world.client.get(f"/fhir/DocumentReference/{doc['id']}", headers=auth(token))
        assert response.status_code == 200


def test_r06_patient_token_is_unchanged_by_the_binding(world):
    """The patient's own token (whose `patient` claim is themselves) reads their record as
    before and still not another's."""
    token = world.cli("--patient", world.y)
    own = world.client.get(f"/fhir/DocumentReference/{world.doc_y['id']}", headers=auth(token))
    assert own.status_code == 200
    other = world.client.get(f"/fhir/DocumentReference/{world.doc_z['id']}", headers=auth(token))
    assert other.status_code == 404


# -- FHIR: identifiers in the token --------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--practitioner", f" {BLOCKED}", "--mode", "bris_de_glace", "--reason", "x"], "IdNat_PS"),
        (["--practitioner", f"{BLOCKED} ", "--mode", "bris_de_glace", "--reason", "x"], "IdNat_PS"),
        (["--practitioner", BLOCKED, "--patient", "not an id"], "patient"),
        (["--practitioner", BLOCKED, "--ins", f"{INS_SYSTEM}|123"], "patient_identifier"),
    ],
    ids=["idnat-leading-space", "idnat-trailing-space", "patient-claim", "ins-claim"],
)
def test_r09_token_with_a_malformed_idnat_or_context_is_refused(world, data_dir, argv, expected):
    """Finding 12: a practitioner blocked by Y got in with bris de glace through a token
    whose IdNat_PS was `" 810003333333"` (the Consent's ids are stripped, the token's were
    not). Such a token, or one whose patient context is malformed, is now refused (401
    naming the claim), and nothing of Y's record is served."""
    world.xds.block(world.y, BLOCKED)
    argv = [*argv, "--profession", "10"]
    # `fhir-server token` refuses to print it, naming the option; another issuer (e.g. Pro
    # Santé Connect) may still sign one, which the server must refuse.
    assert main(["token", *argv, "--data-dir", str(data_dir)]) == 2
    token = minted_elsewhere(world, argv)
    for path in (
        f"DocumentReference?patient={world.y}",
        f"DocumentReference/{world.doc_y['id']}",
    ):
        response = world.client.get(f"/fhir/{path}", headers=auth(token))
        assert response.status_code == 401, response.get_data(as_text=True)
        assert expected in response.get_json()["issue"][0]["diagnostics"]
        assert world.doc_y["id"] not in str(response.get_json())
