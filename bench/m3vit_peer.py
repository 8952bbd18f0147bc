# SPDX-License-Identifier: Apache-2.0
"""The benchmark's PyTorch peer: our model run the way M³ViT's own code runs it (eval, CPU, eager).

Why a separate peer and not the training model: the issue-3 benchmark compares our CPU backend
against "a PyTorch eager implementation written the way M³ViT writes it (per-expert dispatch)".
A training model is free to use fused attention or batched expert math; this module instead
reproduces, module by module and in the same order, what M³ViT's inference forward executes, so
the speed-up we report is against M³ViT as published and not against a strawman or a tuned rival.

What it mirrors (read from upstream for structure; the code here is our own):

* ``VITA-Group/M3ViT`` ``models/vision_transformer_moe.py``: ``PatchEmbed`` (16x16 stride-16
  ``Conv2d``), ``VisionTransformerMoE.forward_features`` (flatten, class token ``cat``, ``+
  pos_embed``, ``pos_drop``, every block's output collected into a tuple), ``Block`` (pre-norm,
  ``drop_path`` identities, ``mlp_drop`` on the MoE branch), ``Attention`` (timm 0.4 layout: one
  ``qkv`` linear, ``reshape(B, N, 3, H, C/H).permute(2, 0, 3, 1, 4)``, ``(q @ kᵀ) * scale``,
  ``softmax``, ``(attn @ v).transpose(1, 2).reshape``, ``proj``) and ``Mlp`` (fc1, GELU, fc2).
* ``models/custom_moe_layer.py`` ``FMoETransformerMLP`` with ``multi_gate`` (the SPEC's one router
  per task): reshape to tokens, ``gate[task_id](x)``, fastmoe's dispatch, ``view(-1, k, D)`` and
  ``torch.bmm(gate_score, expert_outputs)`` to combine; ``_Expert`` = ``htoh4`` → GELU (+dropout)
  → ``h4toh``.
* ``models/gate_funs/noisy_gate_vmoe.py`` ``NoisyGate_VMoE`` (M³ViT's gate type for these
  configs): ``logits = x @ w_gate``, noise ``randn_like(logits) * noise_std / E * training`` (so
  zero in eval, but drawn, as upstream does), ``softmax`` over *all* experts, ``topk(k + 1)``, keep
  the first k probabilities unrenormalised, and the dense ``scatter`` of gates it builds for its
  balance loss even in eval.
* ``laekov/fastmoe`` (the library M³ViT's MoE layer is built on), ``fmoe/layers.py``
  ``_fmoe_general_global_forward`` and ``fmoe/functions.py`` at world size 1: ``expert_count``,
  ``cumsum``, ``assign_pos`` (pair positions grouped by expert), ``MOEScatter`` =
  ``index_select(x, 0, pos // k)``, ``MOEGather`` = ``zeros(...).index_copy_(0, pos, y)``; and
  ``fmoe/linear.py`` + ``cuda/parallel_linear.cu`` ``MOELinear``: output initialised with
  ``bias.repeat_interleave(expert_count)`` then ONE GEMM per expert with a non-empty segment,
  accumulated into it. fastmoe's kernels are CUDA-only; here each is the equivalent torch CPU op,
  so the peer runs the same per-expert dispatch on the same device as our backend.
* The final LayerNorm is M³ViT's ``VisionTransformerUpHead.norm`` (``x[:, 1:]`` then ``norm``);
  the backbone itself has none. Inference runs under ``torch.no_grad()`` with ``model.eval()``,
  as M³ViT's ``evaluation/evaluate_utils.py`` does; ``both`` tasks are two full backbone passes,
  as ``models.py`` ``MultiTaskModel.forward`` does with ``multi_gate``.

Deliberately *not* mirrored: training-only branches (``regu_sem``, ``sem_force``, expert pruning,
``w_noise``, task-specific gate inputs), none of which runs in M³ViT's multi-gate eval forward.
Ties in the gate follow ``torch.topk`` (ours: lower expert id); with continuous weights they do
not occur, and the benchmark reports routing agreement.

Parameter names follow M³ViT's state dict (``backbone.blocks.1.mlp.experts.htoh4.weight``,
``backbone.blocks.1.mlp.gate.0.w_gate``, ...); ``load_model_weights`` maps our canonical names onto
them (the inverse of ``edgemoe_ros/model/importers.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from edgemoe_ros.model.config import ModelConfig
from edgemoe_ros.model.layers import normalize_pixels
from edgemoe_ros.model.weights import ModelWeights

#: NoisyGate_VMoE's default ``noise_std`` (``vmoe_noisy_std`` in M³ViT's training script).
VMOE_NOISE_STD = 1.0

GateHook = Callable[[torch.Tensor, torch.Tensor, None], None]


# ----------------------------------------------------------------------------------------------
# timm-0.4-style ViT parts, as M³ViT's vision_transformer_moe.py defines them
# ----------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv linear, scale applied to the score matrix."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = (
            self.qkv(x)
            .reshape(b, n, 3, self.num_heads, c // self.num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q @ k.transpose(-2, -1)) * self.scale
        scores = self.attn_drop(scores.softmax(dim=-1))
        out = (scores @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    """Dense block MLP: fc1 → GELU → dropout → fc2 → dropout."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


