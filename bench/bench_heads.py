#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Host-side task heads: time per task for each light head type, native kernels vs numpy vs
PyTorch.

The heads run on the host after the backbone (Edge-MoE accelerates the backbone only), so their
cost adds to every frame whatever the backend. Full SPEC §2 sizes, batch 1, seeded random
weights and backbone features; the image is a rendered street scene. For each head type
(``light``, ``guided``, ``pyramid``) and task: our head as the engine runs it (``native``: the
fused kernels; ``numpy``: the fallback), and the PyTorch twin of the same head
(``training/torch_model.py``, eager, ``no_grad``, the same weights) as the peer. It checks that
all three agree, prints a table (median and p90 over ``--runs`` after warm-up; cases interleaved
run by run so other load hits them alike) with each head's MACs as a share of the backbone's,
and with ``--json FILE`` writes ``{"<head>": {"<task>": {"native_ms", "numpy_ms", "torch_ms",
"macs", "backbone_share", "max_rel_diff"}}}``.

    .venv/bin/python bench/bench_heads.py --runs 50 --json bench_heads.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

HEADS = ("light", "guided", "pyramid")
#: Largest output difference (relative to the output scale) accepted between the implementations.
MAX_REL_DIFF = 1e-4


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="timed runs per case (default 50)")
    ap.add_argument(
        "--warmup", type=int, default=5, help="untimed runs per case first (default 5)"
    )
    ap.add_argument("--heads", default=",".join(HEADS), help=f"comma-separated subset of {HEADS}")
    ap.add_argument("--no-torch", action="store_true", help="do not time the PyTorch twin")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        ap.error("--runs must be >= 1 and --warmup >= 0")
    args.heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if not args.heads or set(args.heads) - set(HEADS):
        ap.error(f"--heads must name some of {HEADS}")
    return args


# ANN001, ANN202: torch objects; torch is optional
def _torch_head(torch, head, feats, pixels):  # noqa: ANN001, ANN202
    with torch.no_grad():
        return head(feats, pixels).numpy()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # before numpy loads: one core for every side
    import numpy as np

    from edgemoe_ros.backends.native import fastops
    from edgemoe_ros.model.config import ModelConfig
    from edgemoe_ros.model.heads import run_head
    from edgemoe_ros.model.weights import random_init
    from edgemoe_ros.scenes import render_frame

    torch = None
    if not args.no_torch:
        try:
            import torch

            from edgemoe_ros.training.torch_model import build_torch_model, load_model_weights
        except ImportError:
            print(
                "torch not installed: no PyTorch column (pip install torch==2.13.0)",
                file=sys.stderr,
            )
            torch = None
    if torch is not None:
        torch.set_num_threads(1)
    native = fastops.native_ops("auto")
    if native is None:
        print("native kernels unavailable: numpy only", file=sys.stderr)

    results: dict[str, dict[str, dict[str, float]]] = {}
    for head in args.heads:
        cfg = ModelConfig(head=head)
        weights = random_init(cfg, seed=0)
        heads = fastops.PooledHeads(native) if native is not None else None
        image = render_frame(0, cfg.img_w, cfg.img_h).rgb[None]
        feats = (
            np.random.default_rng(1)
            .standard_normal((1, cfg.num_patches, cfg.dim))
            .astype(np.float32)
        )
        module = None
        if torch is not None:
            module = build_torch_model(cfg).eval()
            load_model_weights(module, weights)
            pixels = module._pixels(torch.from_numpy(image).permute(0, 3, 1, 2).float() / 256.0)
            tfeats = torch.from_numpy(feats)
        for task in cfg.tasks:
            cases = {"numpy": functools.partial(run_head, weights, cfg, task, feats, image)}
            if native is not None:  # as the engine hands them over: one PooledHeads per model
                cases["native"] = functools.partial(
                    run_head, weights, cfg, task, feats, image, heads
                )
            if module is not None:
                cases["torch"] = functools.partial(
                    _torch_head, torch, module.heads[task], tfeats, pixels
                )
            outs = {name: fn() for name, fn in cases.items()}
            scale = float(np.abs(outs["numpy"]).max()) or 1.0
            diff = max(float(np.abs(o - outs["numpy"]).max()) / scale for o in outs.values())
            if diff > MAX_REL_DIFF:
                print(
                    f"error: {head} {task}: implementations differ by {diff:.2e} (> "
                    f"{MAX_REL_DIFF})",
                    file=sys.stderr,
                )
                return 1
            for _ in range(args.warmup):
                for fn in cases.values():
                    fn()
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.runs):
                for name, fn in cases.items():
                    t0 = time.perf_counter()
                    fn()
                    times[name].append((time.perf_counter() - t0) * 1e3)
            row: dict[str, float] = {
                "macs": cfg.head_macs(task),
                "backbone_share": cfg.head_macs(task) / cfg.backbone_macs(),
                "max_rel_diff": diff,
            }
            for name, ts in times.items():
                row[f"{name}_ms"] = float(np.median(ts))
                row[f"{name}_p90_ms"] = float(np.percentile(ts, 90))
            results.setdefault(head, {})[task] = row

    cols = [
        c
        for c in ("native", "numpy", "torch")
        if any(f"{c}_ms" in r for h in results.values() for r in h.values())
    ]
    print(
        f"host task heads, batch 1, {ModelConfig().img_h}x{ModelConfig().img_w}, 1 thread, "
        f"{args.runs} runs "
        "(median / p90 ms)"
    )
    header = f"{'head':<8} {'task':<7} {'MMAC':>6} {'share':>6} " + " ".join(
        f"{c:>15}" for c in cols
    )
    if "torch" in cols and "native" in cols:
        header += f" {'torch/native':>13}"
    print(header)
    print("-" * len(header))
    for head, tasks in results.items():
        for task, r in tasks.items():
            cells = " ".join(
                f"{r[f'{c}_ms']:7.2f} / {r[f'{c}_p90_ms']:5.2f}"
                if f"{c}_ms" in r
                else f"{'-':>15}"
                for c in cols
            )
            line = f"{head:<8} {task:<7} {r['macs'] / 1e6:6.1f} {r['backbone_share']:6.1%} {cells}"
            if "torch_ms" in r and "native_ms" in r:
                line += f" {r['torch_ms'] / r['native_ms']:12.2f}x"
            print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
