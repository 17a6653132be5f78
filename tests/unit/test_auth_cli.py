"""`fhir-server token` and `fhir-server client` (interfaces.md §Commands and §Tokens)."""

from __future__ import annotations

import argparse

import pytest
from lxml import etree

from fhir_server.access.requester import AccessMode, ActorKind
from fhir_server.auth.cli import add_client_command, add_token_command
from fhir_server.auth.clients import ClientRegistry
from fhir_server.auth.requester import requester_from_claims
from fhir_server.auth.scopes import ScopeSet
from fhir_server.auth.tokens import AuthSettings, TokenValidator
from fhir_server.auth.vihf import VihfTrust, vihf_requester
from fhir_server.cli import main


@pytest.fixture(autouse=True)
def clean_env(no_auth_env):
    """Each test reads the settings it sets, not the machine's (`tests/conftest.py`)."""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One data dir for the module's token commands, as one server's would be."""
    return tmp_path_factory.mktemp("var")


def run(argv, capsys):
    parser = argparse.ArgumentParser(prog="fhir-server")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_token_command(subparsers)
    add_client_command(subparsers)
    args = parser.parse_args(argv)
    code = args.func(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def token_requester(tmp_path, capsys, *flags):
    code, out, err = run(["token", *flags, "--data-dir", str(tmp_path)], capsys)
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1  # prints only the token
    validator = TokenValidator.from_settings(AuthSettings(data_dir=tmp_path))
    return requester_from_claims(validator.validate(out.strip()))


def test_token_patient_is_accepted_by_the_server_of_the_same_data_dir(data_dir, capsys):
    requester = token_requester(data_dir, capsys, "--patient", "123")
    assert requester.kind is ActorKind.PATIENT
    assert requester.subject_id == requester.patient_id == "123"
    assert ScopeSet.from_scopes(requester.scopes) == ScopeSet.parse("patient/*.cruds")


def test_r07_token_representative(data_dir, capsys):
    requester = token_requester(data_dir, capsys, "--representative", "rp1", "--patient", "child")
    assert requester.kind is ActorKind.REPRESENTATIVE
    assert (requester.subject_id, requester.patient_id) == ("rp1", "child")


def test_token_practitioner_with_context(data_dir, capsys):
    requester = token_requester(
        data_dir,
        capsys,
        "--practitioner",
        "810000000001",
        "--profession",
        "10",
        "--specialty",
        "SM54",
        "--organization",
        "1000000001",
        "--mode",
        "bris_de_glace",
        "--reason",
        "coma",
    )
    assert requester.kind is ActorKind.PRACTITIONER
    assert requester.subject_id == "810000000001"
    assert (requester.profession, requester.specialty, requester.organization_id) == (
        "10",
        "SM54",
        "1000000001",
    )
    assert requester.access_mode is AccessMode.BRIS_DE_GLACE
    assert requester.access_reason == "coma"
    assert requester.scopes == ("user/*.cruds",)


def test_r15_token_system_defaults_to_deposit_scopes(data_dir, capsys):
    requester = token_requester(
        data_dir, capsys, "--system", "his-1", "--organization-type", "hospital"
    )
    assert requester.kind is ActorKind.SYSTEM
    assert requester.subject_id == requester.client_id == "his-1"
    assert requester.organization_type == "hospital"
    scopes = ScopeSet.from_scopes(requester.scopes)
    assert scopes.allows("DocumentReference", "create") and not scopes.allows(
        "DocumentReference", "read"
    )


def test_token_scope_and_minutes_flags(data_dir, capsys):
    code, out, _ = run(
        [
            "token",
            "--patient",
            "1",
            "--scope",
            "patient/Observation.rs",
            "--minutes",
            "5",
            "--data-dir",
            str(data_dir),
        ],
        capsys,
    )
    claims = TokenValidator.from_settings(AuthSettings(data_dir=data_dir)).validate(out.strip())
    assert claims["scope"] == "patient/Observation.rs"
    assert claims["exp"] - claims["iat"] == 300


def test_token_data_dir_defaults_to_fhir_data_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FHIR_DATA_DIR", str(tmp_path))
    code, out, _ = run(["token", "--patient", "1"], capsys)
    assert code == 0
    assert (tmp_path / "keys").is_dir()
    assert TokenValidator.from_settings(AuthSettings.from_env()).validate(out.strip())["sub"] == "1"


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--patient", "1", "--system", "s"],
        ["--practitioner", "810000000001"],  # no profession
        [
            "--practitioner",
            "810000000001",
            "--profession",
            "10",
            "--mode",
            "bris_de_glace",
        ],  # no reason
        ["--patient", "1", "--scope", "patient/*.sr"],
    ],
)
def test_token_bad_flags_print_no_token(data_dir, capsys, flags):
    code, out, err = run(["token", *flags, "--data-dir", str(data_dir)], capsys)
    assert code != 0
    assert out == ""
    assert "error" in err


def test_token_vihf_prints_an_assertion_the_server_trusts(data_dir, capsys):
    code, out, err = run(
        [
            "token",
            "--vihf",
            "--practitioner",
            "810000000001",
            "--profession",
            "60",
            "--ins",
            "urn:oid:1.2.250.1.213.1.4.8|123456789012311",
            "--data-dir",
            str(data_dir),
        ],
        capsys,
    )
    assert code == 0, err
    requester = vihf_requester(
        etree.fromstring(out.encode()), VihfTrust.from_settings(AuthSettings(data_dir=data_dir))
    )
    assert (requester.kind, requester.subject_id, requester.profession) == (
        ActorKind.PRACTITIONER,
        "810000000001",
        "60",
    )


def test_token_vihf_needs_a_practitioner(data_dir, capsys):
    code, out, _ = run(["token", "--vihf", "--patient", "1", "--data-dir", str(data_dir)], capsys)
    assert code == 2 and out == ""


def test_client_add_list_remove(tmp_path, capsys):
    from joserfc.jwk import RSAKey

    pem = tmp_path / "client.pem"
    pem.write_bytes(RSAKey.generate_key(2048).as_pem(private=False))
    code, _, err = run(
        [
            "client",
            "add",
            "lab-1",
            "--public-key",
            str(pem),
            "--scope",
            "system/DocumentReference.c",
            "--organization-type",
            "laboratory",
            "--data-dir",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    client = ClientRegistry.in_data_dir(tmp_path).get("lab-1")
    assert client.scope == "system/DocumentReference.c" and client.organization_type == "laboratory"
    _, out, _ = run(["client", "list", "--data-dir", str(tmp_path)], capsys)
    assert out.split("\t")[0] == "lab-1"
    assert run(["client", "remove", "lab-1", "--data-dir", str(tmp_path)], capsys)[0] == 0
    assert ClientRegistry.in_data_dir(tmp_path).get("lab-1") is None
    assert run(["client", "remove", "lab-1", "--data-dir", str(tmp_path)], capsys)[0] == 1


def test_client_add_refuses_a_private_key(tmp_path, capsys):
    from joserfc.jwk import RSAKey

    pem = tmp_path / "private.pem"
    pem.write_bytes(RSAKey.generate_key(2048).as_pem(private=True))
    code, _, err = run(
        ["client", "add", "x", "--public-key", str(pem), "--data-dir", str(tmp_path)], capsys
    )
    assert code == 2 and "private" in err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--practitioner", "10000000010", "--profession", "10"], "810000000010"),
        (["--practitioner", " 810000000010", "--profession", "10"], "white space"),
        (["--patient", "not an id"], "--patient"),
        (["--practitioner", "810000000010", "--profession", "10", "--ins", "x|1"], "--ins"),
    ],
)
def test_token_with_a_malformed_identifier_is_not_printed(tmp_path, capsys, argv, named):
    """Issue #18, finding 12: the server refuses credentials whose IdNat_PS, patient id or INS
    is malformed (never trimmed); the CLI says so instead of printing such a token."""
    assert main(["token", *argv, "--data-dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert named in err