# ----------------------------------------------------------------------------------------------
# The gate (NoisyGate_VMoE) and fastmoe's single-worker dispatch
# ----------------------------------------------------------------------------------------------
class NoisyTopKGate(nn.Module):
    """One task's router: softmax over all experts, top-k probabilities kept unrenormalised."""

    def __init__(
        self, dim: int, num_experts: int, top_k: int, noise_std: float = VMOE_NOISE_STD
    ) -> None:
        super().__init__()
        self.w_gate = nn.Parameter(torch.zeros(dim, num_experts))
        self.num_experts = num_experts
        self.top_k = top_k
        self.noise_std = noise_std
        self.softmax = nn.Softmax(dim=1)

    def forward(self, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead = list(inp.shape[:-1])
        inp = inp.reshape(-1, inp.shape[-1])
        clean_logits = inp @ self.w_gate
        noise_stddev = self.noise_std / self.num_experts * self.training  # 0 in eval
        logits = clean_logits + torch.randn_like(clean_logits) * noise_stddev
        probs = self.softmax(logits)
        top_vals, top_idx = probs.topk(min(self.top_k + 1, self.num_experts), dim=1)
        top_k_idx = top_idx[:, :self.top_k]
        top_k_gates = top_vals[:, :self.top_k]
        # Dense (tokens, E) gate matrix: upstream builds it for the balance loss in every mode.
        self.dense_gates = torch.zeros_like(probs).scatter(1, top_k_idx, top_k_gates)
        return (top_k_idx.reshape(lead + [self.top_k]).contiguous(),
                top_k_gates.reshape(lead + [self.top_k]).contiguous())


def prepare_forward(
    gate_idx: torch.Tensor, num_experts: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """fastmoe ``prepare_forward`` at world size 1: per-expert counts and each pair's slot.

    ``pos`` lists the flattened (token, slot) pair indices grouped by expert, i.e. where
    ``assign_pos`` writes them; its CUDA kernel fills each expert's group in atomic order, a stable
    sort gives the same grouping deterministically.
    """
    flat = gate_idx.reshape(-1)
    expert_count = torch.bincount(flat, minlength=num_experts)  # fmoe_cuda.expert_count
    pos_size = int(torch.cumsum(expert_count, dim=0)[-1].item())
    pos = torch.argsort(flat, stable=True)  # fmoe_cuda.assign_pos
    if pos.numel() != pos_size:
        raise RuntimeError(f"dispatch: {pos.numel()} pairs but expert counts sum to {pos_size}")
    fwd_batch_size = int(expert_count.sum().item())
    return pos, expert_count, fwd_batch_size


class MoELinear(nn.Module):
    """fastmoe ``FMoELinear``: stacked (E, out, in) weights, one GEMM per non-empty expert
    segment."""

    def __init__(self, num_experts: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_experts, d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(num_experts, d_out))

    def forward(self, inp: torch.Tensor, expert_count: torch.Tensor) -> torch.Tensor:
        # beta=1: the GEMM accumulates onto bias
        out = self.bias.repeat_interleave(expert_count, dim=0)
        ptr = 0
        for e, c in enumerate(expert_count.tolist()):  # the CUDA loop reads the counts on the host
            if c == 0:
                continue
            out[ptr:ptr + c].addmm_(inp[ptr:ptr + c], self.weight[e].t())
            ptr += c
        return out


class Experts(nn.Module):
    """fastmoe-style fused experts (M³ViT ``_Expert``): htoh4 → GELU → dropout → h4toh."""

    def __init__(self, num_experts: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.htoh4 = MoELinear(num_experts, dim, hidden)
        self.h4toh = MoELinear(num_experts, hidden, dim)
        self.activation = nn.Sequential(nn.GELU(), nn.Dropout(0.0))

    def forward(self, inp: torch.Tensor, expert_count: torch.Tensor) -> torch.Tensor:
        return self.h4toh(self.activation(self.htoh4(inp, expert_count)), expert_count)


class MoEMlp(nn.Module):
    """M³ViT ``FMoETransformerMLP`` with one gate per task (``multi_gate``), world size 1."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.d_model = cfg.dim
        self.num_experts = cfg.num_experts
        self.top_k = cfg.top_k
        self.experts = Experts(cfg.num_experts, cfg.dim, cfg.expert_hidden)
        self.gate = nn.ModuleList(
            NoisyTopKGate(cfg.dim, cfg.num_experts, cfg.top_k) for _ in cfg.tasks
        )
        #: Called as ``hook(top_k_idx, top_k_gates, None)`` after gating, like FMoE's
        #: ``gate_hook``.
        self.gate_hook: GateHook | None = None

    def forward(self, inp: torch.Tensor, task_id: int) -> torch.Tensor:
        original_shape = inp.shape
        inp = inp.reshape(-1, self.d_model)
        gate_top_k_idx, gate_score = self.gate[task_id](inp)
        if self.gate_hook is not None:
            self.gate_hook(gate_top_k_idx, gate_score, None)
        # _fmoe_general_global_forward: scatter pairs to expert-contiguous rows, experts, gather
        # back.
        pos, expert_count, _ = prepare_forward(gate_top_k_idx, self.num_experts)
        expert_in = torch.index_select(inp, 0, torch.div(pos, self.top_k, rounding_mode="floor"))
        expert_out = self.experts(expert_in, expert_count)
        pairs = torch.zeros(
            inp.shape[0] * self.top_k, expert_out.shape[-1], dtype=expert_out.dtype
        )
        pairs.index_copy_(0, pos, expert_out)
        pairs = pairs.view(-1, self.top_k, expert_out.shape[-1])
        mixed = torch.bmm(gate_score.view(-1, 1, self.top_k), pairs).reshape(-1, pairs.shape[-1])
        return mixed.reshape(original_shape)


class Block(nn.Module):
    """Pre-norm transformer block; the MLP is dense or task-routed MoE."""

    def __init__(self, cfg: ModelConfig, moe: bool) -> None:
        super().__init__()
        self.moe = moe
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.attn = Attention(cfg.dim, cfg.num_heads)
        self.drop_path = nn.Identity()  # drop_path_rate 0 in M³ViT's configs
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        if moe:
            self.mlp: nn.Module = MoEMlp(cfg)
            self.mlp_drop = nn.Dropout(0.0)
        else:
            self.mlp = Mlp(cfg.dim, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        if not self.moe:
            return x + self.drop_path(self.mlp(self.norm2(x)))
        return x + self.drop_path(self.mlp_drop(self.mlp(self.norm2(x), task_id)))


class PatchEmbed(nn.Module):
    """16x16 stride-16 convolution; the caller flattens the (B, D, gh, gw) map to tokens."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.img_size = (cfg.img_h, cfg.img_w)
        self.proj = nn.Conv2d(cfg.in_chans, cfg.dim, kernel_size=cfg.patch, stride=cfg.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != self.img_size:
            raise ValueError(
                f"input size {tuple(x.shape[2:])} does not match the model {self.img_size}"
            )
        return self.proj(x)


class VisionTransformerMoE(nn.Module):
    """The backbone: conv patch embedding, class token, position embedding, blocks; no final
    norm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.dim))
        self.pos_drop = nn.Dropout(0.0)
        self.blocks = nn.Sequential(*(Block(cfg, cfg.is_moe(i)) for i in range(cfg.depth)))

    def forward(self, x: torch.Tensor, task_id: int) -> tuple[torch.Tensor, ...]:
        b = x.shape[0]
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x = self.pos_drop(x + self.pos_embed)
        outs = []
        for blk in self.blocks:
            x = blk(x, task_id) if blk.moe else blk(x)
            outs.append(x)  # M³ViT returns every block's output (out_indices = all blocks)
        return tuple(outs)


class M3ViTPeer(nn.Module):
    """Backbone plus the up-head's LayerNorm: image tensor + task id → (B, num_patches, dim)
    features."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = VisionTransformerMoE(cfg)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)

    def forward(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        last = self.backbone(x, task_id)[-1]
        return self.norm(last[:, 1:])

    def moe_layers(self) -> list[MoEMlp]:
        return [blk.mlp for blk in self.backbone.blocks if blk.moe]


# ----------------------------------------------------------------------------------------------
# Weights, input, and one-call helpers for the benchmark and the test
# ----------------------------------------------------------------------------------------------
def m3vit_state_dict(weights: ModelWeights) -> dict[str, torch.Tensor]:
    """Our canonical tensors under M³ViT's state-dict names (float32, M³ViT's shapes)."""
    cfg = weights.config
    w = weights.tensors
    sd = {
        "backbone.patch_embed.proj.weight": w["patch_embed.weight"],
        "backbone.patch_embed.proj.bias": w["patch_embed.bias"],
        "backbone.cls_token": w["cls_token"].reshape(1, 1, cfg.dim),
        "backbone.pos_embed": w["pos_embed"].reshape(1, cfg.num_tokens, cfg.dim),
        "norm.weight": w["norm.weight"],
        "norm.bias": w["norm.bias"],
    }
    for i in range(cfg.depth):
        ours, theirs = f"blocks.{i}.", f"backbone.blocks.{i}."
        for name in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.qkv.weight",
                     "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias"):
            sd[theirs + name] = w[ours + name]
        if cfg.is_moe(i):
            sd[theirs + "mlp.experts.htoh4.weight"] = w[ours + "moe.fc1.weight"]
            sd[theirs + "mlp.experts.htoh4.bias"] = w[ours + "moe.fc1.bias"]
            sd[theirs + "mlp.experts.h4toh.weight"] = w[ours + "moe.fc2.weight"]
            sd[theirs + "mlp.experts.h4toh.bias"] = w[ours + "moe.fc2.bias"]
            for t in range(len(cfg.tasks)):
                sd[f"{theirs}mlp.gate.{t}.w_gate"] = w[ours + "moe.router.weight"][t]
        else:
            for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
                sd[theirs + "mlp." + name] = w[ours + "mlp." + name]
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()}


def build_peer(weights: ModelWeights) -> M3ViTPeer:
    """An eval-mode peer holding ``weights`` (strict load: every parameter must be filled)."""
    peer = M3ViTPeer(weights.config)
    peer.load_state_dict(m3vit_state_dict(weights), strict=True)
    return peer.eval()


def images_to_input(images: np.ndarray, cfg: ModelConfig) -> torch.Tensor:
    """uint8 (B, H, W, 3) RGB → normalised float32 (B, 3, H, W), the tensor M³ViT's loader
    yields."""
    pixels = normalize_pixels(images, cfg, np.float32)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))


def run_tasks(
    peer: M3ViTPeer, images: np.ndarray, tasks: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Features per task, one full backbone pass per task (M³ViT's multi-gate inference)."""
    cfg = peer.config
    with torch.no_grad():
        x = images_to_input(images, cfg)
        return {t: peer(x, cfg.task_id(t)) for t in tasks}


def run_with_routing(
    peer: M3ViTPeer, images: np.ndarray, task: str
) -> tuple[np.ndarray, np.ndarray]:
    """Features (B, P, D) and routing (B, moe_layers, N, k) int32 of one task, via the gate
    hooks."""
    cfg = peer.config
    recorded: list[torch.Tensor] = []
    layers = peer.moe_layers()
    for layer in layers:
        layer.gate_hook = lambda idx, _score, _none: recorded.append(idx.clone())
    try:
        feats = run_tasks(peer, images, (task,))[task].numpy()
    finally:
        for layer in layers:
            layer.gate_hook = None
    b, n, k = images.shape[0], cfg.num_tokens, cfg.top_k
    if recorded:
        routing = (
            torch.stack([r.reshape(b, n, k) for r in recorded], dim=1).numpy().astype(np.int32)
        )
    else:
        routing = np.zeros((b, 0, n, k), np.int32)
    return feats, routing
