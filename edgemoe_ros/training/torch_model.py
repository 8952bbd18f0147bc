# SPDX-License-Identifier: Apache-2.0
"""PyTorch twin of the SPEC §2 model, for training and as the PyTorch peer in benchmarks.

Parameter names and shapes are exactly ``model.weights.expected_shapes(cfg)``, so a trained
module exports to our safetensors format (and back) with no renaming table to keep in sync. The
math is docs/ARCHITECTURE.md "Model math"; the MoE is written the way M3ViT writes it: per-task
gate ``x @ w_gate[task]``, softmax over all experts, top-k *without* renormalisation, and
per-expert dispatch (gather the tokens that chose an expert, run it once, scatter-add back), plus
the Shazeer/M3ViT load-balancing loss (cv² of importance + cv² of load).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..model.config import LIGHT_HEADS, PIXEL_HEADS, PYRAMID_COORDS, ModelConfig
from ..model.layers import PIXEL_DIVISOR
from ..model.weights import ModelWeights, WeightsError, expected_shapes

#: Depth-head output bias at init: log of a typical street depth (metres), so training starts near
#: it.
DEPTH_INIT_LOG_METRES = math.log(10.0)


def cv_squared(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Squared coefficient of variation (M3ViT/Shazeer): 0 when every expert gets the same
    share."""
    x = x.float()
    if x.numel() <= 1:
        return x.new_zeros(())
    return x.var() / (x.mean() ** 2 + eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class StackedLinear(nn.Module):
    """One linear layer per expert, stored stacked: ``weight (E, out, in)``, ``bias (E, out)``."""

    def __init__(self, experts: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(experts, d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(experts, d_out))

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[e], self.bias[e])


class Router(nn.Module):
    """Per-task gates ``weight (num_tasks, dim, num_experts)``; logits = ``x @ weight[task]``."""

    def __init__(self, tasks: int, dim: int, experts: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(tasks, dim, experts))


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_experts, self.top_k = cfg.num_experts, cfg.top_k
        self.router = Router(len(cfg.tasks), cfg.dim, cfg.num_experts)
        self.fc1 = StackedLinear(cfg.num_experts, cfg.dim, cfg.expert_hidden)
        self.fc2 = StackedLinear(cfg.num_experts, cfg.expert_hidden, cfg.dim)

    def forward(self, x: torch.Tensor, task_id: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (output like x, chosen experts (B, N, k) int64, load-balancing loss)."""
        b, n, d = x.shape
        flat = x.reshape(b * n, d)
        probs = torch.softmax(flat @ self.router.weight[task_id], dim=-1)
        gates, chosen = torch.topk(probs, self.top_k, dim=-1)  # not renormalised (M3ViT)
        out = torch.zeros_like(flat)
        for e in range(self.num_experts):
            tok, slot = torch.nonzero(chosen == e, as_tuple=True)
            if tok.numel() == 0:
                continue
            y = self.fc2.expert(e, F.gelu(self.fc1.expert(e, flat[tok])))
            # .to: under bf16 autocast the expert's linears return bf16 while the residual stream
            # is float32.
            out = out.index_add(0, tok, (y * gates[tok, slot].unsqueeze(-1)).to(out.dtype))
        sparse = torch.zeros_like(probs).scatter(1, chosen, gates)
        importance = sparse.sum(0)
        load = (sparse > 0).sum(0)
        aux = cv_squared(importance) + cv_squared(load)
        return out.reshape(b, n, d), chosen.reshape(b, n, self.top_k), aux


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, moe: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.is_moe = moe
        if moe:
            self.moe = MoE(cfg)
        else:
            self.mlp = Mlp(cfg.dim, cfg.mlp_hidden)

    def forward_attn(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm1(x))

    def forward_mlp(self, x: torch.Tensor,
                    task_id: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        h = self.norm2(x)
        if self.is_moe:
            out, chosen, aux = self.moe(h, task_id)
            return x + out, chosen, aux
        return x + self.mlp(h), None, x.new_zeros(())


class LightHead(nn.Module):
    """Per token fc1 -> GELU -> fc2 to a p*p*C patch, pixel-shuffled in (ky, kx, c) order."""

    def __init__(self, cfg: ModelConfig, channels: int):
        super().__init__()
        self.cfg, self.channels = cfg, channels
        self.fc1 = nn.Linear(cfg.dim, cfg.light_hidden)
        self.fc2 = nn.Linear(cfg.light_hidden, cfg.patch * cfg.patch * channels)

    def forward(self, feats: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
        cfg, c = self.cfg, self.channels
        y = self.fc2(F.gelu(self.fc1(feats)))
        y = y.reshape(-1, cfg.grid_h, cfg.grid_w, cfg.patch, cfg.patch, c)
        return y.permute(0, 5, 1, 3, 2, 4).reshape(-1, c, cfg.img_h, cfg.img_w)


class GuidedHead(LightHead):
    """Light head + per-pixel refinement from the (normalised) input pixels; see ``model.heads``.

    ``refine`` starts at zero, so a new guided head begins as exactly its light head (which is how
    a trained light-head model is fine-tuned into a guided one).
    """

    def __init__(self, cfg: ModelConfig, channels: int):
        super().__init__(cfg, channels)
        self.guide = nn.Conv2d(cfg.in_chans, cfg.guide_channels, 3, padding=1)
        self.fuse = nn.Linear(channels + cfg.guide_channels, cfg.refine_hidden)
        self.refine = nn.Linear(cfg.refine_hidden, channels)

    def zero_refinement(self) -> None:
        nn.init.zeros_(self.refine.weight)
        nn.init.zeros_(self.refine.bias)

    def forward(self, feats: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
        if pixels is None:
            raise ValueError("the guided head needs the input pixels")
        # channels-last for the per-pixel layers
        coarse = super().forward(feats).permute(0, 2, 3, 1)
        guide = F.gelu(self.guide(pixels)).permute(0, 2, 3, 1)
        out = coarse + self.refine(F.gelu(self.fuse(torch.cat([coarse, guide], dim=-1))))
        return out.permute(0, 3, 1, 2)


class MixBlock(nn.Module):
    """Residual ``x + GELU(pw(dw3x3(x)))`` of the pyramid head (NCHW)."""

    def __init__(self, width: int):
        super().__init__()
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.pw = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(_pointwise(self.dw(x), self.pw.weight, self.pw.bias))


def _pointwise(x: torch.Tensor, weight: torch.Tensor,
               bias: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1 conv on NCHW ``x`` with a linear's (out, in) weight."""
    return F.conv2d(x, weight[:, :, None, None], bias)


class PyramidHead(nn.Module):
    """Image-guided decoder from the token grid to full resolution; see ``model/pyramid_head.py``.

    Each fusion is a 1x1 conv over ``[upsampled coarser map, pixel features, coordinates]``,
    computed as the numpy head computes it: the coarser map's share before upsampling (bilinear
    interpolation commutes with a per-pixel linear map), so the two agree to float rounding.
    ``forward`` takes a crop of the image too (training on crops): ``pixels`` is then the crop,
    ``feats`` its tokens, and ``offset`` its top-left pixel in the full image, which the
    coordinate channels need.
    """

    def __init__(self, cfg: ModelConfig, channels: int):
        super().__init__()
        self.cfg = cfg
        e1, e2 = cfg.pyramid_enc
        d4, d2, d1 = cfg.pyramid_dec
        t, g, i, k = cfg.pyramid_token, cfg.pyramid_guide, cfg.in_chans, PYRAMID_COORDS
        self.tok = nn.Linear(cfg.dim, t)
        self.enc2 = nn.Conv2d(i, e1, 3, stride=2, padding=1)
        self.enc4 = nn.Conv2d(e1, e2, 3, stride=2, padding=1)
        self.enc1 = nn.Conv2d(i, g, 3, padding=1)
        self.fuse4 = nn.Linear(t + e2 + k, d4)
        self.fuse2 = nn.Linear(d4 + e1 + k, d2)
        self.fuse1 = nn.Linear(d2 + g + k, d1)
        self.out = nn.Linear(d1, channels)
        self.mix4 = nn.ModuleList(MixBlock(d4) for _ in range(cfg.pyramid_mix[0]))
        self.mix2 = nn.ModuleList(MixBlock(d2) for _ in range(cfg.pyramid_mix[1]))

    def reset_parameters(self) -> None:
        """PyTorch's default (Kaiming-uniform) init: the decoder is deep enough that ViT's 0.02
        normal init would start it with a vanishing signal."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.reset_parameters()

    def _coords(self, h: int, w: int, offset: tuple[int, int], scale: float,
                like: torch.Tensor) -> torch.Tensor:
        """(1, 2, h, w) row/column in [-1, 1] of an h x w map whose cells are ``scale`` pixels."""
        ys = ((torch.arange(h, dtype=like.dtype) + 0.5) * scale
              + offset[0]) / self.cfg.img_h * 2 - 1
        xs = ((torch.arange(w, dtype=like.dtype) + 0.5) * scale
              + offset[1]) / self.cfg.img_w * 2 - 1
        return torch.stack(torch.broadcast_tensors(ys[:, None], xs[None, :]))[None]

    def _fuse(self, fuse: nn.Linear, coarse: torch.Tensor, pixels: torch.Tensor,
              offset: tuple[int, int], scale: float) -> torch.Tensor:
        c, p = coarse.shape[1], pixels.shape[1]
        h, w = pixels.shape[-2:]
        x = F.interpolate(_pointwise(coarse, fuse.weight[:, :c]), size=(h, w), mode="bilinear",
                          align_corners=False)
        x = x + _pointwise(pixels, fuse.weight[:, c:c + p], fuse.bias)
        x = x + _pointwise(self._coords(h, w, offset, scale, x), fuse.weight[:, c + p:])
        return F.gelu(x)

    def forward(self, feats: torch.Tensor, pixels: torch.Tensor | None = None,
                offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
        if pixels is None:
            raise ValueError("the pyramid head needs the input pixels")
        patch = self.cfg.patch
        b, _, ph, pw = pixels.shape
        tok = F.gelu(self.tok(feats)).transpose(1, 2).reshape(b, -1, ph // patch, pw // patch)
        p2 = F.gelu(self.enc2(pixels))
        p4 = F.gelu(self.enc4(p2))
        x = self._fuse(self.fuse4, tok, p4, offset, ph / p4.shape[-2])
        for block in self.mix4:
            x = block(x)
        x = self._fuse(self.fuse2, x, p2, offset, ph / p2.shape[-2])
        for block in self.mix2:
            x = block(x)
        x = self._fuse(self.fuse1, x, F.gelu(self.enc1(pixels)), offset, 1.0)
        return _pointwise(x, self.out.weight, self.out.bias)


class EvalBatchNorm(nn.Module):
    """BatchNorm2d with exactly weight/bias/running_mean/running_var (no ``num_batches_tracked``),
    so the up-head's state_dict matches ``expected_shapes``."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)


class UpHead(nn.Module):
    """M3ViT VisionTransformerUpHead: norm, up_stages x (3x3 conv, BN, ReLU, 2x bilinear), 1x1
    conv."""

    def __init__(self, cfg: ModelConfig, channels: int):
        super().__init__()
        self.cfg = cfg
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        cin = cfg.dim
        for s in range(cfg.up_stages):
            self.add_module(f"conv_{s}", nn.Conv2d(cin, cfg.up_channels, 3, padding=1))
            self.add_module(f"bn_{s}", EvalBatchNorm(cfg.up_channels))
            cin = cfg.up_channels
        self.add_module(f"conv_{cfg.up_stages}", nn.Conv2d(cin, channels, 1))

    def forward(self, feats: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.cfg
        x = self.norm(feats).transpose(1, 2).reshape(-1, cfg.dim, cfg.grid_h, cfg.grid_w)
        for s in range(cfg.up_stages):
            x = F.relu(getattr(self, f"bn_{s}")(getattr(self, f"conv_{s}")(x)))
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = getattr(self, f"conv_{cfg.up_stages}")(x)
        if x.shape[-2:] != (cfg.img_h, cfg.img_w):
            x = F.interpolate(x, size=(cfg.img_h, cfg.img_w), mode="bilinear", align_corners=False)
        return x


class EdgeMoEViT(nn.Module):
    """The multi-task MoE ViT. Images enter as float ``u8 / 256`` (B, 3, H, W); normalisation is
    inside."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(cfg.in_chans, cfg.dim, cfg.patch, stride=cfg.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(cfg.num_tokens, cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg, cfg.is_moe(i)) for i in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        head_cls = {"light": LightHead, "guided": GuidedHead, "pyramid": PyramidHead,
                    "up": UpHead}[cfg.head]
        self.heads = nn.ModuleDict({t: head_cls(cfg, cfg.head_out_channels(t)) for t in cfg.tasks})
        self.register_buffer("pixel_mean",
                             torch.tensor(cfg.pixel_mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std",
                             torch.tensor(cfg.pixel_std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.reset_parameters()

    # ----- init -----
    def reset_parameters(self) -> None:
        """ViT (timm) init: truncated normal 0.02 for weights and embeddings, zero biases, LN =
        identity."""
        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if p.dim() == 1 and leaf == "weight":
                nn.init.ones_(p)
            elif leaf == "bias":
                nn.init.zeros_(p)
            else:
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
        for head in self.heads.values():
            if isinstance(head, GuidedHead):
                head.zero_refinement()
            if isinstance(head, PyramidHead):
                head.reset_parameters()
        if "depth" in self.heads:
            nn.init.constant_(depth_output_layer(self.heads["depth"], self.cfg).bias,
                              DEPTH_INIT_LOG_METRES)

    # ----- forward -----
    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.pixel_mean) / self.pixel_std

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        # (B, P, D), patches row-major
        x = self.patch_embed(self._pixels(images)).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embed

    def _shared_prefix(self, images: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Tokens up to (excluding) the first MoE MLP: identical for every task (SPEC §2)."""
        x = self._embed(images)
        first = self.cfg.moe_layers[0] if self.cfg.moe_layers else self.cfg.depth
        for i in range(first):
            x = self.blocks[i].forward_attn(x)
            x, _, _ = self.blocks[i].forward_mlp(x, 0)
        if first < self.cfg.depth:
            x = self.blocks[first].forward_attn(x)
        return x, first

    def _task_suffix(self, x: torch.Tensor, first: int, task_id: int
                     ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        aux = x.new_zeros(())
        routing = []
        for i in range(first, self.cfg.depth):
            if i > first:
                x = self.blocks[i].forward_attn(x)
            x, chosen, layer_aux = self.blocks[i].forward_mlp(x, task_id)
            if chosen is not None:
                routing.append(chosen)
            aux = aux + layer_aux
        n_moe = max(len(self.cfg.moe_layers), 1)
        return self.norm(x)[:, 1:], routing, aux / n_moe

    def backbone(self, images: torch.Tensor, task: str) -> torch.Tensor:
        """Features (B, num_patches, dim) after the final LayerNorm, class token dropped."""
        x, first = self._shared_prefix(images)
        return self._task_suffix(x, first, self.cfg.task_id(task))[0]

    def backbone_with_routing(self, images: torch.Tensor, task: str
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, routing (B, num_moe_layers, num_tokens, top_k) and the mean load-balancing
        loss."""
        x, first = self._shared_prefix(images)
        feats, routing, aux = self._task_suffix(x, first, self.cfg.task_id(task))
        b = images.shape[0]
        stacked = (torch.stack(routing, 1) if routing
                   else torch.zeros(b, 0, self.cfg.num_tokens, self.cfg.top_k, dtype=torch.long))
        return feats, stacked, aux

    def forward_tasks(self, images: torch.Tensor, tasks: tuple[str, ...] | list[str]
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Head outputs for several tasks with the shared prefix computed once; aux loss summed
        over tasks."""
        x, first = self._shared_prefix(images)
        pixels = self._pixels(images) if self.cfg.head in PIXEL_HEADS else None
        outs, aux = {}, x.new_zeros(())
        for task in tasks:
            feats, _, task_aux = self._task_suffix(x, first, self.cfg.task_id(task))
            outs[task] = self.heads[task](feats, pixels)
            aux = aux + task_aux
        return outs, aux

    def forward(self, images: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(head output (B, C, img_h, img_w): class logits or log-metres, load-balancing loss)."""
        outs, aux = self.forward_tasks(images, (task,))
        return outs[task], aux


def depth_output_layer(head: nn.Module, cfg: ModelConfig) -> nn.Module:
    """The depth head's last layer, whose bias starts at a typical street depth."""
    if cfg.head in LIGHT_HEADS:
        return head.fc2
    if cfg.head == "pyramid":
        return head.out
    return getattr(head, f"conv_{cfg.up_stages}")


def build_torch_model(cfg: ModelConfig) -> EdgeMoEViT:
    return EdgeMoEViT(cfg)


def images_to_tensor(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) RGB → float (B, 3, H, W) ``u8 / 256``, the module's input convention."""
    return (torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float()
            / PIXEL_DIVISOR)


def load_model_weights(module: EdgeMoEViT, weights: ModelWeights) -> None:
    """Copy ``weights`` into ``module``; the config must match (names and shapes are then
    exact)."""
    if weights.config != module.cfg:
        raise WeightsError(weights.source,
                           "model config of the weights differs from the torch module's config")
    weights.validate()
    state = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
             for k, v in weights.tensors.items()}
    module.load_state_dict(state, strict=True)


def to_model_weights(module: EdgeMoEViT, cfg: ModelConfig | None = None) -> ModelWeights:
    """Export the module as float32 ``ModelWeights`` (``cfg``: optionally the same config with new
    notes)."""
    cfg = cfg or module.cfg
    state = module.state_dict()
    expected = expected_shapes(cfg)
    tensors = {k: state[k].detach().cpu().float().numpy().copy() for k in expected}
    weights = ModelWeights(cfg, tensors, source="torch")
    weights.validate()
    return weights
