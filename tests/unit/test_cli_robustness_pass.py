"""The operator's doors: the `fhir-server` commands and their settings (robustness pass).

The standards checked: bad input gets a message naming the file, argument or setting and
the problem, a non-zero exit status, no traceback (`main` returns, it raises nothing), and
nothing half-written in the store; secrets (a database password, key material) are never
printed; what cannot be interpreted or trusted stops the command (fail closed).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from fhir_server.cli import main
from tests.http.conftest import a_patient
from tests.support.documents import dmp_document


@pytest.fixture(autouse=True)
def clean_env(no_auth_env):
    """Each test reads the settings it sets, not the machine's (`tests/conftest.py`)."""


def patient_lines(*ids: str) -> list[str]:
    return [json.dumps({**a_patient(n), "id": pid}) for n, pid in enumerate(ids, start=1)]


def stored_patients(data_dir: Path) -> int:
    """How many Patients the SQLite store of `data_dir` holds (0 when there is no store)."""
    import sqlite3

    database = data_dir / "fhir.sqlite3"
    if not database.exists():
        return 0
    with sqlite3.connect(database) as connection:
        query = "SELECT COUNT(*) FROM resource WHERE type = 'Patient'"
        return connection.execute(query).fetchone()[0]


# -- load: a malformed file loads nothing, and says where ----------------------------------


MALFORMED = {
    "truncated JSON": ("p.json", b'{"resourceType": "Patient",', "p.json: not JSON"),
    "bad NDJSON line mid-file": (
        "p.ndjson",
        "\n".join([*patient_lines("a1", "a2"), '{"resourceType": "Pat', *patient_lines("a3")]),
        "p.ndjson, line 3: not JSON",
    ),
    "a JSON array": ("p.json", b"[1, 2]", "p.json: a FHIR resource is a JSON object, not list"),
    "a JSON number": ("p.json", b"5", "p.json: a FHIR resource is a JSON object, not int"),
    "a JSON null": ("p.ndjson", b"null", "p.ndjson, line 1: a FHIR resource is a JSON object"),
    "a Bundle entry that is no object": (
        "b.json",
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {**a_patient(1), "id": "b1"}}, "x"],
            }
        ),
        "b.json: Bundle.entry[1]: not a JSON object",
    ),
    "no resourceType": ("p.json", json.dumps({"id": "x"}), "resourceType: missing"),
    "UTF-16": ("p.json", patient_lines("u1")[0].encode("utf-16"), "p.json: is UTF-16"),
}


def _patient_with(**changes) -> str:
    return json.dumps({**a_patient(1), "id": "x1", **changes})


# What the REST door refuses of every JSON body before validation (`rest.formats`,
# `resources.input_limits`), spelled as a loaded file can spell it.
MALFORMED |= {
    "a control character": (
        "p.ndjson",
        _patient_with(name=[{"family": "Du\u0001rand"}]),
        "p.ndjson, line 1: Patient.name[0].family: a string holds a control character",
    ),
    "a repeated key": (
        "p.ndjson",
        _patient_with()[:-1] + ', "gender": "male"}',
        "p.ndjson, line 1: Patient: the key 'gender' appears more than once",
    ),
    "a null": (
        "p.ndjson",
        _patient_with(name=[{"family": "Durand", "given": ["Marie", None]}]),
        "p.ndjson, line 1: Patient.name[0].given[1] is null",
    ),
    "nested too deep": (
        "p.json",
        _patient_with()[:-1] + ', "contained": ' + "[" * 70 + "]" * 70 + "}",
        "p.json: the body is nested more than 64 levels deep",
    ),
}


