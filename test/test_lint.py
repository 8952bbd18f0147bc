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


def test_line_length_is_ros2_style_for_every_file():
    """The limit holds everywhere: neither a global nor a per-file (legacy) E501 exemption."""
    config = tomllib.loads((REPO / "ruff.toml").read_text())
    assert config["line-length"] == ROS2_LINE_LENGTH
    lint = config["lint"]
    assert not {"E501", "E5", "E"} & set(lint.get("ignore", []))
    exempt = [path for path, rules in lint.get("per-file-ignores", {}).items()
              if {"E501", "E5", "E"} & set(rules)]
    assert not exempt, f"files exempt from the {ROS2_LINE_LENGTH}-character limit: {exempt}"
