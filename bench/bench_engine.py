#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Backbone latency: our fast CPU backend vs M³ViT's own inference code path in PyTorch eager.

Full SPEC §2 model, batch 1, seeded random weights (the same tensors on both sides). The peer
("torch") is ``bench/m3vit_peer.py``: M³ViT's modules, gate and fastmoe per-expert dispatch, eval
mode, ``torch.no_grad``. Cases: ``semseg``, ``depth`` and ``both`` (ours: one call with the shared
prefix; the peer: two backbone passes, as M³ViT's multi-gate ``MultiTaskModel`` runs). Both sides
start from uint8 RGB, so input conversion is timed on both. With one thread, cases are
interleaved run by run so load from other processes hits every case alike; with more, each case
runs its warm-up and runs as one block after a pause, because the libraries' idle threads spin
for a while after each call (OpenBLAS, torch's OpenMP, our pool) and would steal the next case's
cores. Prints a table (median and p90) and, with
``--json FILE``, writes ``{"ours_ms": {...}, "torch_ms": {...}, "max_rel_diff": x, ...}``.

"ours" is the cpu backend as the node runs it (``native="auto"``: the fused C++ kernels when g++
can build them); "numpy" is the same backend with ``native="off"``, its fallback path, timed in
the same runs (``ours_numpy_ms`` in the JSON; ``--no-numpy`` drops it).

``--peer training`` adds a column for the training model (``edgemoe_ros/training/torch_model.py``:
shared prefix, batched ops), for reference; it is not the issue's peer.

Threads: ``--threads N`` sets OpenBLAS/OpenMP/MKL threads (before numpy loads),
``torch.set_num_threads(N)`` and our backend's ``threads`` option (its native kernels' pool), so
both sides use the same number of cores. Default 1: on a shared machine OpenMP spin-waiting makes
multi-threaded timings meaningless.

    .venv/bin/python bench/bench_engine.py --runs 50 --json bench_engine.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

CASES = ("semseg", "depth", "both")
TASK_SETS = {"semseg": ("semseg",), "depth": ("depth",), "both": ("semseg", "depth")}
#: Largest feature difference (relative to the feature scale) accepted between ours and the peer.
MAX_REL_DIFF = 1e-3
#: Pause before each block of runs when threads > 1: the previous library's idle threads stop
#: spinning.
SETTLE_S = 0.5


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="timed runs per case (default 50)")
    ap.add_argument(
        "--warmup", type=int, default=5, help="untimed runs per case first (default 5)"
    )
    ap.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="weights and image seed")
    ap.add_argument("--no-torch", action="store_true", help="time our backend only")
    ap.add_argument("--no-numpy", action="store_true", help="do not time our numpy fallback path")
    ap.add_argument(
        "--peer",
        action="append",
        choices=("training",),
        default=[],
        help="extra PyTorch column: 'training' = the training model (not M3ViT's code path)",
    )
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("--runs and --threads must be >= 1, --warmup >= 0")
    return args


