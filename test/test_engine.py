# SPDX-License-Identifier: Apache-2.0
"""Engine end to end on a tiny random model: shapes, ranges, fit modes, usage counters, reload."""

from __future__ import annotations

import numpy as np
import pytest

from edgemoe_ros.backends import create_backend
from edgemoe_ros.backends.reference import ReferenceBackend
from edgemoe_ros.engine import TIMING_KEYS, Engine
from edgemoe_ros.model.config import IGNORE_INDEX, ConfigError, tiny_config
from edgemoe_ros.model.heads import decode_semseg, run_head
from edgemoe_ros.model.weights import random_init

BOTH = ("semseg", "depth")


def _image(h=48, w=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture()
def engine():
    eng = Engine(random_init(tiny_config(), seed=5), backend="cpu")
    yield eng
    eng.close()


def test_outputs_shapes_dtypes_and_ranges(engine):
    cfg = engine.config
    res = engine.infer(_image(), BOTH)
    assert res.semseg.shape == (cfg.img_h, cfg.img_w) and res.semseg.dtype == np.uint8
    assert res.depth.shape == (cfg.img_h, cfg.img_w) and res.depth.dtype == np.float32
    assert res.semseg.max() < cfg.num_classes
    assert np.all((res.depth >= cfg.min_depth) & (res.depth <= cfg.max_depth))
    for task in BOTH:
        assert res.routing[task].shape == (len(cfg.moe_layers), cfg.num_tokens, cfg.top_k)
    assert set(res.timings_ms) == set(TIMING_KEYS) and all(v >= 0 for v in res.timings_ms.values())
    assert res.timings_ms["total"] >= res.timings_ms["backbone"]
    semseg_in, depth_in = res.semseg_at_input(), res.depth_at_input()
    assert semseg_in.shape == (48, 80) and semseg_in.dtype == np.uint8
    assert depth_in.shape == (48, 80) and depth_in.dtype == np.float32
    # stretch: all observed
    assert not np.isnan(depth_in).any() and semseg_in.max() < cfg.num_classes


def test_single_task_leaves_the_other_none(engine):
    res = engine.infer(_image(), ("depth",))
    assert res.semseg is None and res.semseg_at_input() is None
    assert res.depth is not None and set(res.routing) == {"depth"}
    assert engine.infer(_image(), "semseg").depth is None  # a bare task name is accepted


def test_engine_output_equals_backbone_plus_head(engine):
    """No hidden transformation between the pieces: semseg is argmax of the head on the
    features."""
    img = _image(engine.config.img_h, engine.config.img_w, seed=3)  # model size: fit is a copy
    res = engine.infer(img, ("semseg",))
    feats = engine.backend.run(img[None], ("semseg",)).features["semseg"]
    want = decode_semseg(run_head(engine.weights, engine.config, "semseg", feats))[0]
    np.testing.assert_array_equal(res.semseg, want)


def test_crop_mode_marks_pixels_outside_the_crop():
    eng = Engine(random_init(tiny_config(), seed=5), backend="cpu", resize_mode="crop")
    assert eng.resize_mode == "crop"
    res = eng.infer(_image(64, 64), BOTH)  # square input, 1:2 model → rows 16..47 kept
    seg, depth = res.semseg_at_input(), res.depth_at_input()
    assert seg.shape == (64, 64) and depth.shape == (64, 64)
    assert np.all(seg[:16] == IGNORE_INDEX) and np.all(seg[48:] == IGNORE_INDEX)
    assert np.all(np.isnan(depth[:16])) and np.all(np.isnan(depth[48:]))
    assert np.all(seg[16:48] < eng.config.num_classes) and not np.isnan(depth[16:48]).any()
    assert (res.fit.roi_y, res.fit.roi_h) == (16, 32)


def test_grayscale_is_replicated_and_rgba_rejected(engine):
    gray = _image()[:, :, 0]
    as_rgb = engine.infer(np.repeat(gray[:, :, None], 3, axis=2), BOTH)
    for img in (gray, gray[:, :, None]):
        res = engine.infer(img, BOTH)
        np.testing.assert_array_equal(res.semseg, as_rgb.semseg)
        np.testing.assert_array_equal(res.depth, as_rgb.depth)
    with pytest.raises(ValueError, match="RGBA"):
        engine.infer(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        engine.infer(np.zeros((8, 8, 3), np.float32))


def test_bad_task_names_raise(engine):
    with pytest.raises(ConfigError, match="unknown task 'segmentation'"):
        engine.infer(_image(), ("segmentation",))
    with pytest.raises(ConfigError, match="no task"):
        engine.infer(_image(), ())
    with pytest.raises(ValueError, match="resize_mode 'fill'"):
        Engine(random_init(tiny_config()), resize_mode="fill")


def test_expert_usage_accumulates_and_resets(engine):
    cfg = engine.config
    per_frame = cfg.num_tokens * cfg.top_k
    engine.infer(_image(seed=1), BOTH)
    engine.infer(_image(seed=2), ("semseg",))
    usage = engine.expert_usage
    assert (
        usage["semseg"].shape == (len(cfg.moe_layers), cfg.num_experts)
        and usage["semseg"].dtype == np.int64
    )
    np.testing.assert_array_equal(usage["semseg"].sum(axis=1), 2 * per_frame)
    np.testing.assert_array_equal(usage["depth"].sum(axis=1), per_frame)
    usage["semseg"][:] = 0  # a copy: the engine's counters are not touched
    assert engine.expert_usage["semseg"].sum() == 2 * per_frame * len(cfg.moe_layers)
    engine.reset_expert_usage()
    assert all(u.sum() == 0 for u in engine.expert_usage.values())


def test_reload_swaps_weights_and_restarts_usage(engine):
    img = _image(seed=4)
    before = engine.infer(img, BOTH)
    backend = engine.backend
    engine.reload(random_init(tiny_config(), seed=99))
    assert engine.backend is backend  # same backend object, new model
    assert all(u.sum() == 0 for u in engine.expert_usage.values())
    after = engine.infer(img, BOTH)
    assert not np.array_equal(before.depth, after.depth)
    fresh = Engine(random_init(tiny_config(), seed=99), backend="cpu").infer(img, BOTH)
    np.testing.assert_array_equal(after.semseg, fresh.semseg)


def test_reload_of_a_bad_model_keeps_the_old_one(engine):
    img = _image(seed=6)
    before = engine.infer(img, BOTH)
    bad = random_init(tiny_config(), seed=7)
    del bad.tensors["norm.weight"]
    with pytest.raises(ValueError, match="norm.weight"):
        engine.reload(bad)
    np.testing.assert_array_equal(engine.infer(img, BOTH).semseg, before.semseg)


def test_backend_instance_and_up_head():
    cfg = tiny_config(head="up")
    eng = Engine(random_init(cfg, seed=8), backend=ReferenceBackend())
    res = eng.infer(_image(20, 30), BOTH)
    assert eng.backend.name == "reference"
    assert res.semseg.shape == (cfg.img_h, cfg.img_w) and res.semseg_at_input().shape == (20, 30)
    assert np.all((res.depth >= cfg.min_depth) & (res.depth <= cfg.max_depth))
    eng.close()


def test_engine_imports_neither_torch_nor_rclpy():
    import subprocess
    import sys

    code = (
        "import sys, edgemoe_ros.engine, edgemoe_ros.backends.cpu, "
        "edgemoe_ros.backends.reference; "
        "bad = [m for m in ('torch', 'rclpy') if m in sys.modules]; sys.exit(f'imported {bad}' if "
        "bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_backend_options_reach_the_named_backend() -> None:
    """CLI/node ``backend_options`` are create_backend kwargs: a bad one fails at construction,
    naming the options the backend takes (backends/options.py)."""
    from edgemoe_ros.backends import BackendError

    weights = random_init(tiny_config(), seed=5)
    with pytest.raises(BackendError, match="unknown option 'no_such_option'.*native, threads"):
        Engine(weights, backend="cpu", backend_options={"no_such_option": 1})
    with pytest.raises(ValueError, match="by name"):
        Engine(weights, backend=create_backend("cpu"), backend_options={"x": 1})


def test_reloads_free_every_old_model_object():
    """A node reloading the same file daily must not keep old models: after each reload the old
    weights, the backend's prepared (packed) model and the heads' packed weights are freed."""
    import gc
    import weakref

    cfg = tiny_config()
    eng = Engine(random_init(cfg, seed=1), "cpu")
    image = np.zeros((40, 72, 3), np.uint8)
    held = []
    try:
        for seed in range(2, 5):
            eng.infer(image)
            held += [weakref.ref(eng.weights), weakref.ref(eng.backend._m)]
            if eng._head_ops is not None:
                held.append(weakref.ref(eng._head_ops))
            eng.reload(random_init(cfg, seed=seed))
        eng.infer(image)
        gc.collect()
        assert [r() for r in held if r() is not None] == []
    finally:
        eng.close()
