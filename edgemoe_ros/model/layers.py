# SPDX-License-Identifier: Apache-2.0
"""Numpy building blocks shared by the float64 reference, the float32 CPU backend and the heads.

Every op computes in the dtype of its input, so the reference (float64) and the fast path
(float32) run the *same* code and can only differ by rounding. Where float32 needs a different
algorithm for speed (GELU: numpy has no ``erf`` ufunc), the difference is confined here and
bounded by a test against ``math.erf``.
"""

from __future__ import annotations

import math

import numpy as np

from .config import ModelConfig

#: Pixels enter as ``u8 / 256`` (Edge-MoE's ap_ufixed<8,0>: 8 fraction bits, range [0, 1)).
PIXEL_DIVISOR = 256.0

# Abramowitz & Stegun 7.1.26: erfc(z) ~= (a1 t + ... + a5 t^5) exp(-z^2), t = 1 / (1 + p z), z >=
# 0, absolute error <= 1.5e-7, i.e. at float32 resolution. Used only on the float32 path.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_erf_exact = np.frompyfunc(math.erf, 1, 1)


def layer_norm(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
               eps: float) -> np.ndarray:
    """LayerNorm over the last axis with biased variance (PyTorch semantics); returns a new array.

    ``weight``/``bias`` of ``None`` skip the affine step: the CPU backend folds it into the next
    linear layer, so only the standardisation is left here.
    """
    inv_n = 1.0 / x.shape[-1]
    out = x - np.add.reduce(x, axis=-1, keepdims=True) * inv_n
    var = np.add.reduce(np.square(out), axis=-1, keepdims=True)
    var *= inv_n
    var += eps
    np.sqrt(var, out=var)
    out /= var
    if weight is not None:
        out *= weight
    if bias is not None:
        out += bias
    return out


def gelu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Exact (erf) GELU, ``x * Phi(x)``; ``out=x`` works in place.

    float64 input uses libm's ``erf`` per element (exact, slow: the reference path). Other dtypes
    use ``gelu(x) = relu(x) - |x| * erfc(|x|/sqrt2) / 2`` with A&S 7.1.26 for erfc: ~20 vectorised
    passes and no cancellation, error <= 1e-7 * |x|, far below float32 model noise.
    """
    if x.dtype == np.float64:
        phi = _erf_exact(x * _SQRT1_2).astype(np.float64)
        phi += 1.0
        phi *= 0.5
        return np.multiply(x, phi, out=out)
    dt = x.dtype.type  # numpy scalars, not 0-d arrays: 0-d operands take a ~3x slower ufunc path
    a = np.abs(x)
    t = a * dt(_AS_P * _SQRT1_2)
    t += dt(1.0)
    np.reciprocal(t, out=t)
    # Horner on the A&S polynomial with the 1/2 of erfc/2 folded into the coefficients.
    q = t * dt(0.5 * _AS_A[-1])
    for coef in reversed(_AS_A[:-1]):
        q += dt(0.5 * coef)
        q *= t
    e = np.square(x, out=t)  # t is spent: reuse it for exp(-x^2 / 2)
    e *= dt(-0.5)
    np.exp(e, out=e)
    q *= e
    q *= a
    res = np.maximum(x, dt(0), out=out)
    res -= q
    return res


def softmax(x: np.ndarray, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
    """Numerically stable softmax along ``axis``; ``out=x`` works in place."""
    res = np.subtract(x, x.max(axis=axis, keepdims=True), out=out)
    np.exp(res, out=res)
    res /= res.sum(axis=axis, keepdims=True)
    return res


def patchify(images: np.ndarray, patch: int) -> np.ndarray:
    """(B, H, W, C) → (B, num_patches, C*patch*patch): patches row-major, each flattened (c, ky,
    kx).

    (c, ky, kx) is the order of a PyTorch conv weight ``(out, C, p, p)`` flattened, so the 16x16
    stride-16 patch-embedding conv becomes one matmul with ``weight.reshape(dim, -1)``.
    """
    b, h, w, c = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    gh, gw = h // patch, w // patch
    grid = images.reshape(b, gh, patch, gw, patch, c).transpose(0, 1, 3, 5, 2, 4)
    return grid.reshape(b, gh * gw, c * patch * patch)


def pixel_affine(cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(scale, offset)`` with ``normalised = u8 * scale + offset`` (float64, shape
    (3,)).

    One affine map, so the CPU backend can fold input normalisation into the patch embedding.
    """
    std = np.asarray(cfg.pixel_std, dtype=np.float64)
    mean = np.asarray(cfg.pixel_mean, dtype=np.float64)
    if std.shape != (cfg.in_chans,) or mean.shape != (cfg.in_chans,) or np.any(std <= 0):
        raise ValueError(f"pixel_mean {cfg.pixel_mean} / pixel_std {cfg.pixel_std} must have "
                         f"{cfg.in_chans} entries and std > 0")
    return 1.0 / (PIXEL_DIVISOR * std), -mean / std


