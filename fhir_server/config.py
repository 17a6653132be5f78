"""Settings: command-line flags, then `FHIR_*` environment variables, then defaults.

An unknown `FHIR_*` variable or a malformed value stops start-up with a message naming it:
a typo in a production setting must not silently fall back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class ConfigError(Exception):
    """A setting is unknown or malformed; the message names it."""


def read_conformance_json(path: Path) -> Any:
    """A JSON file of the profiles directory (FHIR_PROFILES_DIR), or ConfigError naming it:
    a file cut short or edited by hand stops start-up with its name, not a traceback."""
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file of the profiles ({exc})") from None


def _positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}: '{value}' is not a whole number") from None
    if number <= 0:
        raise ConfigError(f"{name}: must be positive, got {number}")
    return number


def _port(name: str, value: str) -> int:
    port = _positive_int(name, value)
    if port > 65535:
        raise ConfigError(f"{name}: {port} is not a TCP port")
    return port


def _store_url(name: str, value: str) -> str:
    scheme = urlparse(value).scheme
    if scheme not in ("sqlite", "mongodb", "mongodb+srv"):
        raise ConfigError(
            f"{name}: '{redacted_url(value)}' must be sqlite:///PATH or a mongodb:// URI"
        )
    return value


def redacted_url(value: str) -> str:
    """`value` with the password of its user info, if any, replaced by `***`: a store URI
    in an error message or a log line must not carry the database password."""
    scheme, separator, rest = value.partition("://")
    if not separator:  # no scheme to go by: whatever precedes an @ may be user info
        return f"***@{value.rpartition('@')[2]}" if "@" in value else value
    authority_end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority = rest[:authority_end]
    if "@" not in authority:
        return value
    user_info, _, host = authority.rpartition("@")
    user = user_info.split(":", 1)[0]
    hidden = f"{user}:***" if ":" in user_info else "***"
    return f"{scheme}://{hidden}@{host}{rest[authority_end:]}"


def _http_url(name: str, value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{name}: '{value}' is not an http(s) URL")
    return value.rstrip("/")


def _text(name: str, value: str) -> str:
    return value


def _nonempty(name: str, value: str) -> str:
    """A setting that has no meaning empty. FHIR_HOST="" (a template's unset variable) bound
    the server on every interface rather than on 127.0.0.1: fail closed."""
    if not value.strip():
        raise ConfigError(f"{name}: empty (unset it for the default)")
    return value


def _dir(name: str, value: str) -> Path:
    return Path(_nonempty(name, value))


def _paths(name: str, value: str) -> tuple[str, ...]:
    return tuple(part for part in value.split(os.pathsep) if part)


def _log_level(name: str, value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{name}: '{value}' is not one of DEBUG, INFO, WARNING, ERROR")
    return level


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./var")
    store: str = ""  # empty: sqlite:///<data_dir>/fhir.sqlite3
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    # Threads per worker. Every read waits for its AuditEvent's durable commit (R16), I/O
    # during which the worker's other threads run and queue their events for the same
    # commit: 8 threads gave audited reads 1,100-1,190/s against 990-1,060/s with 4, and
    # over keep-alive connections 1,305/s against 1,143/s (16: 1,244/s; docs/performance.md),
    # at the cost of unaudited reads, which never happen here.
    threads: int = 8
    # Keep-alive clients one worker holds at most (gunicorn worker_connections); beyond it,
    # new connections wait in the worker's own listen queue (SO_REUSEPORT: cli.py).
    worker_connections: int = 1000
    # Seconds an idle keep-alive connection stays open (gunicorn keepalive). Behind a load
    # balancer, set it above the balancer's idle timeout, or the server may close a connection
    # just as the balancer sends a request on it.
    keepalive: int = 5
    base_url: str = ""  # empty: http://<host>:<port>/fhir
    max_body_bytes: int = 32 * 1024 * 1024
    auth_issuer: str = ""  # empty: the local issuer (the server's own key)
    auth_jwks_url: str = ""
    auth_audience: str = ""  # empty: the base URL
    xds_repository_id: str = "1.2.250.1.213.1.1.9.1"
    xds_trusted_certificates: tuple[str, ...] = ()
    xds_max_results: int = 1000
    log_level: str = "INFO"
    profiles_dir: Path | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{(self.data_dir / 'fhir.sqlite3').as_posix()}"

    @property
    def fhir_base_url(self) -> str:
        return self.base_url or f"http://{self.host}:{self.port}/fhir"

    @property
    def audience(self) -> str:
        return self.auth_audience or self.fhir_base_url

    @property
    def sqlite_path(self) -> str:
        url = self.store_url
        if not url.startswith("sqlite:///"):
            raise ConfigError(f"FHIR_STORE: '{redacted_url(url)}' is not a SQLite URL")
        return url.removeprefix("sqlite:///") or ":memory:"


# Environment variable -> (field, parser)
ENVIRONMENT: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "FHIR_DATA_DIR": ("data_dir", _dir),
    "FHIR_STORE": ("store", _store_url),
    "FHIR_HOST": ("host", _nonempty),
    "FHIR_PORT": ("port", _port),
    "FHIR_WORKERS": ("workers", _positive_int),
    "FHIR_THREADS": ("threads", _positive_int),
    "FHIR_WORKER_CONNECTIONS": ("worker_connections", _positive_int),
    "FHIR_KEEPALIVE": ("keepalive", _positive_int),
    "FHIR_BASE_URL": ("base_url", _http_url),
    "FHIR_MAX_BODY_BYTES": ("max_body_bytes", _positive_int),
    "FHIR_AUTH_ISSUER": ("auth_issuer", _text),
    "FHIR_AUTH_JWKS_URL": ("auth_jwks_url", _http_url),
    "FHIR_AUTH_AUDIENCE": ("auth_audience", _text),
    "FHIR_XDS_REPOSITORY_ID": ("xds_repository_id", _nonempty),
    "FHIR_XDS_TRUSTED_CERTIFICATES": ("xds_trusted_certificates", _paths),
    "FHIR_XDS_MAX_RESULTS": ("xds_max_results", _positive_int),
    "FHIR_LOG_LEVEL": ("log_level", _log_level),
    "FHIR_PROFILES_DIR": ("profiles_dir", _dir),
}

# Variables read by other tools (tests, benchmarks), never by the server.
NOT_SETTINGS_PREFIXES = ("FHIR_TEST_", "FHIR_BENCH_")


def load_settings(
    flags: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Flags (already typed, None when not given) override the environment, which overrides defaults."""
    environ = os.environ if environ is None else environ
    # attribute -> value of its field's type (each parser returns the type of its field)
    values: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith("FHIR_") or name.startswith(NOT_SETTINGS_PREFIXES):
            continue
        if name not in ENVIRONMENT:
            known = ", ".join(sorted(ENVIRONMENT))
            raise ConfigError(f"{name}: unknown setting (known settings: {known})")
        attribute, parse = ENVIRONMENT[name]
        values[attribute] = parse(name, value)
    known_fields = {f.name for f in fields(Settings)}
    for name, flag in (flags or {}).items():
        if flag is None:
            continue
        if name not in known_fields:
            raise ConfigError(f"--{name.replace('_', '-')}: unknown setting")
        values[name] = flag
    settings = replace(Settings(), **values)
    if settings.store:
        _store_url("FHIR_STORE", settings.store)
    if bool(settings.auth_issuer) != bool(settings.auth_jwks_url):
        # One without the other trusts no external token, or every issuer's: refused at
        # start-up with the two named (it was a ValueError traceback from the app factory).
        raise ConfigError("FHIR_AUTH_ISSUER and FHIR_AUTH_JWKS_URL must be set together")
    if settings.auth_jwks_url and not _tls_or_loopback(settings.auth_jwks_url):
        raise ConfigError(
            f"FHIR_AUTH_JWKS_URL: '{redacted_url(settings.auth_jwks_url)}': the keys every "
            "external token is verified with are fetched over https (http on this host only)"
        )
    return settings


def _tls_or_loopback(url: str) -> bool:
    """Whether `url` is https, or http to this host. Over plain http to another host,
    whoever sits on the way serves their own keys, and every token they sign is accepted."""
    parsed = urlparse(url)
    return parsed.scheme == "https" or parsed.hostname in ("localhost", "127.0.0.1", "::1")


def flag_parser(variable: str, flag: str) -> Callable[[str], Any]:
    """An argparse `type` checking a command-line flag as its environment variable is
    checked (`ENVIRONMENT`): `--workers 0` or `--host ""` were taken as given, where
    FHIR_WORKERS=0 and FHIR_HOST="" stop the server."""
    import argparse

    parse = ENVIRONMENT[variable][1]

    def parse_flag(value: str) -> Any:
        try:
            return parse(flag, value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag}: ")) from None

    parse_flag.__name__ = flag  # argparse names the type in some messages
    return parse_flag
