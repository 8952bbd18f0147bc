# SPDX-License-Identifier: Apache-2.0
"""The CPU backend's native kernels (backends/native/): each kernel against its float64 definition,
the native backend against the numpy path and the float64 reference, the ``native`` option, the
fallback when the library cannot be built, and the refusal of stale builds."""

from __future__ import annotations

import logging
import math
import subprocess

import numpy as np
import pytest

from edgemoe_ros.backends import BackendError, create_backend, parse_backend_options
from edgemoe_ros.backends.cpu import CpuBackend
from edgemoe_ros.backends.native import fastops
from edgemoe_ros.model.config import ModelConfig, tiny_config
from edgemoe_ros.model.layers import top_k_experts
from edgemoe_ros.model.reference import forward
from edgemoe_ros.model.weights import random_init

# float32 backend vs float64 reference, relative to the feature scale (as test_cpu_backend)
RTOL = 1e-4
GELU_TOL = 2e-6  # absolute GELU error allowed per unit of max(1, |x|)
BOTH = ("semseg", "depth")
F32 = np.float32


@pytest.fixture
def no_compiler(monkeypatch):
    """A process in which the compiler does not exist (and nothing was built or warned yet)."""
    monkeypatch.setenv(fastops.COMPILER_ENV, "/nonexistent/bin/g++")
    fastops.forget()
    yield
    monkeypatch.undo()
    fastops.forget()


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _gelu64(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)
    return (
        v
        * 0.5
        * (1.0 + np.array([math.erf(t / math.sqrt(2.0)) for t in v.ravel()]).reshape(v.shape))
    )


def _ln64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    dev = x - x.mean(axis=-1, keepdims=True)
    return dev / np.sqrt((dev ** 2).mean(axis=-1, keepdims=True) + 1e-6)


# ----- kernels -----------------------------------------------------------------------------------
def _gelu_inputs() -> np.ndarray:
    sweep = np.linspace(-20.0, 20.0, 4001)
    extreme = np.array(
        [0.0, -0.0, 1e-30, -1e-30, 1e-3, -1e-3, 40.0, -40.0, 1e4, -1e4, 3e38, -3e38]
    )
    return np.concatenate([sweep, extreme, _rng(1).normal(0.0, 3.0, 3001)]).astype(F32)


def _gelu_via_gemm(fast, x: np.ndarray, bias: float = 0.0) -> np.ndarray:
    """GELU(x + bias) from the GEMM epilogue: x as a (len, 1) matrix times the 1x1 identity."""
    ident = fastops.pack(np.ones((1, 1), F32))
    return fast.gemm(
        np.ascontiguousarray(x.reshape(-1, 1)), ident, bias=np.array([bias], F32), gelu=True
    )[:, 0]


def test_gelu_is_exact_erf_gelu_to_float32_accuracy(fast):
    x = _gelu_inputs()
    got = _gelu_via_gemm(fast, x)
    err = np.abs(got.astype(np.float64) - _gelu64(x))
    assert np.all(err <= GELU_TOL * np.maximum(1.0, np.abs(x.astype(np.float64)))), float(
        err.max()
    )
    assert (
        np.all(got[x == 0] == 0.0)
        and np.all(got[x >= 1e4] == x[x >= 1e4])
        and np.all(got[x <= -1e4] == 0.0)
    )
    edge = _gelu_via_gemm(fast, np.array([np.nan, np.inf, -np.inf], F32))
    assert np.isnan(edge[0]) and edge[1] == np.inf and edge[2] == 0.0
    shifted = _gelu_via_gemm(fast, x[:100], bias=-1.5)  # the bias is added before the GELU
    want = _gelu64((x[:100] - np.float32(1.5)).astype(F32))
    assert np.all(np.abs(shifted - want) <= GELU_TOL * np.maximum(1.0, np.abs(want)))