def normalize_pixels(images: np.ndarray, cfg: ModelConfig, dtype: type = np.float64) -> np.ndarray:
    """uint8 (B, H, W, 3) RGB → ``(u8 / 256 - mean) / std`` in ``dtype`` (SPEC model math step
    1)."""
    scale, offset = pixel_affine(cfg)
    return images.astype(dtype) * scale.astype(dtype) + offset.astype(dtype)


def top_k_experts(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores on the last axis, best first, ties → lower index
    (int32).

    A stable sort of the negated scores is what makes ties deterministic (the Edge-MoE HLS top-k
    had undefined behaviour here). Any strictly increasing function of the router logits (the
    softmax probabilities, or the logits themselves) selects the same experts.
    """
    order = np.argsort(-scores, axis=-1, kind="stable")
    return np.ascontiguousarray(order[..., :k]).astype(np.int32, copy=False)


def conv3x3(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int = 1) -> np.ndarray:
    """3x3 conv, zero padding 1, channels-last (B, H, W, Cin) → (B, ceil(H/stride), ceil(W/stride),
    Cout).

    ``weight`` is PyTorch's (Cout, Cin, 3, 3); each output pixel's window is flattened (cin, ky,
    kx) like the weight, so the conv is one matmul (im2col).
    """
    b, _, _, cin = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3),
                                                       axis=(1, 2))[:, ::stride, ::stride]
    oh, ow = windows.shape[1:3]
    out = windows.reshape(b * oh * ow, cin * 9) @ weight.reshape(weight.shape[0], -1).T
    out += bias
    return out.reshape(b, oh, ow, -1)


def depthwise3x3(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Depthwise 3x3 conv (one filter per channel), zero padding 1; ``weight`` (C, 1, 3, 3)."""
    _, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.empty_like(x)
    np.multiply(padded[:, :h, :w], weight[:, 0, 0, 0], out=out)
    for ky in range(3):
        for kx in range(3):
            if ky or kx:
                out += padded[:, ky:ky + h, kx:kx + w] * weight[:, 0, ky, kx]
    out += bias
    return out


def _bilinear_taps(n_in: int, n_out: int,
                   dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights (in ``dtype``) of PyTorch's bilinear resize with
    align_corners=False on one axis."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.maximum(src, 0.0)  # PyTorch clamps negative source coordinates to the first pixel
    i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = (src - i0).astype(dtype)
    return i0, i1, frac


def resize_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of channels-last (B, H, W, C), ``F.interpolate(...,
    align_corners=False)``."""
    i0, i1, f = _bilinear_taps(x.shape[1], out_h, x.dtype)
    f = f[None, :, None, None]
    x = x[:, i0] * (1 - f) + x[:, i1] * f
    i0, i1, f = _bilinear_taps(x.shape[2], out_w, x.dtype)
    f = f[None, None, :, None]
    return x[:, :, i0] * (1 - f) + x[:, :, i1] * f
