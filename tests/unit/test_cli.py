"""The `fhir-server` command line (interfaces.md, "Commands")."""

from __future__ import annotations

from fhir_server.auth.tokens import AuthSettings, TokenValidator
from fhir_server.cli import main


def test_token_command_prints_a_token_the_server_accepts(tmp_path, capsys):
    assert (
        main(
            [
                "token",
                "--data-dir",
                str(tmp_path),
                "--system",
                "his",
                "--organization-type",
                "health_insurer",
            ]
        )
        == 0
    )
    token = capsys.readouterr().out.strip()
    claims = TokenValidator.from_settings(AuthSettings(data_dir=tmp_path)).validate(token)
    assert claims["sub"] == "his" and "system/" in claims["scope"]


def test_unknown_setting_stops_with_a_message_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FHIR_STOER", "sqlite:///x")
    assert main(["load", "--data-dir", str(tmp_path), str(tmp_path)]) == 2
    assert "FHIR_STOER" in capsys.readouterr().err


def test_load_command_stores_resources_through_the_gate(tmp_path, capsys, monkeypatch):
    import json

    from tests.http.conftest import a_patient

    (tmp_path / "patients.ndjson").write_text("\n".join(json.dumps(a_patient(n)) for n in range(3)))
    (tmp_path / "bad.json").write_text(json.dumps({"resourceType": "Patient", "gender": "robot"}))
    data_dir = tmp_path / "var"
    assert (
        main(
            [
                "load",
                "--quiet",
                "--data-dir",
                str(data_dir),
                str(tmp_path / "patients.ndjson"),
                str(tmp_path / "bad.json"),
            ]
        )
        == 1
    )
    assert "loaded 3 resources from 2 files; 1 failed" in capsys.readouterr().err


def test_serve_worker_moves_its_start_up_objects_out_of_the_collectors_reach():
    """Issue 6: a full collection over the loaded app took 60-100 ms, in some request."""
    import gc

    from fhir_server.cli import _freeze_startup_objects

    try:
        _freeze_startup_objects(worker=None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_benchmark_apps_are_served_with_the_settings_of_serve():
    """benchmarks/: a benchmark app (`running_server(app=...)`) runs under the gunicorn
    settings of `fhir-server serve`, start-up freeze and access log included, so that its
    figures are those of the server as deployed."""
    import benchmarks.gunicorn_config as config
    from fhir_server.cli import gunicorn_settings

    settings = gunicorn_settings()
    served = {name: getattr(config, name) for name in settings}
    # but the connections' spreading: a perfect balancer's share (benchmarks/share_worker.py)
    assert (served.pop("reuse_port"), settings.pop("reuse_port")) == (False, True)
    assert served == settings
    assert settings["post_worker_init"].__name__ == "_freeze_startup_objects"
