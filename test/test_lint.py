# SPDX-License-Identifier: Apache-2.0
"""The linter is part of the test run: style findings fail the build like any other defect."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Python trees that are linted (ruff.toml holds the rules); the same as ``make lint``.
LINTED = ("edgemoe_ros", "test", "bench", "scripts")
#: ROS 2's Python style (ament_flake8's max-line-length).
ROS2_LINE_LENGTH = 99


def test_ruff_clean():
    ruff = Path(sys.executable).parent / "ruff"
    cmd = [str(ruff)] if ruff.exists() else [sys.executable, "-m", "ruff"]
    proc = subprocess.run([*cmd, "check", "--no-cache", "--output-format", "concise", *LINTED],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ruff findings:\n{proc.stdout}{proc.stderr}"
    assert "All checks passed" in proc.stdout


def test_line_length_is_ros2_style_and_legacy_exemptions_only_shrink():
    config = tomllib.loads((REPO / "ruff.toml").read_text())
    assert config["line-length"] == ROS2_LINE_LENGTH
    assert "E501" not in config["lint"].get("ignore", [])
    stale = []
    for path, rules in config["lint"].get("per-file-ignores", {}).items():
        file = REPO / path
        if rules == ["E501"] and (not file.is_file() or max(
                map(len, file.read_text().splitlines()), default=0) <= ROS2_LINE_LENGTH):
            stale.append(path)
    assert not stale, f"nothing left to exempt; remove from ruff.toml per-file-ignores: {stale}"