@pytest.mark.parametrize("case", MALFORMED.values(), ids=list(MALFORMED))
def test_load_of_a_malformed_file_names_it_and_stores_nothing(tmp_path, capsys, case):
    """Standard: a clear error naming the file (and line), exit status non-zero, no
    traceback, nothing half-written. Before: an orjson/AttributeError traceback, after the
    NDJSON lines before the bad one were stored; what only the REST door refused (a control
    character, a repeated key, a null, a body nested too deep) was loaded as is."""
    name, content, named = case
    good = tmp_path / "first.ndjson"
    good.write_text("\n".join(patient_lines("g1", "g2")))
    bad = tmp_path / name
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    data_dir = tmp_path / "var"
    assert main(["load", "--quiet", "--data-dir", str(data_dir), str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert named in err and "nothing loaded" in err
    assert stored_patients(data_dir) == 0


def test_load_of_a_path_that_names_nothing_is_refused(tmp_path, capsys):
    """A typo in a path must not load the other files and report success on them."""
    good = tmp_path / "p.ndjson"
    good.write_text("\n".join(patient_lines("n1")))
    missing = tmp_path / "pateints.ndjson"
    assert main(["load", "--quiet", "--data-dir", str(tmp_path / "var"), str(good), str(missing)])
    assert f"{missing}: no such file or directory" in capsys.readouterr().err
    assert stored_patients(tmp_path / "var") == 0


def test_load_reads_a_utf8_file_with_a_byte_order_mark(tmp_path, capsys):
    """Editors on Windows save UTF-8 with a BOM; it says nothing more than UTF-8."""
    path = tmp_path / "p.json"
    path.write_text(patient_lines("bom1")[0], encoding="utf-8-sig")
    assert main(["load", "--quiet", "--data-dir", str(tmp_path / "var"), str(path)]) == 0
    assert "loaded 1 resources from 1 files; 0 failed" in capsys.readouterr().err
    assert stored_patients(tmp_path / "var") == 1


def test_load_names_the_file_and_line_of_each_resource_refused(tmp_path, capsys):
    """What was loaded is reported exactly: the refused resource by its file and line."""
    path = tmp_path / "p.ndjson"
    robot = json.dumps({**a_patient(2), "id": "r2", "gender": "robot"})
    path.write_text("\n".join([patient_lines("r1")[0], robot, patient_lines("r3")[0]]))
    assert main(["load", "--quiet", "--data-dir", str(tmp_path / "var"), str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}, line 2: Patient/r2: " in err
    assert "loaded 2 resources from 1 files; 1 failed" in err


# -- load: the record check of the REST door (R06) ----------------------------------------


def _load(tmp_path: Path, name: str, *resources: dict) -> int:
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in resources))
    return main(["load", "--quiet", "--data-dir", str(tmp_path / "var"), str(path)])


def test_r06_load_refuses_a_resource_naming_two_patients(tmp_path, capsys):
    """R06: a resource belongs to one patient's record; the REST door answers 422 for one
    naming two Patients (issue #18, finding 4). Before: the loader, writing as INTERNAL, put
    the document in both records."""
    assert (
        _load(tmp_path, "patients.ndjson", *(json.loads(p) for p in patient_lines("p1", "p2"))) == 0
    )
    document = dmp_document("p1", id="d1")
    document["author"] = [*document.get("author", []), {"reference": "Patient/p2"}]
    assert _load(tmp_path, "docs.ndjson", document) == 1
    assert "belongs to one patient's record; this one names 2 Patients" in capsys.readouterr().err


def test_r06_load_refuses_a_transaction_entry_naming_two_patients(tmp_path, capsys):
    assert (
        _load(tmp_path, "patients.ndjson", *(json.loads(p) for p in patient_lines("p1", "p2"))) == 0
    )
    document = dmp_document("p1", id="d2")
    document["author"] = [*document.get("author", []), {"reference": "Patient/p2"}]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": document, "request": {"method": "PUT", "url": "DocumentReference/d2"}}
        ],
    }
    assert _load(tmp_path, "tx.json", bundle) == 1
    assert "names 2 Patients; none of the Bundle's entries loaded" in capsys.readouterr().err


# -- audit verify ----------------------------------------------------------------------------


def test_r16_audit_verify_of_a_data_dir_with_no_store_fails_and_creates_none(tmp_path, capsys):
    """Fail closed: a mistyped --data-dir opened (created) an empty store whose empty log
    "verified": "audit chain intact" and exit status 0, for a log never looked at."""
    typo = tmp_path / "vra"
    assert main(["audit", "verify", "--data-dir", str(typo)]) == 2
    err = capsys.readouterr().err
    assert f"no store at {typo / 'fhir.sqlite3'}" in err and "nothing verified" in err
    assert not typo.exists()


@pytest.mark.parametrize(
    "argv", [["purge"], ["close", "p1"], ["reopen", "p1"]], ids=["purge", "close", "reopen"]
)
def test_r03_a_record_command_on_a_data_dir_with_no_store_fails_and_creates_none(
    tmp_path, capsys, argv
):
    """The retention job on a mistyped data dir created an empty store and said "purged 0
    record(s)", exit 0: a purge never made looked like one made. Fail closed."""
    typo = tmp_path / "vra"
    assert main(["record", *argv, "--data-dir", str(typo)]) == 2
    assert f"no store at {typo / 'fhir.sqlite3'}" in capsys.readouterr().err
    assert not typo.exists()


