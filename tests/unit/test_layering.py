"""Layering (docs/architecture.md, issue #22): the XDS face and the REST face are siblings
over one service; neither imports the other. The app factory hands the XDS blueprint its
identity settings at registration (as Flask blueprints get their app), so `ihe_xds` needs
nothing of `fhir_server.rest`; an import there, even inside a function, is the cycle
`rest/app.py` <-> `ihe_xds/http.py` coming back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "ihe_xds").rglob("*.py")),
    ids=lambda p: p.relative_to(ROOT / "ihe_xds").as_posix(),
)
def test_the_xds_face_imports_nothing_of_the_rest_face(path):
    rest = {m for m in imported_modules(path) if m.startswith("fhir_server.rest")}
    assert rest == set(), f"{path.name} imports {sorted(rest)}"
