# SPDX-License-Identifier: Apache-2.0
"""The pyramid head: an image-guided decoder from the 1/16 token grid to full resolution (numpy).

Why: a 16x16 token is wider than a pole and than a person beyond ~4 m, and 71 % of the guided
head's wrong pixels lie within 2 px of a label edge. The light head paints each token's patch
from the token alone; this head lets the pixels say where things are, at every scale:

* a small pixel encoder: 3x3 stride-2 convs to 1/2 and 1/4 resolution (``pyramid_enc`` channels);
* tokens projected (``pyramid_token``) and fused with the 1/4 pixel features and two coordinate
  channels (row and column in [-1, 1]: ground depth is a function of the row), then
  ``pyramid_mix[0]`` residual blocks (depthwise 3x3 → 1x1 → GELU);
* 2x bilinear up, fused with the 1/2 pixel features (+ coordinates), ``pyramid_mix[1]`` blocks;
* 2x up, fused with a 3x3 conv of the full-resolution pixels (``pyramid_guide``), then a 1x1 to
  the task's channels.

Every "fuse" is one 1x1 conv over the concatenation ``[upsampled coarser map, pixel features,
coordinates]``. Bilinear interpolation is linear and a 1x1 conv is per pixel, so the coarser
map's share is computed *before* upsampling (at a quarter of the pixels), and the coordinates'
share is a constant map; both are the same sums as the concatenated form (PyTorch's twin,
``training/torch_model.PyramidHead``, computes them the same way). numpy runs channels-last;
the native kernels (``backends/native/fastops.cpp``) run on planar (B, C, H, W) maps, one pass
per row and layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .config import ModelConfig
from .layers import conv3x3, depthwise3x3, gelu, normalize_pixels, pixel_affine, resize_bilinear
from .weights import ModelWeights

if TYPE_CHECKING:  # heads.py imports this module
    from .heads import NativeHeads

_F32 = np.float32


def coordinates(h: int, w: int, dtype: type = _F32) -> np.ndarray:
    """(h, w, 2) pixel-centre row and column of an h x w map, each scaled to [-1, 1] over the image
    (``config.PYRAMID_COORDS`` channels)."""
    ys = (np.arange(h, dtype=np.float64) + 0.5) / h * 2.0 - 1.0
    xs = (np.arange(w, dtype=np.float64) + 0.5) / w * 2.0 - 1.0
    grid = np.stack(np.broadcast_arrays(ys[:, None], xs[None, :]), axis=-1)
    return grid.astype(dtype)


class _Fuse:
    """One fusion's weight split by input block: ``[coarse, pixels, coords] @ W.T + b``; the
    ``*_planar`` blocks are (out, in) for the native kernels, ``coarse`` and ``pixels`` their
    (in, out) transposes for numpy's channels-last products."""

    def __init__(self, weights: ModelWeights, name: str, coarse: int, pixels: int):
        w = np.asarray(weights[name + ".weight"], dtype=_F32)
        self.coarse_planar = np.ascontiguousarray(w[:, :coarse])
        self.pixels_planar = np.ascontiguousarray(w[:, coarse:coarse + pixels])
        self.coords_planar = np.ascontiguousarray(w[:, coarse + pixels:])
        self.coarse, self.pixels = self.coarse_planar.T, self.pixels_planar.T
        self.bias = np.asarray(weights[name + ".bias"], dtype=_F32)

    def constant(self, h: int, w: int) -> np.ndarray:
        """The coordinates' share plus the bias at an h x w map: (h, w, out)."""
        out = coordinates(h, w) @ self.coords_planar.T
        out += self.bias
        return out

    def __call__(self, coarse: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """GELU(fuse([up(coarse), pixels, coords])), channels-last, at ``pixels``' size: the
        coarse map's share is taken at its own size and upsampled after (numpy's
        ``upsample_fuse``)."""
        size = pixels.shape[1:3]
        h = resize_bilinear(coarse @ self.coarse, *size)
        h += pixels @ self.pixels
        h += self.constant(*size)
        return gelu(h, out=h)


def _mix(weights: ModelWeights, prefix: str, x: np.ndarray) -> np.ndarray:
    """Residual block ``x + GELU(pw(dw3x3(x)))`` in place of ``x``."""
    w = lambda n: np.asarray(weights[f"{prefix}.{n}"], dtype=_F32)  # noqa: E731
    y = depthwise3x3(x, w("dw.weight"), w("dw.bias")) @ w("pw.weight").T
    y += w("pw.bias")
    x += gelu(y, out=y)
    return x


def pyramid_head(weights: ModelWeights, cfg: ModelConfig, task: str, features: np.ndarray,
                 images: np.ndarray, native: NativeHeads | None = None) -> np.ndarray:
    """(B, P, D) features + uint8 model-input images (B, H, W, 3) → (B, C, H, W) float32.

    ``native``: the fused kernels (planar maps, one pass per row; ~10x fewer memory passes than
    numpy's GELU and shifted adds), else numpy, channels-last. The same sums either way.
    """
    if native is not None:
        return _pyramid_native(weights, cfg, task, features, images, native)
    return np.ascontiguousarray(_pyramid_numpy(weights, cfg, task, features,
                                               images).transpose(0, 3, 1, 2))


def _tokens(weights: ModelWeights, cfg: ModelConfig, task: str, features: np.ndarray,
            native: NativeHeads | None = None) -> np.ndarray:
    """GELU(token projection): (B, grid_h, grid_w, pyramid_token)."""
    p = f"heads.{task}."
    if native is not None:
        tok = native.linear(features, np.asarray(weights[p + "tok.weight"], dtype=_F32),
                            np.asarray(weights[p + "tok.bias"], dtype=_F32), gelu=True)
        return tok.reshape(features.shape[0], cfg.grid_h, cfg.grid_w, -1)
    tok = features.reshape(-1, cfg.dim) @ np.asarray(weights[p + "tok.weight"], dtype=_F32).T
    tok += np.asarray(weights[p + "tok.bias"], dtype=_F32)
    gelu(tok, out=tok)
    return tok.reshape(features.shape[0], cfg.grid_h, cfg.grid_w, -1)


def _pyramid_numpy(weights: ModelWeights, cfg: ModelConfig, task: str, features: np.ndarray,
                   images: np.ndarray) -> np.ndarray:
    """The head in numpy, channels-last: (B, H, W, C)."""
    p = f"heads.{task}."
    w = lambda n: np.asarray(weights[p + n], dtype=_F32)  # noqa: E731
    e1, e2 = cfg.pyramid_enc
    d4, d2, _ = cfg.pyramid_dec
    pixels = normalize_pixels(images, cfg, _F32)
    tok = _tokens(weights, cfg, task, features)
    p2 = gelu(conv3x3(pixels, w("enc2.weight"), w("enc2.bias"), stride=2))
    p4 = gelu(conv3x3(p2, w("enc4.weight"), w("enc4.bias"), stride=2))

    # 1/4 resolution: tokens (projected at the token grid, then upsampled), pixel features,
    # coordinates.
    h = _Fuse(weights, p + "fuse4", cfg.pyramid_token, e2)(tok, p4)
    for i in range(cfg.pyramid_mix[0]):
        h = _mix(weights, f"{p}mix4.{i}", h)
    # 1/2 resolution.
    h = _Fuse(weights, p + "fuse2", d4, e1)(h, p2)
    for i in range(cfg.pyramid_mix[1]):
        h = _mix(weights, f"{p}mix2.{i}", h)
    # Full resolution: a 3x3 conv of the pixels is all the detail there is.
    guide = gelu(conv3x3(pixels, w("enc1.weight"), w("enc1.bias")))
    h = _Fuse(weights, p + "fuse1", d2, cfg.pyramid_guide)(h, guide)
    out = h @ w("out.weight").T
    out += w("out.bias")
    return out


def _pyramid_native(weights: ModelWeights, cfg: ModelConfig, task: str, features: np.ndarray,
                    images: np.ndarray, ops: NativeHeads) -> np.ndarray:
    """The head on the native kernels, planar (B, C, h, w) maps throughout."""
    p = f"heads.{task}."
    w = lambda n: np.asarray(weights[p + n], dtype=_F32)  # noqa: E731
    e1, e2 = cfg.pyramid_enc
    d4, d2, _ = cfg.pyramid_dec
    scale, offset = (v.astype(_F32) for v in pixel_affine(cfg))
    pixels = ops.pixels_planar(np.ascontiguousarray(images, dtype=np.uint8), scale, offset)
    fuse = _Fuse(weights, p + "fuse4", cfg.pyramid_token, e2)
    coarse = np.ascontiguousarray((_tokens(weights, cfg, task, features, ops)
                                   @ fuse.coarse).transpose(0, 3, 1, 2))
    p2 = ops.conv3x3(pixels, w("enc2.weight"), w("enc2.bias"), stride=2, gelu=True)
    p4 = ops.conv3x3(p2, w("enc4.weight"), w("enc4.bias"), stride=2, gelu=True)
    h = ops.upsample_fuse(coarse, p4, fuse.pixels_planar, fuse.bias, fuse.coords_planar)
    for i in range(cfg.pyramid_mix[0]):
        h = _mix_native(weights, f"{p}mix4.{i}", h, ops)
    fuse = _Fuse(weights, p + "fuse2", d4, e1)
    h = ops.upsample_fuse(ops.pointwise(h, fuse.coarse_planar, None), p2, fuse.pixels_planar,
                          fuse.bias, fuse.coords_planar)
    for i in range(cfg.pyramid_mix[1]):
        h = _mix_native(weights, f"{p}mix2.{i}", h, ops)
    fuse = _Fuse(weights, p + "fuse1", d2, cfg.pyramid_guide)
    guide = ops.conv3x3(pixels, w("enc1.weight"), w("enc1.bias"), gelu=True)
    h = ops.upsample_fuse(ops.pointwise(h, fuse.coarse_planar, None), guide, fuse.pixels_planar,
                          fuse.bias, fuse.coords_planar)
    return ops.pointwise(h, w("out.weight"), w("out.bias"))


def _mix_native(weights: ModelWeights, prefix: str, x: np.ndarray, ops: NativeHeads) -> np.ndarray:
    w = lambda n: np.asarray(weights[f"{prefix}.{n}"], dtype=_F32)  # noqa: E731
    return ops.mix_block(x, w("dw.weight"), w("dw.bias"), w("pw.weight"), w("pw.bias"))