# -- settings: secrets never printed, failures named ---------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "mongdb://admin:s3cret@db.example/fhir",  # a misspelled scheme
        "mongodb://admin:s3cret@db.example:99999/fhir",  # a URI pymongo refuses
        "mongodb://admin:s3cret@",
    ],
)
def test_a_store_uri_that_cannot_be_used_is_named_without_its_password(
    tmp_path, capsys, monkeypatch, uri
):
    """Secrets are never printed: the configuration error quoted FHIR_STORE whole, password
    included; a URI pymongo refuses was a traceback."""
    path = tmp_path / "p.json"
    path.write_text(patient_lines("s1")[0])
    monkeypatch.setenv("FHIR_STORE", uri)
    assert main(["load", "--quiet", "--data-dir", str(tmp_path / "var"), str(path)]) == 2
    err = capsys.readouterr().err
    assert "configuration error: FHIR_STORE: '" in err and "admin:***@" in err
    assert "s3cret" not in err


def test_the_redacted_url_keeps_what_locates_the_store():
    from fhir_server.config import redacted_url

    assert redacted_url("mongodb://u:p@w@h1,h2/db?authSource=admin") == (
        "mongodb://u:***@h1,h2/db?authSource=admin"
    )
    assert redacted_url("mongodb://h/db") == "mongodb://h/db"
    assert redacted_url("sqlite:///var/fhir.sqlite3") == "sqlite:///var/fhir.sqlite3"


# -- keys: fail closed on a key others may read ----------------------------------------------


def test_a_signing_key_others_may_read_stops_the_token_command(tmp_path, capsys):
    """Fail closed: a world-readable token-signing key was used as is; whoever read it can
    mint tokens for anyone. The message names the file and its mode, never the key."""
    data_dir = tmp_path / "var"
    assert main(["token", "--patient", "p1", "--data-dir", str(data_dir)]) == 0
    key = data_dir / "keys" / "token-signing-key.pem"
    key.chmod(0o644)
    capsys.readouterr()
    assert main(["token", "--patient", "p1", "--data-dir", str(data_dir)]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert f"{key}: a private key others may read or write (mode 0644)" in out.err
    assert "PRIVATE KEY" not in out.err


def test_a_cursor_secret_others_may_read_stops_the_server(tmp_path, capsys):
    """The paging cursors' secret binds a search to its requester; readable by others,
    anyone can forge a cursor. The server (here `load`, which builds it) stops."""
    path = tmp_path / "p.json"
    path.write_text(patient_lines("c1")[0])
    data_dir = tmp_path / "var"
    assert main(["load", "--quiet", "--data-dir", str(data_dir), str(path)]) == 0
    secret = data_dir / "keys" / "cursor.key"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    secret.chmod(0o640)
    capsys.readouterr()
    assert main(["load", "--quiet", "--data-dir", str(data_dir), str(path)]) == 2
    assert (
        f"{secret}: a private key others may read or write (mode 0640)" in capsys.readouterr().err
    )


def test_a_signing_key_file_holding_no_key_is_named_not_a_traceback(tmp_path, capsys):
    data_dir = tmp_path / "var"
    key = data_dir / "keys" / "token-signing-key.pem"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"not a key")
    key.chmod(0o600)
    assert main(["token", "--patient", "p1", "--data-dir", str(data_dir)]) == 2
    assert f"{key} does not hold a private key" in capsys.readouterr().err


# -- the other commands: usage errors, not tracebacks ----------------------------------------


def test_a_data_dir_that_is_a_file_is_named_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(patient_lines("f1")[0])
    data_dir = tmp_path / "var"
    data_dir.write_text("")
    assert main(["load", "--quiet", "--data-dir", str(data_dir), str(path)]) == 1
    assert f"fhir-server load: [Errno 17] File exists: '{data_dir}'" in capsys.readouterr().err
    assert main(["token", "--patient", "p1", "--data-dir", str(data_dir)]) == 1
    assert "fhir-server token: [Errno 20] Not a directory" in capsys.readouterr().err


