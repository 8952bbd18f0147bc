# SPDX-License-Identifier: Apache-2.0
"""Fast float32 CPU backend against the float64 reference, and its batching / task-sharing
invariants.

The reference comparisons run on both paths of the backend: numpy (``native="off"``, the
fallback) and the native kernels (``native="on"``, skipped where they cannot be built)."""

from __future__ import annotations

import numpy as np
import pytest

from edgemoe_ros.backends import BackendError, create_backend
from edgemoe_ros.backends.cpu import CpuBackend
from edgemoe_ros.backends.native import fastops
from edgemoe_ros.backends.reference import ReferenceBackend
from edgemoe_ros.model.config import ConfigError, ModelConfig, tiny_config
from edgemoe_ros.model.reference import forward
from edgemoe_ros.model.weights import random_init

RTOL = 1e-4  # float32 fast path vs float64 reference, relative to the feature scale
BOTH = ("semseg", "depth")


@pytest.fixture(params=["off", "on"], ids=["numpy", "native"])
def native(request) -> str:
    """The backend's ``native`` option: each test using it runs on both paths."""
    if request.param == "on":
        try:
            fastops.load()
        except fastops.NativeBuildError as exc:
            pytest.skip(f"native kernels unavailable here: {exc}")
    return request.param


def _images(cfg, batch=2, seed=0):
    return np.random.default_rng(seed).integers(
        0, 256, (batch, cfg.img_h, cfg.img_w, 3), dtype=np.uint8
    )


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _check_against_reference(
    cfg: ModelConfig, seed: int, batch: int, tasks=BOTH, native="auto"
) -> None:
    weights = random_init(cfg, seed=seed)
    images = _images(cfg, batch, seed)
    backend = CpuBackend(native=native)
    backend.load(weights)
    res = backend.run(images, tasks)
    w64 = weights.astype(np.float64)
    for task in tasks:
        ref = forward(w64, images, task)
        assert res.features[task].dtype == np.float32
        assert res.features[task].shape == ref.features.shape
        assert _rel(res.features[task], ref.features) < RTOL, task
        np.testing.assert_array_equal(res.routing[task], ref.routing)
        assert res.routing[task].dtype == np.int32


@pytest.mark.parametrize("overrides", [
    {},
    {"top_k": 1},
    {"top_k": 3, "num_experts": 5},
    {"moe_every": 1, "depth": 3},  # every block MoE: the fork happens in block 0
    {"pixel_mean": (0.485, 0.456, 0.406), "pixel_std": (0.229, 0.224, 0.225)},
    {"tasks": ("depth",)},
])
def test_matches_reference_tiny(overrides, native):
    cfg = tiny_config(**overrides)
    _check_against_reference(cfg, seed=11, batch=2, tasks=cfg.tasks, native=native)


@pytest.mark.parametrize("tasks", [("semseg",), ("depth",), ("depth", "semseg")])
def test_matches_reference_each_task_selection(tasks, native):
    _check_against_reference(tiny_config(), seed=4, batch=1, tasks=tasks, native=native)


def test_matches_reference_full_spec_size(native):
    """The SPEC §2 model itself (129 tokens, 16 experts, 12 blocks), both tasks, one image."""
    _check_against_reference(ModelConfig(), seed=7, batch=1, native=native)


def test_model_without_moe_layers_gives_every_task_the_same_features(native):
    cfg = tiny_config(moe_every=10)  # depth 4: no MoE block
    assert cfg.moe_layers == ()
    _check_against_reference(cfg, seed=2, batch=2, native=native)
    backend = CpuBackend(native=native)
    backend.load(random_init(cfg, 2))
    res = backend.run(_images(cfg), BOTH)
    np.testing.assert_array_equal(res.features["semseg"], res.features["depth"])
    assert res.routing["semseg"].shape == (2, 0, cfg.num_tokens, cfg.top_k)
    assert res.expert_counts["depth"].shape == (0, cfg.num_experts)


