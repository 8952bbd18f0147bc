# SPDX-License-Identifier: Apache-2.0
"""Integer operations of the accelerator, one function per C++ kernel header, bit for bit.

Every function takes and returns raw fixed-point integers (int64 arrays). The C++ counterpart of
each one is named in its docstring; both sides use the constants of ``accel/interface.py`` and
the same rounding rule everywhere: ``round_shift`` adds half an LSB and shifts right arithmetically
(ap_fixed's AP_RND), then ``saturate`` clips to the format (AP_SAT).

Matrix products are computed exactly with float64 BLAS: a 32-bit activation is split into a signed
high and an unsigned low 16-bit half, so every partial sum (16 x 16-bit products over at most a
few thousand terms) stays below 2^53 and float64 represents it exactly.
"""

from __future__ import annotations

import numpy as np

from ..accel import interface as itf

ACT = itf.FORMATS["act"]
ATTN = itf.FORMATS["attn"]
SCORE = itf.FORMATS["score"]
EXPO = itf.FORMATS["expo"]
BIAS = itf.FORMATS["bias"]
WEIGHT = itf.FORMATS["weight"]
PATCH_WEIGHT = itf.FORMATS["patch_weight"]
PIXEL = itf.FORMATS["pixel"]

_EXP2_TABLE = itf.exp2_table()
#: One trailing zero so index GELU_TABLE_SIZE-1 can interpolate towards 0 without a bounds test.
_GELU_TABLE = np.concatenate([itf.gelu_correction_table(), [0]])
#: Largest number of terms for which the hi/lo float64 product sums stay exact (< 2^53).
_MAX_EXACT_TERMS = 1 << 21


# -------------------------------------------------------------------------- rounding (datatypes.h)
def round_shift(x: np.ndarray, shift: int) -> np.ndarray:
    """floor((x + 2^(shift-1)) / 2^shift): round to nearest, ties toward +inf (C++
    ``round_shift``)."""
    x = np.asarray(x, dtype=np.int64)
    if shift <= 0:
        return x << -shift
    return (x + (np.int64(1) << (shift - 1))) >> shift


def saturate(x: np.ndarray, f: itf.FixedFormat = ACT) -> np.ndarray:
    """Clip raw values to the format's range (C++ ``saturate``)."""
    return np.clip(x, f.min_raw, f.max_raw)


def narrow(acc: np.ndarray, shift: int, f: itf.FixedFormat = ACT) -> np.ndarray:
    """Round a wide accumulator down by ``shift`` fraction bits and saturate (C++ ``narrow``)."""
    return saturate(round_shift(acc, shift), f)


def add_sat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Residual addition of two activations with saturation (C++ ``add_sat``)."""
    return saturate(np.asarray(a, np.int64) + np.asarray(b, np.int64))


# ------------------------------------------------------------------------------ exact products
def split_hi_lo(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x = hi * 2^16 + lo, hi signed, lo in [0, 2^16), both as float64 (exact)."""
    x = np.asarray(x, dtype=np.int64)
    return (x >> 16).astype(np.float64), (x & 0xFFFF).astype(np.float64)


def matmul_exact(x: np.ndarray, w_t: np.ndarray) -> np.ndarray:
    """Exact int64 ``x @ w_t`` for 32-bit ``x`` (..., K) and 16-bit weights ``w_t`` (K, N) as
    float64.

    The C++ linear unit accumulates the same products in an int64 accumulator; integer addition is
    associative, so any summation order gives the same exact result.
    """
    if w_t.shape[0] > _MAX_EXACT_TERMS:
        raise ValueError(f"matmul_exact: {w_t.shape[0]} terms exceed the exact float64 range")
    hi, lo = split_hi_lo(x)
    rows = hi.reshape(-1, hi.shape[-1])
    both = (np.concatenate([rows, lo.reshape(rows.shape)]) @ w_t).astype(np.int64)  # one BLAS call
    n = rows.shape[0]
    return (both[:n] * 65536 + both[n:]).reshape(*x.shape[:-1], w_t.shape[1])


# ------------------------------------------------------------------------------ edgemoe_math.h
def isqrt(v: np.ndarray) -> np.ndarray:
    """floor(sqrt(v)) for 0 <= v < 2^63 (C++ ``edgemoe::isqrt``, a bit-serial square root)."""
    v = np.asarray(v, dtype=np.int64)
    s = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    for _ in range(2):  # the float estimate is off by at most one either way
        s = np.where(s * s > v, s - 1, s)
        s = np.where((s + 1) * (s + 1) <= v, s + 1, s)
    return s


def recip(shift: int, den: np.ndarray) -> np.ndarray:
    """floor(2^shift / den) for den > 0 (C++ ``edgemoe::recip``, a restoring divider)."""
    return (np.int64(1) << shift) // np.asarray(den, dtype=np.int64)


def floor_div(a: np.ndarray, b: int) -> np.ndarray:
    """Floor division by a positive constant (C++ ``edgemoe::floor_div``; C's ``/`` truncates)."""
    return np.asarray(a, dtype=np.int64) // b


