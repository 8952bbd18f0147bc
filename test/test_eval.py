# SPDX-License-Identifier: Apache-2.0
"""edgemoe-eval: metric accumulation, the evaluation loop, and the CLI on tiny exported
datasets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgemoe_ros.cli import eval as eval_cli
from edgemoe_ros.datasets import ManifestDataset
from edgemoe_ros.datasets.export import export
from edgemoe_ros.evaluation import DatasetMeter, evaluate
from edgemoe_ros.model.config import IGNORE_INDEX, SEMSEG_CLASSES

W, H = 64, 32
REQUIRED_KEYS = (("semseg.miou", "semseg.pixel_acc", "depth.absrel", "depth.rmse", "depth.delta1",
                  "depth.delta1_median_scaled", "frames")
                 + tuple(f"semseg.iou.{c}" for c in SEMSEG_CLASSES))



def _lookup(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


# ----- metric accumulation -----

def test_perfect_predictions_score_perfectly():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, len(SEMSEG_CLASSES), (8, 9)).astype(np.uint8)
    gt[0, :3] = IGNORE_INDEX
    depth = rng.uniform(1.0, 70.0, (8, 9)).astype(np.float32)
    depth[1, 1] = np.nan
    m = DatasetMeter(SEMSEG_CLASSES)
    rec = m.add("a", gt.copy(), depth.copy(), gt, depth)
    s = m.summary()
    assert (s["semseg"]["miou"] == 1.0 and s["semseg"]["pixel_acc"] == 1.0
            and rec["semseg"]["miou"] == 1.0)
    assert all(v == 1.0 for v in s["semseg"]["iou"].values())
    assert (s["depth"]["absrel"] == 0.0 and s["depth"]["delta1"] == 1.0
            and s["depth"]["rmse"] == 0.0)
    assert s["depth"]["pixels"] == 8 * 9 - 1 and s["frames"] == 1


def test_depth_is_scored_in_range_only_and_median_scaling_is_an_extra():
    gt = np.array([[0.3, 2.0, 4.0, 10.0, 100.0]], np.float32)
    pred = 2.0 * gt  # every pixel off by a factor 2: metric δ1 = 0, after median scaling δ1 = 1
    # out-of-range ground truth is not scored, whatever the prediction
    pred[0, 0] = pred[0, 4] = 1000.0
    m = DatasetMeter(SEMSEG_CLASSES)
    rec = m.add("a", None, pred, None, gt)
    d = m.summary()["depth"]
    assert d["pixels"] == 3 and rec["depth"]["median_scale"] == pytest.approx(0.5)
    assert d["delta1"] == 0.0 and d["absrel"] == pytest.approx(1.0)
    assert (d["delta1_median_scaled"] == 1.0
            and d["absrel_median_scaled"] == pytest.approx(0.0, abs=1e-6))
    assert m.summary()["semseg"]["miou"] is None  # no labels in the set: keys exist, values null


def test_confusion_counts_each_mistake_once_and_unpredicted_pixels_lower_coverage():
    gt = np.array([[0, 0, 1, 1]], np.uint8)
    # last pixel outside a crop: no prediction
    pred = np.array([[0, 1, 1, IGNORE_INDEX]], np.uint8)
    m = DatasetMeter(SEMSEG_CLASSES)
    m.add("a", pred, None, gt, None)
    s = m.summary()["semseg"]
    assert s["confusion"][0][:2] == [1, 1] and s["confusion"][1][:2] == [0, 1]
    assert s["coverage"] == 0.75 and s["iou"]["flat"] == 0.5 and s["iou"]["human"] == 0.5
    assert s["iou"]["sky"] is None  # absent from truth and prediction


# ----- the evaluation loop, with a stand-in engine -----

@dataclass
class _Result:
    semseg: np.ndarray
    depth: np.ndarray

    def semseg_at_input(self) -> np.ndarray:
        return self.semseg

    def depth_at_input(self) -> np.ndarray:
        return self.depth


class _OracleEngine:
    """Answers with the ground truth of the dataset it is given (and records the K it received)."""

    def __init__(self, dataset, config):
        self.truth = {f.image.tobytes(): f for f in dataset}
        self.config = config
        self.seen_k: list[np.ndarray] = []

    def infer(self, image, tasks, camera_k=None):
        self.seen_k.append(camera_k)
        f = self.truth[image.tobytes()]
        return _Result(f.semseg, np.nan_to_num(f.depth, nan=5.0))


def test_evaluate_with_perfect_predictions_gives_miou_1_and_passes_k(tmp_path: Path):
    from edgemoe_ros.model.config import ModelConfig

    ds = ManifestDataset(export("manifest", tmp_path / "m", [5, 6], W, H))
    engine = _OracleEngine(ds, ModelConfig())
    s = evaluate(engine, ds, save_dir=tmp_path / "save")
    assert s["semseg"]["miou"] == 1.0 and s["depth"]["delta1"] == 1.0 and s["frames"] == 2
    assert s["camera_k"] is True and all(np.array_equal(k, f.K)
                                         for k, f in zip(engine.seen_k, ds, strict=True))
    engine.seen_k.clear()
    assert (evaluate(engine, ds, limit=1, use_k=False)["camera_k"] is False
            and engine.seen_k == [None])
    assert (tmp_path / "save" / "confusion.png").is_file()
    assert len(list((tmp_path / "save" / "mosaics").glob("*.png"))) == 2


def test_evaluate_refuses_a_dataset_read_with_other_classes(tmp_path: Path):
    from edgemoe_ros.model.config import ModelConfig

    ds = ManifestDataset(export("manifest", tmp_path, [5], W, H), scheme="cityscapes19")
    with pytest.raises(ValueError, match="the model predicts"):
        evaluate(_OracleEngine(ds, ModelConfig()), ds)


# ----- the CLI end to end, shipped model, 2 small frames per layout -----

@pytest.mark.parametrize("fmt", ["cityscapes", "kitti", "manifest"])
def test_cli_end_to_end(tmp_path: Path, fmt: str, capsys):
    where = export(fmt, tmp_path / "data", [7, 8], 128, 64, split="val")
    flag = {"cityscapes": "--cityscapes", "kitti": "--kitti", "manifest": "--manifest"}[fmt]
    out = tmp_path / "r.json"
    rc = eval_cli.main([flag, str(where), "--json", str(out), "--save", str(tmp_path / "save"),
                        "--no-progress"])

    assert rc == 0
    s = json.loads(out.read_text())
    for key in REQUIRED_KEYS:
        _lookup(s, key)  # KeyError if missing
    assert s["frames"] == 2 and len(s["per_frame"]) == 2
    assert s["depth"]["frames"] == 2 and 0.0 < s["depth"]["delta1"] <= 1.0
    if fmt == "kitti":
        assert s["semseg"]["frames"] == 0 and s["semseg"]["miou"] is None
    else:
        assert s["semseg"]["frames"] == 2 and 0.3 < s["semseg"]["miou"] <= 1.0
    mosaic = cv2.imread(str(next((tmp_path / "save" / "mosaics").glob("*.png"))))
    assert mosaic is not None and mosaic.shape[0] > 0
    assert "d<1.25" in capsys.readouterr().out


def test_cli_bad_input_is_a_clear_error(tmp_path: Path, capsys):
    assert eval_cli.main(["--manifest", str(tmp_path / "none.json"), "--no-progress"]) == 2
    assert "cannot read manifest" in capsys.readouterr().err
    where = export("manifest", tmp_path, [1], W, H)
    assert eval_cli.main(["--manifest", str(where), "--split", "val", "--no-progress"]) == 2
    assert "--split applies to" in capsys.readouterr().err
    assert eval_cli.main(["--cityscapes", str(tmp_path), "--no-progress"]) == 2
    assert "no Cityscapes split 'val'" in capsys.readouterr().err
