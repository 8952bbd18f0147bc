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

What is left (measured with ``bench/bench_engine.py``, SPEC model, one thread): about two thirds of
a single-task run is the matrix products themselves (its "BLAS floor" line); most of the rest is
numpy element-wise passes that cannot be fused from Python — GELU alone is ~20 passes over each
hidden matrix (~15 % of the run), then softmax and LayerNorm. Going meaningfully lower needs fused
native kernels, not more numpy rearrangement.
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

log = logging.getLogger(__name__)

_F32 = np.float32


def _t(a: np.ndarray) -> np.ndarray:
    """Contiguous float32 transpose of the last two axes: PyTorch (out, in) → matmul-ready (in, out)."""
    return np.ascontiguousarray(np.swapaxes(a, -1, -2), dtype=_F32)


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=_F32)


@dataclass(frozen=True)
class _Block:
    """One transformer block's weights in run-ready float32 layout.

    LayerNorm affines are folded into the linear layers that consume them (LN1 into qkv, LN2 into
    the dense fc1, the routers and the experts' fc1), so ``run`` only standardises.
    Token-major linears are (in, out). Expert fc1 stays (out, in) and runs weights-on-the-left
    (``W @ x.T``), which OpenBLAS does ~30 % faster than ``x @ W.T`` for ~16-token matrices; fc2
    turns back to token-major so the gated mix gathers contiguous rows (measured ~2 % overall).
    """

    qkv_w: np.ndarray  # (D, 3D), LN1 folded in, q columns pre-scaled by 1/sqrt(head_dim)
    q_b: np.ndarray  # (D,): the q bias; k's cancels in softmax, v's is folded into proj_b
    proj_w: np.ndarray
    proj_b: np.ndarray  # (D,): b_o + W_o b_v
    # dense blocks
    fc1_w: np.ndarray | None = None
    fc1_b: np.ndarray | None = None
    fc2_w: np.ndarray | None = None
    fc2_b: np.ndarray | None = None
    # MoE blocks
    router_w: np.ndarray | None = None  # (D, num_tasks * E): all tasks' routers side by side
    router_b: np.ndarray | None = None  # (num_tasks * E,): LN2 shift through the router
    e_fc1_w: np.ndarray | None = None  # (E, H, D)
    e_fc1_b: np.ndarray | None = None  # (E, H, 1): a column to add to the feature-major hidden block
    e_fc2_w: np.ndarray | None = None  # (E, H, D)
    e_fc2_b: np.ndarray | None = None  # (E, D)

    @property
    def is_moe(self) -> bool:
        return self.router_w is not None


@dataclass(frozen=True)
class _Prepared:
    config: ModelConfig
    embed_w: np.ndarray  # (C*p*p, D), pixel normalisation folded in
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


