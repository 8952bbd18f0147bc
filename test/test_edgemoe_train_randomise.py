# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-train --data synth`` with domain randomisation (``--randomise``,
``--randomise-share``), the sensor augmentation (``--photometric``) and a frozen prefix
(``--freeze-blocks``): the randomised frames are really rendered, drawn and trained on, with
canonical-camera depth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgemoe_ros.datasets import get_scheme
from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.model.weights import load_weights
from edgemoe_ros.scenes import render_frame
from edgemoe_ros.training import data
from edgemoe_ros.training import edgemoe_train as et
from edgemoe_ros.training.sources import SynthSource, synth_cache_dir

FAST = ["--model", "tiny", "--threads", "1", "--no-progress", "--batch", "4", "--warmup", "1",
        "--accuracy-images", "0", "--synth-frames", "32"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One rendered cache for the module (one plain and one randomised shard at the tiny size)."""
    return tmp_path_factory.mktemp("cache")


def _train(out: Path, cache: Path, *extra: str) -> int:
    return et.main(["--out", str(out), *FAST, "--cache", str(cache), *extra])


def test_synth_source_holds_the_share_of_randomised_frames_with_canonical_depth(cache):
    cfg = tiny_config()
    src = SynthSource(cache, cfg, get_scheme("categories"), frames=64, randomise="domain",
                      share=0.5)
    assert len(src) == 64 and src.plain == 32
    assert not src.is_randomised(31) and src.is_randomised(32) and src.is_randomised(63)
    assert data.list_shards(synth_cache_dir(cache, cfg))
    assert data.list_shards(synth_cache_dir(cache, cfg, "domain"))
    seeds = range(data.TRAIN_SEED_START, data.TRAIN_SEED_START + 12)
    lens_differs = 0
    for i, seed in enumerate(seeds):
        plain = src.sample(i)
        rand = src.sample(32 + i)
        frame = render_frame(data.RANDOMISED_SEED_START + i, cfg.img_w, cfg.img_h,
                             randomise="domain")
        np.testing.assert_array_equal(rand.rgb, frame.rgb)  # the randomised render of the seed
        np.testing.assert_array_equal(plain.rgb, render_frame(seed, cfg.img_w, cfg.img_h).rgb)
        assert not np.array_equal(rand.rgb, plain.rgb)
        # canonical-camera depth: the metric depth times f_c / fy of the frame's own lens
        want = data.canonical_depth(frame.depth, frame.K, cfg.img_w, cfg.img_h)
        ok = np.isfinite(want) & np.isfinite(rand.depth) & (want < data.FLOAT16_DEPTH_CAP)
        np.testing.assert_allclose(rand.depth[ok], want[ok], rtol=2e-3)
        if not np.isclose(frame.K[1, 1], cfg.img_w / 2.0, rtol=1e-3):  # not the 90-degree lens
            lens_differs += 1
            assert not np.allclose(rand.depth[ok], frame.depth[ok], rtol=1e-2)
    assert lens_differs >= 6  # the profile varies the lens of most frames


def test_share_zero_and_bad_share(cache):
    cfg = tiny_config()
    src = SynthSource(cache, cfg, get_scheme("categories"), frames=32, randomise="domain",
                      share=0.0)
    assert len(src) == 32 and src.plain == 32 and src.name == "synth"
    assert not any(src.is_randomised(i) for i in range(32))
    with pytest.raises(ValueError):
        SynthSource(cache, cfg, get_scheme("categories"), 32, randomise="domain", share=1.5)


def test_training_draws_randomised_frames_with_photometric_augmentation(tmp_path, cache,
                                                                        monkeypatch):
    """Share 1: every frame of every step is a randomised render, passed through the sensor
    augmentation (image changed, labels and depth not)."""
    seen: list[tuple[object, int, list]] = []
    original = et.global_batch

    def spy(mixture, trainer, micro, photometric=0.0):
        shards = original(mixture, trainer, micro, photometric)
        seen.append((mixture, trainer.step_count, shards))
        return shards

    monkeypatch.setattr(et, "global_batch", spy)
    assert _train(tmp_path / "run", cache, "--steps", "2", "--randomise", "domain",
                  "--randomise-share", "1", "--photometric", "1") == 0
    assert len(seen) == 2
    changed = 0
    for mixture, step, shards in seen:
        src = mixture.sources[0]
        assert src.plain == 0 and len(src) == 32
        picks = mixture.picks(0, step, 4)
        rgb, labels, depth, _ = shards[0]
        for j, (_, i) in enumerate(picks):
            assert src.is_randomised(i)
            np.testing.assert_array_equal(labels[j], src.labels[i])
            np.testing.assert_array_equal(depth[j], src.sample(i).depth)
            changed += not np.array_equal(rgb[j], src.rgb[i])
    assert changed >= 6  # photometric strength 1 changes (nearly) every image
    notes = load_weights(tmp_path / "run" / et.EXPORT_NAME).config.notes
    assert notes["synth_randomise"] == "domain (1 of the frames)" and notes["photometric"] == 1.0


def test_freeze_blocks_keeps_the_prefix_and_trains_the_rest(tmp_path, cache):
    assert _train(tmp_path / "base", cache, "--steps", "1") == 0
    init = tmp_path / "base" / et.EXPORT_NAME
    assert _train(tmp_path / "ft", cache, "--steps", "3", "--init", str(init),
                  "--freeze-blocks", "2", "--lr", "1e-2") == 0
    before = load_weights(init).tensors
    after = torch.load(tmp_path / "ft" / et.CHECKPOINT_NAME, weights_only=True)["model"]
    for name, value in after.items():
        if name not in before:
            continue
        same = np.array_equal(value.numpy(), before[name].astype(np.float32))
        if name.startswith(("patch_embed.", "cls_token", "pos_embed", "blocks.0.", "blocks.1.")):
            assert same, name
    trained = [n for n in after if n.startswith(("blocks.3.", "heads.")) and n in before]
    assert any(not np.array_equal(after[n].numpy(), before[n].astype(np.float32)) for n in trained)
    run = json.loads((tmp_path / "ft" / "run.json").read_text())
    assert run["steps"] == 3
    assert et.main(["--out", str(tmp_path / "bad"), *FAST, "--cache", str(cache), "--steps", "1",
                    "--freeze-blocks", "9"]) == 2


def test_resume_of_a_run_started_from_a_file_with_another_head(tmp_path, cache):
    """A fine-tune of a model whose config is not ``--model``'s default (here a guided head, the
    shipped model's pyramid head in practice) resumes: the config comes from ``--init`` again."""
    assert _train(tmp_path / "base", cache, "--steps", "1", "--head", "guided") == 0
    init = str(tmp_path / "base" / et.EXPORT_NAME)
    ft = ["--init", init, "--steps", "3", "--freeze-blocks", "1"]
    assert _train(tmp_path / "ft", cache, *ft, "--stop-after", "2") == 0
    assert _train(tmp_path / "ft", cache, *ft, "--resume") == 0
    assert torch.load(tmp_path / "ft" / et.CHECKPOINT_NAME, weights_only=True)["step"] == 3
    assert load_weights(tmp_path / "ft" / et.EXPORT_NAME).config.head == "guided"
