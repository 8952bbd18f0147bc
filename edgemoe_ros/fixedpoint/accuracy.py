# SPDX-License-Identifier: Apache-2.0
"""Fixed point vs float on the same inputs: where the accelerator's numbers drift, and how much
that matters for the published outputs.

For each task: relative L2 of every tapped activation (``model/reference.py`` taps vs the
emulator's), routing agreement per MoE layer (SPEC §3: the largest errors come from tokens whose
expert choice flips), and on the heads' outputs the segmentation pixel agreement and the depth
error. Both heads run in float on the host, as in the product, so only the backbone differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..accel.interface import pack_weights
from ..model import heads, reference
from ..model.weights import ModelWeights
from .emulator import FixedPointEmulator
from .quant import to_float


def relative_l2(approx: np.ndarray, exact: np.ndarray) -> float:
    """||approx - exact|| / ||exact|| (0 when both are zero)."""
    den = float(np.linalg.norm(exact))
    num = float(np.linalg.norm(np.asarray(approx, np.float64) - exact))
    return num / den if den > 0 else num


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / den if den > 0 else 1.0


@dataclass
class TaskAccuracy:
    """Float-vs-fixed comparison of one task on a batch of images."""

    task: str
    num_images: int
    #: (tap name, relative L2) in forward order.
    layers: list[tuple[str, float]] = field(default_factory=list)
    #: Per MoE layer: fraction of tokens whose top-k expert set is identical.
    routing_set_agreement: list[float] = field(default_factory=list)
    #: Per MoE layer: fraction of tokens whose best expert is identical.
    routing_top1_agreement: list[float] = field(default_factory=list)
    feature_rel_l2: float = 0.0
    feature_cosine: float = 1.0
    #: semseg: fraction of pixels with the same class.
    seg_pixel_agreement: float | None = None
    #: depth: mean |d_fixed - d_float| / d_float, and max |d_fixed - d_float| in metres.
    depth_abs_rel: float | None = None
    depth_max_abs_m: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [{"name": n, "rel_l2": v} for n, v in self.layers]
        return d


def compare(weights: ModelWeights, images: np.ndarray,
            tasks: Sequence[str] | None = None) -> list[TaskAccuracy]:
    """Run the float reference and the fixed-point emulator on ``images`` and compare them."""
    cfg = weights.config
    tasks = tuple(tasks or cfg.tasks)
    w64 = weights.astype(np.float64)
    emu = FixedPointEmulator(pack_weights(weights), cfg)
    fixed = emu.run(images, [cfg.task_id(t) for t in tasks], taps=True)
    reports = []
    for task in tasks:
        ref = reference.forward(w64, images, task, taps=True)
        fx = fixed[cfg.task_id(task)]
        rep = TaskAccuracy(task, int(images.shape[0]))
        for name, raw in fx.taps.items():
            if name in ref.taps:
                rep.layers.append((name, relative_l2(to_float(raw), ref.taps[name])))
        same_set = np.sort(fx.routing, axis=-1) == np.sort(ref.routing, axis=-1)
        rep.routing_set_agreement = [float(v) for v in same_set.all(axis=-1).mean(axis=(0, 2))]
        rep.routing_top1_agreement = [
            float(v) for v in (fx.routing[..., 0] == ref.routing[..., 0]).mean(axis=(0, 2))]
        f_fixed = to_float(fx.features)
        rep.feature_rel_l2 = relative_l2(f_fixed, ref.features)
        rep.feature_cosine = cosine(f_fixed, ref.features)
        out_float = heads.run_head(weights, cfg, task, ref.features.astype(np.float32), images)
        out_fixed = heads.run_head(weights, cfg, task, f_fixed.astype(np.float32), images)
        if task == "semseg":
            rep.seg_pixel_agreement = float(np.mean(heads.decode_semseg(out_fixed)
                                                    == heads.decode_semseg(out_float)))
        else:
            d_fl, d_fx = heads.decode_depth(out_float, cfg), heads.decode_depth(out_fixed, cfg)
            err = np.abs(d_fx.astype(np.float64) - d_fl)
            rep.depth_abs_rel = float(np.mean(err / d_fl))
            rep.depth_max_abs_m = float(err.max())
        reports.append(rep)
    return reports


def to_markdown(reports: Sequence[TaskAccuracy]) -> str:
    """Human-readable tables: a summary per task, then relative L2 per layer and routing per MoE
    layer."""
    lines = ["| task | images | features rel. L2 | cosine | routing (top-k set) | routing (top-1) "
             "| head metric |",
             "|---|---|---|---|---|---|---|"]
    for r in reports:
        head = (f"seg pixel agreement {r.seg_pixel_agreement:.4f}"
                if r.seg_pixel_agreement is not None
                else f"depth abs rel {r.depth_abs_rel:.2e}, max {r.depth_max_abs_m:.3f} m")
        lines.append(f"| {r.task} | {r.num_images} | {r.feature_rel_l2:.4%} | "
                     f"{r.feature_cosine:.6f} | {np.mean(r.routing_set_agreement):.4f} | "
                     f"{np.mean(r.routing_top1_agreement):.4f} | {head} |")
    names = [n for n, _ in reports[0].layers] if reports else []
    lines += ["", "| layer | " + " | ".join(f"{r.task} rel. L2" for r in reports) + " |",
              "|---|" + "---|" * len(reports)]
    for i, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(f"{r.layers[i][1]:.4%}" for r in reports) + " |")
    n_moe = len(reports[0].routing_set_agreement) if reports else 0
    lines += ["", "| MoE layer | " + " | ".join(f"{r.task} set / top-1" for r in reports) + " |",
              "|---|" + "---|" * len(reports)]
    for m in range(n_moe):
        lines.append(f"| {m} | " + " | ".join(
            f"{r.routing_set_agreement[m]:.4f} / {r.routing_top1_agreement[m]:.4f}"
            for r in reports) + " |")
    return "\n".join(lines) + "\n"