def _prepare(weights: ModelWeights) -> _Prepared:
    """All layout work, done once per model (in float64, rounded to float32 once at the end)."""
    cfg = weights.config
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
        proj_b = w[p + "attn.proj.bias"] + proj @ qkv_b[2 * d:]  # value bias through the projection
        common = dict(qkv_w=_t(qkv_w), q_b=_c(qkv_b[:d]), proj_w=_t(proj), proj_b=_c(proj_b))
        if cfg.is_moe(i):
            router = np.concatenate(list(w[p + "moe.router.weight"]), axis=1)  # (T, D, E) → (D, T*E)
            router_wt, router_b = _fold_ln(router.T, np.zeros(router.shape[1]), *ln2)
            fc1_w, fc1_b = _fold_ln(w[p + "moe.fc1.weight"], w[p + "moe.fc1.bias"], *ln2)
            blocks.append(_Block(
                **common,
                router_w=_t(router_wt), router_b=_c(router_b),
                e_fc1_w=_c(fc1_w), e_fc1_b=_c(fc1_b[:, :, None]),
                e_fc2_w=_t(w[p + "moe.fc2.weight"]), e_fc2_b=_c(w[p + "moe.fc2.bias"]),
            ))
        else:
            fc1_w, fc1_b = _fold_ln(w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"], *ln2)
            blocks.append(_Block(
                **common,
                fc1_w=_t(fc1_w), fc1_b=_c(fc1_b),
                fc2_w=_t(w[p + "mlp.fc2.weight"]), fc2_b=_c(w[p + "mlp.fc2.bias"]),
            ))
    return _Prepared(
        config=cfg, embed_w=_t(embed_w),
        cls_pos=_c(w["cls_token"][0] + pos[0]), patch_pos=_c(pos[1:] + embed_b),
        blocks=tuple(blocks), norm_w=_c(w["norm.weight"]), norm_b=_c(w["norm.bias"]),
    )


def _linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    y = np.matmul(x, weight, out=out)
    y += bias
    return y


class CpuBackend(Backend):
    """Registry name ``cpu``. Options: none (BLAS threads follow OPENBLAS_NUM_THREADS / OMP_NUM_THREADS)."""

    name = "cpu"

    def __init__(self) -> None:
        super().__init__()
        self._m: _Prepared | None = None

    def load(self, weights: ModelWeights) -> None:
        """Validate and re-lay out the weights. On failure the previously loaded model stays usable."""
        weights.validate()
        prepared = _prepare(weights)
        self._m, self.config = prepared, weights.config
        log.debug("cpu backend: loaded %s", weights.source)

    def close(self) -> None:
        self._m = None
        self.config = None

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
        chosen_per_layer: list[np.ndarray] = []  # each (T*B*N, k), task-major
        for blk in m.blocks:
            x += self._attention(blk, x, b * streams)
            h = layer_norm(x, None, None, cfg.ln_eps)  # affine folded into the consumers
            if not blk.is_moe:
                x += self._dense_mlp(blk, h)
                continue
            chosen, gates, src = self._route(blk, h, task_ids, rows, streams)
            mix = self._experts(blk, h, src, chosen.ravel(), gates.ravel(), cfg.top_k)
            if streams == 1 and len(tasks) > 1:  # the fork: one shared stream becomes T streams
                x = np.tile(x, (len(tasks), 1))
                streams = len(tasks)
            x += mix
            chosen_per_layer.append(chosen)
        if streams != len(tasks):  # a model without MoE layers: all tasks share one output
            x = np.tile(x, (len(tasks), 1))
        normed = layer_norm(x, m.norm_w, m.norm_b, cfg.ln_eps).reshape(len(tasks), b, n, cfg.dim)

        layers, k = len(chosen_per_layer), cfg.top_k
        chosen_all = (np.stack(chosen_per_layer).reshape(layers, len(tasks), b, n, k)
                      if layers else np.zeros((0, len(tasks), b, n, k), np.int32))
        features, routing, counts = {}, {}, {}
        for ti, task in enumerate(tasks):
            features[task] = np.ascontiguousarray(normed[ti, :, 1:])
            routing[task] = np.ascontiguousarray(chosen_all[:, ti].transpose(1, 0, 2, 3))
            counts[task] = np.zeros((layers, cfg.num_experts), np.int64)
            for layer in range(layers):
                counts[task][layer] = np.bincount(chosen_all[layer, ti].ravel(), minlength=cfg.num_experts)
        return BackboneResult(features, routing, counts)

    # ----- steps -----
    @staticmethod
    def _embed(m: _Prepared, images: np.ndarray) -> np.ndarray:
        cfg = m.config
        b = images.shape[0]
        patches = patchify(images, cfg.patch).astype(_F32)  # uint8 in; normalisation is in embed_w
        x = np.empty((b, cfg.num_tokens, cfg.dim), _F32)
        np.matmul(patches, m.embed_w, out=x[:, 1:])
        x[:, 1:] += m.patch_pos
        x[:, 0] = m.cls_pos
        return x.reshape(b * cfg.num_tokens, cfg.dim)

    def _attention(self, blk: _Block, x: np.ndarray, images: int) -> np.ndarray:
        """Self-attention of ``images`` independent token sets stacked in x (images*N, D)."""
        cfg = self.config
        assert cfg is not None
        n, heads, hd, d = cfg.num_tokens, cfg.num_heads, cfg.head_dim, cfg.dim
        h = layer_norm(x, None, None, cfg.ln_eps)
        qkv = np.matmul(h, blk.qkv_w)
        qkv[:, :d] += blk.q_b  # k has no bias (cancels in softmax), v's is in proj_b
        qkv5 = qkv.reshape(images, n, 3, heads, hd)
        q = qkv5[:, :, 0].transpose(0, 2, 1, 3)  # (S, heads, N, hd) strided views: BLAS takes them as is
        k = qkv5[:, :, 1].transpose(0, 2, 3, 1)  # (S, heads, hd, N)
        v = qkv5[:, :, 2].transpose(0, 2, 1, 3)
        scores = np.matmul(q, k)
        softmax(scores, axis=-1, out=scores)
        # Written through a (S, heads, N, hd) view of a (S, N, heads, hd) buffer: the heads come out
        # already concatenated per token, so no transpose copy before the projection.
        ctx = np.empty((images, n, heads, hd), _F32)
        np.matmul(scores, v, out=ctx.transpose(0, 2, 1, 3))
        return _linear(ctx.reshape(images * n, d), blk.proj_w, blk.proj_b)

    def _dense_mlp(self, blk: _Block, h: np.ndarray) -> np.ndarray:
        hidden = _linear(h, blk.fc1_w, blk.fc1_b)
        gelu(hidden, out=hidden)
        return _linear(hidden, blk.fc2_w, blk.fc2_b)

    def _route(self, blk: _Block, h: np.ndarray, task_ids: list[int], rows: int,
               streams: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k experts and gates per task, task-major: (T*rows, k) each, plus the source row of h
        for every (token, slot) pair (repeated rows when tasks still share one stream)."""
        cfg = self.config
        assert cfg is not None
        e, k = cfg.num_experts, cfg.top_k
        if streams == 1:  # shared stream: every task's logits from one matmul over the same tokens
            logits_all = _linear(h, blk.router_w, blk.router_b)
            parts = [logits_all[:, t * e:(t + 1) * e] for t in task_ids]
            src = np.tile(np.repeat(np.arange(rows), k), len(task_ids))
        else:  # stacked streams, task-major: each task's rows are one contiguous slice
            parts = [_linear(h[i * rows:(i + 1) * rows], blk.router_w[:, t * e:(t + 1) * e],
                             blk.router_b[t * e:(t + 1) * e]) for i, t in enumerate(task_ids)]
            src = np.repeat(np.arange(len(task_ids) * rows), k)
        logits = np.concatenate(parts) if len(parts) > 1 else parts[0]  # (T*rows, E), task-major
        # Top-k on the logits: softmax is strictly increasing, so the same experts as top-k on the
        # probabilities, without float32 exp ties. Gates are the chosen experts' probabilities over
        # ALL experts (not renormalised), computed without materialising the full softmax.
        chosen = top_k_experts(logits, k)
        best = np.take_along_axis(logits, chosen[:, :1], axis=-1)  # the row max
        denom = np.exp(logits - best).sum(axis=-1, keepdims=True)
        gates = np.exp(np.take_along_axis(logits, chosen, axis=-1) - best)
        gates /= denom
        return chosen, gates, src

    def _experts(self, blk: _Block, h: np.ndarray, src: np.ndarray, experts: np.ndarray,
                 gates: np.ndarray, k: int) -> np.ndarray:
        """Pair j (output row j // k) adds gates[j] * expert[experts[j]](h[src[j]]).

        Pairs are deduplicated on (expert, source row) and sorted by expert, so each expert runs one
        matmul pair over its gathered tokens, and a token two tasks sent to the same expert in the
        shared layer is computed once. Each expert's bias is added to its own block right after its
        matmul, while the block is still in cache (a per-column bias gather costed more).
        """
        cfg = self.config
        assert cfg is not None
        nsrc = h.shape[0]
        key = experts.astype(np.int64) * nsrc + src
        uniq, inverse = np.unique(key, return_inverse=True)  # sorted by expert, then token
        uniq_expert = uniq // nsrc
        tokens = h[uniq - uniq_expert * nsrc]  # (M, D) gathered, grouped by expert
        bounds = np.searchsorted(uniq_expert, np.arange(cfg.num_experts + 1)).tolist()
        active = [(e, bounds[e], bounds[e + 1]) for e in range(cfg.num_experts) if bounds[e] < bounds[e + 1]]
        # fc1 feature-major (H, M): weights on the left is OpenBLAS's faster case for ~16-token
        # blocks, and expert e owns columns lo:hi so one GELU covers all experts.
        hidden = np.empty((cfg.expert_hidden, uniq.size), _F32)
        for e, lo, hi in active:
            block = np.matmul(blk.e_fc1_w[e], tokens[lo:hi].T, out=hidden[:, lo:hi])
            block += blk.e_fc1_b[e]
        gelu(hidden, out=hidden)
        # fc2 back to token-major (M, D): rows come out contiguous for the per-pair gather below.
        out = np.empty((uniq.size, cfg.dim), _F32)
        for e, lo, hi in active:
            block = np.matmul(hidden[:, lo:hi].T, blk.e_fc2_w[e], out=out[lo:hi])
            block += blk.e_fc2_b[e]
        mixed = out[inverse]  # (pair, D), pair j = (token j // k, slot j % k)
        mixed *= gates.reshape(-1, 1)
        return mixed.reshape(-1, k, cfg.dim).sum(axis=1)
