# SPDX-License-Identifier: Apache-2.0
"""The numpy emulator and the C-simulation of hls_accel/ must agree on every output bit."""

from __future__ import annotations

import numpy as np
import pytest

from edgemoe_ros.accel import interface as itf
from edgemoe_ros.backends import create_backend
from edgemoe_ros.backends.base import BackendError
from edgemoe_ros.backends.csim import CSimBackend
from edgemoe_ros.fixedpoint.emulator import FixedPointEmulator
from edgemoe_ros.model.config import ModelConfig, tiny_config
from edgemoe_ros.model.weights import random_init


def _images(cfg: ModelConfig, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, size=(n, cfg.img_h, cfg.img_w, 3), dtype=np.uint8)
    imgs[0] = 255  # saturated white frame
    if n > 1:
        imgs[1] = 0  # black frame: every patch identical
    return imgs


def _assert_bit_exact(
    csim: CSimBackend, emu: FixedPointEmulator, images: np.ndarray, task_id: int
) -> None:
    feats, routing = csim.run_raw(images, task_id)
    want = emu.run(images, [task_id])[task_id]
    assert feats.dtype == np.int32 and want.features.dtype == np.int32
    mism = np.argwhere(feats != want.features)
    assert mism.size == 0, f"{len(mism)} feature words differ, first at {mism[0].tolist()}"
    np.testing.assert_array_equal(routing, want.routing)


@pytest.fixture(scope="module")
def spec_pair():
    cfg = ModelConfig()
    csim = CSimBackend()
    csim.load(random_init(cfg, seed=11))
    yield csim, FixedPointEmulator(csim.packed, cfg)
    csim.close()


@pytest.mark.parametrize("task_id", [0, 1])
def test_full_size_model_bit_exact_on_three_images(spec_pair, task_id):
    csim, emu = spec_pair
    _assert_bit_exact(csim, emu, _images(ModelConfig(), 3, seed=task_id), task_id)


@pytest.mark.parametrize("scale", [1.0, 6.0])
def test_tiny_model_bit_exact_including_saturation(scale):
    # scale 6 drives activations and scores into saturation and long rescale chains.
    cfg = tiny_config()
    w = random_init(cfg, seed=5)
    for k, v in w.tensors.items():
        if not k.startswith("heads."):
            w.tensors[k] = v * scale
    csim = CSimBackend()
    csim.load(w)
    emu = FixedPointEmulator(csim.packed, cfg)
    try:
        for seed in range(3):
            for task_id in (0, 1):
                _assert_bit_exact(csim, emu, _images(cfg, 4, seed), task_id)
        if scale > 1:
            assert csim.packed.saturated, "the scaled model should saturate some weights"
    finally:
        csim.close()


def test_unaligned_shapes_bit_exact():
    """Dims that are not multiples of the tile or of an AXI beat: partial tiles, and task 1's
    router starts mid-beat, so the wide weight reads must mask the first and last beat."""
    cfg = tiny_config(dim=21, num_heads=3, mlp_hidden=42, num_experts=5, expert_hidden=20)
    assert (cfg.num_experts * cfg.dim) % itf.WORDS_PER_BEAT != 0 and cfg.dim % 16 != 0
    csim = CSimBackend()
    csim.load(random_init(cfg, seed=8))
    emu = FixedPointEmulator(csim.packed, cfg)
    try:
        for task_id in (0, 1):
            _assert_bit_exact(csim, emu, _images(cfg, 2, seed=task_id), task_id)
    finally:
        csim.close()


def test_backends_agree_and_share_the_library_safely():
    cfg = tiny_config()
    w1, w2 = random_init(cfg, seed=1), random_init(cfg, seed=2)
    imgs = _images(cfg, 2, seed=9)
    fixed = create_backend("fixed")
    fixed.load(w1)
    a, b = create_backend("csim"), create_backend("csim")
    a.load(w1)
    b.load(w2)
    try:
        ra = a.run(imgs, ["semseg", "depth"])
        b.run(imgs, ["depth"])  # b's parameters now sit in the shared kernel's cache
        ra2 = a.run(imgs, ["semseg", "depth"])  # a must reload its own
        rf = fixed.run(imgs, ["semseg", "depth"])
        for task in ("semseg", "depth"):
            assert ra.features[task].dtype == np.float32
            np.testing.assert_array_equal(ra.features[task], rf.features[task])
            np.testing.assert_array_equal(ra2.features[task], rf.features[task])
            np.testing.assert_array_equal(ra.routing[task], rf.routing[task])
            assert ra.expert_counts[task].shape == (len(cfg.moe_layers), cfg.num_experts)
            assert (
                ra.expert_counts[task].sum()
                == 2 * len(cfg.moe_layers) * cfg.num_tokens * cfg.top_k
            )
    finally:
        for be in (a, b, fixed):
            be.close()


