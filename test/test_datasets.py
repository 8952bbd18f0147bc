# SPDX-License-Identifier: Apache-2.0
"""Dataset readers and writers: round trips through each layout, label schemes, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgemoe_ros.datasets import (
    CityscapesDataset,
    DatasetError,
    KittiDepthDataset,
    ManifestDataset,
    cityscapes,
    get_scheme,
    kitti,
    open_dataset,
    scheme_for_classes,
)
from edgemoe_ros.datasets.export import CITYSCAPES_BASELINE, export
from edgemoe_ros.datasets.labels import CATEGORY_LABEL_IDS, categories_to_label_ids
from edgemoe_ros.model.config import IGNORE_INDEX, SEMSEG_CLASSES
from edgemoe_ros.postprocess import colorize_semseg
from edgemoe_ros.scenes import render_frame

W, H = 64, 32
SEEDS = (3, 4)


def _rendered(seed: int, hfov: float):
    return render_frame(seed, W, H, hfov)


def _finite_depth(frame) -> np.ndarray:
    return np.where(np.isfinite(frame.depth), frame.depth, np.nan).astype(np.float32)


# ----- label schemes -----

def test_category_map_follows_cityscapes_categories():
    lut = get_scheme("categories").label_id_lut
    for cls, name in enumerate(SEMSEG_CLASSES):
        assert all(lut[i] == cls for i in CATEGORY_LABEL_IDS[name])
    # void, ego vehicle, rectification border, out of roi, static, dynamic, ground,
    # license plate (-1 as uint8)
    assert all(lut[i] == IGNORE_INDEX for i in (0, 1, 2, 3, 4, 5, 6, 255))
    assert sorted(int(i) for i in np.flatnonzero(lut != IGNORE_INDEX)) == list(range(7, 34))


def test_cityscapes19_is_the_standard_train_id_map():
    s = get_scheme("cityscapes19")
    assert s.num_classes == 19 and s.palette.shape == (19, 3)
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    got = {i: int(v) for i, v in enumerate(s.label_id_lut) if v != IGNORE_INDEX}
    assert got == expected


def test_scheme_lookup_by_model_classes_and_unknown_names():
    assert scheme_for_classes(SEMSEG_CLASSES).name == "categories"
    with pytest.raises(ValueError, match="no known class scheme"):
        scheme_for_classes(("a", "b"))
    with pytest.raises(ValueError, match="unknown class scheme"):
        get_scheme("ade20k")


def test_scheme_palettes_colour_their_classes():
    s = get_scheme("cityscapes19")
    ids = np.array([[0, 10, 18, IGNORE_INDEX]], np.uint8)
    rgb = colorize_semseg(ids, s.palette)
    np.testing.assert_array_equal(rgb[0], [s.palette[0], s.palette[10], s.palette[18], (0, 0, 0)])
    cats = np.arange(len(SEMSEG_CLASSES), dtype=np.uint8)[None]
    np.testing.assert_array_equal(colorize_semseg(cats, get_scheme("categories").palette),
                                  colorize_semseg(cats))


def test_written_label_ids_read_back_as_the_same_categories_in_both_schemes():
    cats = np.arange(len(SEMSEG_CLASSES), dtype=np.uint8).repeat(3).reshape(1, -1)
    ids = categories_to_label_ids(cats)
    assert np.array_equal(get_scheme("categories").from_label_ids(ids), cats)
    names = get_scheme("cityscapes19").class_names
    back = [names[i] for i in get_scheme("cityscapes19").from_label_ids(ids)[0, ::3]]
    assert back == ["road", "person", "car", "building", "pole", "vegetation", "sky"]


# ----- round trips through the writers -----

def test_cityscapes_round_trip(tmp_path: Path):
    export("cityscapes", tmp_path, SEEDS, W, H, hfov_deg=50.0, split="val")
    ds = open_dataset(f"cityscapes:{tmp_path}", "val")
    assert isinstance(ds, CityscapesDataset) and len(ds) == len(SEEDS)
    for seed, frame in zip(SEEDS, ds, strict=True):
        ref = _rendered(seed, 50.0)
        assert frame.name == f"synth_000000_{seed:06d}"
        assert np.array_equal(frame.image, ref.rgb)
        assert np.array_equal(frame.semseg, ref.labels)
        np.testing.assert_allclose(frame.K, ref.K, rtol=1e-9)
        # depth within the disparity quantisation (1/256 px, rounded: half of it either way)
        gt = _finite_depth(ref)
        bf = CITYSCAPES_BASELINE
        assert np.array_equal(np.isnan(frame.depth), np.isnan(gt))
        ok = ~np.isnan(gt)
        disp_err = np.abs(bf * ref.K[0, 0] / frame.depth[ok] - bf * ref.K[0, 0] / gt[ok])
        assert disp_err.max() <= 0.5 / cityscapes.DISPARITY_SCALE + 1e-6


def test_kitti_round_trip(tmp_path: Path):
    export("kitti", tmp_path, SEEDS, W, H, hfov_deg=80.0, split="val")
    ds = open_dataset(f"kitti:{tmp_path}", "val")
    assert isinstance(ds, KittiDepthDataset) and len(ds) == len(SEEDS)
    for seed, frame in zip(SEEDS, ds, strict=True):
        ref = _rendered(seed, 80.0)
        assert np.array_equal(frame.image, ref.rgb) and frame.semseg is None
        np.testing.assert_allclose(frame.K, ref.K, rtol=1e-9)
        gt = _finite_depth(ref)
        gt[gt > 65535 / kitti.DEPTH_SCALE] = np.nan  # beyond the format: stored as no measurement
        assert np.array_equal(np.isnan(frame.depth), np.isnan(gt))
        ok = ~np.isnan(gt)
        assert np.abs(frame.depth[ok] - gt[ok]).max() <= 0.5 / kitti.DEPTH_SCALE + 1e-5


def test_manifest_round_trip_and_cityscapes19(tmp_path: Path):
    path = export("manifest", tmp_path, SEEDS, W, H)
    ds = open_dataset(f"manifest:{path}", scheme="cityscapes19")
    assert isinstance(ds, ManifestDataset) and len(ds) == len(SEEDS)
    for seed, frame in zip(SEEDS, ds, strict=True):
        ref = _rendered(seed, 90.0)
        names = np.array(ds.scheme.class_names + ("?",) * (256 - 19))
        want = np.array(["road", "person", "car", "building", "pole", "vegetation",
                         "sky"])[ref.labels]
        assert np.array_equal(names[frame.semseg], want)
        np.testing.assert_array_equal(frame.depth, _finite_depth(ref))
        assert frame.name == f"images_{seed:010d}"


# ----- hand-written folders: the formats' encodings, independent of our writers -----

def test_cityscapes_disparity_decoding(tmp_path: Path):
    city = "aachen"
    stem = f"{city}_000000_000019"
    for folder, suffix, data in (("leftImg8bit", cityscapes.IMAGE_SUFFIX,
                                  np.zeros((2, 3, 3), np.uint8)),
                                 ("disparity", cityscapes.DISPARITY_SUFFIX,
                                  np.array([[0, 1, 257], [513, 2, 65535]], np.uint16))):
        (tmp_path / folder / "val" / city).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / folder / "val" / city / f"{stem}{suffix}"), data)
    cam = {"extrinsic": {"baseline": 0.2},
           "intrinsic": {"fx": 2000.0, "fy": 2000.0, "u0": 1.0, "v0": 0.5}}
    (tmp_path / "camera" / "val" / city).mkdir(parents=True)
    (tmp_path / "camera" / "val" / city / f"{stem}_camera.json").write_text(json.dumps(cam))
    frame = CityscapesDataset(tmp_path, "val")[0]
    assert frame.semseg is None  # no gtFine: unlabelled, not an error
    d = frame.depth
    assert np.isnan(d[0, 0]) and np.isnan(d[0, 1])  # p = 0 invalid; p = 1 is zero disparity
    # 0.2 * 2000 / 1, / 2
    assert d[0, 2] == pytest.approx(400.0) and d[1, 0] == pytest.approx(200.0)
    assert d[1, 1] == pytest.approx(400.0 * 256)
    np.testing.assert_array_equal(frame.K, [[2000, 0, 1], [0, 2000, 0.5], [0, 0, 1]])


def test_kitti_depth_and_calibration_decoding(tmp_path: Path):
    drive = "2011_09_26_drive_0002_sync"
    (tmp_path / "2011_09_26").mkdir()
    (tmp_path / "2011_09_26" / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\n"
        "P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 "
        "0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 "
        "1.000000e+00 2.745884e-03\n")
    img_dir = tmp_path / "2011_09_26" / drive / "image_02" / "data"
    gt_dir = tmp_path / "val" / drive / "proj_depth" / "groundtruth" / "image_02"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    cv2.imwrite(str(img_dir / "0000000005.png"), np.full((2, 2, 3), 9, np.uint8))
    cv2.imwrite(str(gt_dir / "0000000005.png"), np.array([[0, 256], [2560, 65535]], np.uint16))
    frame = KittiDepthDataset(tmp_path, "val")[0]
    assert frame.name == f"{drive}_image_02_0000000005"
    assert np.isnan(frame.depth[0, 0])
    np.testing.assert_allclose(frame.depth.ravel()[1:], [1.0, 10.0, 65535 / 256])
    np.testing.assert_allclose(frame.K,
                               [[721.5377, 0, 609.5593], [0, 721.5377, 172.854], [0, 0, 1]])


# ----- bad input: clear errors -----

def _manifest(tmp_path: Path, entries) -> Path:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(entries))
    return path


def test_manifest_errors_name_the_entry_and_field(tmp_path: Path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 6, 3), np.uint8))
    good = {"image": "a.png", "semseg_labelIds": None, "depth_m": None,
            "K": [[5, 0, 3], [0, 5, 2], [0, 0, 1]]}
    assert len(ManifestDataset(_manifest(tmp_path, [good]))) == 1
    cases = [
        ({}, "not valid JSON|non-empty"),
        ([{k: v for k, v in good.items() if k != "K"}], "entry 0: missing key"),
        ([good, {**good, "image": "nope.png"}], "entry 1: image file .*nope.png does not exist"),
        ([{**good, "K": [[5, 0], [0, 5]]}], "must have 9 values"),
        ([{**good, "K": [5, 0, 3, 0, 5, 2, 0, 0, 1]}], "must be a 3x3 pinhole"),
        ([{**good, "K": [[0, 0, 3], [0, 5, 2], [0, 0, 1]]}], "focal lengths must be positive"),
        ([{**good, "K": [[0, 0, 0], [0, 0, 0], [0, 0, 0]]}], "must be a 3x3 pinhole"),
        ([{**good, "K": [["a", 0, 3], [0, 5, 2], [0, 0, 1]]}], "must be 9 numbers"),
        ([{**good, "depth_m": 3}], "'depth_m' must be a relative path string or null"),
    ]
    for entries, message in cases:
        with pytest.raises(DatasetError, match=message):
            ManifestDataset(_manifest(tmp_path, entries))


def test_manifest_size_mismatch_and_bad_depth_are_reported(tmp_path: Path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 6, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "l.png"), np.zeros((4, 5), np.uint8))
    np.save(tmp_path / "d.npy", np.zeros((4, 6), np.int32))
    k = [[5, 0, 3], [0, 5, 2], [0, 0, 1]]
    ds = ManifestDataset(_manifest(tmp_path, [{"image": "a.png", "semseg_labelIds": "l.png",
                                               "depth_m": None, "K": k}]))
    with pytest.raises(DatasetError, match="label image is 5x4 but the image is 6x4"):
        ds[0]
    ds = ManifestDataset(_manifest(tmp_path, [{"image": "a.png", "semseg_labelIds": None,
                                               "depth_m": "d.npy", "K": k}]))
    with pytest.raises(DatasetError, match="2-D float array"):
        ds[0]


def test_folder_layout_errors(tmp_path: Path):
    with pytest.raises(DatasetError, match="no Cityscapes split 'val'"):
        CityscapesDataset(tmp_path, "val")
    with pytest.raises(DatasetError, match="no KITTI depth split 'val'"):
        KittiDepthDataset(tmp_path, "val")
    with pytest.raises(DatasetError, match="expected KIND:PATH"):
        open_dataset(str(tmp_path))
    export("kitti", tmp_path, [1], W, H)
    next((tmp_path / "synth").rglob("0000000001.png")).unlink()  # raw image gone, annotation left
    with pytest.raises(DatasetError, match="1 of 1 annotated frames have no raw image"):
        KittiDepthDataset(tmp_path, "train")


# ----- the edgemoe-dataset command line -----

def test_dataset_cli_export_then_check(tmp_path: Path, capsys):
    from edgemoe_ros.cli import dataset as cli

    out = tmp_path / "cs"
    assert cli.main(["export", "--format", "cityscapes", "--out", str(out), "--frames", "2",
                     "--seed", "3", "--width", str(W), "--height", str(H), "--split", "val",
                     "--no-progress"]) == 0
    assert len(CityscapesDataset(out, "val")) == 2
    assert cli.main(["check", f"cityscapes:{out}", "--split", "val",
                     "--classes", "cityscapes19"]) == 0
    text = capsys.readouterr().out
    assert "2 frame(s), 2 with labels, 2 with depth" in text and "road" in text
    assert cli.main(["export", "--format", "kitti", "--out", str(out), "--frames", "0"]) == 2
    assert "--frames 0: must be >= 1" in capsys.readouterr().err
    assert cli.main(["check", f"kitti:{tmp_path / 'none'}"]) == 2
    assert "no KITTI depth split 'train'" in capsys.readouterr().err


def test_dataset_cli_export_randomised(tmp_path: Path, capsys):
    """--randomise domain writes each frame's own K and the renders' ignored overlays as void;
    the KITTI layout (one camera per date) refuses it."""
    from edgemoe_ros.cli import dataset as cli

    out = tmp_path / "m"
    assert cli.main(["export", "--format", "manifest", "--out", str(out), "--frames", "6",
                     "--seed", "0", "--width", str(W), "--height", str(H),
                     "--randomise", "domain", "--no-progress"]) == 0
    assert "random lens per frame" in capsys.readouterr().out
    entries = json.loads((out / "manifest.json").read_text())
    assert len({round(e["K"][0][0], 6) for e in entries}) == 6
    frames = list(open_dataset(f"manifest:{out / 'manifest.json'}"))
    for seed, frame in enumerate(frames):
        want = render_frame(seed, W, H, randomise="domain")
        np.testing.assert_allclose(frame.K, want.K)
        # ignored overlays read back as IGNORE_INDEX
        assert np.array_equal(frame.semseg, want.labels)
        assert np.array_equal(np.isnan(frame.depth), ~np.isfinite(want.depth))
    assert cli.main(["export", "--format", "kitti", "--out", str(tmp_path / "k"), "--frames", "1",
                     "--randomise", "domain", "--no-progress"]) == 2
    assert "KITTI layout shares one per date" in capsys.readouterr().err
