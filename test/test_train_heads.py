# SPDX-License-Identifier: Apache-2.0
"""Heads-only training on a frozen backbone: the cache holds the backbone's features, a head
learns from them, the exported model keeps the backbone bit for bit and runs in the engine."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgemoe_ros.backends import create_backend  # noqa: E402
from edgemoe_ros.engine import Engine  # noqa: E402
from edgemoe_ros.model.config import tiny_config  # noqa: E402
from edgemoe_ros.model.heads import run_head  # noqa: E402
from edgemoe_ros.model.weights import (  # noqa: E402
    ModelWeights,
    load_weights,
    random_init,
    save_weights,
)
from edgemoe_ros.training import data  # noqa: E402
from edgemoe_ros.training.train import Hyper  # noqa: E402
from edgemoe_ros.training.train_heads import (  # noqa: E402
    CHECKPOINT_NAME,
    FIRST_SEED,
    Crop,
    HeadTrainer,
    backbone_digest,
    export_dtype,
    head_config,
    load_cache,
    main,
    render_shard,
)

PYRAMID = dict(
    pyramid_token=8, pyramid_enc=(4, 6), pyramid_dec=(8, 6, 4), pyramid_guide=3, pyramid_mix=(1, 1)
)


@pytest.fixture(scope="module")
def init_file(tmp_path_factory):
    """A tiny guided model whose backbone the heads train on, and a pyramid config of its own
    widths."""
    path = tmp_path_factory.mktemp("init") / "init.safetensors"
    save_weights(random_init(tiny_config(head="guided"), seed=3), path)
    return path


@pytest.fixture(scope="module")
def frames(init_file):
    backend = create_backend("cpu", native="off")
    backend.load(load_weights(init_file))
    return render_shard(FIRST_SEED, 6, True, 64, 32, backend)


def _cfg(init_file):
    return head_config(load_weights(init_file).config, "pyramid").replace(**PYRAMID)


def test_cached_features_are_the_backbones(init_file, frames):
    weights = load_weights(init_file)
    backend = create_backend("cpu", native="off")
    backend.load(weights)
    want = backend.run(frames["rgb"][:2], ("semseg", "depth")).features
    for task in ("semseg", "depth"):
        assert frames[f"feat_{task}"].dtype == np.float16
        np.testing.assert_allclose(
            frames[f"feat_{task}"][:2].astype(np.float32), want[task], rtol=2e-3, atol=2e-3
        )
    assert frames["rgb"].dtype == np.uint8 and frames["labels"].shape == frames["rgb"].shape[:3]
    # Augmented once, deterministically by seed: the same shard renders the same bytes.
    again = render_shard(FIRST_SEED, 2, True, 64, 32, backend)
    np.testing.assert_array_equal(again["rgb"], frames["rgb"][:2])
    plain = render_shard(FIRST_SEED, 2, False, 64, 32, backend)
    assert not np.array_equal(plain["rgb"], frames["rgb"][:2])


def test_a_few_steps_decrease_the_loss_on_crops(init_file, frames):
    torch.set_num_threads(1)
    cfg = _cfg(init_file)
    trainer = HeadTrainer(
        cfg, Hyper(lr=1e-2, warmup_steps=1, lovasz_weight=1.0), torch.ones(cfg.num_classes)
    )
    crop = Crop(0, 1, 2, 2)
    with torch.no_grad():
        before = {k: float(v) for k, v in trainer.losses(frames, crop).items()}
    for _ in range(30):
        trainer.step(frames, crop, progress=0.0)
    with torch.no_grad():
        after = {k: float(v) for k, v in trainer.losses(frames, crop).items()}
    assert after["seg"] < 0.8 * before["seg"]
    assert after["depth"] < 0.8 * before["depth"]
    # Whole frames score with the same numbers the engine's numpy head computes.
    metrics = trainer.validate(frames)
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["absrel"] > 0


def test_export_keeps_the_backbone_and_matches_numpy_heads(init_file, frames):
    init = load_weights(init_file)
    cfg = _cfg(init_file)
    trainer = HeadTrainer(cfg, Hyper(), torch.ones(cfg.num_classes))
    exported = trainer.export_weights(init, {"note": "test"})
    assert exported.config.head == "pyramid"
    for name, value in init.tensors.items():
        if not name.startswith("heads."):
            np.testing.assert_array_equal(exported[name], value)
    assert backbone_digest(exported) == backbone_digest(init)
    feats = frames["feat_semseg"][:2].astype(np.float32)
    with torch.no_grad():
        want = trainer.outputs(
            {"rgb": frames["rgb"][:2], "feat_semseg": feats, "feat_depth": feats}
        )["semseg"]
    got = run_head(exported, cfg, "semseg", feats, frames["rgb"][:2])
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def _cli_args(init_file, out, cache, *extra):
    return [
        "--init",
        str(init_file),
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--frames",
        "6",
        "--val-frames",
        "3",
        "--workers",
        "1",
        "--steps",
        "3",
        "--batch",
        "2",
        "--crop",
        "1",
        "2",
        "--threads",
        "1",
        "--minutes",
        "5",
        *extra,
    ]


def _adam_steps(ckpt) -> set[int]:
    return {int(s["step"]) for s in torch.load(ckpt, weights_only=False)["opt"]["state"].values()}


def test_cli_caches_trains_exports_and_resumes(init_file, tmp_path, monkeypatch):
    import edgemoe_ros.training.train_heads as th

    out, cache = tmp_path / "run", tmp_path / "cache"
    args = _cli_args(init_file, out, cache)
    monkeypatch.setattr(th, "SHARD_FRAMES", 4)  # two training shards, one of them partial
    assert main(args) == 0
    shards = sorted(p.name for p in next(cache.iterdir()).glob("*.npz"))
    assert shards == [f"train_{FIRST_SEED:09d}_4.npz", f"train_{FIRST_SEED + 4:09d}_2.npz",
                      f"val_{data.VAL_SEED_START:09d}_3.npz"]
    train = load_cache(next(cache.iterdir()), "train", 6, FIRST_SEED)
    assert len(train["rgb"]) == 6 and train["depth"].dtype == np.float32
    exported = out / "export.safetensors"
    weights, init = load_weights(exported), load_weights(init_file)
    assert weights.config.head == "pyramid"
    assert weights.config.notes["steps"] == 3
    # The init's backbone is float32 (not float16-exact): exported bit for bit, not rounded.
    for name, value in init.tensors.items():
        if not name.startswith("heads."):
            np.testing.assert_array_equal(weights[name], value)
    ckpt = out / CHECKPOINT_NAME
    assert ckpt.exists() and _adam_steps(ckpt) == {3}
    with Engine(weights, backend="cpu") as engine:
        res = engine.infer(np.zeros((40, 70, 3), np.uint8))
    assert res.semseg.shape == (32, 64) and np.isfinite(res.depth).all()
    # Resume at the checkpoint's own step: no new step, so the export is the checkpoint's heads.
    heads = {k: v.numpy() for k, v in torch.load(ckpt, weights_only=False)["heads"].items()}
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npz")}
    assert main([*args, "--resume"]) == 0
    again = load_weights(exported)
    for name, value in heads.items():
        np.testing.assert_array_equal(again[f"heads.{name}"], value)
    # Then on: the step count and the optimiser's moments continue (Adam's count 5, not a fresh 2);
    # the cache is reused, not re-rendered.
    assert main([*args, "--steps", "5", "--resume"]) == 0
    assert load_weights(exported).config.notes["steps"] == 5 and _adam_steps(ckpt) == {5}
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.npz")} == before


def test_resume_refuses_heads_of_another_backbone(init_file, tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert main(_cli_args(init_file, out, cache, "--steps", "1")) == 0
    other = tmp_path / "other.safetensors"  # same config, other tensors
    save_weights(random_init(load_weights(init_file).config, seed=4), other)
    with pytest.raises(SystemExit, match="trained heads on backbone"):
        main(_cli_args(other, out, cache, "--resume"))


@pytest.mark.parametrize(
    "bad",
    [
        ["--frames", "0"],
        ["--val-frames", "0"],
        ["--workers", "0"],
        ["--batch", "0"],
        ["--crop", "4", "0"],
        ["--crop", "-1", "2"],
        ["--minutes", "0"],
    ],
)
def test_cli_rejects_bad_numbers(init_file, tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(_cli_args(init_file, tmp_path / "run", tmp_path / "cache", *bad))
    assert exc.value.code == 2 and bad[0] in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # refused before any work


def test_export_dtype_keeps_the_backbone_exact(init_file):
    init = load_weights(init_file)
    assert export_dtype(init) == "float32"
    halves = {k: v.astype(np.float16).astype(np.float32) for k, v in init.tensors.items()}
    assert export_dtype(ModelWeights(init.config, halves)) == "float16"


def test_continue_heads_needs_the_same_head(init_file, tmp_path):
    with pytest.raises(SystemExit, match="--continue-heads"):
        main(
            [
                "--init",
                str(init_file),
                "--out",
                str(tmp_path),
                "--cache",
                str(tmp_path / "c"),
                "--frames",
                "2",
                "--val-frames",
                "1",
                "--workers",
                "1",
                "--steps",
                "1",
                "--continue-heads",
            ]
        )


def test_the_full_trainer_fine_tunes_an_exported_pyramid_model(init_file, tmp_path):
    """Heads first, then everything: train.py --init takes the pyramid model whole (no fresh
    tensors)."""
    from edgemoe_ros.training import train

    cfg = _cfg(init_file)
    start = tmp_path / "pyramid.safetensors"
    save_weights(
        HeadTrainer(cfg, Hyper(), torch.ones(cfg.num_classes)).export_weights(
            load_weights(init_file), {}
        ),
        start,
    )
    out = tmp_path / "e2e.safetensors"
    assert (
        train.main(
            [
                "--out",
                str(tmp_path / "run"),
                "--batch",
                "2",
                "--cache",
                str(tmp_path / "cache"),
                "--initial-shards",
                "1",
                "--no-refresh",
                "--val-frames",
                "2",
                "--export",
                str(out),
                "--threads",
                "1",
                "--init",
                str(start),
                "--steps",
                "2",
            ]
        )
        == 0
    )
    state = torch.load(tmp_path / "run" / train.CHECKPOINT_NAME, weights_only=False)
    assert state["fresh"] == []
    tuned = load_weights(out)
    assert tuned.config.replace(notes={}) == cfg
    moved = np.abs(
        tuned["heads.semseg.fuse1.weight"] - load_weights(start)["heads.semseg.fuse1.weight"]
    ).max()
    assert 0 < moved < 0.05


def test_randomised_and_photometric_shards(init_file, frames):
    """--randomise renders other scenes (random lens, look, ignored overlays without depth);
    --photometric changes only the pixels of the same frames."""
    backend = create_backend("cpu", native="off")
    backend.load(load_weights(init_file))
    photo = render_shard(FIRST_SEED, 2, True, 64, 32, backend, photometric=1.0)
    np.testing.assert_array_equal(photo["labels"], frames["labels"][:2])
    np.testing.assert_array_equal(photo["depth"], frames["depth"][:2])
    assert not np.array_equal(photo["rgb"], frames["rgb"][:2])
    rand = render_shard(FIRST_SEED, 4, True, 64, 32, backend, randomise="domain", share=1.0)
    assert not np.array_equal(rand["labels"], frames["labels"][:4])
    np.testing.assert_array_equal(np.isnan(rand["depth"]), rand["labels"] == 255)
    none = render_shard(FIRST_SEED, 2, True, 64, 32, backend, randomise="domain", share=0.0)
    np.testing.assert_array_equal(none["rgb"], frames["rgb"][:2])
