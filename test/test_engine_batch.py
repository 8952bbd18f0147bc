# SPDX-License-Identifier: Apache-2.0
"""Engine.infer_batch: B images in one backbone call give each image its single-image result.

Bit-level claims, and why:
* fixed and csim compute in integers: a batch is bit-identical to B single calls (asserted ==).
* cpu native kernels: the GEMM's summation order per output row does not depend on the number of
  rows (blocking is over K and N only), so a batch is bit-identical too (asserted ==; also checked
  at the SPEC model size by hand: max |depth diff| 0.0).
* cpu numpy path: OpenBLAS picks its blocking from the row count, so float32 sums round
  differently (SPEC model: max |depth diff| 7e-6 m); depth to rtol 1e-4, ids/routing near-equal
  (an argmax tie at the last bit may flip).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgemoe_ros.backends.cpu import CpuBackend
from edgemoe_ros.backends.fpga import FpgaBackend
from edgemoe_ros.engine import Engine
from edgemoe_ros.model.canonical_camera import IntrinsicsError
from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.model.weights import random_init

BOTH = ("semseg", "depth")
#: Three cameras of different sizes and lenses (the fit and the depth scale differ per image).
SIZES = ((48, 80), (60, 60), (96, 160))


def _images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


def _ks() -> list[np.ndarray | None]:
    return [
        np.array([[70.0, 0, 40], [0, 70.0, 24], [0, 0, 1]]),
        None,
        np.array([[200.0, 0, 80], [0, 200.0, 48], [0, 0, 1]]),
    ]


def _engine(backend) -> Engine:
    return Engine(random_init(tiny_config(), seed=5), backend=backend)


@pytest.mark.parametrize("native", ["on", "off"])
def test_cpu_batch_matches_single_images(native, fast):
    with _engine(CpuBackend(native=native)) as eng:
        images, ks = _images(), _ks()
        batch = eng.infer_batch(images, BOTH, ks)
        single = [eng.infer(img, BOTH, k) for img, k in zip(images, ks, strict=True)]
    assert len(batch) == len(images)
    for b, s, img in zip(batch, single, images, strict=True):
        assert b.fit == s.fit and b.depth_scale == s.depth_scale and b.tasks == s.tasks
        if native == "on":
            assert np.array_equal(b.depth, s.depth) and np.array_equal(b.semseg, s.semseg)
        np.testing.assert_allclose(b.depth, s.depth, rtol=1e-4)
        assert np.mean(b.semseg == s.semseg) > 0.999  # argmax ties at float32 rounding only
        for task in BOTH:
            assert np.mean(b.routing[task] == s.routing[task]) > 0.99
        assert b.semseg_at_input().shape == img.shape[:2]
    assert batch[0].depth_scale != batch[2].depth_scale  # each image got its own lens' scale


@pytest.mark.parametrize("backend", ["fixed", "csim"])
def test_integer_backends_batch_bit_identical(backend, request):
    if backend == "csim":
        request.getfixturevalue("tiny_csim_library")
    with _engine(backend) as eng:
        images = _images(1)
        batch = eng.infer_batch(images, BOTH)
        single = [eng.infer(img, BOTH) for img in images]
    for b, s in zip(batch, single, strict=True):
        assert np.array_equal(b.semseg, s.semseg) and np.array_equal(b.depth, s.depth)
        for task in BOTH:
            assert np.array_equal(b.routing[task], s.routing[task])


def test_one_backbone_call_and_experts_grouped_over_all_images(monkeypatch, fast):
    """The point of batching: the backend runs once, and each MoE layer's expert step sees every
    image's tokens together (each expert's weights are read once per batch, not once per image)."""
    backend = CpuBackend(native="on")
    runs, expert_rows = [], []
    real_run, real_experts = backend.run, backend._experts
    monkeypatch.setattr(
        backend, "run", lambda images, tasks: runs.append(images.shape) or real_run(images, tasks)
    )
    monkeypatch.setattr(
        backend,
        "_experts",
        lambda blk, h, chosen, gates: (
            expert_rows.append(h.shape[0]) or real_experts(blk, h, chosen, gates)
        ),
    )
    with _engine(backend) as eng:
        cfg = eng.config
        eng.infer_batch(_images(), ("semseg",))
    assert runs == [(3, cfg.img_h, cfg.img_w, 3)]
    assert expert_rows == [3 * cfg.num_tokens] * len(cfg.moe_layers)


def test_pipelined_halves_equal_infer_batch_with_a_reload_between(fast):
    """The multi-camera node runs batch 2's backbone before batch 1's heads: each batch must still
    finish with the model it started with, bit-identical to infer_batch of that model."""
    other = random_init(tiny_config(), seed=9)
    with _engine(CpuBackend(native="on")) as eng, Engine(other, backend="cpu") as ref_eng:
        first, second = _images(2), _images(3)
        expected_first = eng.infer_batch(first, BOTH, _ks())
        expected_second = ref_eng.infer_batch(second, BOTH)
        state_first = eng.run_backbone(first, BOTH, _ks())
        eng.reload(other)  # between the halves: the first batch keeps its own weights and heads
        state_second = eng.run_backbone(second, BOTH)
        got_first = eng.finish_batch(state_first)
        got_second = eng.finish_batch(state_second)
    for got, expected in ((got_first, expected_first), (got_second, expected_second)):
        for g, e in zip(got, expected, strict=True):
            assert np.array_equal(g.semseg, e.semseg) and np.array_equal(g.depth, e.depth)
            assert g.fit == e.fit and g.depth_scale == e.depth_scale
            assert g.timings_ms["total"] == pytest.approx(
                sum(g.timings_ms[k] for k in ("preprocess", "backbone", "heads"))
            )


def test_usage_counts_every_image(fast):
    with _engine("cpu") as eng:
        eng.infer_batch(_images(), ("depth",))
        cfg = eng.config
        usage = eng.expert_usage["depth"]
    assert usage.sum() == 3 * len(cfg.moe_layers) * cfg.num_tokens * cfg.top_k


def test_bad_arguments_fail_before_any_work(fast):
    with _engine("cpu") as eng:
        with pytest.raises(ValueError, match="no image"):
            eng.infer_batch([], BOTH)
        with pytest.raises(ValueError, match="3 images but 2 camera_ks"):
            eng.infer_batch(_images(), BOTH, _ks()[:2])
        bad = _ks()
        bad[1] = np.full((3, 3), np.nan)
        with pytest.raises(IntrinsicsError):
            eng.infer_batch(_images(), BOTH, bad)
        assert eng.expert_usage["depth"].sum() == 0  # nothing ran


def test_fpga_batch_is_one_kernel_call_per_task_with_num_images(tiny_csim_library):
    """On the (simulated) board a batch of 3 cameras is ONE kernel start per task with the
    ``num_images`` register = 3, and its results equal three single-image calls bit for bit."""
    backend = FpgaBackend(simulate=True, max_images=4, csim_library=tiny_csim_library)
    with _engine(backend) as eng:
        calls: list[int] = []
        real_run = backend.driver.run
        backend.driver.run = lambda images, task_id: (
            calls.append(images.shape[0]) or real_run(images, task_id)
        )
        images = _images(2)
        batch = eng.infer_batch(images, BOTH)
        assert calls == [3, 3]  # one call per task, all three images
        single = [eng.infer(img, BOTH) for img in images]
    for b, s in zip(batch, single, strict=True):
        assert np.array_equal(b.semseg, s.semseg) and np.array_equal(b.depth, s.depth)
