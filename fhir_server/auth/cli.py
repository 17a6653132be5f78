"""`fhir-server token` and `fhir-server client`: tokens and clients without an identity provider.

The lead's `fhir_server/cli.py` calls `add_token_command(subparsers)` and
`add_client_command(subparsers)`; each sets `func` on its parser, called as `func(args)` and
returning the exit code. `token` prints only the token (or the VIHF assertion), so that
`TOKEN=$(fhir-server token --patient 123)` works.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from joserfc.errors import JoseError

from fhir_server.access.requester import AccessMode
from fhir_server.auth.clients import ClientRegistry, RegisteredClient, public_jwks_from_file
from fhir_server.auth.identifiers import fhir_id_error, idnat_ps_error, ins_token
from fhir_server.auth.keys import load_or_create_signing_key
from fhir_server.auth.scopes import ScopeError, ScopeSet
from fhir_server.auth.tokens import AuthSettings, TokenIssuer
from fhir_server.config import ConfigError, flag_parser
from fhir_server.terminology import SYSTEM_ACCESS_MODE, SYSTEM_IDNAT_STRUCT, SYSTEM_PROFESSION

DEFAULT_SCOPES = {
    "patient": "patient/*.cruds",
    "representative": "patient/*.cruds",
    "practitioner": "user/*.cruds",
    "system": "system/DocumentReference.c system/Binary.c system/List.c system/Patient.r",
}
CLI_CLIENT_ID = "fhir-server-cli"
MAX_MINUTES = 24 * 60  # the longest lifetime `token` gives a token or a VIHF assertion


def _client_data_dir(args: argparse.Namespace) -> str:
    """The data dir as the server reads it (`config.load_settings`, `--data-dir` overriding
    FHIR_DATA_DIR): the client commands read FHIR_DATA_DIR alone, so a mistyped FHIR_*
    variable the server stops on was ignored, and a client registered beside another store
    than the operator meant. An unknown setting is refused (`config.ConfigError`)."""
    from fhir_server.config import load_settings

    return str(load_settings({"data_dir": args.data_dir}).data_dir)


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        type=flag_parser("FHIR_DATA_DIR", "--data-dir"),
        help="data dir holding the signing key (default: $FHIR_DATA_DIR or ./var)",
    )


def add_token_command(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "token",
        help="print a bearer token signed by the local key",
        description="Print a bearer token (or with --vihf a signed VIHF assertion) that the"
        " server using the same data dir accepts. Give exactly one of --patient,"
        " --representative, --practitioner, --system; --patient may be added to"
        " --representative or --practitioner as the patient in context.",
    )
    parser.add_argument("--patient", metavar="PATIENT_ID")
    parser.add_argument("--representative", metavar="RELATEDPERSON_ID")
    parser.add_argument("--practitioner", metavar="IDNATPS")
    parser.add_argument("--profession", help="TRE_G15 code, e.g. 10 médecin, 21 pharmacien")
    parser.add_argument("--specialty", help="e.g. SM54")
    parser.add_argument("--organization", metavar="ID", help="IdNat_Struct of the organization")
    parser.add_argument("--organization-name")
    parser.add_argument(
        "--sector",
        metavar="CODE",
        help="--vihf: the structure's TRE_R02 Secteur_Activite code (default SA01, a care sector)",
    )
    parser.add_argument("--name", help="display name of the user")
    parser.add_argument(
        "--mode", choices=[m.value for m in AccessMode], default=AccessMode.NORMAL.value
    )
    parser.add_argument("--reason", help="declared reason (required for bris_de_glace)")
    parser.add_argument("--system", metavar="CLIENT_ID")
    parser.add_argument(
        "--organization-type",
        help="insurer, mutual_insurer, employer, health_insurer, hospital, laboratory, admin ...",
    )
    parser.add_argument(
        "--ins", metavar="SYSTEM|VALUE", help="patient INS for the VIHF resource-id"
    )
    parser.add_argument("--scope", help="space-separated SMART scopes (default: the actor's usual)")
    parser.add_argument(
        "--minutes", type=int, default=60, help=f"lifetime (default 60, at most {MAX_MINUTES})"
    )
    parser.add_argument("--vihf", action="store_true", help="print a signed VIHF assertion instead")
    _add_data_dir(parser)
    parser.set_defaults(func=run_token)
    return parser


def _fail(message: str) -> int:
    print(f"fhir-server token: error: {message}", file=sys.stderr)
    return 2


def _actor(args: argparse.Namespace) -> str | None:
    named = [k for k in ("representative", "practitioner", "system") if getattr(args, k)]
    if len(named) > 1 or (args.system and args.patient):
        return None
    if named:
        return named[0]
    return "patient" if args.patient else None


def token_claims(args: argparse.Namespace, actor: str) -> dict[str, Any]:
    """The keyword arguments of TokenIssuer.issue for the parsed flags."""
    claims: dict[str, Any] = {"client_id": CLI_CLIENT_ID}
    if actor == "patient":
        claims.update(subject=args.patient, fhir_user=f"Patient/{args.patient}")
    elif actor == "representative":
        claims.update(
            subject=args.representative,
            fhir_user=f"RelatedPerson/{args.representative}",
            patient=args.patient,
        )
    elif actor == "practitioner":
        iua: dict[str, Any] = {
            "subject_name": args.name or "",
            "national_provider_identifier": args.practitioner,
            "subject_role": [{"system": SYSTEM_PROFESSION, "code": args.profession}],
            "purpose_of_use": [{"system": SYSTEM_ACCESS_MODE, "code": args.mode}],
        }
        if args.organization:
            iua["subject_organization_id"] = f"{SYSTEM_IDNAT_STRUCT}|{args.organization}"
        if args.organization_name:
            iua["subject_organization"] = args.organization_name
        dmp = {
            k: v
            for k, v in (
                ("specialty", args.specialty),
                ("access_reason", args.reason),
                ("organization_type", args.organization_type),
                ("patient_identifier", args.ins),
            )
            if v
        }
        claims.update(
            subject=args.practitioner,
            patient=args.patient,
            extensions={"ihe_iua": iua, **({"dmp": dmp} if dmp else {})},
        )
    else:
        claims.update(subject=args.system, client_id=args.system)
        if args.organization_type:
            claims["extensions"] = {"dmp": {"organization_type": args.organization_type}}
    return claims


def run_token(args: argparse.Namespace) -> int:
    actor = _actor(args)
    if actor is None:
        return _fail(
            "give one of --patient, --representative, --practitioner, --system"
            " (--patient may accompany --representative or --practitioner)"
        )
    if actor == "practitioner" and not args.profession:
        return _fail("--practitioner needs --profession (TRE_G15 code)")
    # The server refuses credentials carrying malformed identifiers (a 401 naming them):
    # say so here, with the same checks, rather than print a token nobody accepts.
    checks = [
        ("--practitioner", args.practitioner, idnat_ps_error),
        ("--patient", args.patient, fhir_id_error),
        ("--ins", args.ins, lambda value: ins_token(value)[1]),
    ]
    for option, value, check in checks:
        problem = check(value) if value is not None else None
        if problem:
            return _fail(f"{option} {value!r}: {problem}")
    if args.mode == AccessMode.BRIS_DE_GLACE and not args.reason:
        return _fail("--mode bris_de_glace needs --reason")
    if args.minutes <= 0:
        return _fail("--minutes must be positive")
    if args.minutes > MAX_MINUTES:
        # A bearer token serves whoever holds it: `--minutes 99999999999` printed one valid
        # for 190,000 years (or, with --vihf and more digits, a traceback). Fail closed.
        return _fail(f"--minutes {args.minutes}: at most {MAX_MINUTES} (a day)")
    # The server's settings, read by its loader: an unknown FHIR_* variable is refused
    # (ConfigError, exit 2) as `serve` refuses it.
    settings = AuthSettings.from_env(data_dir=args.data_dir)
    try:
        settings.validate()
    except ValueError as exc:
        return _fail(str(exc))
    if args.vihf:
        return _print_vihf(args, actor, settings)
    scope = args.scope if args.scope is not None else DEFAULT_SCOPES[actor]
    try:
        ScopeSet.parse(scope)
    except ScopeError as exc:
        return _fail(str(exc))
    key = load_or_create_signing_key(settings.data_dir)
    issuer = TokenIssuer(key, settings.local_issuer, settings.effective_audience)
    token = issuer.issue(
        scopes=scope, lifetime_seconds=args.minutes * 60, **token_claims(args, actor)
    )
    print(token)
    return 0


def _print_vihf(args: argparse.Namespace, actor: str, settings: AuthSettings) -> int:
    from fhir_server.auth.sectors import CARE_SECTOR, OID_TRE_R02_SECTEUR_ACTIVITE
    from fhir_server.auth.vihf import load_or_create_structure_credential, mint_vihf, vihf_to_string

    if actor != "practitioner":
        return _fail("--vihf identifies a practitioner: give --practitioner and --profession")
    credential = load_or_create_structure_credential(settings.data_dir)
    assertion = mint_vihf(
        credential,
        practitioner_id=args.practitioner,
        profession=args.profession,
        specialty=args.specialty,
        subject_name=args.name or "",
        organization_id=args.organization,
        sectors=[f"{args.sector}^{OID_TRE_R02_SECTEUR_ACTIVITE}"] if args.sector else [CARE_SECTOR],
        mode=args.mode,
        reason=args.reason,
        patient_ins=args.ins,
        minutes=args.minutes,
        audience=settings.effective_audience,
    )
    print(vihf_to_string(assertion))
    return 0


def add_client_command(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("client", help="manage SMART Backend Services clients")
    commands = parser.add_subparsers(dest="client_command", required=True)
    add = commands.add_parser("add", help="register (or replace) a client and its public key")
    add.add_argument("client_id")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--jwks-file", type=Path, help="the client's public JWKS (JSON)")
    source.add_argument("--public-key", type=Path, help="the client's public key (PEM)")
    add.add_argument("--scope", default=DEFAULT_SCOPES["system"], help="scopes it may be granted")
    add.add_argument(
        "--organization-type", help="e.g. hospital, laboratory, health_insurer, insurer"
    )
    add.add_argument("--name", help="a display name")
    _add_data_dir(add)
    listing = commands.add_parser("list", help="list registered clients")
    _add_data_dir(listing)
    remove = commands.add_parser("remove", help="unregister a client")
    remove.add_argument("client_id")
    _add_data_dir(remove)
    parser.set_defaults(func=run_client)
    return parser


def run_client(args: argparse.Namespace) -> int:
    try:
        return _run_client(args)
    except (OSError, ValueError, ConfigError) as exc:  # a setting, or the registry file
        print(f"fhir-server client {args.client_command}: error: {exc}", file=sys.stderr)
        return 2


def _run_client(args: argparse.Namespace) -> int:
    registry = ClientRegistry.in_data_dir(_client_data_dir(args))
    if args.client_command == "add":
        try:
            jwks = public_jwks_from_file(
                args.public_key or args.jwks_file, pem=args.public_key is not None
            )
            registry.add(
                RegisteredClient(
                    client_id=args.client_id,
                    jwks=jwks,
                    scope=str(ScopeSet.parse(args.scope)),
                    organization_type=args.organization_type,
                    name=args.name,
                )
            )
        except (OSError, ValueError, JoseError) as exc:
            print(f"fhir-server client add: error: {exc}", file=sys.stderr)
            return 2
        print(f"registered {args.client_id}")
        return 0
    if args.client_command == "list":
        for client in registry.list():
            print(f"{client.client_id}\t{client.scope}\t{client.organization_type or '-'}")
        return 0
    if registry.remove(args.client_id):
        print(f"removed {args.client_id}")
        return 0
    print(f"fhir-server client remove: error: no client {args.client_id}", file=sys.stderr)
    return 1
