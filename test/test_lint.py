"""The linter is part of the test run: style findings fail the build like any other defect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Python trees that are linted (ruff.toml holds the rules); the same as ``make lint``.
LINTED = ("edgemoe_ros", "test", "bench")


def test_ruff_clean():
    ruff = Path(sys.executable).parent / "ruff"
    cmd = [str(ruff)] if ruff.exists() else [sys.executable, "-m", "ruff"]
    proc = subprocess.run([*cmd, "check", "--no-cache", "--output-format", "concise", *LINTED],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ruff findings:\n{proc.stdout}{proc.stderr}"
    assert "All checks passed" in proc.stdout