def test_r03_record_purge_with_a_malformed_now_is_a_usage_error(tmp_path, capsys):
    """Before: a ValueError traceback once the store was open."""
    with pytest.raises(SystemExit) as exit_:
        main(["record", "purge", "--data-dir", str(tmp_path / "var"), "--now", "next year"])
    assert exit_.value.code == 2
    assert "argument --now: 'next year' is not an ISO instant" in capsys.readouterr().err
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("content", ['{"clients": ', "[]", '{"clients": {"c": {}}}'])
@pytest.mark.parametrize("command", [["list"], ["remove", "c"]])
def test_client_commands_on_a_malformed_registry_name_it(tmp_path, capsys, content, command):
    """A clients.json cut short or edited by hand: named, exit status 2, no traceback."""
    (tmp_path / "clients.json").write_text(content)
    assert main(["client", *command, "--data-dir", str(tmp_path)]) == 2
    assert f"{tmp_path / 'clients.json'}: not a client registry" in capsys.readouterr().err


def test_habilitation_check_of_a_profiles_dir_that_is_not_there_is_named(tmp_path, capsys):
    missing = tmp_path / "profiels"
    assert main(["habilitation", "check", "--profiles", str(missing)]) == 1
    assert f"--profiles {missing}: no habilitation-matrix.json" in capsys.readouterr().err


# -- settings and flags: what cannot be interpreted stops the command ----------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["serve", "--workers", "0"], "argument --workers: must be positive, got 0"),
        (["serve", "--threads", "-4"], "argument --threads: must be positive, got -4"),
        (["serve", "--keepalive", "0"], "argument --keepalive: must be positive, got 0"),
        (["serve", "--worker-connections", "0"], "argument --worker-connections: must be"),
        (["serve", "--port", "70000"], "argument --port: 70000 is not a TCP port"),
        (["serve", "--host", ""], "argument --host: empty"),
        (["load", "--data-dir", "", "x.json"], "argument --data-dir: empty"),
        (["token", "--patient", "p1", "--data-dir", ""], "argument --data-dir: empty"),
        (["client", "list", "--data-dir", ""], "argument --data-dir: empty"),
        (["audit", "verify", "--data-dir", ""], "argument --data-dir: empty"),
        (["record", "purge", "--data-dir", ""], "argument --data-dir: empty"),
        (["bench", "search", "--seconds", "0"], "argument --seconds: must be positive, got 0"),
        (["bench", "access", "--repeats", "-1"], "argument --repeats: must be positive"),
        (["bench", "search", "--documents", "10k"], "argument --documents: '10k' is not a whole"),
    ],
)
def test_a_flag_is_checked_as_its_setting_is(argv, named, capsys):
    """Fail closed: FHIR_WORKERS=0 stops the server with a message, `--workers 0` was handed
    to gunicorn as is (and `--host ""` bound every interface). The arguments are only parsed
    here: nothing is served or measured."""
    from fhir_server.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize(
    "variable", ["FHIR_HOST", "FHIR_DATA_DIR", "FHIR_PROFILES_DIR", "FHIR_XDS_REPOSITORY_ID"]
)
def test_a_setting_set_empty_stops_the_server(variable):
    """A template's unset variable expands to "": FHIR_HOST="" bound the server on every
    interface instead of 127.0.0.1, FHIR_DATA_DIR="" put the store in the working
    directory. Fail closed: the setting is named."""
    from fhir_server.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=f"{variable}: empty"):
        load_settings(environ={variable: ""})


def test_token_with_fhir_data_dir_set_empty_is_refused(tmp_path, capsys, monkeypatch):
    """`token` reads FHIR_DATA_DIR itself: set empty, it signed with ./var's key."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FHIR_DATA_DIR", "")
    assert main(["token", "--patient", "p1"]) == 2
    assert "FHIR_DATA_DIR: empty" in capsys.readouterr().err
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("vihf", [[], ["--vihf"]])
@pytest.mark.parametrize("minutes", ["1441", "99999999999", "99999999999999999999"])
def test_token_lifetime_is_bounded(tmp_path, capsys, minutes, vihf):
    """A bearer token serves whoever holds it: `--minutes 99999999999` printed a token valid for
    190,000 years, and larger values (or `--vihf`) a traceback. At most a day, or refused."""
    argv = ["token", "--practitioner", "810000000001", "--profession", "10", *vihf]
    assert main([*argv, "--minutes", minutes, "--data-dir", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and f"--minutes {minutes}: at most 1440" in out.err


@pytest.mark.parametrize(
    ("client_id", "problem"),
    [
        ("", "empty"),
        (" ", "empty"),
        ("his ", "spaces around it"),
        ("h\tis", "characters outside visible ASCII"),
        ("fhir-server-cli", "reserved for the tokens of `fhir-server token`"),
    ],
)
def test_client_add_refuses_an_id_that_names_no_one(tmp_path, capsys, client_id, problem):
    """Before: "" and " " were registered (`registered ` printed, exit 0), and a backend
    client could take the client id of the tokens `fhir-server token` mints."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    public = tmp_path / "public.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    public.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    argv = ["client", "add", client_id, "--public-key", str(public), "--data-dir", str(tmp_path)]
    assert main(argv) == 2
    assert f"client id {client_id!r}: {problem}" in capsys.readouterr().err
    assert not (tmp_path / "clients.json").exists()


