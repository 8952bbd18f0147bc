# SPDX-License-Identifier: Apache-2.0
"""Task heads on the host (Edge-MoE accelerates only the backbone), numpy float32.

Four heads, chosen by ``ModelConfig.head``:

* ``light``: per token fc1 → GELU → fc2 to a patch of ``p*p*C`` values, pixel-shuffled to full
  resolution. ~49 MMAC for semseg (6 % of the backbone), so the host never becomes the
  bottleneck of an accelerated backbone.
* ``guided``: the light head, then a per-pixel refinement that sees the input
  image: a 3x3 conv on the pixels, concatenated with the light head's output, 1x1 → GELU → 1x1,
  added to the light output. A token decides *what* is in its 16x16 patch; the pixels say
  *where* its edges are, which is what thin classes (people, poles) need. +19 MMAC for semseg
  (8.7 % of the backbone in all).
* ``pyramid`` (the shipped model, ``model/pyramid_head.py``): an image-guided decoder from the
  token grid through 1/4 and 1/2 resolution, with a small pixel encoder at each scale, so edges
  and thin objects come from the pixels rather than from a token's 16x16 patch. 8.7 % of the
  backbone's MACs for semseg at the defaults.
* ``up``: M3ViT's ``VisionTransformerUpHead``: LayerNorm, then ``up_stages`` x (3x3 conv, BN in
  eval mode, ReLU, 2x bilinear upsample with align_corners=False), then a 1x1 conv. ~6.4 GMAC,
  heavier than the backbone; kept so M3ViT-trained heads run unchanged.

The numpy heads are channels-last inside (``(B, H, W, C)``) so every conv is one matmul over
pixels; ``run_head`` returns the PyTorch layout ``(B, C, img_h, img_w)``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .config import ModelConfig
from .layers import conv3x3, gelu, layer_norm, normalize_pixels, pixel_affine, resize_bilinear
from .pyramid_head import pyramid_head
from .weights import ModelWeights

#: BatchNorm epsilon of the up-head: PyTorch's ``BatchNorm2d`` default, which M3ViT trains with.
BN_EPS = 1e-5

_F32 = np.float32


class NativeHeads(Protocol):
    """What the heads need from native kernels (``backends/native/fastops.FastOps``); a protocol
    so the model code does not import the backends."""

    def guided_refine(self, coarse: np.ndarray, images: np.ndarray, pix_scale: np.ndarray,
                      pix_offset: np.ndarray,
                      guide_w: np.ndarray, guide_b: np.ndarray, fuse_w: np.ndarray,
                      fuse_b: np.ndarray,
                      refine_w: np.ndarray, refine_b: np.ndarray) -> np.ndarray: ...

    def pixels_planar(self, images: np.ndarray, scale: np.ndarray,
                      offset: np.ndarray) -> np.ndarray: ...

    def conv3x3(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1,
                gelu: bool = False) -> np.ndarray: ...

    def pointwise(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                  gelu: bool = False
                  ) -> np.ndarray: ...

    def upsample_fuse(self, coarse: np.ndarray, pixels: np.ndarray, w_pix: np.ndarray,
                      bias: np.ndarray | None,
                      w_coord: np.ndarray, gelu: bool = True) -> np.ndarray: ...

    def mix_block(self, x: np.ndarray, dw_w: np.ndarray, dw_b: np.ndarray | None, pw_w: np.ndarray,
                  pw_b: np.ndarray | None) -> np.ndarray: ...

    def linear(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
               gelu: bool = False
               ) -> np.ndarray: ...


def _w(weights: ModelWeights, name: str) -> np.ndarray:
    return np.asarray(weights[name], dtype=_F32)


def light_head(weights: ModelWeights, cfg: ModelConfig, task: str, features: np.ndarray,
               native: NativeHeads | None = None) -> np.ndarray:
    """(B, P, D) features → channels-last (B, img_h, img_w, C). Each token's vector is ordered (ky,
    kx, c)."""
    grid = _light_grid(weights, cfg, task, features, native)
    return np.ascontiguousarray(grid.transpose(0, 1, 3, 2, 4, 5)).reshape(
        -1, cfg.img_h, cfg.img_w, grid.shape[-1])


def _light_grid(weights: ModelWeights, cfg: ModelConfig, task: str, features: np.ndarray,
                native: NativeHeads | None = None) -> np.ndarray:
    """The light head's per-token output as (B, grid_h, grid_w, patch, patch, C): a view to lay out
    once.

    ``native``: both layers on the packed GEMM (GELU in its epilogue), not numpy's BLAS, which on a
    CPU it does not recognise runs generic kernels (the light semseg head 5.3 ms against 1.9 for
    its PyTorch twin on such a Xeon)."""
    p = f"heads.{task}."
    c, k = cfg.head_out_channels(task), cfg.patch
    if native is not None:
        hidden = native.linear(features, _w(weights, p + "fc1.weight"),
                               _w(weights, p + "fc1.bias"), gelu=True)
        out = native.linear(hidden, _w(weights, p + "fc2.weight"), _w(weights, p + "fc2.bias"))
        return out.reshape(-1, cfg.grid_h, cfg.grid_w, k, k, c)
    hidden = features @ _w(weights, p + "fc1.weight").T
    hidden += _w(weights, p + "fc1.bias")
    gelu(hidden, out=hidden)
    out = hidden @ _w(weights, p + "fc2.weight").T
    out += _w(weights, p + "fc2.bias")
    return out.reshape(-1, cfg.grid_h, cfg.grid_w, k, k, c)


def guided_refine(weights: ModelWeights, cfg: ModelConfig, task: str, coarse: np.ndarray,
                  images: np.ndarray, native: NativeHeads | None = None) -> np.ndarray:
    """Light-head output (B, H, W, C) + uint8 model-input images (B, H, W, 3) → refined (B, H, W,
    C).

    ``coarse + refine(GELU(fuse([coarse, GELU(guide3x3(pixels))])))``; the pixels are normalised
    exactly as the backbone sees them. numpy makes ~20 passes over 32k pixels x 24 channels for
    this (~13 ms at 128x256); ``native`` kernels do it row by row in registers (~2 ms), same sums.
    """
    p = f"heads.{task}."
    if native is not None:
        scale, offset = (v.astype(_F32) for v in pixel_affine(cfg))
        return native.guided_refine(
            np.ascontiguousarray(coarse, dtype=_F32), np.ascontiguousarray(images, dtype=np.uint8),
            scale, offset,
            *(_w(weights, p + n) for n in ("guide.weight", "guide.bias", "fuse.weight",
                                           "fuse.bias", "refine.weight", "refine.bias")))
    pixels = normalize_pixels(images, cfg, _F32)
    guide = conv3x3(pixels, _w(weights, p + "guide.weight"), _w(weights, p + "guide.bias"))
    gelu(guide, out=guide)
    hidden = np.concatenate([coarse, guide], axis=-1) @ _w(weights, p + "fuse.weight").T
    hidden += _w(weights, p + "fuse.bias")
    gelu(hidden, out=hidden)
    out = hidden @ _w(weights, p + "refine.weight").T
    out += _w(weights, p + "refine.bias")
    out += coarse
    return out


def up_head(weights: ModelWeights, cfg: ModelConfig, task: str,
            features: np.ndarray) -> np.ndarray:
    """M3ViT VisionTransformerUpHead: (B, P, D) features → (B, C, img_h, img_w).

    BN (eval) is folded into its conv: ``gamma * (conv(x) - mean) / sqrt(var + eps) + beta``.
    If ``grid * 2**up_stages`` is not the image size, a final bilinear resize makes it so.
    """
    p = f"heads.{task}."
    x = layer_norm(features.astype(_F32, copy=False), _w(weights, p + "norm.weight"),
                   _w(weights, p + "norm.bias"), cfg.ln_eps)
    x = x.reshape(-1, cfg.grid_h, cfg.grid_w, cfg.dim)
    for s in range(cfg.up_stages):
        scale = _w(weights, f"{p}bn_{s}.weight") / np.sqrt(
            _w(weights, f"{p}bn_{s}.running_var") + _F32(BN_EPS))
        weight = _w(weights, f"{p}conv_{s}.weight") * scale[:, None, None, None]
        bias = (_w(weights, f"{p}conv_{s}.bias") - _w(weights, f"{p}bn_{s}.running_mean")) * scale
        bias += _w(weights, f"{p}bn_{s}.bias")
        x = conv3x3(x, weight, bias)
        np.maximum(x, 0, out=x)  # ReLU
        x = resize_bilinear(x, x.shape[1] * 2, x.shape[2] * 2)
    last = cfg.up_stages
    out = x @ _w(weights, f"{p}conv_{last}.weight")[:, :, 0, 0].T  # 1x1 conv
    out += _w(weights, f"{p}conv_{last}.bias")
    if out.shape[1:3] != (cfg.img_h, cfg.img_w):
        out = resize_bilinear(out, cfg.img_h, cfg.img_w)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def run_head(weights: ModelWeights, cfg: ModelConfig, task: str, features: np.ndarray,
             images: np.ndarray | None = None, native: NativeHeads | None = None) -> np.ndarray:
    """Backbone features (B, num_patches, dim) → (B, C, img_h, img_w) float32.

    C = number of classes (semseg logits) or 1 (depth, log-metres); the head type is ``cfg.head``.
    ``images`` are the uint8 model-input images (B, img_h, img_w, 3) the features came from; the
    guided and pyramid heads read them, and require them. ``native``: optional kernels for their
    per-pixel work (same results as numpy to float32 rounding).
    """
    cfg.task_id(task)  # ConfigError naming the task if unknown
    want = (cfg.num_patches, cfg.dim)
    if features.ndim != 3 or features.shape[1:] != want:
        raise ValueError(f"head {task!r}: features must be (B, {want[0]}, {want[1]}), got "
                         f"{features.shape}")
    features = np.asarray(features, dtype=_F32)
    if cfg.head == "up":
        return up_head(weights, cfg, task, features)
    if cfg.head == "light":  # straight to (B, C, H, W): one copy, not two
        grid = _light_grid(weights, cfg, task, features, native)
        return np.ascontiguousarray(grid.transpose(0, 5, 1, 3, 2, 4)).reshape(
            -1, grid.shape[-1], cfg.img_h, cfg.img_w)
    # the heads that see the pixels
    want_img = (features.shape[0], cfg.img_h, cfg.img_w, cfg.in_chans)
    if images is None or images.shape != want_img:
        got = None if images is None else images.shape
        raise ValueError(f"head {task!r}: the {cfg.head} head needs the model-input images "
                         f"{want_img}, got {got}")
    if cfg.head == "pyramid":
        return pyramid_head(weights, cfg, task, features, images, native)
    out = guided_refine(weights, cfg, task, light_head(weights, cfg, task, features, native),
                        images, native)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def decode_semseg(logits: np.ndarray) -> np.ndarray:
    """(B, C, H, W) class logits → (B, H, W) uint8 class ids (argmax; ties → lower id)."""
    if logits.shape[1] > np.iinfo(np.uint8).max:
        raise ValueError(f"{logits.shape[1]} classes do not fit a uint8 class-id map")
    return np.argmax(logits, axis=1).astype(np.uint8)


def decode_depth(raw: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """(B, 1, H, W) head output → (B, H, W) float32 metres, clipped to [min_depth, max_depth].

    ``cfg.depth_output`` says what the channel means: log-metres (ours) or metres (an imported
    M3ViT head). Clipping makes every output a valid range for REP-118 consumers; an overflowing
    exp (a broken model) saturates at ``max_depth`` instead of producing Inf.
    """
    if cfg.depth_output == "linear":
        metres = raw[:, 0]
    else:
        with np.errstate(over="ignore"):
            metres = np.exp(raw[:, 0])
    return np.clip(metres, cfg.min_depth, cfg.max_depth).astype(_F32)
