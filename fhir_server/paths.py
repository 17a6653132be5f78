"""Where the conformance data the server loads (profiles/, capability/) lives.

In a source checkout or an editable install, next to the package; in a regular install,
under `<prefix>/share/fhir-dmp-server/` (setup.cfg data_files).
"""

from __future__ import annotations

import sys
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent
_INSTALLED_ROOT = Path(sys.prefix) / "share" / "fhir-dmp-server"


def data_root() -> Path:
    if (_SOURCE_ROOT / "profiles").is_dir():
        return _SOURCE_ROOT
    return _INSTALLED_ROOT


def profiles_dir() -> Path:
    return data_root() / "profiles"


def capability_dir() -> Path:
    return data_root() / "capability"
