# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-fpga check``: bring-up check of the accelerator on the board.

    edgemoe-fpga check --bitstream /home/xilinx/edgemoe/edgemoe.bit [--weights FILE] [--image FILE]

Step by step, each printed as it passes or fails:

1. open the overlay through the ``fpga`` backend (programs the PL unless ``--no-download``): take
   the device lock, find ``edgemoe_top`` and check its ``.hwh`` registers against
   ``accel/interface.py``, check the CMA pool, allocate the buffers (``accel/pynq_driver.py``),
   and upload the packed weights (the shipped model unless ``--weights``);
2. print what was opened: instance, base address, registers checked;
3. per task, run one frame on the accelerator and on the ``fixed`` backend's emulator (the
   bit-exact model of the kernel) and compare features and routing bit for bit;
4. print the latency of each call as the host sees it (registers, start, poll, syncs): the first
   call reloads the on-chip parameters, ``--repeat`` more calls give the steady state.

Exit status: 0 every task equal, 1 some output differs, 2 the check could not run (no board,
locked device, register map mismatch, not enough CMA, bad weights or image). ``--simulate`` runs
the same steps against the simulated PYNQ device whose hardware is the HLS C-simulation, which is
how this command is tested without a board.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..accel import interface as itf
from ..accel.latency_model import EDGE_MOE_BOARD_MS
from ..accel.pynq_driver import DEFAULT_TIMEOUT_S, AcceleratorError, EdgeMoeDriver
from ..backends import BackendError
from ..backends.fpga import FpgaBackend
from ..fixedpoint.emulator import FixedPointEmulator
from ..model.config import ConfigError, ModelConfig
from ..model.weights import (
    SHIPPED_WEIGHTS_NAME,
    ModelWeights,
    WeightsError,
    load_weights,
    resolve_weights_path,
)

EXIT_OK, EXIT_MISMATCH, EXIT_CANNOT_RUN = 0, 1, 2
#: Seed of the synthetic frame used without ``--image`` (any frame tests bit-exactness).
FRAME_SEED = 20240


class CheckError(RuntimeError):
    """The check cannot run (exit status 2)."""


@dataclass(frozen=True)
class TaskCheck:
    """One task's frame on the accelerator against the emulator."""

    task: str
    differing_features: int
    differing_routing: int
    first_difference: str
    first_call_ms: float
    steady_ms: list[float]

    @property
    def equal(self) -> bool:
        return self.differing_features == 0 and self.differing_routing == 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="edgemoe-fpga", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="load the overlay, check registers, compare one frame "
                                         "with `fixed`")
    check.add_argument("--bitstream", type=Path, default=None, metavar="BIT",
                       help="the overlay .bit (its .hwh beside it); required unless --simulate")
    check.add_argument("--weights", type=Path, default=None, metavar="FILE",
                       help="model weights (.safetensors); default: the shipped "
                            f"{SHIPPED_WEIGHTS_NAME}")
    check.add_argument("--image", type=Path, default=None, metavar="FILE",
                       help="frame to run (fitted to the model like the node does); default: a "
                            "synthetic one")
    check.add_argument("--repeat", type=int, default=3, metavar="N",
                       help="timed calls per task after the first (default 3; 0: only the first)")
    check.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S,
                       help="limit for one kernel call")
    check.add_argument("--no-download", action="store_true",
                       help="do not program the PL (it already holds this bitstream)")
    check.add_argument("--simulate", action="store_true",
                       help="run on the simulated PYNQ device (C-simulation as hardware) instead "
                            "of a board")
    check.add_argument("--csim-library", type=Path, default=None, metavar="SO",
                       help="C-simulation library for --simulate (default: built for the model)")
    args = ap.parse_args(argv)
    if args.bitstream is None and not args.simulate:
        ap.error("--bitstream is required on a board (or use --simulate)")
    if args.repeat < 0:
        ap.error("--repeat must be >= 0")
    return args


def _load_frame(path: Path | None, cfg: ModelConfig) -> np.ndarray:
    """(1, img_h, img_w, 3) uint8: the image fitted to the model, or a seeded synthetic frame."""
    if path is None:
        rng = np.random.default_rng(FRAME_SEED)
        return rng.integers(0, 256, (1, cfg.img_h, cfg.img_w, cfg.in_chans), dtype=np.uint8)
    import cv2

    from ..postprocess import fit_to_model

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CheckError(f"cannot read image {path}")
    fitted, _ = fit_to_model(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), cfg)
    return np.ascontiguousarray(fitted[None])


def _first_difference(got: np.ndarray, want: np.ndarray, what: str) -> str:
    where = tuple(int(i) for i in np.argwhere(got != want)[0])
    return f"{what}{list(where)}: accelerator {int(got[where])}, fixed {int(want[where])}"


