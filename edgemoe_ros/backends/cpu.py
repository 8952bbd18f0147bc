# SPDX-License-Identifier: Apache-2.0
"""Fast float32 CPU backend: the model math of docs/ARCHITECTURE.md, laid out for BLAS.

Where the time goes and what this module does about it:

* **Layout once.** ``load`` puts every linear in the orientation its matmul wants, contiguous,
  and folds constants into weights: pixel normalisation into the patch embedding, every
  LayerNorm affine into the linear that consumes it, 1/sqrt(head_dim) into the q rows of qkv.
  ``run`` never copies a weight and LayerNorm is reduced to standardisation.
* **Biases that cancel.** The key bias adds ``q·b_k`` to every score of a query row, which softmax
  removes, so it is dropped; attention rows sum to one, so the value bias passes through
  unchanged and is folded into the output projection's bias (``b_o + W_o b_v``). Only the q
  third of the qkv output gets a bias add.
* **One token matrix.** A batch of B images is one (B*N, D) matrix for every linear; only
  attention is per image (batched matmul over images x heads).
* **Patch reordering (Edge-MoE).** In a MoE layer, (token, expert) pairs are sorted by expert;
  each expert runs ONE matmul pair on its gathered tokens, then outputs are gathered back per
  token and mixed with the gates. No Python loop touches individual tokens.
* **Shared prefix.** Tasks differ only from the first MoE layer's router on, so patch embedding,
  the blocks before it and that block's attention + LN2 run once for all requested tasks; in the
  first MoE layer an expert picked by several tasks for the same token is evaluated once.
* **Tasks as a batch.** After the fork the tasks' token streams are stacked (task-major) into one
  matrix, so every shared weight (attention, dense MLP, each expert) is one matmul for all tasks;
  only the routers are per task (contiguous row slices, no gather).
* **Native kernels** (option ``native``, ``native/fastops.cpp``, built with g++ on first use):
  every linear (patch embedding and routers included) runs a GEMM on weights packed at load, with
  bias and GELU applied to the output tile in registers (OpenBLAS repacks the weights on every
  call: 1.5-1.8x slower at the experts' ~16-token blocks, 1.1-1.3x at 129 tokens; and an OpenBLAS
  that does not know the CPU runs a generic SSE3 kernel: moving the embedding and routers off it
  took a task from 27 to 19 ms on an AVX-512 Xeon, 20 runs each); attention (both per-head products
  and the softmax) is one call on the same micro-kernel; each residual add is fused with the
  LayerNorm after it; a MoE layer is four calls (route, group, all experts, gated mix) instead of
  ~70 numpy calls; option ``threads`` shares the GEMMs, experts and attention heads out over a
  worker pool. The numpy path is the fallback and computes the same math (both within float32
  rounding of the float64 reference).

Measured (``bench/bench_engine.py --runs 50``, SPEC model, quiet 2-core AVX2 machine), median ms
semseg / depth / both on one thread: native 23.3 / 23.0 / 41.8, numpy path 39.3 / 38.9 / 68.3, the
PyTorch M³ViT peer 36.1 / 36.4 / 72.2 (1.55-1.58x the peer per task, both tasks 1.82x one task);
on two threads (``threads=2``, torch likewise): native 14.8 / 14.7 / 25.2, peer 23.6 / 23.7 / 45.2.

What is left, and why it stays: the backbone is 1.57 GFLOP per task and this core's float32 matmul
peak measures 90 GFLOP/s (1024^3, same run); the native path runs at 67 GFLOP/s overall (dense
GEMMs 81, experts 77, attention 55), so 2x the peer (<= 18.1 ms) would need 96 % of the peak for
the products alone. Both tasks cost ~1.8x one task because everything after the first router is
genuinely per task (the shared prefix is 14 % of the compute).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..model.config import ModelConfig
from ..model.layers import gelu, layer_norm, patchify, pixel_affine, softmax, top_k_experts
from ..model.weights import ModelWeights
from .base import BackboneResult, Backend, BackendError
from .native import fastops
from .native.fastops import PackedMatrix

log = logging.getLogger(__name__)

_F32 = np.float32


def _t(a: np.ndarray) -> np.ndarray:
    """Contiguous float32 transpose of the last two axes: PyTorch (out, in) → matmul-ready (in,
    out)."""
    return np.ascontiguousarray(np.swapaxes(a, -1, -2), dtype=_F32)


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=_F32)


_Weight = np.ndarray | PackedMatrix


@dataclass(frozen=True)
class _Block:
    """One transformer block's weights in run-ready float32 layout.

    LayerNorm affines are folded into the linear layers that consume them (LN1 into qkv, LN2 into
    the dense fc1, the routers and the experts' fc1), so ``run`` only standardises.
    Matrix weights are in the layout of the path the model was prepared for. numpy: token-major
    linears are (in, out); expert fc1 stays (out, in) and runs weights-on-the-left (``W @ x.T``),
    which OpenBLAS does ~30 % faster than ``x @ W.T`` for ~16-token matrices; fc2 turns back to
    token-major so the gated mix gathers contiguous rows (measured ~2 % overall). native: every
    linear (routers and patch embedding included) is a ``PackedMatrix`` of its (in, out) matrix
    (experts stacked), so OpenBLAS is not on the native path at all.
    """

    qkv_w: _Weight  # (D, 3D), LN1 folded in, q columns pre-scaled by 1/sqrt(head_dim)
    q_b: np.ndarray  # (D,): the q bias; k's cancels in softmax, v's is folded into proj_b
    # (3D,): q_b then zeros, for the native GEMM (a full bias row costs it nothing)
    qkv_b: np.ndarray
    proj_w: _Weight
    proj_b: np.ndarray  # (D,): b_o + W_o b_v
    # dense blocks
    fc1_w: _Weight | None = None
    fc1_b: np.ndarray | None = None
    fc2_w: _Weight | None = None
    fc2_b: np.ndarray | None = None
    # MoE blocks
    router_w: _Weight | None = None  # (D, num_tasks * E): all tasks' routers side by side
    router_b: np.ndarray | None = None  # (num_tasks * E,): LN2 shift through the router
    task_router_w: tuple[_Weight, ...] = ()  # per task: its (D, E) columns of router_w
    task_router_b: tuple[np.ndarray, ...] = ()
    e_fc1_w: _Weight | None = None  # numpy (E, H, D); native packed (E, D, H)
    e_fc1_b: np.ndarray | None = None  # (E, H)
    e_fc2_w: _Weight | None = None  # (E, H, D)
    e_fc2_b: np.ndarray | None = None  # (E, D)

    @property
    def is_moe(self) -> bool:
        return self.router_w is not None


@dataclass(frozen=True)
class _Prepared:
    config: ModelConfig
    embed_w: _Weight  # (C*p*p, D), pixel normalisation folded in
    cls_pos: np.ndarray  # (D,) class token + its position embedding
    patch_pos: np.ndarray  # (P, D) patch position embeddings + folded embedding bias
    blocks: tuple[_Block, ...]
    norm_w: np.ndarray
    norm_b: np.ndarray


def _fold_ln(weight: np.ndarray, bias: np.ndarray, ln_w: np.ndarray, ln_b: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """``W (LN(x)) + b`` = ``(W * ln_w) x_std + (b + W ln_b)`` for W (..., out, in) in float64."""
    w64 = weight.astype(np.float64)
    return w64 * ln_w.astype(np.float64), bias + w64 @ ln_b.astype(np.float64)


def _prepare(weights: ModelWeights, native: bool) -> _Prepared:
    """All layout work, done once per model (in float64, rounded to float32 once at the end), for
    the numpy path or (``native``) the packed weights of the native GEMM."""
    cfg = weights.config
    lin = fastops.pack_out_in if native else _t  # PyTorch (out, in) → matmul-ready
    w = weights.tensors
    scale, offset = pixel_affine(cfg)  # normalised = u8 * scale + offset, per channel
    conv = w["patch_embed.weight"].astype(np.float64).reshape(cfg.dim, cfg.in_chans, -1)
    embed_w = (conv * scale[None, :, None]).reshape(cfg.dim, -1)
    embed_b = w["patch_embed.bias"].astype(np.float64) + conv.sum(axis=2) @ offset
    pos = w["pos_embed"].astype(np.float64)
    q_scale = 1.0 / np.sqrt(cfg.head_dim)
    blocks = []
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        ln1 = w[p + "norm1.weight"], w[p + "norm1.bias"]
        ln2 = w[p + "norm2.weight"], w[p + "norm2.bias"]
        qkv_w, qkv_b = _fold_ln(w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"], *ln1)
        d = cfg.dim
        qkv_w[:d] *= q_scale
        qkv_b[:d] *= q_scale
        proj = w[p + "attn.proj.weight"].astype(np.float64)
        # value bias through the projection
        proj_b = w[p + "attn.proj.bias"] + proj @ qkv_b[2 * d:]
        common = dict(qkv_w=lin(qkv_w), q_b=_c(qkv_b[:d]),
                      qkv_b=_c(np.concatenate([qkv_b[:d], np.zeros(2 * d)])),
                      proj_w=lin(proj), proj_b=_c(proj_b))
        if cfg.is_moe(i):
            # (T, D, E) → (D, T*E)
            router = np.concatenate(list(w[p + "moe.router.weight"]), axis=1)
            router_wt, router_b = _fold_ln(router.T, np.zeros(router.shape[1]), *ln2)
            fc1_w, fc1_b = _fold_ln(w[p + "moe.fc1.weight"], w[p + "moe.fc1.bias"], *ln2)
            e = cfg.num_experts
            blocks.append(_Block(
                **common,
                router_w=lin(router_wt), router_b=_c(router_b),
                task_router_w=tuple(lin(router_wt[t * e:(t + 1) * e])
                                    for t in range(len(cfg.tasks))),
                task_router_b=tuple(_c(router_b[t * e:(t + 1) * e])
                                    for t in range(len(cfg.tasks))),
                e_fc1_w=lin(fc1_w) if native else _c(fc1_w), e_fc1_b=_c(fc1_b),
                e_fc2_w=lin(w[p + "moe.fc2.weight"]), e_fc2_b=_c(w[p + "moe.fc2.bias"]),
            ))
        else:
            fc1_w, fc1_b = _fold_ln(w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"], *ln2)
            blocks.append(_Block(
                **common,
                fc1_w=lin(fc1_w), fc1_b=_c(fc1_b),
                fc2_w=lin(w[p + "mlp.fc2.weight"]), fc2_b=_c(w[p + "mlp.fc2.bias"]),
            ))
    return _Prepared(
        config=cfg, embed_w=lin(embed_w),
        cls_pos=_c(w["cls_token"][0] + pos[0]), patch_pos=_c(pos[1:] + embed_b),
        blocks=tuple(blocks), norm_w=_c(w["norm.weight"]), norm_b=_c(w["norm.bias"]),
    )


class CpuBackend(Backend):
    """Registry name ``cpu``.

    Option ``native``: "auto" (default) runs the linears, the element-wise steps and the MoE
    bookkeeping in the C++ kernels of ``native/fastops.cpp`` (built with g++ on first use, ~2 s,
    then cached) and falls back to numpy with one warning if they cannot be built; "on" makes that
    a ``BackendError``; "off" is pure numpy. Both paths compute the same math and agree to float32
    rounding.

    Option ``threads`` (default 1): threads the native kernels split the linears (by output
    columns), each MoE layer's experts and attention's heads over, the calling thread included;
    results are bit-identical for every count. Workers spin ~0.1 ms after a kernel, then sleep.
    OpenBLAS (the numpy path) follows OPENBLAS_NUM_THREADS / OMP_NUM_THREADS instead. One
    thread is the default because the node shares its cores with DDS and the camera driver.
    """

    name = "cpu"

    def __init__(self, native: str = "auto", threads: int = 1) -> None:
        super().__init__()
        if native not in fastops.MODES:
            raise BackendError(f"cpu: option native must be one of {', '.join(fastops.MODES)}; "
                               f"got {native!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise BackendError(f"cpu: option threads must be an integer >= 1; got {threads!r}")
        self._native_mode = native
        self._threads = threads
        self._m: _Prepared | None = None
        self._fast: fastops.FastOps | None = None
        self._pool: fastops.ThreadPool | None = None

    @property
    def native(self) -> bool:
        """Whether ``run`` uses the native kernels (decided at ``load``)."""
        return self._fast is not None

    def load(self, weights: ModelWeights) -> None:
        """Validate and re-lay out the weights (and build the native kernels the first time).

        On failure the previously loaded model stays usable.
        """
        weights.validate()
        fast = fastops.native_ops(self._native_mode)
        prepared = _prepare(weights, native=fast is not None)
        if fast is not None and self._threads > 1 and self._pool is None:
            self._pool = fast.pool(self._threads)
        elif fast is None and self._threads > 1:
            log.warning("cpu backend: option threads=%d applies to the native "
                        "kernels, which are not in use", self._threads)
        self._m, self.config, self._fast = prepared, weights.config, fast
        log.debug("cpu backend: loaded %s (%s path, %d thread(s))", weights.source,
                  "native" if fast else "numpy", self.threads)

    @property
    def threads(self) -> int:
        """Threads the native kernels run on (1 on the numpy path)."""
        return self._pool.threads if self._pool is not None and self._fast is not None else 1

    def close(self) -> None:
        self._m = None
        self.config = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def run(self, images: np.ndarray, tasks: Sequence[str]) -> BackboneResult:
        self.check_input(images, tasks)
        m = self._m
        if m is None:
            raise BackendError("backend 'cpu': run() after close()")
        cfg = m.config
        tasks = tuple(dict.fromkeys(tasks))
        task_ids = [cfg.task_id(t) for t in tasks]
        b, n = images.shape[0], cfg.num_tokens
        rows = b * n  # token rows per task stream

        x = self._embed(m, images)  # (B*N, D), shared by all tasks until the first MoE router
        streams = 1  # number of task streams stacked in x (1 until the fork)
        # Every residual add is fused with the LayerNorm that follows it: a block's MLP output (and
        # its bias) waits in `pending` until the next block's LN1 (or the final LN) adds it.
        pending: np.ndarray | None = None
        pending_b: np.ndarray | None = None
        chosen_per_layer: list[np.ndarray] = []  # each (T*B*N, k), task-major
        for blk in m.blocks:
            h = self._add_ln(x, pending, pending_b)  # LN1 (affine folded into qkv)
            h = self._add_ln(x, self._attention(blk, h, b * streams), blk.proj_b)  # LN2
            if not blk.is_moe:
                pending, pending_b = self._dense_mlp(blk, h), blk.fc2_b
                continue
            chosen, gates = self._route(blk, h, task_ids, rows, streams)
            pending, pending_b = self._experts(blk, h, chosen, gates), None
            if streams == 1 and len(tasks) > 1:  # the fork: one shared stream becomes T streams
                x = np.tile(x, (len(tasks), 1))
                streams = len(tasks)
            chosen_per_layer.append(chosen)
        normed = self._add_ln(x, pending, pending_b, m.norm_w, m.norm_b)
        if streams != len(tasks):  # a model without MoE layers: all tasks share one output
            normed = np.tile(normed, (len(tasks), 1))
        normed = normed.reshape(len(tasks), b, n, cfg.dim)

        layers, k = len(chosen_per_layer), cfg.top_k
        chosen_all = (np.stack(chosen_per_layer).reshape(layers, len(tasks), b, n, k)
                      if layers else np.zeros((0, len(tasks), b, n, k), np.int32))
        features, routing, counts = {}, {}, {}
        for ti, task in enumerate(tasks):
            features[task] = np.ascontiguousarray(normed[ti, :, 1:])
            routing[task] = np.ascontiguousarray(chosen_all[:, ti].transpose(1, 0, 2, 3))
            counts[task] = np.zeros((layers, cfg.num_experts), np.int64)
            for layer in range(layers):
                counts[task][layer] = np.bincount(chosen_all[layer, ti].ravel(),
                                                  minlength=cfg.num_experts)
        return BackboneResult(features, routing, counts)

    # ----- steps: each has a numpy and a native form computing the same thing -----
    def _embed(self, m: _Prepared, images: np.ndarray) -> np.ndarray:
        cfg = m.config
        b = images.shape[0]
        patches = patchify(images, cfg.patch).astype(_F32)  # uint8 in; normalisation is in embed_w
        x = np.empty((b, cfg.num_tokens, cfg.dim), _F32)
        x[:, 1:] = self._linear(patches.reshape(b * cfg.num_patches, -1),
                                m.embed_w).reshape(b, cfg.num_patches, -1)
        x[:, 1:] += m.patch_pos
        x[:, 0] = m.cls_pos
        return x.reshape(b * cfg.num_tokens, cfg.dim)

    def _add_ln(self, x: np.ndarray, delta: np.ndarray | None, delta_b: np.ndarray | None,
                weight: np.ndarray | None = None, bias: np.ndarray | None = None) -> np.ndarray:
        """The residual add ``x += delta + delta_b`` (in place, if delta), then LayerNorm(x) as a
        new array: standardisation only unless weight/bias are given (folded into the
        consumers)."""
        cfg = self.config
        assert cfg is not None
        if self._fast is not None:
            return self._fast.add_layernorm(x, delta, np.empty_like(x), cfg.ln_eps, delta_b,
                                            weight, bias)
        if delta is not None:
            x += delta
            if delta_b is not None:
                x += delta_b
        return layer_norm(x, weight, bias, cfg.ln_eps)

    def _linear(self, x: np.ndarray, weight: _Weight, bias: np.ndarray | None = None,
                act_gelu: bool = False) -> np.ndarray:
        """``act(x @ W + bias)``: the native GEMM with bias and GELU in its epilogue, or numpy."""
        if self._fast is not None:
            assert isinstance(weight, PackedMatrix)
            return self._fast.gemm(x, weight, bias=bias, gelu=act_gelu, pool=self._pool)
        y = np.matmul(x, weight)
        if bias is not None:
            y += bias
        return gelu(y, out=y) if act_gelu else y

    def _attention(self, blk: _Block, h: np.ndarray, images: int) -> np.ndarray:
        """Self-attention of ``images`` independent token sets stacked in h = LN1(x) (images*N, D),
        before the output projection's bias (the caller adds it with the residual)."""
        cfg = self.config
        assert cfg is not None
        n, heads, hd, d = cfg.num_tokens, cfg.num_heads, cfg.head_dim, cfg.dim
        if self._fast is not None:
            # both products and the softmax in one kernel, heads over the pool
            ctx = self._fast.attention(self._linear(h, blk.qkv_w, blk.qkv_b), images, heads,
                                       pool=self._pool)
            return self._linear(ctx, blk.proj_w)
        qkv = np.matmul(h, blk.qkv_w)
        qkv[:, :d] += blk.q_b  # k has no bias (cancels in softmax), v's is in proj_b
        qkv5 = qkv.reshape(images, n, 3, heads, hd)
        # (S, heads, N, hd) strided views: BLAS takes them as is
        q = qkv5[:, :, 0].transpose(0, 2, 1, 3)
        k = qkv5[:, :, 1].transpose(0, 2, 3, 1)  # (S, heads, hd, N)
        v = qkv5[:, :, 2].transpose(0, 2, 1, 3)
        scores = np.matmul(q, k)
        softmax(scores, axis=-1, out=scores)
        # Written through a (S, heads, N, hd) view of a (S, N, heads, hd) buffer: the heads come
        # out already concatenated per token, so no transpose copy before the projection.
        ctx = np.empty((images, n, heads, hd), _F32)
        np.matmul(scores, v, out=ctx.transpose(0, 2, 1, 3))
        return self._linear(ctx.reshape(images * n, d), blk.proj_w)

    def _dense_mlp(self, blk: _Block, h: np.ndarray) -> np.ndarray:
        """fc2(GELU(fc1(h))) before fc2's bias (the caller adds it with the residual)."""
        return self._linear(self._linear(h, blk.fc1_w, blk.fc1_b, act_gelu=True), blk.fc2_w)

    def _route(self, blk: _Block, h: np.ndarray, task_ids: list[int], rows: int,
               streams: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k experts and gates per task, task-major: (T*rows, k) each."""
        cfg = self.config
        assert cfg is not None
        e, k = cfg.num_experts, cfg.top_k
        if streams == 1:  # shared stream: every task's logits from one matmul over the same tokens
            logits_all = self._linear(h, blk.router_w, blk.router_b)
            parts = [(logits_all, t * e) for t in task_ids]  # (logits, first column) per task
        else:  # stacked streams, task-major: each task's rows are one contiguous slice
            parts = [(self._linear(h[i * rows:(i + 1) * rows], blk.task_router_w[t],
                                   blk.task_router_b[t]), 0)
                     for i, t in enumerate(task_ids)]
        if self._fast is not None:
            chosen = np.empty((len(parts) * rows, k), np.int32)
            gates = np.empty((len(parts) * rows, k), _F32)
            for i, (logits, col0) in enumerate(parts):
                self._fast.moe_route(logits, col0, e, chosen[i * rows:(i + 1) * rows],
                                     gates[i * rows:(i + 1) * rows])
            return chosen, gates
        logits = np.concatenate([lg[:, c:c + e] for lg, c in parts])  # (T*rows, E), task-major
        # Top-k on the logits: softmax is strictly increasing, so the same experts as top-k on the
        # probabilities, without float32 exp ties. Gates are the chosen experts' probabilities over
        # ALL experts (not renormalised), computed without materialising the full softmax.
        chosen = top_k_experts(logits, k)
        best = np.take_along_axis(logits, chosen[:, :1], axis=-1)  # the row max
        denom = np.exp(logits - best).sum(axis=-1, keepdims=True)
        gates = np.exp(np.take_along_axis(logits, chosen, axis=-1) - best)
        gates /= denom
        return chosen, gates

    def _experts(self, blk: _Block, h: np.ndarray, chosen: np.ndarray,
                 gates: np.ndarray) -> np.ndarray:
        """Row r of the result is Σ_i gates[r, i] * expert[chosen[r, i]](h[r % len(h)]), biases
        included.

        Pairs are deduplicated on (expert, source row) and sorted by expert, so each expert runs
        one matmul pair over its gathered tokens, and a token two tasks sent to the same expert in
        the shared layer is computed once (with stacked task streams, ``r % len(h)`` is the row
        itself).
        """
        cfg = self.config
        assert cfg is not None
        if self._fast is not None:
            # the same steps, one kernel call each, experts on packed weights
            uniq_src, bounds, inverse = self._fast.moe_group(chosen, h.shape[0], cfg.num_experts)
            assert isinstance(blk.e_fc1_w, PackedMatrix) and isinstance(blk.e_fc2_w, PackedMatrix)
            out = self._fast.moe_experts(h, uniq_src, bounds, blk.e_fc1_w, blk.e_fc1_b,
                                         blk.e_fc2_w, blk.e_fc2_b, pool=self._pool)
            return self._fast.moe_combine(out, inverse, gates,
                                          np.empty((chosen.shape[0], cfg.dim), _F32))
        nsrc, k = h.shape[0], cfg.top_k
        src = np.arange(chosen.size) // k % nsrc
        key = chosen.ravel().astype(np.int64) * nsrc + src
        uniq, inverse = np.unique(key, return_inverse=True)  # sorted by expert, then token
        uniq_expert = uniq // nsrc
        tokens = h[uniq - uniq_expert * nsrc]  # (M, D) gathered, grouped by expert
        bounds = np.searchsorted(uniq_expert, np.arange(cfg.num_experts + 1)).tolist()
        active = [(e, bounds[e], bounds[e + 1]) for e in range(cfg.num_experts)
                  if bounds[e] < bounds[e + 1]]
        # fc1 feature-major (H, M): weights on the left is OpenBLAS's faster case for ~16-token
        # blocks, and expert e owns columns lo:hi so one GELU covers all experts. Each expert's
        # bias is added to its own block right after its matmul, while the block is still in cache.
        hidden = np.empty((cfg.expert_hidden, uniq.size), _F32)
        for e, lo, hi in active:
            block = np.matmul(blk.e_fc1_w[e], tokens[lo:hi].T, out=hidden[:, lo:hi])
            block += blk.e_fc1_b[e][:, None]
        gelu(hidden, out=hidden)
        # fc2 back to token-major (M, D): rows come out contiguous for the per-pair gather below.
        out = np.empty((uniq.size, cfg.dim), _F32)
        for e, lo, hi in active:
            block = np.matmul(hidden[:, lo:hi].T, blk.e_fc2_w[e], out=out[lo:hi])
            block += blk.e_fc2_b[e]
        mixed = out[inverse]  # (pair, D), pair j = (row j // k, slot j % k)
        mixed *= gates.reshape(-1, 1)
        return mixed.reshape(-1, k, cfg.dim).sum(axis=1)