def test_load_of_a_device_is_refused_before_it_is_read(tmp_path, capsys):
    """/dev/zero was read until memory ran out; a pipe is read by the check, so it is
    refused too, naming what to do."""
    assert main(["load", "--quiet", "--data-dir", str(tmp_path / "var"), "/dev/zero"]) == 2
    assert "/dev/zero: not a regular file" in capsys.readouterr().err
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize(
    "broken",
    [
        "habilitation-matrix.json",
        "StructureDefinition-dmp-consent.json",
        "search-parameters/dmp-mhd.json",
    ],
)
def test_a_profiles_file_cut_short_stops_the_server_naming_it(
    tmp_path, capsys, monkeypatch, broken
):
    """FHIR_PROFILES_DIR with a file cut short: a configuration error naming the file (exit 2),
    not a traceback (the StructureDefinition's did not even name the file)."""
    import shutil

    from fhir_server.paths import profiles_dir

    profiles = tmp_path / "profiles"
    shutil.copytree(profiles_dir(), profiles)
    (profiles / broken).write_text("{")
    monkeypatch.setenv("FHIR_PROFILES_DIR", str(profiles))
    path = tmp_path / "p.json"
    path.write_text(patient_lines("x1")[0])
    assert main(["load", "--quiet", "--data-dir", str(tmp_path / "var"), str(path)]) == 2
    assert f"configuration error: {profiles / broken}: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"FHIR_AUTH_ISSUER": "https://idp.example"}, "must be set together"),
        ({"FHIR_AUTH_JWKS_URL": "https://idp.example/jwks"}, "must be set together"),
        (
            {
                "FHIR_AUTH_ISSUER": "https://idp.example",
                "FHIR_AUTH_JWKS_URL": "http://idp.example/k",
            },
            "FHIR_AUTH_JWKS_URL: 'http://idp.example/k': the keys every external token",
        ),
    ],
)
def test_an_external_issuer_half_configured_or_over_http_stops_the_server(
    tmp_path, capsys, monkeypatch, environ, named
):
    """Fail closed: an issuer without its keys was a ValueError traceback from the app
    factory; its keys over plain http to another host were accepted (whoever sits on the way
    serves their own, and every token they sign passes)."""
    for variable, value in environ.items():
        monkeypatch.setenv(variable, value)
    path = tmp_path / "p.json"
    path.write_text(patient_lines("i1")[0])
    assert main(["load", "--quiet", "--data-dir", str(tmp_path / "var"), str(path)]) == 2
    err = capsys.readouterr().err
    assert "fhir-server: configuration error: " in err
    assert named in err
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize(
    ("content", "reason"), [(None, "No such file or directory"), (b"garbage", "no PEM certificate")]
)
def test_a_trusted_vihf_certificate_that_cannot_be_read_stops_the_server_naming_it(
    tmp_path, capsys, monkeypatch, content, reason
):
    """FHIR_XDS_TRUSTED_CERTIFICATES naming a file cut short was a ValueError traceback."""
    certificate = tmp_path / "signer.pem"
    if content is not None:
        certificate.write_bytes(content)
    monkeypatch.setenv("FHIR_XDS_TRUSTED_CERTIFICATES", str(certificate))
    path = tmp_path / "p.json"
    path.write_text(patient_lines("t1")[0])
    assert main(["load", "--quiet", "--data-dir", str(tmp_path / "var"), str(path)]) == 2
    assert f"FHIR_XDS_TRUSTED_CERTIFICATES: {certificate}: {reason}" in capsys.readouterr().err


