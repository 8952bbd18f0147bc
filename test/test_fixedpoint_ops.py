# SPDX-License-Identifier: Apache-2.0
"""Each integer op of the accelerator against float math, within its quantisation bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgemoe_ros.accel import interface as itf
from edgemoe_ros.fixedpoint import ops
from edgemoe_ros.fixedpoint.quant import to_float, to_raw
from edgemoe_ros.model.layers import gelu as gelu_float
from edgemoe_ros.model.layers import layer_norm

ACT_LSB = itf.FORMATS["act"].lsb
rng = np.random.default_rng(1234)


def test_round_shift_ties_toward_plus_infinity():
    x = np.array([3, -3, 5, -5, 4, -4, 1, -1])
    assert ops.round_shift(x, 1).tolist() == [2, -1, 3, -2, 2, -2, 1, 0]
    assert ops.narrow(np.array([2 ** 40, -2 ** 40]), 0).tolist() == [2 ** 31 - 1, -2 ** 31]


def test_matmul_exact_matches_python_integers():
    x = rng.integers(-2 ** 31, 2 ** 31, size=(5, 768), dtype=np.int64)
    x[0, :] = -2 ** 31  # extremes: every product at its largest magnitude
    x[1, :] = 2 ** 31 - 1
    w = rng.integers(-2 ** 15, 2 ** 15, size=(768, 7), dtype=np.int64)
    w[:, 0] = -2 ** 15
    got = ops.matmul_exact(x, w.astype(np.float64))
    want = np.array(
        [
            [sum(int(a) * int(b) for a, b in zip(row, col, strict=True)) for col in w.T]
            for row in x
        ],
        dtype=object,
    )
    assert (got.astype(object) == want).all()


def test_linear_is_float_math_plus_one_rounding():
    x_raw = to_raw(rng.normal(0, 2, size=(9, 40)), "act")
    w_raw = to_raw(rng.normal(0, 0.2, size=(24, 40)), "weight")
    b_raw = to_raw(rng.normal(0, 0.5, size=24), "attn_bias")
    got = ops.linear(x_raw, w_raw.T.astype(np.float64), b_raw, itf.FORMATS["attn_bias"])
    want = to_float(x_raw) @ to_float(w_raw, "weight").T + to_float(b_raw, "attn_bias")
    assert np.max(np.abs(to_float(got) - want)) <= ACT_LSB / 2 + 1e-15


def test_isqrt_and_recip_are_exact():
    v = np.concatenate(
        [
            rng.integers(0, 2**62, 2000),
            [0, 1, 2, 3, 4, 2**62, (2**31 - 1) ** 2, (2**31 - 1) ** 2 - 1, 10**18],
        ]
    )
    s = ops.isqrt(v)
    assert all(int(a) == math.isqrt(int(b)) for a, b in zip(s, v, strict=True))
    den = np.concatenate([rng.integers(1, 2 ** 30, 500), [1, 2, 3, 2 ** 15, 129 * 2 ** 16]])
    assert all(int(r) == (1 << 38) // int(d) for r, d in zip(ops.recip(38, den), den, strict=True))


def test_exp2_neg_accuracy():
    t = np.concatenate(
        [-rng.integers(0, 40 << 16, 5000), [0, -1, -(1 << 16), -(31 << 16), -(32 << 16)]]
    )
    got = ops.exp2_neg(t)
    want = np.exp2(t / 2.0 ** 16) * 2 ** 16
    assert got[-5] == 2 ** 16 and got[-1] == 0
    # table rounding (1/4 LSB) + interpolation (~1/4 LSB) + truncating shift (< 1 LSB)
    assert np.max(np.abs(got - want)) <= 1.5
    assert (got >= 0).all() and (np.diff(got[np.argsort(t[:-5])]) >= 0).all()


def test_gelu_table_and_accuracy():
    table = itf.gelu_correction_table()
    assert table.shape == (177,) and itf.GELU_STEP_SHIFT == 5  # 177 entries, step 1/32
    assert table[0] == 0 and table[-1] <= 1  # c(0) = 0 and c(5.5) ~ 1e-7
    x = np.linspace(-8, 8, 20001)
    got = to_float(ops.gelu(to_raw(x, "act")))
    # Linear interpolation error of c(a) = a*Phi(-a) with step 1/32 is h^2/8 * max|c''| < 1e-4.
    assert np.max(np.abs(got - gelu_float(x))) < 1e-4
    assert (ops.gelu(to_raw(np.array([-1e-9, 0.0]), "act")) == 0).all()


def test_router_softmax_and_sum():
    logits = rng.normal(0, 3, size=(50, 16))
    gates = to_float(ops.router_softmax(to_raw(logits, "act")))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    want = e / e.sum(-1, keepdims=True)
    assert np.max(np.abs(gates - want)) < 2e-4
    assert np.max(np.abs(gates.sum(-1) - 1)) < 2e-3


@pytest.mark.parametrize("logits,want", [
    ([0, 0, 0, 0], [0, 1]),            # all tied -> lowest ids
    ([5, 7, 7, 1], [1, 2]),            # tie for first -> lower id first
    ([9, 3, 3, 3], [0, 1]),            # tie for second
    ([-2 ** 31, -2 ** 31, 2 ** 31 - 1, -2 ** 31], [2, 0]),  # extremes, no overflow
])
def test_top2_ties_go_to_lower_expert(logits, want):
    assert ops.top_k(np.array([logits]), 2)[0].tolist() == want


def test_layernorm_accuracy():
    x = rng.normal(0.3, 2.0, size=(20, 192))
    x[0] = 0.0  # constant row: variance 0, eps keeps it finite
    g = rng.normal(1, 0.1, 192)
    b = rng.normal(0, 0.1, 192)
    got = to_float(ops.layernorm(to_raw(x, "act"), to_raw(g, "bias"), to_raw(b, "bias"),
                                 int(round(1e-6 * 2 ** itf.ln_var_frac()))))
    want = layer_norm(to_float(to_raw(x, "act")), to_float(to_raw(g, "bias"), "bias"),
                      to_float(to_raw(b, "bias"), "bias"), 1e-6)
    assert np.max(np.abs(got - want)) < 2e-4


def test_attention_matches_float_softmax_attention():
    n, heads, hd = 33, 3, 8
    qkv = rng.normal(0, 1.5, size=(2, n, 3 * heads * hd))
    qkv_raw = to_raw(qkv, "act")
    scale_raw = int(round(math.log2(math.e) / math.sqrt(hd) * 2 ** itf.COEF_FRAC))
    got = to_float(ops.attention(qkv_raw, heads, scale_raw))
    q, k, v = to_float(qkv_raw).reshape(2, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)
    s = q @ k.swapaxes(-1, -2) / math.sqrt(hd)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = (p @ v).transpose(0, 2, 1, 3).reshape(2, n, heads * hd)
    assert np.max(np.abs(got - want)) < 5e-3


def test_attention_rescale_path_with_increasing_scores():
    # Keys whose scores grow along the sequence force a rescale at every key (worst case for the
    # single-pass softmax); the result must still be the softmax-weighted mean of v.
    n, hd = 16, 4
    q = np.zeros((1, n, hd))
    q[..., 0] = 1.0
    k = np.zeros((1, n, hd))
    k[0, :, 0] = np.arange(n) * 1.5
    v = rng.normal(0, 1, size=(1, n, hd))
    qkv_raw = to_raw(np.concatenate([q, k, v], axis=-1), "act")
    scale_raw = int(round(math.log2(math.e) / math.sqrt(hd) * 2 ** itf.COEF_FRAC))
    got = to_float(ops.attention(qkv_raw, 1, scale_raw))[0]
    s = (q[0] @ k[0].T) / math.sqrt(hd)
    p = np.exp(s - s.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True)) @ to_float(qkv_raw)[0, :, 2 * hd:]
    assert np.max(np.abs(got - want)) < 2e-3
