# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-train``: a tiny model on dataset folders written by ``edgemoe-dataset export``, class
schemes, canonical-camera depth targets, resume (and refusing another run's checkpoint), and
DDP over two CPU processes against one process accumulating the same shards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgemoe_ros.datasets import LabelledFrame, get_scheme
from edgemoe_ros.datasets.export import export
from edgemoe_ros.engine import Engine
from edgemoe_ros.model.canonical_camera import canonical_focal
from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.model.weights import load_weights
from edgemoe_ros.postprocess import colorize_semseg, model_palette
from edgemoe_ros.training import edgemoe_train as et
from edgemoe_ros.training.sources import fit_frame, parse_data_spec, resize_depth

REPO = Path(__file__).resolve().parents[1]
#: The tiny model, one thread, a few steps: each run takes a second or two.
FAST = ["--model", "tiny", "--threads", "1", "--no-progress", "--batch", "4", "--warmup", "1"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("datasets")
    seeds = range(1_000_000, 1_000_004)
    return {
        "cityscapes": export("cityscapes", root / "cs", seeds, 128, 64),
        "kitti": export("kitti", root / "kitti", seeds, 160, 48),
    }


def _train(out: Path, *extra: str) -> int:
    return et.main(["--out", str(out), *FAST, "--accuracy-images", "0", *extra])


def _params(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / et.CHECKPOINT_NAME, weights_only=True)["model"]


def test_data_specs():
    assert str(parse_data_spec("synth")) == "synth:1"
    spec = parse_data_spec("cityscapes:/data/cs:0.25")
    assert (spec.kind, spec.location, spec.weight) == ("cityscapes", "/data/cs", 0.25)
    assert parse_data_spec("kitti:/a:b").location == "/a:b"  # a path may hold colons
    for bad in ("synth:x", "synth:0", "kitti:", "coco:/x", "manifest:/m.json:-1"):
        with pytest.raises(ValueError):
            parse_data_spec(bad)


def test_depth_targets_are_for_the_canonical_camera():
    """A frame through a lens of twice the canonical focal length (at the model input) teaches
    half its metric depth: what the canonical camera would have seen at that image size."""
    cfg = tiny_config()
    f = 2 * canonical_focal(cfg) * 4  # image 4x the model size
    K = np.array([[f, 0, 127.5], [0, f, 63.5], [0, 0, 1]])
    depth = np.full((128, 256), 20.0, np.float32)
    depth[:, :10] = np.nan
    frame = LabelledFrame(np.zeros((128, 256, 3), np.uint8), None, depth, K, "x")
    s = fit_frame(frame, cfg)
    assert s.rgb.shape == (32, 64, 3) and (s.labels == 255).all()
    np.testing.assert_allclose(s.depth[:, 3:], 10.0)
    assert np.isnan(s.depth[:, :2]).all()
    sparse = np.full((64, 128), np.nan, np.float32)
    sparse[::8, ::8] = 5.0  # LiDAR-like: one point in 64 pixels survives a 4x shrink
    small = resize_depth(sparse, 32, 16)
    assert np.isfinite(small).mean() > 0.2 and np.allclose(small[np.isfinite(small)], 5.0)


def test_trains_on_cityscapes_and_kitti_layouts_with_cityscapes19(folders, tmp_path):
    out = tmp_path / "run"
    assert (
        _train(
            out,
            "--steps",
            "2",
            "--classes",
            "cityscapes19",
            "--accuracy-images",
            "1",
            "--data",
            f"cityscapes:{folders['cityscapes']}:0.5",
            "--data",
            f"kitti:{folders['kitti']}:0.5",
            "--val",
            f"cityscapes:{folders['cityscapes']}",
            "--val-split",
            "train",
            "--val-frames",
            "2",
        )
        == 0
    )
    val = json.loads((out / "run.json").read_text())["val"]
    assert val["frames"] == 2 and 0.0 <= val["miou"] <= 1.0 and 0.0 <= val["delta1"] <= 1.0
    weights = load_weights(out / et.EXPORT_NAME)
    scheme = get_scheme("cityscapes19")
    assert weights.config.class_names == scheme.class_names and weights.config.num_classes == 19
    assert weights["heads.semseg.fc2.bias"].shape == (
        16 * 16 * 19,
    )  # light head: a 19-class patch per token
    np.testing.assert_array_equal(model_palette(weights.config), scheme.palette)
    assert weights.config.notes["data"] == [
        f"cityscapes:{folders['cityscapes']}:0.5",
        f"kitti:{folders['kitti']}:0.5",
    ]
    assert (out / "accuracy.md").read_text().count("routing") >= 1 and (
        out / "accuracy.json"
    ).exists()
    with Engine(weights, "cpu") as engine:  # the engine takes the exported file as it is
        res = engine.infer(np.zeros((64, 128, 3), np.uint8))
    colors = colorize_semseg(res.semseg, model_palette(weights.config))
    assert {tuple(c) for c in colors.reshape(-1, 3)} <= {tuple(c) for c in scheme.palette}


def test_categories_on_kitti_and_the_renderer(folders, tmp_path):
    out = tmp_path / "run"
    assert (
        _train(
            out,
            "--steps",
            "1",
            "--head",
            "pyramid",
            "--data",
            f"kitti:{folders['kitti']}",
            "--data",
            "synth:0.5",
            "--synth-frames",
            "4",
            "--cache",
            str(tmp_path / "cache"),
        )
        == 0
    )
    cfg = load_weights(out / et.EXPORT_NAME).config
    assert (
        cfg.num_classes == 7 and cfg.palette and cfg.head == "pyramid"
    )  # the categories' colours, stored too


def test_depth_only_data_trains_depth_and_leaves_segmentation_alone(folders, tmp_path):
    """KITTI has no labels: the segmentation loss is zero (not NaN) and depth still trains."""
    assert _train(tmp_path / "k", "--steps", "2", "--data", f"kitti:{folders['kitti']}") == 0
    loss = json.loads((tmp_path / "k" / "run.json").read_text())["loss"]
    assert loss["seg"] == 0.0 and 0.0 < loss["depth"] < 10.0
    assert np.isfinite(load_weights(tmp_path / "k" / et.EXPORT_NAME)["heads.depth.fc2.bias"]).all()


def test_resume_restores_optimizer_and_schedule(folders, tmp_path):
    data = ["--data", f"cityscapes:{folders['cityscapes']}", "--steps", "4"]
    assert _train(tmp_path / "straight", *data) == 0
    assert _train(tmp_path / "split", *data, "--stop-after", "2") == 0
    ck = torch.load(tmp_path / "split" / et.CHECKPOINT_NAME, weights_only=True)
    assert ck["step"] == 2 and ck["steps"] == 4 and ck["opt"]["state"]
    assert _train(tmp_path / "split", *data, "--resume") == 0
    straight, resumed = _params(tmp_path / "straight"), _params(tmp_path / "split")
    for name, value in straight.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)


def test_resume_of_a_run_started_from_init_with_a_resized_head(folders, tmp_path):
    """--init from a 7-class model into 19 classes: the resized head learns faster (its own
    optimiser group), and a resumed run rebuilds those groups from the checkpoint."""
    data = ["--data", f"cityscapes:{folders['cityscapes']}"]
    assert _train(tmp_path / "base", *data, "--steps", "1") == 0
    init = [
        "--init",
        str(tmp_path / "base" / et.EXPORT_NAME),
        "--classes",
        "cityscapes19",
        "--steps",
        "3",
    ]
    assert _train(tmp_path / "cs19", *data, *init, "--stop-after", "1") == 0
    ck = torch.load(tmp_path / "cs19" / et.CHECKPOINT_NAME, weights_only=True)
    assert "heads.semseg.fc2.weight" in ck["fresh"] and "patch_embed.weight" not in ck["fresh"]
    assert len(ck["opt"]["param_groups"]) == 4
    assert _train(tmp_path / "cs19", *data, *init, "--resume") == 0
    assert torch.load(tmp_path / "cs19" / et.CHECKPOINT_NAME, weights_only=True)["step"] == 3


def test_resume_refuses_a_foreign_checkpoint(folders, tmp_path, capsys):
    data = ["--data", f"cityscapes:{folders['cityscapes']}", "--steps", "1"]
    assert _train(tmp_path / "run", *data) == 0
    # Another class scheme (a different head) is another run.
    assert _train(tmp_path / "run", *data, "--classes", "cityscapes19", "--resume") == 2
    assert "checkpoint of another run" in capsys.readouterr().err
    # A checkpoint of another tool, or one holding pickled objects, is never unpickled.
    torch.save({"model": {}, "step": 1}, tmp_path / "run" / et.CHECKPOINT_NAME)
    assert _train(tmp_path / "run", *data, "--resume") == 2
    assert "not an edgemoe-train checkpoint" in capsys.readouterr().err
    torch.save(
        {"kind": "edgemoe-train", "rng": np.random.default_rng(0)},
        tmp_path / "run" / et.CHECKPOINT_NAME,
    )
    assert _train(tmp_path / "run", *data, "--resume") == 2
    assert "weights_only" in capsys.readouterr().err


def test_ddp_two_cpu_processes_match_one_process_on_the_same_global_batch(folders, tmp_path):
    """torchrun with 2 gloo processes of 2 frames each vs one process accumulating the same two
    shards of the global batch of 4: the same parameters after 3 steps."""
    common = [
        *FAST,
        "--accuracy-images",
        "0",
        "--steps",
        "3",
        "--data",
        f"cityscapes:{folders['cityscapes']}",
        "--data",
        f"kitti:{folders['kitti']}",
        "--device",
        "cpu",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "edgemoe_ros.training.edgemoe_train",
            "--out",
            str(tmp_path / "ddp"),
            *common,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    assert "2 process(es)" in ddp.stdout
    assert et.main(["--out", str(tmp_path / "one"), *common, "--accum", "2"]) == 0
    one, two = _params(tmp_path / "one"), _params(tmp_path / "ddp")
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-5, atol=1e-6, msg=name)
    # The comparison resolves the shards: the same 4 frames as one shard (one loss over all four)
    # end measurably elsewhere (measured max |diff| 2e-3 against the 1e-6 tolerance above).
    assert et.main(["--out", str(tmp_path / "whole"), *common, "--accum", "1"]) == 0
    whole = _params(tmp_path / "whole")
    assert max(float((whole[k] - one[k]).abs().max()) for k in one) > 1e-4


def test_bf16_autocast_step(folders, tmp_path, caplog):
    """The GPU's bf16 path on the CPU: expert outputs in bf16 join the float32 residual stream,
    losses are float32, and the step trains."""
    with caplog.at_level("INFO", logger=et.log.name):
        assert (
            _train(
                tmp_path / "bf16",
                "--precision",
                "bf16",
                "--steps",
                "2",
                "--head",
                "pyramid",
                "--data",
                f"cityscapes:{folders['cityscapes']}",
            )
            == 0
        )
    assert "bf16 autocast" in caplog.text
    loss = torch.load(tmp_path / "bf16" / et.CHECKPOINT_NAME, weights_only=True)
    assert loss["step"] == 2
    run = (tmp_path / "bf16" / "run.json").read_text()
    assert '"seg"' in run and "NaN" not in run


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is None or not torch.cuda.is_available(), reason="needs a GPU"
)
def test_cuda_bf16_steps(folders, tmp_path):
    assert (
        _train(
            tmp_path / "gpu",
            "--device",
            "cuda",
            "--steps",
            "2",
            "--data",
            f"cityscapes:{folders['cityscapes']}",
        )
        == 0
    )


def test_tensorboard_scalars_when_installed(folders, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert (
        _train(tmp_path / "tb", "--steps", "2", "--data", f"cityscapes:{folders['cityscapes']}")
        == 0
    )
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    assert {"train/seg", "train/depth", "train/aux", "train/lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/seg")] == [1, 2]