def exp2_neg(t: np.ndarray) -> np.ndarray:
    """2^t for t <= 0 in score format (16 fraction bits), result in expo format (C++
    ``edgemoe::exp2_neg``).

    t = -n + f / 2^16 with n >= 0 integer: 2^f from the table (top EXP2_LUT_BITS bits of f) with
    linear interpolation on the rest, then shifted right by n (values below an LSB become 0).
    """
    t = np.asarray(t, dtype=np.int64)
    fbits = SCORE.frac
    n = -(t >> fbits)
    fp = t & ((1 << fbits) - 1)
    lo_bits = fbits - itf.EXP2_LUT_BITS
    idx = fp >> lo_bits
    lo = fp & ((1 << lo_bits) - 1)
    base = _EXP2_TABLE[idx]
    v = base + (((_EXP2_TABLE[idx + 1] - base) * lo) >> lo_bits)
    return np.where(n > itf.EXP2_MAX_SHIFT, 0, v >> np.minimum(n, itf.EXP2_MAX_SHIFT))


# ------------------------------------------------------------------------------ gelu.h
def gelu(x: np.ndarray) -> np.ndarray:
    """GELU(x) = ReLU(x) - corr(|x|), corr from the 177-entry table with linear interpolation."""
    x = np.asarray(x, dtype=np.int64)
    a = np.abs(x)
    step = ACT.frac - itf.GELU_STEP_SHIFT
    idx = a >> step
    fr = a & ((1 << step) - 1)
    inside = idx < itf.GELU_TABLE_SIZE
    i = np.minimum(idx, itf.GELU_TABLE_SIZE - 1)
    base = _GELU_TABLE[i]
    corr = np.where(inside, base + (((_GELU_TABLE[i + 1] - base) * fr) >> step), 0)
    return np.maximum(x, 0) - corr


# ------------------------------------------------------------------------------ linear.h
def linear(x: np.ndarray, w_t: np.ndarray, bias: np.ndarray | None,
           bias_fmt: itf.FixedFormat = BIAS, w_fmt: itf.FixedFormat = WEIGHT) -> np.ndarray:
    """Shared linear unit: act (..., K) x weights (K, N) [+ bias] -> act (C++ ``linear_unit``).

    Products carry act.frac + w.frac fraction bits in an exact accumulator; the bias is aligned to
    that and the sum is narrowed once.
    """
    acc = matmul_exact(x, w_t)
    if bias is not None:
        acc = acc + (np.asarray(bias, np.int64) << (ACT.frac + w_fmt.frac - bias_fmt.frac))
    return narrow(acc, w_fmt.frac)


# ------------------------------------------------------------------------------ layernorm.h
def layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps_raw: int) -> np.ndarray:
    """LayerNorm over the last axis with integer mean/variance, isqrt and reciprocal (C++
    ``layernorm``)."""
    x = np.asarray(x, dtype=np.int64)
    d_len = x.shape[-1]
    mean = floor_div(x.sum(axis=-1, keepdims=True), d_len)
    dev = x - mean
    dq = dev >> itf.LN_SQ_SHIFT
    var = floor_div((dq * dq).sum(axis=-1, keepdims=True), d_len)
    std = isqrt(var + eps_raw)
    rstd = recip(itf.ln_std_frac() + itf.LN_RSTD_FRAC, std)
    xhat = round_shift(dev * rstd, itf.LN_RSTD_FRAC)
    acc = xhat * np.asarray(gamma, np.int64) + (np.asarray(beta, np.int64) << ACT.frac)
    return narrow(acc, BIAS.frac)


# ------------------------------------------------------------------------------ patch_embed.h
def normalize_pixels(images: np.ndarray, mean: np.ndarray, inv_std: np.ndarray) -> np.ndarray:
    """uint8 pixels (ap_ufixed<8,0>) -> normalised act: (p - mean) * inv_std (C++
    ``normalize_pixel``)."""
    p = np.asarray(images, dtype=np.int64) << (ACT.frac - PIXEL.frac)
    centred = p - (np.asarray(mean, np.int64) << (ACT.frac - BIAS.frac))
    return narrow(centred * np.asarray(inv_std, np.int64), BIAS.frac)