@pytest.mark.parametrize(
    "m,k,n",
    [(1, 1, 1), (1, 7, 5), (5, 3, 16), (6, 9, 17), (13, 33, 40), (129, 192, 576), (16, 384, 192)],
)
def test_gemm_matches_float64_matmul(fast, m, k, n):
    rng = _rng(2)
    a = rng.normal(0.0, 1.0, (m, k)).astype(F32)
    b = rng.normal(0.0, 1.0, (k, n)).astype(F32)
    bias = rng.normal(0.0, 1.0, n).astype(F32)
    packed = fastops.pack(b)
    assert packed.panels.shape == (-(-n // fastops.PANEL), k, fastops.PANEL)
    want = a.astype(np.float64) @ b
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(fast.gemm(a, packed), want, atol=2e-6 * scale * np.sqrt(k))
    np.testing.assert_allclose(
        fast.gemm(a, packed, bias=bias), want + bias, atol=2e-6 * scale * np.sqrt(k)
    )
    act = fast.gemm(a, packed, bias=bias, gelu=True)
    np.testing.assert_allclose(act, _gelu64(want + bias), atol=4e-6 * scale * np.sqrt(k))


def test_gemm_gathers_rows_and_checks_them(fast):
    rng = _rng(3)
    a = rng.normal(size=(11, 24)).astype(F32)
    packed = fastops.pack(rng.normal(size=(24, 20)).astype(F32))
    rows = np.array([10, 0, 3, 3, 7, 1, 9], np.int32)
    np.testing.assert_allclose(
        fast.gemm(a, packed, rows=rows), fast.gemm(a[rows], packed), rtol=0, atol=0
    )
    with pytest.raises(BackendError, match="out of range"):
        fast.gemm(a, packed, rows=np.array([0, 11], np.int32))
    with pytest.raises(ValueError, match="do not fit"):
        fast.gemm(a[:, :23].copy(), packed)
    with pytest.raises(ValueError, match="out must be"):
        fast.gemm(a, packed, out=np.empty((11, 19), F32))
    with pytest.raises(ValueError, match="packed panels must be"):
        fastops.PackedMatrix(packed.panels, k=24, n=40)  # claims more columns than it holds


def test_moe_experts_runs_each_expert_on_its_rows(fast):
    rng = _rng(4)
    nsrc, d, hidden, experts = 17, 24, 40, 5
    h = rng.normal(size=(nsrc, d)).astype(F32)
    w1, w2 = (
        rng.normal(0, 0.3, (experts, d, hidden)).astype(F32),
        rng.normal(0, 0.3, (experts, hidden, d)).astype(F32),
    )
    b1, b2 = (
        rng.normal(size=(experts, hidden)).astype(F32),
        rng.normal(size=(experts, d)).astype(F32),
    )
    bounds = np.array([0, 4, 4, 11, 12, 20], np.int32)  # expert 1 gets no rows
    uniq_src = rng.integers(0, nsrc, 20).astype(np.int32)
    got = fast.moe_experts(h, uniq_src, bounds, fastops.pack(w1), b1, fastops.pack(w2), b2)
    for e in range(experts):
        lo, hi = bounds[e], bounds[e + 1]
        x = h[uniq_src[lo:hi]].astype(np.float64)
        want = _gelu64(x @ w1[e] + b1[e]) @ w2[e] + b2[e]
        np.testing.assert_allclose(got[lo:hi], want, rtol=1e-5, atol=1e-5)
    bad = uniq_src.copy()
    bad[5] = nsrc
    with pytest.raises(BackendError, match="out of range"):
        fast.moe_experts(h, bad, bounds, fastops.pack(w1), b1, fastops.pack(w2), b2)
    with pytest.raises(ValueError, match="bounds end"):
        fast.moe_experts(h, uniq_src[:19], bounds, fastops.pack(w1), b1, fastops.pack(w2), b2)


@pytest.mark.parametrize("shape", [(1, 192), (129, 192), (4, 7), (3, 1), (2, 3, 9)])
@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_add_layernorm_matches_float64(fast, shape, offset):
    rng = _rng(4)
    x = (rng.normal(0.0, 2.0, shape) + offset).astype(F32)
    delta = rng.normal(0.0, 1.0, shape).astype(F32)
    dbias = rng.normal(0.0, 1.0, shape[-1]).astype(F32)
    gamma, beta = (
        rng.normal(1.0, 0.2, shape[-1]).astype(F32),
        rng.normal(0.0, 0.2, shape[-1]).astype(F32),
    )
    resid = x.astype(np.float64) + delta + dbias

    xs = x.copy()
    out = fast.add_layernorm(xs, delta, np.empty_like(xs), 1e-6, dbias)
    np.testing.assert_allclose(xs, resid, rtol=1e-6, atol=1e-5)  # the residual stream is updated
    np.testing.assert_allclose(out, _ln64(xs), atol=2e-5)

    xs = x.copy()
    out = fast.add_layernorm(xs, None, np.empty_like(xs), 1e-6, None, gamma, beta)
    np.testing.assert_array_equal(xs, x)  # no delta: x untouched
    np.testing.assert_allclose(out, _ln64(x) * gamma + beta, atol=2e-5)


def test_add_layernorm_checks_its_arguments(fast):
    x = np.zeros((2, 4), F32)
    with pytest.raises(ValueError, match="shapes"):
        fast.add_layernorm(x, np.zeros((2, 5), F32), np.empty_like(x), 1e-6)
    with pytest.raises(ValueError, match="gamma and beta"):
        fast.add_layernorm(x, None, np.empty_like(x), 1e-6, gamma=np.ones(4, F32))
    with pytest.raises(ValueError, match="C-contiguous float32"):
        fast.add_layernorm(x.astype(np.float64), None, np.empty((2, 4)), 1e-6)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        fast.add_layernorm(np.zeros((4, 2), F32).T, None, np.empty_like(x), 1e-6)
    with pytest.raises(ValueError, match="4 entries"):
        fast.add_layernorm(x, x.copy(), np.empty_like(x), 1e-6, np.ones(3, F32))


@pytest.mark.parametrize("shape", [(1, 1), (1, 129), (7, 3), (2, 3, 129, 129)])
def test_softmax_rows_matches_float64(fast, shape):
    x = _rng(5).normal(0.0, 30.0, shape).astype(F32)
    x.reshape(-1, shape[-1])[0, 0] = 80.0  # exp would overflow without the max shift
    want = np.exp(x.astype(np.float64) - x.max(axis=-1, keepdims=True))
    want /= want.sum(axis=-1, keepdims=True)
    got = fast.softmax_rows(x.copy())
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("k,experts", [(1, 4), (2, 16), (3, 5), (5, 5)])
def test_moe_route_is_top_k_with_unrenormalised_gates(fast, k, experts):
    rng = _rng(6)
    logits = rng.normal(0.0, 3.0, (37, 3 * experts)).astype(F32)
    logits[0] = 0.0  # all tie: lowest ids win
    logits[1, experts:experts + 3] = 7.0  # a tie at the top within the middle column block
    for col0 in (0, experts):
        chosen, gates = np.empty((37, k), np.int32), np.empty((37, k), F32)
        fast.moe_route(logits, col0, experts, chosen, gates)
        part = logits[:, col0:col0 + experts]
        np.testing.assert_array_equal(chosen, top_k_experts(part, k))
        p = np.exp(part.astype(np.float64) - part.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        np.testing.assert_allclose(
            gates, np.take_along_axis(p, chosen, axis=-1), rtol=2e-6, atol=1e-8
        )
    np.testing.assert_array_equal(chosen[0], np.arange(k))


def test_moe_route_ranks_nan_below_numbers_like_the_numpy_path(fast):
    logits = np.array([[np.nan, 1.0, 3.0, 2.0]], F32)
    chosen, gates = np.empty((1, 2), np.int32), np.empty((1, 2), F32)
    fast.moe_route(logits, 0, 4, chosen, gates)
    np.testing.assert_array_equal(chosen, top_k_experts(logits, 2))
    with pytest.raises(ValueError, match="do not fit"):
        fast.moe_route(logits, 1, 4, chosen, gates)


@pytest.mark.parametrize("streams", [1, 2])
def test_moe_group_matches_unique_on_expert_and_row(fast, streams):
    rng = _rng(7)
    nsrc, k, experts = 13, 2, 6
    chosen = np.stack(
        [rng.choice(experts, k, replace=False) for _ in range(streams * nsrc)]
    ).astype(np.int32)
    uniq_src, bounds, inverse = fast.moe_group(chosen, nsrc, experts)
    src = np.arange(chosen.size) // k % nsrc  # with two streams over one source, rows repeat
    keys, inv = np.unique(chosen.ravel().astype(np.int64) * nsrc + src, return_inverse=True)
    np.testing.assert_array_equal(uniq_src, keys % nsrc)
    np.testing.assert_array_equal(bounds, np.searchsorted(keys // nsrc, np.arange(experts + 1)))
    np.testing.assert_array_equal(inverse.ravel(), inv)
    with pytest.raises(BackendError, match="out of range"):
        fast.moe_group(np.full((2, 2), experts, np.int32), nsrc, experts)


def test_moe_combine_is_the_gated_sum(fast):
    rng = _rng(8)
    rows, k, cols, m = 9, 3, 11, 14
    out_rows = rng.normal(size=(m, cols)).astype(F32)
    inverse = rng.integers(0, m, (rows, k)).astype(np.int32)
    gates = rng.random((rows, k)).astype(F32)
    want = np.einsum("rk,rkc->rc", gates.astype(np.float64), out_rows[inverse].astype(np.float64))
    got = fast.moe_combine(out_rows, inverse, gates, np.empty((rows, cols), F32))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    inverse[3, 1] = m
    with pytest.raises(BackendError, match="out of range"):
        fast.moe_combine(out_rows, inverse, gates, np.empty((rows, cols), F32))


# ----- the backend on the native kernels -------------------------------------------------------
def _images(cfg: ModelConfig, batch: int, seed: int) -> np.ndarray:
    return _rng(seed).integers(0, 256, (batch, cfg.img_h, cfg.img_w, 3), dtype=np.uint8)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _native_vs_numpy_vs_reference(cfg: ModelConfig, seed: int, batch: int) -> None:
    weights = random_init(cfg, seed=seed)
    images = _images(cfg, batch, seed)
    native, numpy_path = CpuBackend(native="on"), CpuBackend(native="off")
    native.load(weights)
    numpy_path.load(weights)
    assert native.native and not numpy_path.native
    a, b = native.run(images, cfg.tasks), numpy_path.run(images, cfg.tasks)
    w64 = weights.astype(np.float64)
    for task in cfg.tasks:
        ref = forward(w64, images, task)
        assert (
            a.features[task].dtype == np.float32 and a.features[task].shape == ref.features.shape
        )
        assert _rel(a.features[task], ref.features) < RTOL, task
        assert _rel(a.features[task], b.features[task]) < RTOL, task
        np.testing.assert_array_equal(a.routing[task], ref.routing)
        np.testing.assert_array_equal(a.routing[task], b.routing[task])
        np.testing.assert_array_equal(a.expert_counts[task], b.expert_counts[task])


def test_native_matches_numpy_and_reference_on_the_spec_model(fast):
    _native_vs_numpy_vs_reference(ModelConfig(), seed=3, batch=1)


@pytest.mark.parametrize("overrides", [{}, {"top_k": 1}, {"top_k": 3, "num_experts": 5},
                                       {"moe_every": 1, "depth": 3}, {"moe_every": 10}])
def test_native_matches_numpy_and_reference_on_tiny_models(fast, overrides):
    _native_vs_numpy_vs_reference(tiny_config(**overrides), seed=5, batch=2)


# ----- the option, the fallback, stale builds ----------------------------------------------------
@pytest.mark.parametrize(
    "text,native", [('{"native": "off"}', False), ('{"native": "on"}', True), ("", True)]
)
def test_native_option_through_the_registry(fast, text, native):
    backend = create_backend("cpu", **parse_backend_options(text))
    backend.load(random_init(tiny_config(), seed=1))
    assert backend.native is native


@pytest.mark.parametrize("bad", ["yes", "", "ON", True, None])
def test_bad_native_option_names_the_choices(bad):
    with pytest.raises(BackendError, match=r"option native = .+ must be one of auto, on, off"):
        create_backend("cpu", native=bad)


@pytest.mark.parametrize(
    "shape", [(1, 128, 256, 7, 8, 16), (2, 5, 3, 1, 3, 5), (1, 1, 1, 2, 1, 1)]
)
def test_guided_refine_matches_the_numpy_head(fast, shape):
    """Same sums as model/heads.py's im2col + BLAS path, including 1-pixel images (all padding)."""
    from edgemoe_ros.model import heads

    b, h, w, c, g, hid = shape
    cfg = ModelConfig(
        head="guided",
        img_h=h,
        img_w=w,
        guide_channels=g,
        refine_hidden=hid,
        patch=1,
        class_names=tuple(f"c{i}" for i in range(c)),
        pixel_mean=(0.1, 0.2, 0.3),
        pixel_std=(0.5, 0.6, 0.7),
    )
    weights = random_init(cfg, seed=3)
    rng = _rng(4)
    coarse = rng.normal(0.0, 3.0, (b, h, w, c)).astype(F32)
    images = rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)
    want = heads.guided_refine(weights, cfg, "semseg", coarse, images)
    got = heads.guided_refine(weights, cfg, "semseg", coarse, images, native=fast)
    assert got.shape == want.shape and got.dtype == F32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_guided_refine_checks_its_arguments(fast):
    coarse = np.zeros((1, 4, 4, 2), F32)
    images = np.zeros((1, 4, 4, 3), np.uint8)
    args = [np.ones(3, F32), np.zeros(3, F32), np.zeros((2, 3, 3, 3), F32), np.zeros(2, F32),
            np.zeros((5, 4), F32), np.zeros(5, F32), np.zeros((2, 5), F32), np.zeros(2, F32)]
    fast.guided_refine(coarse, images, *args)  # fits
    with pytest.raises(ValueError, match="of one size"):
        fast.guided_refine(coarse, np.zeros((1, 4, 5, 3), np.uint8), *args)
    bad = list(args)
    bad[4] = np.zeros((5, 3), F32)
    with pytest.raises(ValueError, match="do not fit 2 channels"):
        fast.guided_refine(coarse, images, *bad)
    with pytest.raises(ValueError, match="images must be a C-contiguous uint8"):
        fast.guided_refine(coarse, images.astype(F32), *args)
    with pytest.raises(ValueError, match="separate"):
        fast.guided_refine(coarse, images, *args, out=coarse)


def _planar(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@pytest.mark.parametrize(
    "shape", [(2, 9, 70, 5, 6), (1, 8, 16, 3, 16), (1, 1, 1, 2, 3), (1, 7, 5, 16, 32)]
)
@pytest.mark.parametrize("stride", [1, 2])
def test_conv3x3_and_pointwise_match_numpy(fast, shape, stride):
    """Odd sizes: widths that are no whole block, odd heights under stride 2, 1-pixel maps."""
    from edgemoe_ros.model import layers

    b, h, w, cin, cout = shape
    rng = _rng(20 + stride)
    x = rng.normal(0.0, 1.0, (b, h, w, cin)).astype(F32)
    weight, bias = (
        rng.normal(0.0, 0.3, (cout, cin, 3, 3)).astype(F32),
        rng.normal(0.0, 0.1, cout).astype(F32),
    )
    want = layers.gelu(layers.conv3x3(x, weight, bias, stride=stride))
    got = fast.conv3x3(_planar(x), weight, bias, stride=stride, gelu=True)
    np.testing.assert_allclose(got, _planar(want), rtol=1e-5, atol=1e-5 * np.abs(want).max())
    pw = rng.normal(0.0, 0.3, (cout, cin)).astype(F32)
    want = x @ pw.T + bias
    np.testing.assert_allclose(fast.pointwise(_planar(x), pw, bias), _planar(want), rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize(
    "sizes", [((2, 4), (8, 16)), ((3, 5), (6, 10)), ((8, 16), (32, 64)), ((1, 1), (3, 2))]
)
def test_upsample_fuse_and_mix_block_match_numpy(fast, sizes):
    from edgemoe_ros.model import layers, pyramid_head

    (hc, wc), (h, w) = sizes
    rng = _rng(hc * 100 + w)
    d, p = 6, 4
    coarse = rng.normal(0.0, 1.0, (2, hc, wc, d)).astype(F32)
    pixels = rng.normal(0.0, 1.0, (2, h, w, p)).astype(F32)
    w_pix, w_coord = (
        rng.normal(0.0, 0.5, (d, p)).astype(F32),
        rng.normal(0.0, 0.5, (d, 2)).astype(F32),
    )
    bias = rng.normal(0.0, 0.1, d).astype(F32)
    want = (
        layers.resize_bilinear(coarse, h, w)
        + pixels @ w_pix.T
        + pyramid_head.coordinates(h, w) @ w_coord.T
        + bias
    )
    want = layers.gelu(want)
    got = fast.upsample_fuse(_planar(coarse), _planar(pixels), w_pix, bias, w_coord)
    np.testing.assert_allclose(got, _planar(want), rtol=1e-5, atol=1e-5 * np.abs(want).max())
    dw_w, dw_b = (
        rng.normal(0.0, 0.3, (d, 1, 3, 3)).astype(F32),
        rng.normal(0.0, 0.1, d).astype(F32),
    )
    pw_w, pw_b = rng.normal(0.0, 0.3, (d, d)).astype(F32), rng.normal(0.0, 0.1, d).astype(F32)
    x = rng.normal(0.0, 1.0, (2, h, w, d)).astype(F32)
    want = x + layers.gelu(layers.depthwise3x3(x, dw_w, dw_b) @ pw_w.T + pw_b)
    got = fast.mix_block(_planar(x), dw_w, dw_b, pw_w, pw_b)
    np.testing.assert_allclose(got, _planar(want), rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_pyramid_kernels_check_their_arguments(fast):
    x = np.zeros((1, 3, 4, 4), F32)
    with pytest.raises(ValueError, match="planar"):
        fast.conv3x3(np.zeros((3, 4, 4), F32), np.zeros((2, 3, 3, 3), F32), None)
    with pytest.raises(ValueError, match="do not fit 3 channels"):
        fast.conv3x3(x, np.zeros((2, 4, 3, 3), F32), None)
    with pytest.raises(ValueError, match="stride 3"):
        fast.conv3x3(x, np.zeros((2, 3, 3, 3), F32), None, stride=3)
    with pytest.raises(ValueError, match="does not fit 3 channels"):
        fast.pointwise(x, np.zeros((2, 4), F32), None)
    with pytest.raises(ValueError, match="separate"):
        fast.pointwise(x, np.zeros((3, 3), F32), None, out=x)
    with pytest.raises(ValueError, match="do not fit"):
        fast.upsample_fuse(
            x, np.zeros((1, 2, 8, 8), F32), np.zeros((3, 3), F32), None, np.zeros((3, 2), F32)
        )
    with pytest.raises(ValueError, match="do not fit 3 channels"):
        fast.mix_block(x, np.zeros((3, 1, 3, 3), F32), None, np.zeros((3, 4), F32), None)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        fast.pointwise(x.astype(np.float64), np.zeros((3, 3), F32), None)


@pytest.mark.parametrize(
    "call",
    [
        # Empty maps: C sizes a stride-2 output of 0 pixels as 1 and clamps a bilinear tap to -1.
        lambda f: f.conv3x3(
            np.zeros((1, 3, 0, 4), F32), np.zeros((2, 3, 3, 3), F32), None, stride=2
        ),
        lambda f: f.pointwise(np.zeros((0, 3, 4, 4), F32), np.zeros((2, 3), F32), None),
        lambda f: f.upsample_fuse(
            np.zeros((1, 2, 0, 0), F32),
            np.zeros((1, 3, 8, 8), F32),
            np.zeros((2, 3), F32),
            None,
            np.zeros((2, 2), F32),
        ),
        lambda f: f.mix_block(
            np.zeros((1, 2, 4, 0), F32),
            np.zeros((2, 1, 3, 3), F32),
            None,
            np.zeros((2, 2), F32),
            None,
        ),
        lambda f: f.pixels_planar(
            np.zeros((1, 0, 4, 3), np.uint8), np.ones(3, F32), np.zeros(3, F32)
        ),
    ],
    ids=["conv3x3", "pointwise", "upsample_fuse", "mix_block", "pixels_planar"],
)
def test_head_kernels_refuse_empty_maps(fast, call):
    with pytest.raises(ValueError, match="non-empty"):
        call(fast)


def test_head_kernels_guard_empty_maps_in_c_too(fast):
    # Past the wrapper (another caller of the library): the kernels answer "bad argument" and write
    # nothing.
    coarse, pix, out = (
        np.zeros((1, 2, 2, 2), F32),
        np.zeros((1, 3, 4, 4), F32),
        np.full((1, 2, 4, 4), 7, F32),
    )
    w_pix, w_coord = np.zeros((2, 3), F32), np.zeros((2, 2), F32)
    ptr = lambda a: a.ctypes.data  # noqa: E731
    rc = fast._lib.fastops_upsample_fuse(
        ptr(coarse),
        1,
        2,
        0,
        2,
        ptr(pix),
        3,
        4,
        4,
        ptr(w_pix),
        None,
        ptr(w_coord),
        1,
        ptr(out),
        None,
    )
    assert rc == -3 and (out == 7).all()
    rc = fast._lib.fastops_conv3x3(
        ptr(pix), 1, 3, 0, 4, ptr(np.zeros((2, 3, 3, 3), F32)), None, 2, 2, 0, ptr(out), None
    )
    assert rc == -3 and (out == 7).all()


def test_head_kernels_refuse_missing_normalisation_and_read_only_outputs(fast):
    images = np.zeros((1, 4, 4, 3), np.uint8)
    # The kernels read scale/offset unchecked: None must not become a NULL pointer.
    with pytest.raises(ValueError, match="scale is required"):
        fast.pixels_planar(images, None, np.zeros(3, F32))
    with pytest.raises(ValueError, match="pix_offset is required"):
        fast.guided_refine(
            np.zeros((1, 4, 4, 2), F32),
            images,
            np.ones(3, F32),
            None,
            np.zeros((1, 3, 3, 3), F32),
            None,
            np.zeros((1, 3), F32),
            None,
            np.zeros((2, 1), F32),
            None,
        )
    x = np.zeros((1, 3, 4, 4), F32)
    frozen = np.zeros((1, 2, 4, 4), F32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        fast.pointwise(x, np.zeros((2, 3), F32), None, out=frozen)
    assert not frozen.any()


@pytest.mark.parametrize(
    "cfg",
    [
        tiny_config(head="pyramid", pixel_mean=(0.45, 0.4, 0.35), pixel_std=(0.25, 0.2, 0.3)),
        ModelConfig(head="pyramid"),
        tiny_config(head="pyramid", img_h=48, img_w=80, pyramid_mix=(0, 2)),
    ],
    ids=["tiny", "spec", "odd"],
)
def test_pyramid_head_native_matches_numpy(fast, cfg):
    from edgemoe_ros.model.heads import run_head

    weights = random_init(cfg, seed=21)
    rng = _rng(22)
    feats = rng.normal(0.0, 1.0, (2, cfg.num_patches, cfg.dim)).astype(F32)
    images = rng.integers(0, 256, (2, cfg.img_h, cfg.img_w, 3), dtype=np.uint8)
    for task in cfg.tasks:
        want = run_head(weights, cfg, task, feats, images)
        got = run_head(weights, cfg, task, feats, images, native=fast)
        assert got.shape == want.shape == (2, cfg.head_out_channels(task), cfg.img_h, cfg.img_w)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("head", ["light", "guided"])
def test_token_mlp_heads_native_match_numpy(fast, head):
    """The light head's per-token MLP (alone, or under the guided refinement) on the packed
    GEMM."""
    from edgemoe_ros.model.heads import run_head

    cfg = tiny_config(head=head)
    weights = random_init(cfg, seed=23)
    rng = _rng(24)
    feats = rng.normal(0.0, 1.0, (2, cfg.num_patches, cfg.dim)).astype(F32)
    images = rng.integers(0, 256, (2, cfg.img_h, cfg.img_w, 3), dtype=np.uint8)
    heads = fastops.PooledHeads(fast)
    for task in cfg.tasks:
        want = run_head(weights, cfg, task, feats, images)
        for native in (fast, heads, heads):  # packing per call; packed once, then reused
            got = run_head(weights, cfg, task, feats, images, native=native)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert len(heads._packed) == 2 * len(cfg.tasks)  # fc1 and fc2 per task, each packed once


def test_pooled_heads_pack_each_weight_once_and_repack_a_new_array(fast):
    heads = fastops.PooledHeads(fast)
    rng = _rng(25)
    x = rng.normal(0.0, 1.0, (2, 5, 7)).astype(F32)
    w = rng.normal(0.0, 1.0, (9, 7)).astype(F32)
    b = rng.normal(0.0, 1.0, 9).astype(F32)
    want = x @ w.T + b
    np.testing.assert_allclose(heads.linear(x, w, b), want, rtol=1e-5, atol=1e-5)
    packed = heads._packed[id(w)][1]
    np.testing.assert_allclose(heads.linear(x, w, b), want, rtol=1e-5, atol=1e-5)
    assert heads._packed[id(w)][1] is packed  # reused
    w2 = -w  # another array: never served the first one's packing, even if its id were reused
    np.testing.assert_allclose(heads.linear(x, w2, b), x @ w2.T + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        fast.linear(x, w, b, gelu=True),
        fast.gemm(x.reshape(-1, 7), fastops.pack(w.T.copy()), bias=b, gelu=True).reshape(2, 5, 9),
    )


@pytest.mark.parametrize("head", ["light", "guided", "pyramid"])
@pytest.mark.parametrize("native_heads", ["on", "off"])
def test_engine_runs_the_heads_natively_or_in_numpy_with_equal_results(fast, native_heads, head):
    from edgemoe_ros.engine import Engine

    cfg = tiny_config(head=head)
    weights = random_init(cfg, seed=12)
    image = _rng(13).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    with Engine(weights, backend="cpu", native_heads=native_heads) as eng:
        assert (eng._head_ops is not None) == (native_heads == "on")
        assert eng._head_ops is None or isinstance(eng._head_ops, fastops.PooledHeads)
        got = eng.infer(image)
    # numpy head, float64 backbone
    with Engine(weights, backend="reference", native_heads="off") as ref_eng:
        want = ref_eng.infer(image)
    assert np.mean(got.semseg == want.semseg) > 0.99
    np.testing.assert_allclose(got.depth, want.depth, rtol=1e-3)


def test_engine_without_a_compiler_runs_the_guided_head_in_numpy(no_compiler):
    from edgemoe_ros.engine import Engine

    weights = random_init(tiny_config(head="guided"), seed=14)
    image = _rng(15).integers(0, 256, (40, 70, 3), dtype=np.uint8)
    # auto: numpy, warned
    with Engine(weights, backend="cpu", backend_options={"native": "off"}) as eng:
        assert eng._head_ops is None
        res = eng.infer(image)
    assert (
        res.semseg.shape == (weights.config.img_h, weights.config.img_w)
        and np.isfinite(res.depth).all()
    )
    with pytest.raises(BackendError, match="compiler '/nonexistent/bin/g\\+\\+' not found"):
        Engine(weights, backend="cpu", backend_options={"native": "off"}, native_heads="on")


def test_engine_rejects_a_bad_native_heads_option():
    from edgemoe_ros.engine import Engine

    with pytest.raises(ValueError, match="native_heads 'yes'"):
        Engine(random_init(tiny_config()), native_heads="yes")


def test_without_a_compiler_auto_falls_back_to_numpy_and_warns_once(no_compiler, caplog):
    cfg = tiny_config()
    weights = random_init(cfg, seed=9)
    images = _images(cfg, 1, 9)
    with caplog.at_level(logging.WARNING, logger=fastops.__name__):
        backends = [CpuBackend(), CpuBackend(native="auto")]
        for backend in backends:
            backend.load(weights)
            backend.load(weights)  # a reload does not try (or warn) again
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "/nonexistent/bin/g++" in warnings[0].getMessage()
    assert "numpy path" in warnings[0].getMessage()
    res = backends[0].run(images, BOTH)
    assert not backends[0].native
    ref = forward(weights.astype(np.float64), images, "depth")
    assert _rel(res.features["depth"], ref.features) < RTOL


def test_without_a_compiler_native_on_is_an_error(no_compiler):
    backend = CpuBackend(native="on")
    with pytest.raises(BackendError, match="compiler '/nonexistent/bin/g\\+\\+' not found"):
        backend.load(random_init(tiny_config(), seed=1))
    off = CpuBackend(native="off")  # never touches the compiler
    off.load(random_init(tiny_config(), seed=1))
    assert not off.native


def test_a_failing_compile_is_reported_with_the_compiler_output(tmp_path):
    script = tmp_path / "broken-g++"
    script.write_text("#!/bin/sh\necho 'fastops.cpp:1: error: something broke' >&2\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(fastops.NativeBuildError, match="(?s)failed.*exit 1.*something broke"):
        fastops.build_library(str(script), build_dir=tmp_path / "build")
    assert not list((tmp_path / "build").glob("*.so"))


def _compile(tmp_path, name: str, body: str):
    src = tmp_path / f"{name}.cpp"
    src.write_text(body)
    lib = tmp_path / f"{name}.so"
    subprocess.run(
        ["g++", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, capture_output=True
    )
    return lib


def test_a_library_with_another_abi_is_refused(fast, tmp_path):
    stale = _compile(
        tmp_path,
        "stale",
        f'extern "C" int fastops_abi_version(void) {{ return {fastops.ABI_VERSION + 1}; }}\n',
    )
    with pytest.raises(fastops.NativeBuildError, match=f"ABI {fastops.ABI_VERSION + 1}, expected"):
        fastops.FastOps(stale)
    foreign = _compile(tmp_path, "foreign", 'extern "C" int something_else(void) { return 0; }\n')
    with pytest.raises(fastops.NativeBuildError, match="not a fastops library"):
        fastops.FastOps(foreign)
    assert fastops.FastOps(fast.path).path == fast.path  # the real one passes the same check


def test_the_library_name_changes_with_source_flags_and_compiler(monkeypatch):
    base = fastops.library_name("/usr/bin/g++", b"int x;")
    assert fastops.library_name("/usr/bin/g++", b"int y;") != base
    assert fastops.library_name("/usr/bin/clang++", b"int x;") != base
    monkeypatch.setattr(fastops, "CXXFLAGS", fastops.CXXFLAGS + ("-DEXTRA",))
    assert fastops.library_name("/usr/bin/g++", b"int x;") != base


def test_build_dir_falls_back_to_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert fastops.build_dirs()[-1] == tmp_path / "cache" / "edgemoe_ros" / "native"
    blocker = tmp_path / "file"
    blocker.write_text("")  # a directory cannot be created below a regular file
    chosen = fastops._writable_dir([blocker / "native", tmp_path / "cache" / "native"])
    assert chosen == tmp_path / "cache" / "native" and chosen.is_dir()
    with pytest.raises(fastops.NativeBuildError, match="no writable build directory"):
        fastops._writable_dir([blocker / "native"])


def _host_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not _host_has_avx512(), reason="the host builds the AVX2 GEMM tile only")
def test_avx512_and_avx2_gemm_tiles_give_the_same_bits(fast, tmp_path):
    """The GEMM's AVX-512 tile (8 rows x 3 panels) and its AVX2 tile (6 x 1) sum every element in
    the same order: a library built without AVX-512 must agree bit for bit, edge shapes
    included."""
    lib = tmp_path / "fastops_avx2.so"
    proc = subprocess.run(
        ["g++", *fastops.CXXFLAGS, "-mno-avx512f", "-o", str(lib), str(fastops.SOURCE)],
        capture_output=True,
        text=True,
        timeout=fastops.BUILD_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    avx2 = fastops.FastOps(lib)
    rng = _rng(40)
    for m, k, n in [
        (129, 192, 576),
        (17, 64, 129),
        (1, 5, 3),
        (9, 129, 64),
        (25, 768, 200),
        (8, 16, 112),
    ]:
        a = rng.normal(0.0, 1.0, (m, k)).astype(F32)
        b = fastops.pack(rng.normal(0.0, 1.0, (k, n)).astype(F32))
        bias = rng.normal(0.0, 1.0, n).astype(F32)
        for gelu in (False, True):
            np.testing.assert_array_equal(
                fast.gemm(a, b, bias=bias, gelu=gelu),
                avx2.gemm(a, b, bias=bias, gelu=gelu),
                err_msg=f"{m}x{k}x{n} gelu={gelu}",
            )
    # A whole backbone: the linears, attention and the experts run on those tiles; LayerNorm and
    # softmax sum in vector lanes (16 or 8 of them), so the two builds agree to float32 rounding.
    cfg = tiny_config()
    weights = random_init(cfg, seed=41)
    images = rng.integers(0, 256, (2, cfg.img_h, cfg.img_w, 3), dtype=np.uint8)
    ours, theirs = CpuBackend(), CpuBackend()
    ours.load(weights)
    theirs.load(weights)
    theirs._fast = avx2  # test-only: the same prepared model on the other build
    for task in cfg.tasks:
        np.testing.assert_allclose(
            ours.run(images, (task,)).features[task],
            theirs.run(images, (task,)).features[task],
            rtol=1e-5,
            atol=1e-5,
        )
