"""Profiles whose habilitation annex transcription denies one role one document type (R13).

The annex shipped with the server lets every role the tests use read every type they
deposit; an R13 test needs a role that may not, so it copies the profiles and writes a
one-line transcription saying so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fhir_server.paths import profiles_dir

G15 = "urn:oid:1.2.250.1.71.1.2.7"  # TRE_G15, as a VIHF or a token names it


def profiles_denying(target: Path, role_code: str, type_system: str, type_code: str) -> Path:
    """A copy of the server's profiles at `target` whose annex transcription says that the
    TRE_G15 profession `role_code` may not read documents of type `type_system|type_code`."""
    shutil.copytree(profiles_dir(), target)
    annex = target / "habilitation" / "annex-transcription.csv"
    annex.parent.mkdir(exist_ok=True)
    annex.write_text(
        "role_system,role_code,type_system,type_code,allowed,source\n"
        f"{G15},{role_code},{type_system},{type_code},false,"
        '"test transcription, not the annex"\n',
        encoding="utf-8",
    )
    return target