@pytest.fixture(scope="module", params=["off", "auto"], ids=["numpy", "default"])
def tiny_backend(request):
    cfg = tiny_config()
    backend = CpuBackend(native=request.param)
    backend.load(random_init(cfg, seed=21))
    return cfg, backend


def test_shared_prefix_both_tasks_equal_two_single_runs(tiny_backend):
    cfg, backend = tiny_backend
    images = _images(cfg, 2, seed=8)
    both = backend.run(images, BOTH)
    for task in BOTH:
        single = backend.run(images, (task,))
        np.testing.assert_allclose(
            both.features[task], single.features[task], rtol=1e-5, atol=1e-5
        )
        np.testing.assert_array_equal(both.routing[task], single.routing[task])
        np.testing.assert_array_equal(both.expert_counts[task], single.expert_counts[task])


def test_batch_of_three_equals_three_singles(tiny_backend):
    cfg, backend = tiny_backend
    images = _images(cfg, 3, seed=9)
    batch = backend.run(images, BOTH)
    for i in range(3):
        one = backend.run(images[i:i + 1], BOTH)
        for task in BOTH:
            np.testing.assert_allclose(
                batch.features[task][i], one.features[task][0], rtol=1e-5, atol=1e-5
            )
            np.testing.assert_array_equal(batch.routing[task][i], one.routing[task][0])


def test_expert_counts_are_the_routing_histogram(tiny_backend):
    cfg, backend = tiny_backend
    images = _images(cfg, 3, seed=10)
    res = backend.run(images, BOTH)
    for task in BOTH:
        counts = res.expert_counts[task]
        assert counts.shape == (len(cfg.moe_layers), cfg.num_experts) and counts.dtype == np.int64
        np.testing.assert_array_equal(counts.sum(axis=1), 3 * cfg.num_tokens * cfg.top_k)
        for layer in range(counts.shape[0]):
            hist = np.bincount(res.routing[task][:, layer].ravel(), minlength=cfg.num_experts)
            np.testing.assert_array_equal(counts[layer], hist)


def test_reload_swaps_the_model(tiny_backend):
    cfg, _ = tiny_backend
    backend = CpuBackend()
    images = _images(cfg, 1)
    backend.load(random_init(cfg, seed=1))
    first = backend.run(images, ("semseg",)).features["semseg"]
    backend.load(random_init(cfg, seed=2))
    second = backend.run(images, ("semseg",)).features["semseg"]
    assert np.abs(first - second).max() > 1e-3
    ref = forward(random_init(cfg, seed=2).astype(np.float64), images, "semseg")
    assert _rel(second, ref.features) < RTOL


def test_failed_load_keeps_the_previous_model(tiny_backend):
    cfg, _ = tiny_backend
    backend = CpuBackend()
    good = random_init(cfg, seed=1)
    backend.load(good)
    bad = random_init(cfg, seed=2)
    bad.tensors["blocks.1.moe.fc1.weight"] = bad.tensors["blocks.1.moe.fc1.weight"][:, :3]
    with pytest.raises(ValueError, match="blocks.1.moe.fc1.weight"):
        backend.load(bad)
    images = _images(cfg, 1)
    ref = forward(good.astype(np.float64), images, "depth")
    assert _rel(backend.run(images, ("depth",)).features["depth"], ref.features) < RTOL


def test_bad_calls_fail_clearly(tiny_backend):
    cfg, backend = tiny_backend
    with pytest.raises(BackendError, match="before load"):
        CpuBackend().run(_images(cfg), BOTH)
    with pytest.raises(BackendError, match="uint8"):
        backend.run(_images(cfg).astype(np.float32), BOTH)
    with pytest.raises(BackendError, match="no task"):
        backend.run(_images(cfg), ())
    with pytest.raises(ConfigError, match="unknown task 'flow'"):
        backend.run(_images(cfg), ("flow",))
    closed = CpuBackend()
    closed.load(random_init(cfg))
    closed.close()
    closed.close()  # twice is fine
    with pytest.raises(BackendError):
        closed.run(_images(cfg), BOTH)


