# SPDX-License-Identifier: Apache-2.0
"""bench/bench_heads.py: every implementation of each head agrees, and the JSON carries the
table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_heads_json(tmp_path, fast):
    pytest.importorskip("torch")
    out = tmp_path / "heads.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_heads.py"),
            "--runs",
            "2",
            "--warmup",
            "0",
            "--heads",
            "guided,pyramid",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pyramid  semseg" in proc.stdout and "torch/native" in proc.stdout
    result = json.loads(out.read_text())
    assert set(result) == {"guided", "pyramid"}
    for head in result.values():
        for row in head.values():
            assert {"native_ms", "numpy_ms", "torch_ms", "macs", "backbone_share"} <= set(row)
            assert row["max_rel_diff"] <= 1e-4 and row["native_ms"] > 0
            assert 0 < row["backbone_share"] <= 0.10


def test_bench_heads_rejects_an_unknown_head():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_heads.py"), "--heads", "up"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--heads must name some of" in proc.stderr