def check_task(driver: EdgeMoeDriver, emulator: FixedPointEmulator, frame: np.ndarray,
               cfg: ModelConfig, task: str, repeat: int) -> TaskCheck:
    task_id = cfg.task_id(task)
    start = time.perf_counter()
    features, routing = driver.run(frame, task_id)
    first_ms = (time.perf_counter() - start) * 1e3
    steady = []
    for _ in range(repeat):
        start = time.perf_counter()
        driver.run(frame, task_id)
        steady.append((time.perf_counter() - start) * 1e3)
    want = emulator.run(frame, [task_id])[task_id]
    bad_f = int(np.count_nonzero(features != want.features))
    bad_r = int(np.count_nonzero(routing != want.routing))
    first = ""
    if bad_f:
        first = _first_difference(features, want.features, "features")
    elif bad_r:
        first = _first_difference(routing, want.routing, "routing")
    return TaskCheck(task, bad_f, bad_r, first, first_ms, steady)


def _print(ok: bool, text: str) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {text}", flush=True)


def run_check(args: argparse.Namespace) -> int:
    weights_path = resolve_weights_path(args.weights)
    weights: ModelWeights = load_weights(weights_path)
    cfg = weights.config
    frame = _load_frame(args.image, cfg)
    print(f"edgemoe-fpga check: {args.bitstream or '(generated overlay)'}"
          f"{' on the simulated device' if args.simulate else ''}", flush=True)
    start = time.perf_counter()
    try:
        backend = FpgaBackend(args.bitstream, timeout_s=args.timeout_s, simulate=args.simulate,
                              csim_library=args.csim_library,
                              download=False if args.no_download else None)
    except BackendError as exc:
        _print(False, f"open the overlay: {exc}")
        return EXIT_CANNOT_RUN
    try:
        try:
            # opens the overlay (lock, register and CMA checks), uploads the weights
            backend.load(weights)
        except BackendError as exc:
            _print(False, f"open the overlay: {exc}")
            return EXIT_CANNOT_RUN
        driver = backend.driver
        desc = driver.overlay.ip_dict.get(driver.ip_name, {})
        programmed = backend.download and not driver.attached
        how = ("programmed" if programmed
               else ("attached" if driver.attached else "not re-programmed"))
        _print(True, f"overlay {driver.bitfile} ({how}): {driver.ip_name} at "
                     f"0x{desc.get('phys_addr', 0):X}")
        _print(True, f"{len(desc.get('registers', {}))} registers match interface.py "
                     f"(ABI {itf.ABI_VERSION})")
        packed = itf.pack_weights(weights)
        _print(True, f"weights {weights_path} uploaded "
                     f"({(packed.one_time.nbytes + packed.experts.nbytes) / 1e6:.1f} "
                     f"MB; open and upload {(time.perf_counter() - start) * 1e3:.0f} ms)")
        emulator = FixedPointEmulator(packed, cfg)
        results: list[TaskCheck] = []
        for task in cfg.tasks:
            result = check_task(driver, emulator, frame, cfg, task, args.repeat)
            # only the driver's very first call reloads the on-chip parameters
            timing = (f"first call {result.first_call_ms:.2f} ms"
                      f"{'' if results else ' (parameter reload)'}")
            results.append(result)
            if result.steady_ms:
                timing += (f", then median {statistics.median(result.steady_ms):.2f} ms of "
                           f"{len(result.steady_ms)}")
            if result.equal:
                _print(True, f"task {task}: features and routing equal the fixed backend bit for "
                             f"bit; {timing}")
            else:
                _print(False, f"task {task}: {result.differing_features} feature and "
                              f"{result.differing_routing} routing values differ from the fixed "
                              f"backend (first: {result.first_difference}); {timing}")
    except AcceleratorError as exc:
        _print(False, str(exc))
        return EXIT_CANNOT_RUN
    finally:
        backend.close()
    passed = all(r.equal for r in results)
    where = ("latencies are the C-simulation's, not a board's" if args.simulate
             else "host-observed latencies")
    verdict = "PASS" if passed else "FAIL"
    print(f"result: {verdict} ({where}; the SPEC target is Edge-MoE's {EDGE_MOE_BOARD_MS:g} ms "
          f"per image per task at {itf.CLOCK_MHZ:g} MHz)")

    return EXIT_OK if passed else EXIT_MISMATCH


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        return run_check(args)
    except (CheckError, WeightsError, ConfigError, OSError) as exc:
        print(f"edgemoe-fpga: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN


if __name__ == "__main__":
    sys.exit(main())