def patchify(x: np.ndarray, patch: int) -> np.ndarray:
    """(B, H, W, C) -> (B, num_patches, C*p*p) in (c, ky, kx) order, patches row-major."""
    b, h, w, c = x.shape
    g = x.reshape(b, h // patch, patch, w // patch, patch, c)
    return g.transpose(0, 1, 3, 5, 2, 4).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def patch_embed(images: np.ndarray, w_t: np.ndarray, bias: np.ndarray, cls: np.ndarray,
                pos: np.ndarray, mean: np.ndarray, inv_std: np.ndarray, patch: int) -> np.ndarray:
    """Images (B, H, W, 3) uint8 -> tokens (B, 1 + num_patches, dim) act (C++ ``patch_embed``)."""
    pix = normalize_pixels(images, mean, inv_std)
    acc = matmul_exact(patchify(pix, patch), w_t)
    acc = acc + (np.asarray(bias, np.int64) << (ACT.frac + PATCH_WEIGHT.frac - BIAS.frac))
    tokens = narrow(acc, PATCH_WEIGHT.frac)
    cls_b = np.broadcast_to(np.asarray(cls, np.int64).reshape(1, 1, -1) << (ACT.frac - BIAS.frac),
                            (tokens.shape[0], 1, tokens.shape[2]))
    x = np.concatenate([cls_b, tokens], axis=1)
    return add_sat(x, np.asarray(pos, np.int64) << (ACT.frac - BIAS.frac))


# ------------------------------------------------------------------------------ attention.h
def _attn_operands(qkv: np.ndarray, num_heads: int, scale_raw: int) -> tuple[np.ndarray, ...]:
    b, n, three_d = qkv.shape
    hd = three_d // (3 * num_heads)
    parts = np.asarray(qkv, np.int64).reshape(b, n, 3, num_heads, hd).transpose(2, 0, 3, 1, 4)
    q = narrow(parts[0] * scale_raw, ACT.frac + itf.COEF_FRAC - ATTN.frac, ATTN)
    k = narrow(parts[1], ACT.frac - ATTN.frac, ATTN)
    v = narrow(parts[2], ACT.frac - ATTN.frac, ATTN)
    return q, k, v


def attention(qkv: np.ndarray, num_heads: int, scale_raw: int) -> np.ndarray:
    """Multi-head attention with the single-pass softmax of the C++ ``attention`` kernel.

    qkv: (B, N, 3*dim) act in PyTorch layout. Per query row the kernel walks the keys once keeping
    an integer running max M (log2 units, ceil of the score) and rescales the running sums by a
    right shift whenever M grows. Here the same recurrence is evaluated segment by segment: inside
    a segment of constant M the sums are plain (exact) sums, so only the few max changes are
    sequential. Returns (B, N, dim) act.
    """
    q, k, v = _attn_operands(qkv, num_heads, scale_raw)  # (B, H, N, hd) attn format
    if q.shape[-1] > 64:
        raise ValueError(f"attention: head_dim {q.shape[-1]} > 64 breaks the "
                         "exact float64 score path")
    scores = (q.astype(np.float64) @ np.swapaxes(k, -1, -2).astype(np.float64)).astype(np.int64)
    u = narrow(scores, 2 * ATTN.frac - SCORE.frac, SCORE)  # log2 units, (B, H, N, N)
    one = 1 << SCORE.frac
    ceil_u = (u + (one - 1)) >> SCORE.frac
    m = np.maximum.accumulate(ceil_u, axis=-1)
    e = exp2_neg(u - (m << SCORE.frac))
    grow = np.zeros_like(m)
    grow[..., 1:] = np.minimum(m[..., 1:] - m[..., :-1], itf.MAX_ACC_SHIFT)
    seg = np.cumsum(grow > 0, axis=-1)
    vf = v.astype(np.float64)
    acc = np.zeros(q.shape, dtype=np.int64)
    den = np.zeros(q.shape[:-1], dtype=np.int64)
    for g in range(int(seg.max()) + 1):
        in_seg = seg == g
        shift = np.where(in_seg, grow, 0).sum(axis=-1)  # the one grow > 0 that opens segment g
        eg = np.where(in_seg, e, 0)
        acc = (acc >> shift[..., None]) + (eg.astype(np.float64) @ vf).astype(np.int64)
        den = (den >> shift) + eg.sum(axis=-1)
    r = recip(itf.SOFTMAX_RECIP_SHIFT, den)
    # acc has expo+attn fraction bits, r has SOFTMAX_RECIP_SHIFT - expo: narrow the product to act.
    shift_out = (EXPO.frac + ATTN.frac) + (itf.SOFTMAX_RECIP_SHIFT - EXPO.frac) - ACT.frac
    out = narrow(acc * r[..., None], shift_out)  # (B, H, N, hd)
    b, h, n, hd = out.shape
    return out.transpose(0, 2, 1, 3).reshape(b, n, h * hd)


# ------------------------------------------------------------------------------ moe.h
def router_softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over experts of act logits -> gate probabilities in act format (C++
    ``router_softmax``)."""
    logits = np.asarray(logits, np.int64)
    diff = logits - logits.max(axis=-1, keepdims=True)
    t = round_shift(diff * itf.log2e_raw(), ACT.frac + itf.COEF_FRAC - SCORE.frac)
    e = exp2_neg(t)
    r = recip(itf.SOFTMAX_RECIP_SHIFT, e.sum(axis=-1, keepdims=True))
    return round_shift(e * r, itf.SOFTMAX_RECIP_SHIFT - ACT.frac)


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest logits, ties to the lower expert id (C++ ``select_top_k``)."""
    return np.argsort(-np.asarray(logits, np.int64), axis=-1,
                      kind="stable")[..., :k].astype(np.int32)


def combine_experts(outputs: np.ndarray, gates: np.ndarray) -> np.ndarray:
    """sum_k gate_k * y_k narrowed to act; outputs (..., K, dim), gates (..., K) act."""
    acc = (np.asarray(outputs, np.int64) * np.asarray(gates, np.int64)[..., None]).sum(axis=-2)
    return narrow(acc, ACT.frac)
