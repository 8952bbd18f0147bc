# SPDX-License-Identifier: Apache-2.0
"""bench/bench_multicam.py on a small run (tiny model, two cameras, 480p, 1 s): the issue's JSON.

Not a timing test: it checks that the bench measures both set-ups (outputs of every camera reach
this process for the multi-camera node and for the N single-camera processes), that the ratios are
the quotients they claim, and that the expert-bytes explanation is consistent.
"""

from __future__ import annotations

import json
import os

from ros_testing import run_bench, write_tiny_weights


def test_bench_multicam_writes_the_issue_json(tmp_path):
    weights = write_tiny_weights(tmp_path / "tiny.safetensors")
    out = tmp_path / "multicam.json"
    proc = run_bench(
        "bench_multicam.py",
        [
            "--cameras",
            "2",
            "--sizes",
            "480p",
            "--seconds",
            "1",
            "--rate",
            "10",
            "--weights",
            str(weights),
            "--json",
            str(out),
        ],
        300,
        env={"HOME": str(tmp_path), **os.environ},
    )
    doc = json.loads(out.read_text())
    entry = doc["cameras"]["2"]
    size = entry["480p"]
    multi, peer = size["multi"], size["peer"]
    assert multi["processes"] == 1 and peer["processes"] == 2
    for setup in (multi, peer):
        assert set(setup["per_camera_frames_per_s"]) == {"cam0", "cam1"}
        assert all(v > 0 for v in setup["per_camera_frames_per_s"].values())  # every camera served
        assert all(
            v["p50"] is not None and v["p90"] >= v["p50"] > 0 for v in setup["latency_ms"].values()
        )
        assert setup["rss_mb"] > 0 and setup["pss_mb"] > 0 and setup["cpu_ms_per_frame"] > 0
    assert entry["throughput_ratio"] == multi["frames_per_s"] / peer["frames_per_s"]
    assert entry["rss_ratio"] == multi["rss_mb"] / peer["rss_mb"]
    eb = entry["expert_bytes"]
    assert 0 < eb["per_image_batched_mb"] <= eb["per_image_alone_mb"]
    assert eb["distinct_experts_per_image"] <= eb["distinct_experts_per_batch"]
    assert size["cpu_per_frame_ratio"] == multi["cpu_ms_per_frame"] / peer["cpu_ms_per_frame"]
    assert entry["engine"]["batched_cpu_ms_per_frame"] > 0 and len(doc["load_avg_before"]) == 3
    per_batch = doc["expert_bytes"]
    assert list(per_batch) == ["1", "2", "4", "6"]
    read = [per_batch[b]["per_image_batched_mb"] for b in per_batch]
    assert read == sorted(read, reverse=True) and read[-1] < read[0]  # fewer bytes per image
    assert all(
        e["per_image_batched_mb"] <= e["per_image_bound_mb"] + 1e-9 for e in per_batch.values()
    )
    assert per_batch["1"]["per_image_batched_mb"] == per_batch["1"]["per_image_alone_mb"]
    assert "N= 2" in proc.stdout or " 2  480p" in proc.stdout
