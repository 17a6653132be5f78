"""`fhir-server habilitation check [FILE]`: check a transcription of the annex before use.

Why: whoever transcribes the annex of the arrêté of 26 October 2023 needs to know, before
dropping the file into `profiles/habilitation/annex-transcription.csv` (where the server
reads it at start-up), that every line names a JDV_J65 role and a JDV_J66 type, and how
much of the matrix it covers. The command loads the matrix of the profiles directory
(`--profiles`, default the installed one) with FILE as its annex (default: the annex the
matrix names) and prints the coverage, or the first problem with its line, exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fhir_server.access.habilitation import HabilitationMatrixError
from fhir_server.access.habilitation_loader import load_matrix


def add_habilitation_command(subparsers) -> None:
    command = subparsers.add_parser(
        "habilitation", help="the habilitation matrix (R13): check an annex transcription"
    )
    actions = command.add_subparsers(dest="action", required=True)
    check = actions.add_parser(
        "check", help="load the matrix with an annex transcription and print its coverage"
    )
    check.add_argument("file", nargs="?", help="annex transcription (CSV); default: the matrix's")
    check.add_argument("--profiles", help="profiles directory (default: the installed one)")
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from fhir_server.paths import profiles_dir
    from fhir_server.resources.profiles import ProfileRegistry

    folder = Path(args.profiles) if args.profiles else profiles_dir()
    matrix_path = folder / "habilitation-matrix.json"
    if not matrix_path.is_file():
        print(
            f"fhir-server habilitation: --profiles {folder}: no {matrix_path.name}", file=sys.stderr
        )
        return 1
    try:
        matrix = load_matrix(
            matrix_path,
            folder / "habilitation-matrix.schema.json",
            ProfileRegistry.load(folder),
            annex=args.file,
        )
    except (HabilitationMatrixError, OSError) as exc:
        print(f"fhir-server habilitation: {exc}", file=sys.stderr)
        return 1
    coverage = matrix.coverage()
    print(f"matrix: {matrix_path}")
    print(f"annex: {args.file or 'as the matrix names it'}")
    print(f"roles (JDV_J65): {coverage.roles}  types (JDV_J66): {coverage.types}")
    print(f"cells: {coverage.cells}")
    print(f"transcribed: {coverage.transcribed}")
    print(f"placeholder: {coverage.placeholder}")
    print(f"allowed: {coverage.allowed}  denied: {coverage.denied}")
    return 0
