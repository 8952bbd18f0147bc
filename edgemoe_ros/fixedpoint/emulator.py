# SPDX-License-Identifier: Apache-2.0
"""The whole backbone in integer arithmetic, bit-exact with the ``hls_accel/`` C-simulation.

It reads the very buffers the accelerator reads (``accel.interface.pack_weights``), so a packing
bug shows up here and in hardware alike. Speed comes from batching: all images of a call go
through each layer together, the exact matrix products run on float64 BLAS (see ``ops``), MoE
tokens are grouped per expert, and with several tasks the shared prefix (everything before the
first MoE MLP) runs once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..accel import interface as itf
from ..model.config import ModelConfig
from . import ops

ATTN_BIAS = itf.FORMATS["attn_bias"]


@dataclass
class EmulatorResult:
    """features: (B, num_patches, dim) int32 raw act; routing: (B, moe_layers, tokens, top_k)
    int32.

    taps (only when requested): raw act int64 under the names of ``model/reference.py``'s taps:
    ``embed``, ``blocks.{i}.resid1`` (after the attention residual), ``blocks.{i}.out`` and
    ``features``; the accuracy report compares them with the float model.
    """

    features: np.ndarray
    routing: np.ndarray
    taps: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class _Expert:
    fc1_t: np.ndarray
    fc1_b: np.ndarray
    fc2_t: np.ndarray
    fc2_b: np.ndarray


class FixedPointEmulator:
    """Runs packed weights on uint8 images exactly as ``edgemoe_top`` does."""

    def __init__(self, packed: itf.PackedWeights, config: ModelConfig):
        self.config = config
        bufs = {"one_time": packed.one_time, "experts": packed.experts}
        raw = {e.name: bufs[e.buffer][e.offset:e.offset + e.size].astype(np.int64).reshape(e.shape)
               for e in packed.layout.entries}
        self._raw = raw
        cfg = config
        self._patch_t = raw["patch_embed.weight"].T.astype(np.float64)
        self._lin: dict[str, np.ndarray] = {}
        for b in range(cfg.depth):
            p = f"blocks.{b}."
            names = ["attn.qkv.weight", "attn.proj.weight"]
            names += [] if cfg.is_moe(b) else ["mlp.fc1.weight", "mlp.fc2.weight"]
            for n in names:
                self._lin[p + n] = raw[p + n].T.astype(np.float64)
            if cfg.is_moe(b):
                r = raw[p + "moe.router.weight"]  # (tasks, E, dim)
                for t in range(len(cfg.tasks)):
                    self._lin[f"{p}router.{t}"] = r[t].T.astype(np.float64)
        self._experts: dict[tuple[int, int], _Expert] = {}
        for b in cfg.moe_layers:
            for e in range(cfg.num_experts):
                q = f"blocks.{b}.moe.experts.{e}."
                self._experts[(b, e)] = _Expert(raw[q + "fc1.weight"].T.astype(np.float64),
                                                raw[q + "fc1.bias"],
                                                raw[q + "fc2.weight"].T.astype(np.float64),
                                                raw[q + "fc2.bias"])
        self._eps = itf.ln_eps_raw(cfg)
        self._scale = itf.attn_scale_raw(cfg)

    # ----- building blocks
    def _ln(self, x: np.ndarray, prefix: str) -> np.ndarray:
        return ops.layernorm(x, self._raw[prefix + ".weight"], self._raw[prefix + ".bias"],
                             self._eps)

    def _embed(self, images: np.ndarray) -> np.ndarray:
        r = self._raw
        return ops.patch_embed(images, self._patch_t, r["patch_embed.bias"], r["cls_token"],
                               r["pos_embed"],
                               r["pixel_mean"], r["pixel_inv_std"], self.config.patch)

    def _attn_half(self, x: np.ndarray, b: int) -> np.ndarray:
        p = f"blocks.{b}."
        h = self._ln(x, p + "norm1")
        qkv = ops.linear(h, self._lin[p + "attn.qkv.weight"], self._raw[p + "attn.qkv.bias"],
                         ATTN_BIAS)
        a = ops.attention(qkv, self.config.num_heads, self._scale)
        y = ops.linear(a, self._lin[p + "attn.proj.weight"], self._raw[p + "attn.proj.bias"],
                       ATTN_BIAS)
        return ops.add_sat(x, y)

    def _dense_mlp(self, h: np.ndarray, b: int) -> np.ndarray:
        p = f"blocks.{b}.mlp."
        z = ops.gelu(ops.linear(h, self._lin[p + "fc1.weight"], self._raw[p + "fc1.bias"]))
        return ops.linear(z, self._lin[p + "fc2.weight"], self._raw[p + "fc2.bias"])

    def _moe_mlp(self, h: np.ndarray, b: int, task_id: int) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        bsz, n, d = h.shape
        flat = h.reshape(bsz * n, d)
        logits = ops.linear(flat, self._lin[f"blocks.{b}.router.{task_id}"], None)
        chosen = ops.top_k(logits, cfg.top_k)  # (T, k)
        gates = np.take_along_axis(ops.router_softmax(logits), chosen.astype(np.int64), axis=-1)
        outputs = np.zeros((bsz * n, cfg.top_k, d), dtype=np.int64)
        for e in range(cfg.num_experts):
            rows, slots = np.nonzero(chosen == e)  # this expert's token queue, in token order
            if rows.size == 0:
                continue
            ex = self._experts[(b, e)]
            z = ops.gelu(ops.linear(flat[rows], ex.fc1_t, ex.fc1_b))
            outputs[rows, slots] = ops.linear(z, ex.fc2_t, ex.fc2_b)
        y = ops.combine_experts(outputs, gates)
        return y.reshape(bsz, n, d), chosen.reshape(bsz, n, cfg.top_k)

    # ----- forward
    def run(self, images: np.ndarray, task_ids: Sequence[int],
            taps: bool = False) -> dict[int, EmulatorResult]:
        """Backbone for every task id in ``task_ids`` on (B, img_h, img_w, 3) uint8 images."""
        cfg = self.config
        want = (cfg.img_h, cfg.img_w, cfg.in_chans)
        if images.ndim != 4 or images.shape[1:] != want or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (B, {want[0]}, {want[1]}, {want[2]}), "
                             f"got {images.dtype} {images.shape}")
        for t in task_ids:
            if not 0 <= t < len(cfg.tasks):
                raise ValueError(f"task id {t} outside 0..{len(cfg.tasks) - 1}")
        shared_taps: dict[str, np.ndarray] = {}
        x = self._embed(images)
        if taps:
            shared_taps["embed"] = x
        first_moe = cfg.moe_layers[0] if cfg.moe_layers else cfg.depth
        for b in range(first_moe):
            x = self._attn_half(x, b)
            if taps:
                shared_taps[f"blocks.{b}.resid1"] = x
            x = ops.add_sat(x, self._dense_mlp(self._ln(x, f"blocks.{b}.norm2"), b))
            if taps:
                shared_taps[f"blocks.{b}.out"] = x
        if first_moe < cfg.depth:
            x = self._attn_half(x, first_moe)
            if taps:
                shared_taps[f"blocks.{first_moe}.resid1"] = x
        prefix = x
        results = {}
        for t in dict.fromkeys(task_ids):
            results[t] = self._finish(prefix, first_moe, t, dict(shared_taps) if taps else None)
        return results

    def _finish(self, x: np.ndarray, first_moe: int, task_id: int,
                taps: dict[str, np.ndarray] | None) -> EmulatorResult:
        cfg = self.config
        routing = np.zeros((x.shape[0], len(cfg.moe_layers), cfg.num_tokens, cfg.top_k),
                           dtype=np.int32)
        for b in range(first_moe, cfg.depth):
            if b != first_moe:
                x = self._attn_half(x, b)
                if taps is not None:
                    taps[f"blocks.{b}.resid1"] = x
            h = self._ln(x, f"blocks.{b}.norm2")
            if cfg.is_moe(b):
                y, chosen = self._moe_mlp(h, b, task_id)
                routing[:, cfg.moe_layers.index(b)] = chosen
            else:
                y = self._dense_mlp(h, b)
            x = ops.add_sat(x, y)
            if taps is not None:
                taps[f"blocks.{b}.out"] = x
        feats = self._ln(x, "norm")[:, 1:]
        if taps is not None:
            taps["features"] = feats
        return EmulatorResult(feats.astype(np.int32), routing, taps or {})
