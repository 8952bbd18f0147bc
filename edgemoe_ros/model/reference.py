# SPDX-License-Identifier: Apache-2.0
"""Readable float64 forward of the backbone: the model math of docs/ARCHITECTURE.md, in code.

This is the specification every backend is tested against, so it favours clarity over speed:
one function per step, straight-line numpy, float64 throughout, exact erf GELU, MoE written as
"for each expert, the tokens that chose it". It runs one task per call; sharing work between
tasks is an optimisation for the fast backends, not part of the math.

With ``taps=True`` the forward also returns every intermediate activation under a stable name,
so the fixed-point accuracy report can say *where* an emulated datapath drifts:

==============================  ================  ===========================================
name                            shape             value
==============================  ================  ===========================================
``embed``                       (B, N, D)         patch embedding + class token + pos embed
``blocks.{i}.norm1``            (B, N, D)         LN1(x)
``blocks.{i}.qkv``              (B, N, 3D)        qkv linear output
``blocks.{i}.attn``             (B, heads, N, N)  softmax(q k^T / sqrt(head_dim))
``blocks.{i}.attn_out``         (B, N, D)         output projection (before the residual)
``blocks.{i}.resid1``           (B, N, D)         x after the attention residual
``blocks.{i}.norm2``            (B, N, D)         LN2(x)
``blocks.{i}.mlp_hidden``       (B, N, hidden)    GELU(fc1) of the dense MLP (dense blocks only)
``blocks.{i}.router_logits``    (B, N, E)         LN2(x) @ W_task (MoE blocks only)
``blocks.{i}.router_probs``     (B, N, E)         softmax of the logits (MoE blocks only)
``blocks.{i}.mlp_out``          (B, N, D)         dense MLP or gated expert mixture
``blocks.{i}.out``              (B, N, D)         block output
``norm``                        (B, N, D)         final LayerNorm, class token included
``features``                    (B, P, D)         the backbone output (class token dropped)
==============================  ================  ===========================================

N = num_tokens (class token first), P = num_patches, D = dim, E = num_experts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import ModelConfig
from .layers import gelu, layer_norm, normalize_pixels, patchify, softmax, top_k_experts
from .weights import ModelWeights


@dataclass
class ReferenceOutput:
    """Result of one reference forward for one task on a batch of B images.

    features: (B, num_patches, dim) float64. routing: (B, num_moe_layers, num_tokens, top_k) int32,
    best expert first. gates: same shape, float64 softmax probability of each chosen expert.
    taps: intermediate activations (see the module docstring); empty unless requested.
    """

    features: np.ndarray
    routing: np.ndarray
    gates: np.ndarray
    taps: dict[str, np.ndarray] = field(default_factory=dict)


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """PyTorch ``nn.Linear``: ``weight`` is (out, in)."""
    return x @ weight.T + bias


def embed(w: ModelWeights, cfg: ModelConfig, images: np.ndarray) -> np.ndarray:
    """uint8 images (B, H, W, 3) → tokens (B, N, D): normalise, patch-embed, class token, pos
    embed."""
    pixels = normalize_pixels(images, cfg, np.float64)
    patches = patchify(pixels, cfg.patch)  # (B, P, C*p*p), (c, ky, kx) order = conv weight order
    conv = w["patch_embed.weight"].reshape(cfg.dim, -1)
    tokens = linear(patches, conv, w["patch_embed.bias"])
    cls = np.broadcast_to(w["cls_token"], (images.shape[0], 1, cfg.dim))
    return np.concatenate([cls, tokens], axis=1) + w["pos_embed"]


def attention(w: ModelWeights, cfg: ModelConfig, prefix: str, x: np.ndarray,
              taps: dict[str, np.ndarray] | None) -> np.ndarray:
    """Multi-head self-attention on LN1'd tokens (B, N, D), timm layout; returns the projection."""
    b, n, d = x.shape
    qkv = linear(x, w[prefix + "qkv.weight"], w[prefix + "qkv.bias"])
    q, k, v = qkv.reshape(b, n, 3, cfg.num_heads, cfg.head_dim).transpose(2, 0, 3, 1, 4)
    probs = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(cfg.head_dim), axis=-1)
    heads = (probs @ v).transpose(0, 2, 1, 3).reshape(b, n, d)  # concat heads
    if taps is not None:
        taps[prefix[:-len("attn.")] + "qkv"] = qkv
        taps[prefix[:-len("attn.")] + "attn"] = probs
    return linear(heads, w[prefix + "proj.weight"], w[prefix + "proj.bias"])


