# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-infer`` end to end, as a user runs it: a subprocess on a tiny model and real PNGs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgemoe_ros.model.config import IGNORE_INDEX, tiny_config
from edgemoe_ros.model.weights import random_init, save_weights

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "edgemoe_ros.cli.infer", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(random_init(tiny_config(), seed=2), path)
    return path


def write_png(path: Path, h: int, w: int, seed: int = 0) -> Path:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


@pytest.mark.parametrize("resize", ["stretch", "crop"])
def test_infer_writes_outputs_at_input_size(tmp_path, tiny_weights, resize):
    a = write_png(tmp_path / "street.png", 75, 110, seed=1)
    b = write_png(tmp_path / "tall.png", 96, 40, seed=2)
    out = tmp_path / "out"
    proc = run_cli(
        str(a), str(b), "--weights", str(tiny_weights), "--out", str(out), "--resize", resize
    )
    assert proc.returncode == 0, proc.stderr
    for img, (h, w) in ((a, (75, 110)), (b, (96, 40))):
        stem = img.stem
        seg = cv2.imread(str(out / f"{stem}_semseg.png"), cv2.IMREAD_UNCHANGED)
        ids = cv2.imread(str(out / f"{stem}_semseg_ids.png"), cv2.IMREAD_UNCHANGED)
        dep = cv2.imread(str(out / f"{stem}_depth.png"), cv2.IMREAD_UNCHANGED)
        raw = np.load(out / f"{stem}_depth.npy")
        mosaic = cv2.imread(str(out / f"{stem}_mosaic.png"), cv2.IMREAD_UNCHANGED)
        assert seg.shape == (h, w, 3) and dep.shape == (h, w, 3)
        assert ids.shape == (h, w) and ids.dtype == np.uint8
        assert raw.shape == (h, w) and raw.dtype == np.float32
        assert mosaic.shape == (h, 3 * w, 3)
        valid = ids != IGNORE_INDEX
        assert (ids[valid] < len(tiny_config().class_names)).all()
        cfg = tiny_config()
        finite = raw[np.isfinite(raw)]
        assert finite.size and finite.min() >= cfg.min_depth and finite.max() <= cfg.max_depth
        if resize == "stretch":
            assert valid.all() and np.isfinite(raw).all()
        else:  # crop: invalid exactly where ids are ignore
            assert not valid.all()
            np.testing.assert_array_equal(np.isfinite(raw), valid)
    # timing table: a header with the stages and one row per image
    assert "total ms" in proc.stdout and "backbone ms" in proc.stdout
    assert "street.png" in proc.stdout and "tall.png" in proc.stdout and "median" in proc.stdout


def test_infer_single_task(tmp_path, tiny_weights):
    a = write_png(tmp_path / "x.png", 32, 64)
    out = tmp_path / "o"
    proc = run_cli(str(a), "--weights", str(tiny_weights), "--out", str(out), "--tasks", "depth")
    assert proc.returncode == 0, proc.stderr
    assert (out / "x_depth.npy").exists() and not (out / "x_semseg.png").exists()
    assert cv2.imread(str(out / "x_mosaic.png")).shape == (32, 128, 3)


def test_infer_errors(tmp_path, tiny_weights):
    a = write_png(tmp_path / "x.png", 32, 64)
    proc = run_cli(
        str(a), "--weights", str(tiny_weights), "--out", str(tmp_path), "--tasks", "normals"
    )
    assert proc.returncode == 2 and "normals" in proc.stderr and "semseg,depth" in proc.stderr
    proc = run_cli(str(a), "--weights", str(tmp_path / "none.safetensors"), "--out", str(tmp_path))
    assert (
        proc.returncode == 2 and "none.safetensors" in proc.stderr and "not found" in proc.stderr
    )
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    proc = run_cli(str(junk), str(a), "--weights", str(tiny_weights), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1 and "junk.png" in proc.stderr
    assert (tmp_path / "o" / "x_mosaic.png").exists()  # the good image was still processed


def test_infer_fx_gives_the_depth_of_that_lens(tmp_path, tiny_weights):
    """--fx scales depth by the lens's focal length at the model input (vertical, after the
    fit)."""
    from edgemoe_ros.model.canonical_camera import canonical_focal

    a = write_png(tmp_path / "x.png", 64, 128)  # 2x the tiny model's 32x64
    base = run_cli(
        str(a), "--weights", str(tiny_weights), "--out", str(tmp_path / "base"), "--tasks", "depth"
    )
    assert base.returncode == 0 and "canonical camera" in base.stdout, base.stderr
    fx = 150.0
    lens = run_cli(
        str(a),
        "--weights",
        str(tiny_weights),
        "--out",
        str(tmp_path / "lens"),
        "--tasks",
        "depth",
        "--fx",
        str(fx),
    )
    assert lens.returncode == 0 and "fx=150" in lens.stdout, lens.stderr
    want = np.load(tmp_path / "base" / "x_depth.npy") * (fx * 0.5 / canonical_focal(tiny_config()))
    np.testing.assert_allclose(np.load(tmp_path / "lens" / "x_depth.npy"), want, rtol=1e-5)
    for bad in (["--fx", "-100"], ["--fx", "nan"], ["--fx", "100", "--fy", "0"], ["--fy", "100"]):
        proc = run_cli(
            str(a), "--weights", str(tiny_weights), "--out", str(tmp_path / "bad"), *bad
        )
        assert proc.returncode == 2 and "error:" in proc.stderr, (bad, proc.stderr)


def test_infer_draws_the_models_own_palette(tmp_path):
    """A 19-class model (edgemoe-train --classes cityscapes19) carries its colours in its
    config."""
    from edgemoe_ros.datasets import get_scheme

    scheme = get_scheme("cityscapes19")
    cfg = tiny_config(
        class_names=scheme.class_names, palette=tuple(int(v) for v in scheme.palette.ravel())
    )
    weights = tmp_path / "cs19.safetensors"
    save_weights(random_init(cfg, seed=4), weights)
    a = write_png(tmp_path / "x.png", 32, 64, seed=3)
    proc = run_cli(
        str(a), "--weights", str(weights), "--out", str(tmp_path / "o"), "--tasks", "semseg"
    )
    assert proc.returncode == 0, proc.stderr
    ids = cv2.imread(str(tmp_path / "o" / "x_semseg_ids.png"), cv2.IMREAD_UNCHANGED)
    color = cv2.cvtColor(cv2.imread(str(tmp_path / "o" / "x_semseg.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(color, scheme.palette[ids])
    assert ids.max() >= 7  # ids past the 7 categories occur and still have their own colours
