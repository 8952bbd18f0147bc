# SPDX-License-Identifier: Apache-2.0
"""Every Python, C++, Tcl and launch XML file of the repository names its licence in an SPDX line
(``scripts/add_spdx.py`` adds any that are missing; run it after adding files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_source_file_has_an_spdx_line():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "add_spdx.py"), "--check"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"run `python3 scripts/add_spdx.py`:\n{proc.stdout}{proc.stderr}")