def dense_mlp(w: ModelWeights, prefix: str, x: np.ndarray,
              taps: dict[str, np.ndarray] | None) -> np.ndarray:
    """fc2(GELU(fc1(x)))."""
    hidden = gelu(linear(x, w[prefix + "fc1.weight"], w[prefix + "fc1.bias"]))
    if taps is not None:
        taps[prefix[:-len("mlp.")] + "mlp_hidden"] = hidden
    return linear(hidden, w[prefix + "fc2.weight"], w[prefix + "fc2.bias"])


def moe_mlp(w: ModelWeights, cfg: ModelConfig, prefix: str, task_id: int, x: np.ndarray,
            taps: dict[str, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Task-routed Mixture of Experts on LN2'd tokens (B, N, D).

    Router logits = x @ W_task; probabilities = softmax over all experts; each token keeps its
    top_k experts (ties → lower id) and mixes their outputs weighted by the *unrenormalised*
    probabilities (M3ViT). Returns (output (B, N, D), chosen (B, N, k) int32, gates (B, N, k)).
    """
    logits = x @ w[prefix + "router.weight"][task_id]
    probs = softmax(logits, axis=-1)
    chosen = top_k_experts(probs, cfg.top_k)
    gates = np.take_along_axis(probs, chosen, axis=-1)
    fc1_w, fc1_b = w[prefix + "fc1.weight"], w[prefix + "fc1.bias"]
    fc2_w, fc2_b = w[prefix + "fc2.weight"], w[prefix + "fc2.bias"]
    out = np.zeros_like(x)
    for e in range(cfg.num_experts):
        img, tok, slot = np.nonzero(chosen == e)  # every token that picked expert e
        if img.size == 0:
            continue
        hidden = gelu(linear(x[img, tok], fc1_w[e], fc1_b[e]))
        expert_out = linear(hidden, fc2_w[e], fc2_b[e])
        out[img, tok] += gates[img, tok, slot][:, None] * expert_out
    if taps is not None:
        taps[prefix[:-len("moe.")] + "router_logits"] = logits
        taps[prefix[:-len("moe.")] + "router_probs"] = probs
    return out, chosen, gates


def forward(weights: ModelWeights, images: np.ndarray, task: str, *,
            taps: bool = False) -> ReferenceOutput:
    """Backbone forward for one task. ``images``: (B, img_h, img_w, 3) uint8 RGB at model size.

    Weights are used as float64; pass ``weights.astype(np.float64)`` to avoid a cast per call.
    """
    cfg = weights.config
    if (images.ndim != 4 or images.shape[1:] != (cfg.img_h, cfg.img_w, 3)
            or images.dtype != np.uint8):
        raise ValueError(f"reference forward: images must be uint8 (B, {cfg.img_h}, {cfg.img_w}, "
                         f"3), got {images.dtype} {images.shape}")
    task_id = cfg.task_id(task)
    w = (weights if all(v.dtype == np.float64 for v in weights.tensors.values())
         else weights.astype(np.float64))
    tapped: dict[str, np.ndarray] | None = {} if taps else None

    x = embed(w, cfg, images)
    if tapped is not None:
        tapped["embed"] = x
    routing, gates = [], []
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        h = layer_norm(x, w[p + "norm1.weight"], w[p + "norm1.bias"], cfg.ln_eps)
        attn_out = attention(w, cfg, p + "attn.", h, tapped)
        x = x + attn_out
        if tapped is not None:
            tapped.update({p + "norm1": h, p + "attn_out": attn_out, p + "resid1": x})
        h = layer_norm(x, w[p + "norm2.weight"], w[p + "norm2.bias"], cfg.ln_eps)
        if cfg.is_moe(i):
            mlp_out, chosen, gate = moe_mlp(w, cfg, p + "moe.", task_id, h, tapped)
            routing.append(chosen)
            gates.append(gate)
        else:
            mlp_out = dense_mlp(w, p + "mlp.", h, tapped)
        x = x + mlp_out
        if tapped is not None:
            tapped.update({p + "norm2": h, p + "mlp_out": mlp_out, p + "out": x})
    normed = layer_norm(x, w["norm.weight"], w["norm.bias"], cfg.ln_eps)
    features = normed[:, 1:]
    if tapped is not None:
        tapped.update({"norm": normed, "features": features})

    b, n, k = images.shape[0], cfg.num_tokens, cfg.top_k
    empty = (b, 0, n, k)
    return ReferenceOutput(
        features=features,
        routing=(np.stack(routing, axis=1).astype(np.int32) if routing
                 else np.zeros(empty, np.int32)),
        gates=np.stack(gates, axis=1) if gates else np.zeros(empty),
        taps=tapped or {},
    )