def _stats(samples: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(samples) * 1e3
    return {
        "median": float(np.median(ms)),
        "p90": float(np.percentile(ms, 90)),
        "min": float(ms.min()),
    }


def _m3vit_peer(weights, image):
    """Timed callables per case for the M³ViT peer, and its (features, routing) per task."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import m3vit_peer

    peer = m3vit_peer.build_peer(weights)
    fns = {
        case: (lambda t=tasks: m3vit_peer.run_tasks(peer, image, t))
        for case, tasks in TASK_SETS.items()
    }
    outputs = {t: m3vit_peer.run_with_routing(peer, image, t) for t in TASK_SETS["both"]}
    return fns, outputs


def _training_peer(weights, image, torch):
    from edgemoe_ros.training.torch_model import (
        build_torch_model,
        images_to_tensor,
        load_model_weights,
    )

    model = build_torch_model(weights.config).eval()
    load_model_weights(model, weights)

    def run(tasks: tuple[str, ...]) -> dict:
        with torch.inference_mode():
            x = images_to_tensor(image)
            return {t: model.backbone(x, t) for t in tasks}

    return {case: (lambda t=tasks: run(t)) for case, tasks in TASK_SETS.items()}


def _gemm_floor(cfg, routing, np) -> Callable[[], None]:
    """Only the matrix products of one task's backbone, at the shapes our backend runs them.

    Same operands as ours (float32, OpenBLAS through numpy, each expert on the tokens the router
    actually sent it): no backend that does these products with this BLAS can be faster, so
    ``peer / floor`` bounds the speed-up any numpy implementation could show. The native path is
    not bound by it: its linears run a GEMM on weights packed at load (OpenBLAS repacks them on
    every call), so "ours" can come out below this line.
    """
    rng = np.random.default_rng(0)
    f32 = np.float32
    n, d, p2 = cfg.num_tokens, cfg.dim, cfg.in_chans * cfg.patch * cfg.patch
    heads, hd, eh = cfg.num_heads, cfg.head_dim, cfg.expert_hidden
    ops: list[tuple[np.ndarray, np.ndarray]] = [
        (rng.random((cfg.num_patches, p2), f32), rng.random((p2, d), f32))
    ]
    moe_layer = 0
    for b in range(cfg.depth):
        ops += [(rng.random((n, d), f32), rng.random((d, 3 * d), f32)),
                (rng.random((heads, n, hd), f32), rng.random((heads, hd, n), f32)),
                (rng.random((heads, n, n), f32), rng.random((heads, n, hd), f32)),
                (rng.random((n, d), f32), rng.random((d, d), f32))]
        if cfg.is_moe(b):
            ops.append((rng.random((n, d), f32), rng.random((d, cfg.num_experts), f32)))
            counts = np.bincount(routing[0, moe_layer].ravel(), minlength=cfg.num_experts)
            for c in counts[counts > 0]:
                ops += [(rng.random((eh, d), f32), rng.random((d, c), f32)),
                        (rng.random((c, eh), f32), rng.random((eh, d), f32))]
            moe_layer += 1
        else:
            ops += [(rng.random((n, d), f32), rng.random((d, cfg.mlp_hidden), f32)),
                    (rng.random((n, cfg.mlp_hidden), f32), rng.random((cfg.mlp_hidden, d), f32))]
    outs = [np.matmul(a, b) for a, b in ops]

    def run() -> None:
        for (a, b), out in zip(ops, outs, strict=True):
            np.matmul(a, b, out=out)

    return run


#: Side of the square float32 product that measures this core's practical matmul peak.
PEAK_GEMM_N = 1024


def _gemm_peak(np) -> Callable[[], None]:
    """One large square float32 product: the FLOP rate a core reaches when overheads vanish.

    The roofline for the per-task target: our backbone runs ~0.2 GFLOP products of 129-token
    operands, which cannot beat what OpenBLAS reaches on big square ones.
    """
    rng = np.random.default_rng(1)
    a, b = (
        rng.random((PEAK_GEMM_N, PEAK_GEMM_N), np.float32),
        rng.random((PEAK_GEMM_N, PEAK_GEMM_N), np.float32),
    )
    out = a @ b
    return lambda: np.matmul(a, b, out=out)


def _native_peak(np) -> Callable[[], None]:
    """The same product on our native GEMM (weights packed once, as the backend packs them): the
    peak on a CPU whose OpenBLAS build does not know it (then it runs a generic SSE3 kernel; seen
    on family 6 model 207 with numpy 1.26's OpenBLAS 0.3.23: 30 GFLOP/s against our 140)."""
    from edgemoe_ros.backends.native import fastops

    ops = fastops.load()
    rng = np.random.default_rng(1)
    a = rng.random((PEAK_GEMM_N, PEAK_GEMM_N), np.float32)
    b = fastops.pack(rng.random((PEAK_GEMM_N, PEAK_GEMM_N), np.float32))
    out = np.empty((PEAK_GEMM_N, PEAK_GEMM_N), np.float32)
    return lambda: ops.gemm(a, b, out=out)


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
    image = np.random.default_rng(args.seed).integers(
        0, 256, (1, cfg.img_h, cfg.img_w, 3), dtype=np.uint8
    )
    ours = CpuBackend(threads=args.threads)
    ours.load(weights)
    fns: dict[tuple[str, str], Callable[[], object]] = {
        ("ours", case): (lambda t=tasks: ours.run(image, t)) for case, tasks in TASK_SETS.items()
    }
    sides = ["ours"]
    # without the native kernels "ours" already is the numpy path
    if ours.native and not args.no_numpy:
        ours_numpy = CpuBackend(native="off")
        ours_numpy.load(weights)
        fns.update(
            {
                ("numpy", case): (lambda t=tasks: ours_numpy.run(image, t))
                for case, tasks in TASK_SETS.items()
            }
        )
        sides.append("numpy")

    fns[("floor", "semseg")] = _gemm_floor(cfg, ours.run(image, ("semseg",)).routing["semseg"], np)
    fns[("peak", "gemm")] = _gemm_peak(np)
    if ours.native:
        fns[("peak", "native")] = _native_peak(np)
    torch = None
    max_rel_diff = None
    routing_agreement = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print(
                "torch not installed: timing our backend only (pip install torch==2.13.0 for the "
                "peer)"
            )
    if torch is not None:
        torch.set_num_threads(args.threads)
        peer_fns, peer_out = _m3vit_peer(weights, image)
        fns.update({("torch", case): fn for case, fn in peer_fns.items()})
        sides.append("torch")
        if "training" in args.peer:
            fns.update(
                {
                    ("training", case): fn
                    for case, fn in _training_peer(weights, image, torch).items()
                }
            )
            sides.append("training")
        # Same outputs? Features relative to their scale, and routing of every token.
        ref = ours.run(image, TASK_SETS["both"])
        diffs, agree = [], []
        for task, (feats, routing) in peer_out.items():
            diffs.append(float(np.abs(ref.features[task] - feats).max() / np.abs(feats).max()))
            agree.append(float(np.mean(ref.routing[task] == routing)))
        max_rel_diff, routing_agreement = max(diffs), min(agree)

    samples: dict[tuple[str, str], list[float]] = {key: [] for key in fns}
    cpu_samples: dict[tuple[str, str], list[float]] = {key: [] for key in fns}

    def timed(key: tuple[str, str]) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        fns[key]()
        samples[key].append(time.perf_counter() - t0)
        cpu_samples[key].append(time.thread_time() - c0)

    if args.threads == 1:
        for _ in range(args.warmup):
            for fn in fns.values():
                fn()
        for _ in range(args.runs):
            for key in fns:
                timed(key)
    else:
        for key, fn in fns.items():
            time.sleep(SETTLE_S)
            for _ in range(args.warmup):
                fn()
            for _ in range(args.runs):
                timed(key)
    stats = {key: _stats(v) for key, v in samples.items()}
    # With one thread both sides compute on this thread, so its CPU time leaves out the time the
    # OS gave the core to other processes: a steadier comparison on a loaded machine.
    cpu_stats = {key: _stats(v) for key, v in cpu_samples.items()}

    blas = (
        np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]
        if hasattr(np.__config__, "CONFIG")
        else "?"
    )
    print(
        f"bench_engine: SPEC model ({cfg.backbone_macs() / 1e9:.2f} GMAC/task), batch 1, "
        f"{args.runs} runs after {args.warmup} warm-up, threads={args.threads} "
        f"(numpy BLAS {blas}, torch {torch.__version__ if torch else '-'}), "
        f"cpus={os.cpu_count()}, loadavg={os.getloadavg()[0]:.2f}"
    )
    print(
        "ours = cpu backend, "
        f"{'native kernels' if ours.native else 'numpy path (native kernels unavailable)'}"
        + ("; numpy = the same backend with native='off'" if "numpy" in sides else "")
    )
    header = f"{'case':<8}" + "".join(f" {s + ' med':>13} {s + ' p90':>13}" for s in sides)
    if "torch" in sides:
        header += f" {'torch/ours':>11}"
    print(header + "   (ms; torch = M3ViT code path, both = two passes)")
    for case in CASES:
        row = f"{case:<8}" + "".join(
            f" {stats[(s, case)]['median']:>13.1f} {stats[(s, case)]['p90']:>13.1f}" for s in sides
        )
        if "torch" in sides:
            row += f" {stats[('torch', case)]['median'] / stats[('ours', case)]['median']:>10.2f}x"
        print(row)
    if args.threads == 1:
        cpu_row = "  ".join(
            f"{s} {c} {cpu_stats[(s, c)]['median']:.1f}" for s in sides for c in CASES
        )
        print(f"thread CPU time medians (ms): {cpu_row}")
    # the stricter ratio
    one = min(stats[("ours", "semseg")]["median"], stats[("ours", "depth")]["median"])
    both_ratio = stats[("ours", "both")]["median"] / one
    cpu_ratio = ""
    if args.threads == 1:
        one_cpu = min(
            cpu_stats[("ours", "semseg")]["median"], cpu_stats[("ours", "depth")]["median"]
        )
        cpu_ratio = f", {cpu_stats[('ours', 'both')]['median'] / one_cpu:.2f} in thread CPU time"
    print(f"ours: both tasks / one task = {both_ratio:.2f}{cpu_ratio} (target <= 1.6)")
    floor = stats[("floor", "semseg")]["median"]
    print(
        f"OpenBLAS floor (only the matrix products of one task, through numpy): {floor:.1f} ms; "
        f"ours {stats[('ours', 'semseg')]['median'] - floor:+.1f} ms/task relative to it"
        + (
            f", numpy path {stats[('numpy', 'semseg')]['median'] - floor:+.1f}"
            if "numpy" in sides
            else ""
        )
    )
    blas_peak = 2 * PEAK_GEMM_N**3 / stats[("peak", "gemm")]["min"] / 1e6
    native_peak = (
        2 * PEAK_GEMM_N**3 / stats[("peak", "native")]["min"] / 1e6
        if ("peak", "native") in stats
        else 0.0
    )
    peak_gflops = max(blas_peak, native_peak)
    task_gflop = 2 * cfg.backbone_macs() / 1e9
    ours_gflops = task_gflop / stats[("ours", "semseg")]["median"] * 1e3
    print(
        f"roofline: this core's float32 matmul peak ({PEAK_GEMM_N}^3, best run) {peak_gflops:.0f} "
        "GFLOP/s "
        f"(OpenBLAS {blas_peak:.0f}, our native GEMM {native_peak:.0f}); "
        f"ours runs the {task_gflop:.2f} GFLOP backbone at {ours_gflops:.0f} GFLOP/s "
        f"({ours_gflops / peak_gflops:.0%} of it)"
    )
    if "torch" in sides:
        per_task = min(
            stats[("torch", c)]["median"] / stats[("ours", c)]["median"]
            for c in ("semseg", "depth")
        )
        print(
            f"ours vs torch per task: {per_task:.2f}x faster (target >= 2); "
            "a numpy backend at the OpenBLAS floor would be "
            f"{stats[('torch', 'semseg')]['median'] / floor:.2f}x"
        )
        need_ms = min(stats[("torch", c)]["median"] for c in ("semseg", "depth")) / 2
        print(
            f"2x the peer means <= {need_ms:.1f} ms/task: {task_gflop / need_ms * 1e3:.0f} "
            "GFLOP/s, "
            f"{task_gflop / need_ms * 1e3 / peak_gflops:.0%} of the matmul peak (backbone "
            "products alone)"
        )
    if max_rel_diff is not None:
        print(f"max relative feature difference ours vs torch: {max_rel_diff:.2e}; "
              f"routing agreement {routing_agreement * 100:.2f} %")

    if args.json:
        result = {
            "ours_ms": {c: stats[("ours", c)]["median"] for c in CASES},
            "torch_ms": {c: stats[("torch", c)]["median"] for c in CASES} if torch else None,
            "max_rel_diff": max_rel_diff,
            "ours_p90_ms": {c: stats[("ours", c)]["p90"] for c in CASES},
            "ours_native": ours.native,
            "ours_numpy_ms": (
                {c: stats[("numpy", c)]["median"] for c in CASES} if "numpy" in sides else None
            ),
            "ours_numpy_p90_ms": (
                {c: stats[("numpy", c)]["p90"] for c in CASES} if "numpy" in sides else None
            ),
            "torch_p90_ms": {c: stats[("torch", c)]["p90"] for c in CASES} if torch else None,
            "routing_agreement": routing_agreement,
            "blas_floor_ms": floor,
            "matmul_peak_gflops": peak_gflops,
            "matmul_peak_gflops_openblas": blas_peak,
            "matmul_peak_gflops_native": native_peak,
            "torch_peer": "bench/m3vit_peer.py (M3ViT + fastmoe code path, eval, no_grad)",
            "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
            "loadavg_1min": os.getloadavg()[0],
        }
        if args.threads == 1:
            result["ours_cpu_ms"] = {c: cpu_stats[("ours", c)]["median"] for c in CASES}
            if torch:
                result["torch_cpu_ms"] = {c: cpu_stats[("torch", c)]["median"] for c in CASES}
            if "numpy" in sides:
                result["ours_numpy_cpu_ms"] = {c: cpu_stats[("numpy", c)]["median"] for c in CASES}
        if "training" in sides:
            result["training_ms"] = {c: stats[("training", c)]["median"] for c in CASES}
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    if max_rel_diff is not None and max_rel_diff > MAX_REL_DIFF:
        print(
            f"ERROR: outputs differ (max relative difference {max_rel_diff:.2e} > "
            f"{MAX_REL_DIFF:g})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
