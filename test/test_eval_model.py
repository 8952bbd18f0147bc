# SPDX-License-Identifier: Apache-2.0
"""bench/eval_model.py: the issue's JSON on a tiny guided model, every backend scored on held-out
scenes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.model.weights import random_init, save_weights

ROOT = Path(__file__).resolve().parents[1]


def test_eval_model_writes_the_issue_json(tmp_path):
    weights = tmp_path / "tiny.safetensors"
    save_weights(random_init(tiny_config(head="guided"), seed=3), weights)
    out = tmp_path / "eval.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "eval_model.py"),
            "--weights",
            str(weights),
            "--frames",
            "3",
            "--fixed-frames",
            "2",
            "--breakdown",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "head: guided" in proc.stdout and "targets: miou >= 0.8" in proc.stdout
    result = json.loads(out.read_text())
    assert result["head"] == "guided" and result["seeds"] == [0, 3]
    for backend, frames in (("cpu", 3), ("fixed", 2), ("cpu@2", 2)):
        r = result[backend]
        assert r["frames"] == frames
        assert 0.0 <= r["miou"] <= 1.0 and 0.0 <= r["delta1"] <= 1.0 and r["absrel"] >= 0.0
        assert set(r["iou"]) == {
            "flat",
            "human",
            "vehicle",
            "construction",
            "object",
            "nature",
            "sky",
        }
    agreement = result["fixed"]["routing_agreement_vs_cpu"]
    assert set(agreement) == {"semseg", "depth"} and all(
        0.5 < v <= 1.0 for v in agreement.values()
    )
    # --breakdown scores the first backend only, by label-edge band and by distance
    b = result["cpu"]["breakdown"]
    assert (
        "breakdown" not in result["fixed"]
        and "wrongly labelled pixels that lie in the band" in proc.stdout
    )
    assert b["interior"]["pixel_share"] + b["band"]["pixel_share"] == pytest.approx(1.0)
    assert 0.0 <= b["wrong_pixels_in_band"] <= 1.0 and len(b["depth_bins"]) == 4


def test_eval_model_reports_a_bad_weights_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a weights file")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "eval_model.py"), "--weights", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and str(bad) in proc.stderr
