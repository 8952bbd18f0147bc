# SPDX-License-Identifier: Apache-2.0
"""The demo writes a watchable result; the shipped weights (if present) are the SPEC model."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgemoe_ros.demo import OFF_GREY, SCHEDULE, SHIPPED_WEIGHTS, main, mosaic, tasks_for
from edgemoe_ros.model.config import ModelConfig, tiny_config
from edgemoe_ros.model.weights import load_weights, random_init, save_weights

FRAMES = 8


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    weights = tmp / "tiny.safetensors"
    save_weights(random_init(tiny_config(img_h=32, img_w=64), seed=1), weights)
    out = tmp / "out"
    assert main(["--out", str(out), "--weights", str(weights), "--frames", str(FRAMES),
                 "--width", "128", "--height", "64"]) == 0
    return out


def test_schedule_switches_tasks_mid_sequence():
    seen = [tasks_for(i, 120) for i in range(120)]
    assert seen[0] == ("semseg", "depth") and seen[40] == ("semseg",) and seen[70] == ("depth",)
    assert seen[119] == ("semseg", "depth")
    assert len({t for _, t in SCHEDULE}) == 3


def test_video_has_every_frame(demo_out):
    cap = cv2.VideoCapture(str(demo_out / "demo.mp4"))
    assert cap.isOpened()
    n, first = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        first = frame if first is None else first
        n += 1
    cap.release()
    assert n == FRAMES
    assert first.shape[1] == 3 * 128 and first.std() > 10


def test_mosaics_show_each_phase(demo_out):
    pngs = sorted(demo_out.glob("mosaic_*.png"))
    assert len(pngs) == len(SCHEDULE)
    depth_only = next(p for p in pngs if p.name.endswith("_depth.png") and "semseg" not in p.name)
    img = cv2.imread(str(depth_only))
    h = img.shape[0]
    seg_panel = img[h // 2:, 128:256]
    assert seg_panel.std() < 25  # greyed "off" panel: flat grey plus a line of text
    assert img[h // 2:, :128].std() > 15  # the camera panel has content


def test_latency_plot_and_summary(demo_out):
    plot = cv2.imread(str(demo_out / "latency.png"))
    assert plot is not None and (plot < 250).mean() > 0.01
    summary = json.loads((demo_out / "summary.json").read_text())
    assert summary["frames"] == FRAMES
    assert set(summary["latency"]) == {"semseg+depth", "semseg", "depth"}
    assert all(v["median_ms"] > 0 for v in summary["latency"].values())
    assert 0.0 <= summary["accuracy_vs_ground_truth"]["miou"] <= 1.0
    assert set(summary["expert_usage"]) == {"semseg", "depth"}
    assert (demo_out / "drive_bag").is_dir()


def test_mosaic_draws_off_panels():
    rgb = np.full((96, 192, 3), 128, np.uint8)
    m = mosaic(rgb, None, np.full((96, 192), 10.0, np.float32), ("depth",), 12.3, 0, 0.5, 80.0)
    assert m.shape[1] == 3 * 192
    # flat grey (plus text) where segmentation is off
    assert (m[-96:, 192:384] == OFF_GREY).all(-1).mean() > 0.8
    assert (m[-96:, 384:] == OFF_GREY).all(-1).mean() < 0.1  # the depth panel is drawn


def test_missing_weights_fail_clearly(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--weights", str(tmp_path / "nope.safetensors")]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_shipped_weights_are_the_spec_model():
    if not SHIPPED_WEIGHTS.exists():
        pytest.skip("no shipped weights file yet")
    spec = ModelConfig()
    weights = load_weights(SHIPPED_WEIGHTS)
    cfg = weights.config
    for key in (
        "img_h",
        "img_w",
        "patch",
        "dim",
        "depth",
        "num_heads",
        "mlp_hidden",
        "num_experts",
        "top_k",
        "expert_hidden",
        "tasks",
        "class_names",
    ):
        assert getattr(cfg, key) == getattr(spec, key), key
    assert cfg.notes.get("steps", 0) > 0 and "command" in cfg.notes
