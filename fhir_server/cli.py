"""`fhir-server`: serve, token, client, load, bench, audit.

The server runs under gunicorn (README, "Why gunicorn"): a pre-fork master that restarts
crashed workers and shuts down gracefully on SIGTERM (in-flight requests finish, then the
workers close their stores).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence

from fhir_server.config import ConfigError, Settings, flag_parser, load_settings, redacted_url


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        dest="data_dir",
        type=flag_parser("FHIR_DATA_DIR", "--data-dir"),
        default=None,
        help="data directory (FHIR_DATA_DIR, default ./var)",
    )


def _settings(args: argparse.Namespace, *names: str) -> Settings:
    flags = {name: getattr(args, name, None) for name in ("data_dir", *names)}
    return load_settings(flags)


# -- serve -------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from fhir_server.service.factory import load_or_create_secret

    settings = _settings(
        args, "host", "port", "workers", "threads", "worker_connections", "keepalive"
    )
    # First start: create the data dir and the server's secrets once, in the master, so that
    # workers never race to create them.
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    load_or_create_secret(settings.data_dir / "keys" / "cursor.key")
    _prepare_keys(settings)
    if not _port_free(settings.host, settings.port):
        print(
            f"fhir-server: {settings.host}:{settings.port} is in use (another server?)",
            file=sys.stderr,
        )
        return 1
    _check_startup(settings)

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", settings.workers)
            self.cfg.set("threads", settings.threads)
            self.cfg.set("worker_connections", settings.worker_connections)
            for name, value in gunicorn_settings().items():
                self.cfg.set(name, value)
            self.cfg.set("keepalive", settings.keepalive)
            self.cfg.set("loglevel", settings.log_level.lower())

        def load(self):
            from fhir_server.rest.app import create_app

            return create_app(settings)

    print(
        f"fhir-server: serving {settings.fhir_base_url} on {redacted_url(settings.store_url)}",
        file=sys.stderr,
    )
    Server().run()
    return 0


def gunicorn_settings() -> dict[str, object]:
    """The gunicorn settings of `fhir-server serve` besides address, sizes and log level; the
    benchmarks serve their apps with the same (`benchmarks/gunicorn_config.py`)."""
    return {
        "worker_class": "gthread",
        "graceful_timeout": 20,
        "timeout": 120,
        "keepalive": Settings.keepalive,  # `serve` sets the configured one
        "accesslog": "-",
        "errorlog": "-",
        "limit_request_line": 8190,
        # No request header moves the app's root: gunicorn takes a `SCRIPT_NAME` header from
        # a peer it trusts as a proxy (by default any local one) and cuts it off the path.
        # The app is mounted at `/`: one not a prefix of the path was a 500 (gunicorn's
        # "Bad Request" page), and one that was made `/fhir/fhir/Patient` the request
        # `/fhir/Patient`, judged, served and audited as a path the client never sent.
        "forwarder_headers": "",
        # Each worker listens on a socket of its own (SO_REUSEPORT) and the kernel spreads
        # new connections over them. On the one socket of the master, the worker that
        # happened to be accepting took all 16 keep-alive connections of a client in 4 runs
        # out of 10 and the server answered at half its speed (docs/performance.md,
        # "Keep-alive"); `_port_free` keeps a second server from sharing the port.
        "reuse_port": True,
        "worker_exit": _close_store,
        "post_worker_init": _freeze_startup_objects,
    }


def _freeze_startup_objects(worker) -> None:
    """Take what a worker holds once its app is loaded (modules, models, profiles, the
    service) out of the cyclic garbage collector's reach, for the life of the worker.

    A full collection walks every object the process tracks: about 70,000 after start-up,
    60 to 100 ms per collection on the shared benchmark machine, one every 40 to 80 ITI-18
    FindDocuments (issue 6): a pause in the middle of some request, and 1.5 to 2.5 ms of
    CPU per query on average.
    After gc.freeze, collections walk what requests allocate only. Garbage the start-up
    left behind is collected first, so that nothing unreachable is kept.
    """
    gc.collect()
    gc.freeze()


def _close_store(server, worker) -> None:
    app = getattr(worker, "wsgi", None)
    runtime = getattr(app, "extensions", {}).get("fhir") if app is not None else None
    if runtime is not None:
        runtime.store.close()


def _prepare_keys(settings: Settings) -> None:
    try:
        from fhir_server.auth.keys import load_or_create_signing_key
    except ImportError:  # pragma: no cover - auth package always ships
        return
    load_or_create_signing_key(settings.data_dir)


def _port_free(host: str, port: int) -> bool:
    """Whether no other server listens on host:port. The workers bind with SO_REUSEPORT,
    which would let a second server on the same port (another data directory) take half of
    the connections unnoticed; a socket bound without it is refused by such a port."""
    import errno
    import socket

    for family, kind, protocol, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return False
                # Anything else (a privileged port, an address not on this host): gunicorn's
                # own bind reports it.
    return True


def _check_startup(settings: Settings) -> None:
    """Fail before forking when the configuration or the data files are wrong."""
    from fhir_server.rest.app import create_app

    app = create_app(settings)
    app.extensions["fhir"].store.close()


# -- load --------------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> int:
    from fhir_server.loader import LoadError, check_paths, load_paths
    from fhir_server.rest.app import create_app

    settings = _settings(args)
    try:
        # Every file is read before the store is opened: a malformed one stores nothing.
        check_paths(args.paths)
    except LoadError as exc:
        print(f"fhir-server load: {exc}; nothing loaded", file=sys.stderr)
        return 2
    app = create_app(settings)
    runtime = app.extensions["fhir"]
    try:
        report = load_paths(runtime, args.paths, progress=not args.quiet)
    except LoadError as exc:  # a file changed since it was checked
        print(f"fhir-server load: {exc}", file=sys.stderr)
        return 2
    finally:
        runtime.store.close()
    print(
        f"loaded {report.stored} resources from {report.files} files; {report.failed} failed",
        file=sys.stderr,
    )
    return 1 if report.failed else 0


# -- main --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhir-server", description="FHIR R4 + IHE XDS.b server for the shared health record"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server under gunicorn")
    for flag in (
        "--host",
        "--port",
        "--workers",
        "--threads",
        "--worker-connections",
        "--keepalive",
    ):
        variable = "FHIR_" + flag.removeprefix("--").replace("-", "_").upper()
        serve.add_argument(flag, type=flag_parser(variable, flag), default=None)
    _add_common(serve)
    serve.set_defaults(func=_serve)

    load = commands.add_parser(
        "load", help="load FHIR JSON (resources, Bundles, NDJSON) through the service gate"
    )
    load.add_argument("paths", nargs="+")
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_common(load)
    load.set_defaults(func=_load)

    for extension in _extensions():
        extension(commands)
    return parser


def _extensions():
    """Subcommands contributed by other packages (auth: token, client; audit; bench)."""
    from fhir_server.auth.cli import add_client_command, add_token_command

    yield add_token_command
    yield add_client_command
    from fhir_server.access.habilitation_cli import add_habilitation_command
    from fhir_server.audit.cli import add_audit_command
    from fhir_server.lifecycle_cli import add_record_command

    yield add_audit_command
    yield add_record_command
    yield add_habilitation_command
    yield _add_bench_command


def _add_bench_command(subparsers) -> None:
    """Benchmarks live in the source tree (benchmarks/), not in the installed package."""
    from fhir_server.paths import data_root

    if not (data_root() / "benchmarks").is_dir():
        return
    if str(data_root()) not in sys.path:
        sys.path.insert(0, str(data_root()))
    from benchmarks.cli import add_bench_command

    add_bench_command(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # What the commands create (the data dir, the SQLite store and its audit log, the
    # client registry, an anchors file) is the owner's only: under the usual umask 022 the
    # store of every patient's record was readable by any local user (0644, in a 0755 dir).
    previous_umask = os.umask(0o077)
    try:
        return args.func(args) or 0
    except ConfigError as exc:
        print(f"fhir-server: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A data dir that is a file, on a read-only or full disk, a file the command cannot
        # read: the operator is told what and where, not shown a traceback.
        print(f"fhir-server {args.command}: {exc}", file=sys.stderr)
        return 1
    finally:
        os.umask(previous_umask)


if __name__ == "__main__":
    sys.exit(main())
