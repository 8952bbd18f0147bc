# SPDX-License-Identifier: Apache-2.0
"""bench/soak.py, short (~75 s, slow): a live node on the fpga backend (simulated board) through
every task path, a device hang with fallback to cpu and recovery, reloads (good and corrupt),
lifecycle cycles, hostile inputs and a camera outage loses nothing and stays up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgemoe_ros.model.weights import shipped_weights_path

pytestmark = [pytest.mark.slow, pytest.mark.ros]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from soak import ISSUE_KEYS  # noqa: E402 - bench/ is not a package


@pytest.mark.skipif(shipped_weights_path() is None, reason="the shipped model is not installed")
def test_short_soak_loses_nothing(tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--frames", "180", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    doc = json.loads(out.read_text())
    assert set(ISSUE_KEYS) <= set(doc), sorted(set(ISSUE_KEYS) - set(doc))
    assert doc["frames_sent"] == 180 and doc["frames_out"] > 0 and doc["frames_owed"] > 0, doc
    assert (
        doc["lost_stamps"] == 0
        and doc["unaccounted_in_node"] == 0
        and doc["wrong_task_outputs"] == 0
    ), doc
    assert doc["exceptions"] == 0 and doc["node_active_at_end"], proc.stdout + proc.stderr[-3000:]
    assert 0 < doc["bad_inputs_owed"] <= doc["bad_inputs_counted"] <= doc["bad_inputs_sent"], doc
    # a device fault on the fpga backend was taken at an ap_start, dropped and counted, moved the
    # node to its cpu fallback, and the good reload after it brought the primary back
    taken = sum(doc["device_faults_taken"].values())
    assert doc["device_faults_taken"]["hang"] >= 1 and doc["faults_unexplained"] == 0, doc
    assert doc["backend_faults"] == doc["fallbacks"] == taken and doc["pl_resets"] >= 1, doc
    reloads = doc["reloads"]
    assert reloads["good_ok"] >= 1 and reloads["bad_refused"] >= 1, reloads
    assert reloads["good_failed"] == 0 and reloads["bad_accepted"] == 0, reloads
    assert reloads["back_on_primary"] >= 1 and reloads["not_back_on_primary"] == 0, reloads
    assert proc.returncode == 0, proc.stdout
