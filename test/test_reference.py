# SPDX-License-Identifier: Apache-2.0
"""The float64 reference forward and the shared layers: checked against independent
formulations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgemoe_ros.model.config import ConfigError, tiny_config
from edgemoe_ros.model.layers import (
    gelu,
    layer_norm,
    normalize_pixels,
    patchify,
    softmax,
    top_k_experts,
)
from edgemoe_ros.model.reference import forward
from edgemoe_ros.model.weights import random_init


def _images(cfg, batch=2, seed=0):
    return np.random.default_rng(seed).integers(
        0, 256, (batch, cfg.img_h, cfg.img_w, 3), dtype=np.uint8
    )


# ----- layers -----
def test_gelu_float64_is_exact_erf():
    x = np.linspace(-6, 6, 1001)
    want = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(gelu(x), want, rtol=1e-15, atol=1e-15)


def test_gelu_float32_error_bounded_by_float32_resolution():
    x = np.linspace(-12, 12, 100_001)
    want = gelu(x)
    got = gelu(x.astype(np.float32))
    assert got.dtype == np.float32
    # A&S 7.1.26 bound (1.5e-7 on erfc) plus float32 rounding of x and of the result.
    assert np.max(np.abs(got - want) / np.maximum(np.abs(x), 1.0)) < 6e-7
    assert -1e-30 < got[0] <= 0.0 and got[-1] == np.float32(12.0)  # tails: ~0 from below, identity


def test_gelu_in_place():
    x = np.linspace(-3, 3, 64, dtype=np.float32)
    want = gelu(x.copy())
    out = gelu(x, out=x)
    assert out is x
    np.testing.assert_array_equal(x, want)


def test_softmax_sums_to_one_and_survives_large_logits():
    x = np.array([[1000.0, 1000.0, -1000.0], [0.0, 1.0, 2.0]])
    p = softmax(x)
    np.testing.assert_allclose(p.sum(-1), 1.0)
    np.testing.assert_allclose(p[0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(p[1], np.exp([0, 1, 2]) / np.exp([0, 1, 2]).sum())


def test_layer_norm_matches_formula():
    rng = np.random.default_rng(1)
    x, w, b = rng.normal(size=(5, 7)), rng.normal(size=7), rng.normal(size=7)
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6) * w + b
    np.testing.assert_allclose(layer_norm(x, w, b, 1e-6), want, rtol=1e-12)
    np.testing.assert_allclose(layer_norm(x, None, None, 1e-6), (want - b) / w, rtol=1e-10)


def test_patchify_matches_strided_conv():
    rng = np.random.default_rng(2)
    img = rng.normal(size=(2, 32, 48, 3))
    weight = rng.normal(size=(5, 3, 16, 16))
    got = patchify(img, 16) @ weight.reshape(5, -1).T  # (B, P, 5)
    for b in range(2):
        for gy in range(2):
            for gx in range(3):
                # (c, ky, kx)
                patch = img[b, gy * 16 : (gy + 1) * 16, gx * 16 : (gx + 1) * 16].transpose(2, 0, 1)
                want = np.einsum("ocyx,cyx->o", weight, patch)
                np.testing.assert_allclose(got[b, gy * 3 + gx], want, rtol=1e-12)


def test_patchify_rejects_non_multiple_size():
    with pytest.raises(ValueError, match="multiple of the patch"):
        patchify(np.zeros((1, 30, 32, 3)), 16)


def test_top_k_ties_go_to_lower_index():
    scores = np.array([[0.1, 0.3, 0.3, 0.3], [0.5, 0.2, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_array_equal(top_k_experts(scores, 2), [[1, 2], [0, 2], [0, 1]])
    assert top_k_experts(scores, 2).dtype == np.int32


def test_normalize_pixels_is_u8_over_256_then_mean_std():
    cfg = tiny_config(pixel_mean=(0.5, 0.25, 0.0), pixel_std=(0.5, 0.25, 2.0))
    img = np.array([[[[0, 128, 255]]]], dtype=np.uint8)
    got = normalize_pixels(img, cfg)[0, 0, 0]
    np.testing.assert_allclose(
        got, [(0 / 256 - 0.5) / 0.5, (128 / 256 - 0.25) / 0.25, (255 / 256) / 2.0]
    )


# ----- reference forward -----
@pytest.fixture(scope="module")
def tiny():
    cfg = tiny_config()
    return cfg, random_init(cfg, seed=3).astype(np.float64)


def test_forward_shapes_dtypes_and_routing_validity(tiny):
    cfg, w = tiny
    out = forward(w, _images(cfg), "semseg")
    layers = len(cfg.moe_layers)
    assert out.features.shape == (2, cfg.num_patches, cfg.dim) and out.features.dtype == np.float64
    assert (
        out.routing.shape == (2, layers, cfg.num_tokens, cfg.top_k)
        and out.routing.dtype == np.int32
    )
    assert out.routing.min() >= 0 and out.routing.max() < cfg.num_experts
    assert np.all(out.routing[..., 0] != out.routing[..., 1])  # distinct experts per token
    assert np.all(np.diff(out.gates, axis=-1) <= 0)  # best expert first
    assert np.all(out.gates > 0) and np.all(out.gates.sum(-1) < 1)  # not renormalised
    # final LayerNorm: each token standardised then scaled by norm.weight / shifted by norm.bias
    std = (out.features - w["norm.bias"]) / w["norm.weight"]
    np.testing.assert_allclose(std.mean(-1), 0, atol=1e-9)


def test_tasks_route_differently_and_give_different_features(tiny):
    cfg, w = tiny
    a, b = forward(w, _images(cfg), "semseg"), forward(w, _images(cfg), "depth")
    assert not np.array_equal(a.routing, b.routing)
    assert np.abs(a.features - b.features).max() > 1e-3


def test_batch_equals_single_images(tiny):
    cfg, w = tiny
    imgs = _images(cfg, batch=3, seed=5)
    both = forward(w, imgs, "depth")
    for i in range(3):
        one = forward(w, imgs[i:i + 1], "depth")
        np.testing.assert_allclose(both.features[i], one.features[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(both.routing[i], one.routing[0])


def test_taps_are_consistent_with_the_model_math(tiny):
    cfg, w = tiny
    out = forward(w, _images(cfg), "semseg", taps=True)
    taps = out.taps
    np.testing.assert_array_equal(taps["features"], out.features)
    assert taps["embed"].shape == (2, cfg.num_tokens, cfg.dim)
    prev = taps["embed"]
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        np.testing.assert_allclose(taps[p + "resid1"], prev + taps[p + "attn_out"], rtol=1e-12)
        np.testing.assert_allclose(
            taps[p + "out"], taps[p + "resid1"] + taps[p + "mlp_out"], rtol=1e-12
        )
        assert taps[p + "attn"].shape == (2, cfg.num_heads, cfg.num_tokens, cfg.num_tokens)
        np.testing.assert_allclose(taps[p + "attn"].sum(-1), 1.0)
        assert (p + "router_probs" in taps) == cfg.is_moe(i)
        assert (p + "mlp_hidden" in taps) != cfg.is_moe(i)
        prev = taps[p + "out"]
    np.testing.assert_allclose(taps["norm"][:, 1:], out.features)


def test_moe_equals_dense_mixture_over_all_experts(tiny):
    """The per-expert gather in the reference equals sum_e g_e(x) expert_e(x) with g = 0 off the
    top-k."""
    cfg, w = tiny
    out = forward(w, _images(cfg), "depth", taps=True)
    for layer, i in enumerate(cfg.moe_layers):
        p = f"blocks.{i}."
        h, probs = out.taps[p + "norm2"], out.taps[p + "router_probs"]
        kth = np.sort(probs, axis=-1)[..., -cfg.top_k][..., None]
        gates = np.where(probs >= kth, probs, 0.0)  # random weights: no ties
        mix = np.zeros_like(h)
        for e in range(cfg.num_experts):
            hidden = h @ w[p + "moe.fc1.weight"][e].T + w[p + "moe.fc1.bias"][e]
            hidden = hidden * 0.5 * (1 + np.vectorize(math.erf)(hidden / math.sqrt(2)))
            mix += gates[..., e : e + 1] * (
                hidden @ w[p + "moe.fc2.weight"][e].T + w[p + "moe.fc2.bias"][e]
            )
        np.testing.assert_allclose(out.taps[p + "mlp_out"], mix, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(
            np.sort(out.routing[:, layer], -1), np.sort(np.argsort(-probs, -1)[..., :2], -1)
        )


def test_equal_router_logits_pick_lowest_expert_ids(tiny):
    cfg, w = tiny
    w = w.astype(np.float64)
    for i in cfg.moe_layers:
        w.tensors[f"blocks.{i}.moe.router.weight"][:] = 0.0  # every expert equally likely
    out = forward(w, _images(cfg), "semseg")
    np.testing.assert_array_equal(out.routing[..., 0], 0)
    np.testing.assert_array_equal(out.routing[..., 1], 1)
    np.testing.assert_allclose(out.gates, 1.0 / cfg.num_experts)


def test_matches_pytorch_twin_when_torch_is_installed(tiny):
    torch = pytest.importorskip("torch")
    from edgemoe_ros.training.torch_model import build_torch_model, images_to_tensor

    cfg, w = tiny
    module = build_torch_model(cfg).double().eval()  # same tensor names as ours, in float64
    module.load_state_dict({k: torch.from_numpy(v) for k, v in w.tensors.items()}, strict=True)
    imgs = _images(cfg)
    with torch.no_grad():
        feats = module.backbone(images_to_tensor(imgs).double(), "semseg").numpy()
    np.testing.assert_allclose(forward(w, imgs, "semseg").features, feats, rtol=1e-9, atol=1e-9)


def test_rejects_bad_images_and_unknown_task(tiny):
    cfg, w = tiny
    with pytest.raises(ValueError, match="uint8"):
        forward(w, _images(cfg).astype(np.float32), "semseg")
    with pytest.raises(ValueError, match=r"\(B, 32, 64, 3\)"):
        forward(w, np.zeros((1, 16, 64, 3), np.uint8), "semseg")
    with pytest.raises(ConfigError, match="unknown task 'lidar'"):
        forward(w, _images(cfg), "lidar")