def test_registry_builds_cpu_and_reference_backends(tiny_backend):
    cfg, backend = tiny_backend
    cpu, ref = create_backend("cpu"), create_backend("reference")
    assert isinstance(cpu, CpuBackend) and cpu.name == "cpu"
    assert isinstance(ref, ReferenceBackend) and ref.name == "reference"
    weights = random_init(cfg, seed=21)
    ref.load(weights)
    images = _images(cfg, 2)
    a, b = ref.run(images, BOTH), backend.run(images, BOTH)
    for task in BOTH:
        assert a.features[task].dtype == np.float32
        assert _rel(b.features[task], a.features[task]) < RTOL
        np.testing.assert_array_equal(a.routing[task], b.routing[task])
        np.testing.assert_array_equal(a.expert_counts[task], b.expert_counts[task])


def test_router_ties_go_to_the_lowest_expert_ids_like_the_reference(native):
    cfg = tiny_config()
    weights = random_init(cfg, seed=12)
    for i in cfg.moe_layers:
        # all experts tie for every token
        weights.tensors[f"blocks.{i}.moe.router.weight"][:] = 0.0
    backend = CpuBackend(native=native)
    backend.load(weights)
    images = _images(cfg, 2, seed=12)
    res = backend.run(images, BOTH)
    for task in BOTH:
        np.testing.assert_array_equal(res.routing[task][..., 0], 0)
        np.testing.assert_array_equal(res.routing[task][..., 1], 1)
        ref = forward(weights.astype(np.float64), images, task)
        np.testing.assert_array_equal(res.routing[task], ref.routing)
        assert _rel(res.features[task], ref.features) < RTOL


def test_large_key_and_value_biases_are_handled_exactly(native):
    """The backend drops the key bias (it shifts every score of a query row equally, which softmax
    cancels) and folds the value bias into the output projection (attention rows sum to one).
    Both are exact only if those identities hold, so exercise them with biases far above init
    scale."""
    cfg = tiny_config()
    weights = random_init(cfg, seed=13)
    rng = np.random.default_rng(13)
    for i in range(cfg.depth):
        bias = weights.tensors[f"blocks.{i}.attn.qkv.bias"]
        bias[cfg.dim:] = rng.uniform(-3.0, 3.0, 2 * cfg.dim).astype(np.float32)  # k and v thirds
    backend = CpuBackend(native=native)
    backend.load(weights)
    images = _images(cfg, 2, seed=13)
    res = backend.run(images, BOTH)
    for task in BOTH:
        ref = forward(weights.astype(np.float64), images, task)
        assert _rel(res.features[task], ref.features) < RTOL
        np.testing.assert_array_equal(res.routing[task], ref.routing)


def test_gates_are_unrenormalised_probabilities_of_all_experts(native):
    """Expert outputs are mixed with softmax-over-all-experts probabilities (M3ViT), not
    renormalised over the top-k: with identical experts the MoE output is (sum of the k gates) x
    expert output."""
    cfg = tiny_config(depth=2, moe_every=2)  # block 1 is the only MoE block
    weights = random_init(cfg, seed=14)
    p = "blocks.1.moe."
    for leaf in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        weights.tensors[p + leaf][:] = weights.tensors[p + leaf][0]  # every expert = expert 0
    backend = CpuBackend(native=native)
    backend.load(weights)
    images = _images(cfg, 1, seed=14)
    res = backend.run(images, ("semseg",))
    ref = forward(weights.astype(np.float64), images, "semseg")
    assert np.all(ref.gates.sum(axis=-1) < 0.999)  # the reference keeps probabilities < 1 in total
    assert _rel(res.features["semseg"], ref.features) < RTOL
