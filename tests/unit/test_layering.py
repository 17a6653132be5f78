"""Layering (docs/architecture.md, issue #22): the XDS face and the REST face are siblings
over one service; neither imports the other. The app factory hands the XDS blueprint its
identity settings at registration (as Flask blueprints get their app), so `ihe_xds` needs
nothing of `fhir_server.rest`; an import there, even inside a function, is the cycle
`rest/app.py` <-> `ihe_xds/http.py` coming back.

And inside the service, the access gate's decisions sit above the store: they ask their facts
through `gate.port.Facts` and import no store (issue #22, deliverable 3)."""

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


# The gate's decision modules (issue #22, deliverable 3: facts apart from decisions) judge on
# facts asked through `gate.port.Facts`; only `gate.facts` reads the store. So that a decision
# can be judged with no store behind it (tests/unit/test_gate_decisions.py), they import
# nothing of `fhir_server.store` at run time, nor the modules that read it; for annotations
# they may name the versions a store hands back, never the store.
GATE = ROOT / "fhir_server" / "service" / "gate"
GATE_DECISIONS = ("common", "port", "reads", "searches", "writes", "audit_hooks")
STORE_READERS = (
    "fhir_server.store",
    "fhir_server.service.gate.facts",
    "fhir_server.service.messaging",
    "fhir_server.service.lifecycle",
)
STORE_VALUES = {"StoredResource", "HistoryPage"}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def imports_by_phase(path: Path) -> tuple[set[str], list[ast.ImportFrom | ast.Import]]:
    """(modules imported at run time, the imports under `if TYPE_CHECKING:`)."""
    runtime: set[str] = set()
    typing_only: list[ast.ImportFrom | ast.Import] = []

    def visit(node: ast.AST, for_types: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                if for_types:
                    typing_only.append(child)
                elif isinstance(child, ast.Import):
                    runtime.update(alias.name for alias in child.names)
                elif child.module and child.level == 0:
                    runtime.add(child.module)
                    runtime.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child, for_types or _is_type_checking(child))

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return runtime, typing_only


@pytest.mark.parametrize("name", GATE_DECISIONS)
def test_the_gate_decisions_import_no_store(name):
    runtime, typing_only = imports_by_phase(GATE / f"{name}.py")
    readers = {m for m in runtime if m.startswith(STORE_READERS)}
    assert readers == set(), f"gate/{name}.py imports {sorted(readers)} at run time"
    for node in typing_only:
        module = node.module if isinstance(node, ast.ImportFrom) else None
        names = {alias.name for alias in node.names}
        if isinstance(node, ast.Import):
            assert not any(n.startswith(STORE_READERS) for n in names), f"gate/{name}.py"
        elif module and module.startswith(STORE_READERS):
            assert names <= STORE_VALUES, f"gate/{name}.py names {sorted(names - STORE_VALUES)}"
