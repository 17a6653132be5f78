"""Each fact written once (issue #22, deliver 1).

The XDS error codes (ITI TF-3 Table 4.2.4.1-2) and what a refusal of the service means in
XDS terms were written twice, in `ihe_xds` and in `fhir_server.mhd`: a code changed in one
place would have left ITI-41 and ITI-65 answering the same refusal differently. They are
written in `ihe_xds/errors.py` only; every other module imports them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ihe_xds import errors

ROOT = Path(__file__).resolve().parents[2]
HOME = ROOT / "ihe_xds" / "errors.py"
SOURCES = sorted([*(ROOT / "fhir_server").rglob("*.py"), *(ROOT / "ihe_xds").glob("*.py")])
XDS_CODES = frozenset(
    value
    for name, value in vars(errors).items()
    if name.isupper() and isinstance(value, str) and re.fullmatch(r"[A-Z][A-Za-z]+", value)
)


def test_the_codes_are_the_ihe_ones():
    assert {"XDSRegistryError", "XDSPatientIdDoesNotMatch", "XDSDocumentUniqueIdError"} <= (
        XDS_CODES
    )
    assert "LocalPolicyRestrictionError" in XDS_CODES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_but_ihe_xds_errors_writes_an_xds_error_code(path):
    if path == HOME:
        return
    written = sorted(
        node.value
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value in XDS_CODES
    )
    assert written == [], (
        f"{path.relative_to(ROOT)} writes {written}: import them from ihe_xds.errors"
    )
