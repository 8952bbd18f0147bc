#!/usr/bin/env python3
"""Backbone latency: our fast CPU backend vs a PyTorch eager twin written the M3ViT way.

Full SPEC §2 model, batch 1, seeded random weights (the same tensors on both sides). Cases:
``semseg``, ``depth`` and ``both`` (ours: one call with the shared prefix; PyTorch: two
``backbone`` calls, as M3ViT runs one task per forward). Cases are interleaved run by run so
load from other processes hits every case alike. Prints a table (median and p90) and, with
``--json FILE``, writes ``{"ours_ms": {...}, "torch_ms": {...}, "max_rel_diff": x, ...}``.

Threads: ``--threads N`` sets OpenBLAS/OpenMP/MKL threads (before numpy loads) and
``torch.set_num_threads(N)``, so both sides use the same number of cores. Default 1: on a shared
machine OpenMP spin-waiting makes multi-threaded timings meaningless.

    .venv/bin/python bench/bench_engine.py --runs 50 --json bench_engine.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

CASES = ("semseg", "depth", "both")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="timed runs per case (default 50)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed runs per case first (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="weights and image seed")
    ap.add_argument("--no-torch", action="store_true", help="time our backend only")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("--runs and --threads must be >= 1, --warmup >= 0")
    return args


def _stats(samples: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(samples) * 1e3
    return {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90))}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy/torch load their BLAS

    import numpy as np

    from edgemoe_ros.backends.cpu import CpuBackend
    from edgemoe_ros.model.config import ModelConfig
    from edgemoe_ros.model.weights import random_init

    cfg = ModelConfig()
    weights = random_init(cfg, seed=args.seed)
    image = np.random.default_rng(args.seed).integers(0, 256, (1, cfg.img_h, cfg.img_w, 3), dtype=np.uint8)
    ours = CpuBackend()
    ours.load(weights)
    task_sets = {"semseg": ("semseg",), "depth": ("depth",), "both": ("semseg", "depth")}
    fns: dict[tuple[str, str], Callable[[], object]] = {
        ("ours", case): (lambda t=tasks: ours.run(image, t)) for case, tasks in task_sets.items()
    }

    torch = None
    max_rel_diff = None
    routing_agreement = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch not installed: timing our backend only (pip install torch==2.13.0 for the peer)")
    if torch is not None:
        from edgemoe_ros.training.torch_model import build_torch_model, images_to_tensor, load_model_weights

        torch.set_num_threads(args.threads)
        peer = build_torch_model(cfg).eval()
        load_model_weights(peer, weights)

        def peer_run(tasks: tuple[str, ...]) -> dict:
            with torch.inference_mode():
                x = images_to_tensor(image)
                return {t: peer.backbone(x, t) for t in tasks}

        for case, tasks in task_sets.items():
            fns[("torch", case)] = lambda t=tasks: peer_run(t)
        # Same outputs? Features relative to their scale, and routing of every token.
        ref = ours.run(image, task_sets["both"])
        diffs, agree = [], []
        with torch.inference_mode():
            for task in task_sets["both"]:
                feats, routing, _ = peer.backbone_with_routing(images_to_tensor(image), task)
                feats = feats.numpy()
                diffs.append(float(np.abs(ref.features[task] - feats).max() / np.abs(feats).max()))
                agree.append(float(np.mean(ref.routing[task] == routing.numpy())))
        max_rel_diff, routing_agreement = max(diffs), min(agree)

    samples: dict[tuple[str, str], list[float]] = {key: [] for key in fns}
    for _ in range(args.warmup):
        for fn in fns.values():
            fn()
    for _ in range(args.runs):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[key].append(time.perf_counter() - t0)
    stats = {key: _stats(v) for key, v in samples.items()}

    blas = np.__config__.CONFIG["Build Dependencies"]["blas"]["name"] if hasattr(np.__config__, "CONFIG") else "?"
    print(f"bench_engine: SPEC model ({cfg.backbone_macs() / 1e9:.2f} GMAC/task), batch 1, "
          f"{args.runs} runs after {args.warmup} warm-up, threads={args.threads} "
          f"(numpy BLAS {blas}, torch {torch.__version__ if torch else '-'}), "
          f"cpus={os.cpu_count()}, loadavg={os.getloadavg()[0]:.2f}")
    print(f"{'case':<8} {'ours med':>9} {'ours p90':>9} {'torch med':>10} {'torch p90':>10} {'speed-up':>9}")
    for case in CASES:
        o = stats[("ours", case)]
        t = stats.get(("torch", case))
        tcols = f"{t['median']:>10.1f} {t['p90']:>10.1f} {t['median'] / o['median']:>8.2f}x" if t else f"{'-':>10} {'-':>10} {'-':>9}"
        print(f"{case:<8} {o['median']:>9.1f} {o['p90']:>9.1f} {tcols}")
    one = min(stats[("ours", "semseg")]["median"], stats[("ours", "depth")]["median"])
    print(f"ours: both tasks / one task = {stats[('ours', 'both')]['median'] / one:.2f} (target <= 1.6)")
    if max_rel_diff is not None:
        print(f"max relative feature difference ours vs torch: {max_rel_diff:.2e}; "
              f"routing agreement {routing_agreement * 100:.2f} %  (torch 'both' = two backbone calls)")

    if args.json:
        result = {
            "ours_ms": {c: stats[("ours", c)]["median"] for c in CASES},
            "torch_ms": {c: stats[("torch", c)]["median"] for c in CASES} if torch else None,
            "max_rel_diff": max_rel_diff,
            "ours_p90_ms": {c: stats[("ours", c)]["p90"] for c in CASES},
            "torch_p90_ms": {c: stats[("torch", c)]["p90"] for c in CASES} if torch else None,
            "routing_agreement": routing_agreement,
            "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
            "loadavg_1min": os.getloadavg()[0],
        }
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    if max_rel_diff is not None and max_rel_diff > 1e-3:
        print(f"ERROR: outputs differ (max relative difference {max_rel_diff:.2e} > 1e-3)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