def test_kernel_argument_errors_are_reported():
    cfg = tiny_config()
    csim = CSimBackend()
    csim.load(random_init(cfg, 0))
    try:
        with pytest.raises(BackendError, match="task_id outside"):
            csim.run_raw(_images(cfg, 1, 0), task_id=len(cfg.tasks))
        with pytest.raises(BackendError, match="before load"):
            CSimBackend().run_raw(_images(cfg, 1, 0), 0)
        assert itf.CSIM_ERR_TASK_ID in itf.CSIM_ERRORS
    finally:
        csim.close()


def test_missing_toolchain_or_sources_give_clear_errors(monkeypatch, tmp_path):
    from edgemoe_ros.backends import csim as csim_mod

    with pytest.raises(BackendError, match="HLS sources not found"):
        csim_mod.build_library(tiny_config(), hls_dir=tmp_path)
    monkeypatch.setattr(csim_mod.shutil, "which", lambda name: None)
    with pytest.raises(BackendError, match="g\\+\\+"):
        csim_mod.build_library(tiny_config())


def test_csim_abi_return_codes(tmp_path):
    # A private copy of the library: fresh static state, as after a power-up of the accelerator.
    import shutil

    from edgemoe_ros.backends.csim import CSimLibrary, build_library

    cfg = tiny_config()
    path = tmp_path / "libcopy.so"
    shutil.copy(build_library(cfg), path)
    lib = CSimLibrary(path, cfg)
    packed = itf.pack_weights(random_init(cfg, 0))
    shapes = itf.buffer_shapes(cfg, 1)
    imgs = np.zeros(shapes["images"][0], np.uint8)
    feats = np.zeros(shapes["features_out"][0], np.int32)
    rout = np.zeros(shapes["routing_out"][0], np.int32)

    def call(num_images: int, task_id: int, reload: int) -> int:
        return lib._lib.edgemoe_csim_run(
            imgs.ctypes.data,
            packed.one_time.ctypes.data,
            packed.experts.ctypes.data,
            feats.ctypes.data,
            rout.ctypes.data,
            num_images,
            task_id,
            reload,
        )

    assert call(1, 0, 0) == itf.CSIM_ERR_NO_ONE_TIME_WEIGHTS  # nothing cached yet
    assert call(0, 0, 1) == itf.CSIM_ERR_NUM_IMAGES
    assert call(itf.MAX_IMAGES + 1, 0, 1) == itf.CSIM_ERR_NUM_IMAGES
    assert call(1, -1, 1) == itf.CSIM_ERR_TASK_ID
    assert not feats.any(), "a rejected call must not write outputs"
    assert call(1, 0, 1) == itf.CSIM_OK
    assert call(1, 1, 0) == itf.CSIM_OK  # cached parameters reused, task switched without reload


def test_reload_with_new_weights_runs_the_new_model():
    """A csim backend reloaded with other weights must not keep the old model's cached parameters
    (biases, LayerNorm, embeddings sit in the kernel's one-time cache): it must equal ``fixed``
    on the new weights, exactly as a fresh csim would."""
    cfg = tiny_config()
    old, new = random_init(cfg, seed=21), random_init(cfg, seed=22)
    imgs = _images(cfg, 2, seed=3)
    csim, fixed = create_backend("csim"), create_backend("fixed")
    try:
        csim.load(old)
        csim.run(imgs, ["semseg"])  # the old model's parameters are now in the kernel's cache
        csim.load(new)
        fixed.load(new)
        got, want = csim.run(imgs, ["semseg", "depth"]), fixed.run(imgs, ["semseg", "depth"])
        for task in ("semseg", "depth"):
            np.testing.assert_array_equal(got.features[task], want.features[task])
            np.testing.assert_array_equal(got.routing[task], want.routing[task])
    finally:
        csim.close()
        fixed.close()
