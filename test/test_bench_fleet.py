# SPDX-License-Identifier: Apache-2.0
"""bench/bench_fleet.py end to end on a tiny set: the issue's JSON keys, every run accounted for.

Not a timing test (three local Ray start-ups: slow, so marked ``slow``): it checks the benchmark
measures what it claims, the same frames through the loop and 1 and 2 Ray workers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from ros_testing import run_bench


@pytest.mark.slow
def test_bench_fleet_writes_the_issue_json(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray (the fleet extra) is installed by scripts/bootstrap.sh")
    out = tmp_path / "fleet.json"
    proc = run_bench(
        "bench_fleet.py",
        [
            "--size",
            "small",
            "--bags",
            "3",
            "--frames",
            "2",
            "--repeats",
            "1",
            "--json",
            str(out),
        ],
        600,
    )
    doc = json.loads(out.read_text())
    for key in ("speedup", "speedup_ray1", "scaling_efficiency", "ray_startup_s"):
        assert math.isfinite(doc[key]) and doc[key] > 0, key
    assert set(doc["runs"]) == {"loop", "ray1", "ray2"}
    assert all(len(runs) == 1 and runs[0]["frames"] == 6 for runs in doc["runs"].values())
    assert doc["speedup"] == pytest.approx(doc["fps"]["ray2"] / doc["fps"]["loop"])
    assert "speedup ray2/loop" in proc.stdout