def test_the_store_a_command_creates_is_its_owners_only(tmp_path, capsys):
    """The records of every patient: under umask 022 the data dir was created 0755 and the
    SQLite store and audit log 0644, readable by any local user."""
    previous = os.umask(0o022)
    try:
        path = tmp_path / "p.json"
        path.write_text(patient_lines("o1")[0])
        data_dir = tmp_path / "var"
        assert main(["load", "--quiet", "--data-dir", str(data_dir), str(path)]) == 0
        assert os.umask(0o022) == 0o022  # the caller's umask is given back
    finally:
        os.umask(previous)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("fhir.sqlite3", "fhir.audit.sqlite3"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name


def test_load_of_a_directory_with_no_fhir_file_is_refused(tmp_path, capsys):
    """An export saved as .JSON, or an empty directory: "loaded 0 resources from 0 files",
    exit 0, where nothing was loaded."""
    export = tmp_path / "export"
    export.mkdir()
    (export / "Patient.JSON").write_text(patient_lines("e1")[0])
    assert main(["load", "--quiet", "--data-dir", str(tmp_path / "var"), str(export)]) == 2
    assert f"{export}: a directory with no .json or .ndjson file" in capsys.readouterr().err


def test_a_file_that_changes_while_it_is_loaded_is_reported_with_what_was_loaded(
    tmp_path, monkeypatch, capsys
):
    """Checked whole, then loaded: a file cut short in between (another process writing
    it) stops the load saying how many resources were stored before it."""
    from fhir_server import loader

    first, second = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    first.write_text("\n".join(patient_lines("w1", "w2")))
    second.write_text("\n".join(patient_lines("w3")))
    load_document = loader.load_document

    def load_then_cut(runtime, document, where=""):
        second.write_text('{"resourceType": "Pat')  # once the files were checked
        return load_document(runtime, document, where)

    monkeypatch.setattr(loader, "load_document", load_then_cut)
    assert (
        main(["load", "--quiet", "--data-dir", str(tmp_path / "var"), str(first), str(second)]) == 2
    )
    err = capsys.readouterr().err
    assert f"{second}, line 1: not JSON" in err
    assert "the file changed while it was loaded; 2 resources were loaded before it" in err


# -- token and serve: one name for one setting, read by the same loader ----------------------


def test_token_reads_the_trusted_vihf_certificates_under_the_servers_name(tmp_path):
    """`AuthSettings.from_env` (the `token` command's settings) read the trusted VIHF
    certificates from FHIR_XDS_VIHF_TRUSTED_CERTS, a name the server refuses as unknown; the
    server's FHIR_XDS_TRUSTED_CERTIFICATES was ignored. Both now read the server's settings
    through `config.load_settings`, and agree."""
    from fhir_server.auth.tokens import AuthSettings
    from fhir_server.config import load_settings
    from fhir_server.rest.app import auth_settings

    certificates = os.pathsep.join([str(tmp_path / "a.pem"), str(tmp_path / "b.pem")])
    environ = {
        "FHIR_DATA_DIR": str(tmp_path),
        "FHIR_BASE_URL": "https://dmp.example/fhir",
        "FHIR_XDS_TRUSTED_CERTIFICATES": certificates,
    }
    settings = AuthSettings.from_env(environ)
    assert settings.vihf_trusted_cert_files == (tmp_path / "a.pem", tmp_path / "b.pem")
    assert settings == auth_settings(load_settings(environ=environ))


@pytest.mark.parametrize(
    "variable", ["FHIR_XDS_VIHF_TRUSTED_CERTS", "FHIR_BASE_URI", "FHIR_AUTH_AUDIENCES"]
)
def test_token_refuses_a_mistyped_setting_as_the_server_does(
    tmp_path, capsys, monkeypatch, variable
):
    """The server stops on an unknown FHIR_* variable (a mistyped name would leave its
    setting at the default); `token` ignored it and minted a token for another audience or
    issuer than the operator meant. It is refused now, named, and no token is printed."""
    from fhir_server.config import ConfigError, load_settings

    monkeypatch.setenv(variable, "https://dmp.example/fhir")
    with pytest.raises(ConfigError, match=variable):
        load_settings()
    assert main(["token", "--patient", "p1", "--data-dir", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and f"{variable}: unknown setting" in out.err


@pytest.mark.parametrize("command", [["client", "list"], ["client", "remove", "his"]])
def test_client_commands_refuse_a_mistyped_setting_as_the_server_does(
    tmp_path, capsys, monkeypatch, command
):
    """The client commands read FHIR_DATA_DIR alone: a mistyped FHIR_* variable, which stops
    the server, was ignored (a registry listed or changed beside a store the operator did
    not mean). Refused now, named, exit 2, nothing created."""
    monkeypatch.setenv("FHIR_DATA_DIRECTORY", str(tmp_path / "meant"))
    monkeypatch.setenv("FHIR_DATA_DIR", str(tmp_path / "used"))
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "FHIR_DATA_DIRECTORY: unknown setting" in err
    assert not (tmp_path / "used").exists()
