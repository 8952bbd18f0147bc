# SPDX-License-Identifier: Apache-2.0
"""Keep numpy's OpenBLAS on one thread in our executables, unless the user chose a number.

Why: what numpy still multiplies in the node is small (with the native kernels, one small
projection of the pyramid head per task; without them, everything), and OpenBLAS shares even those
over every core, then lets its idle threads spin. On a robot the other cores are busy (camera
driver, DDS, other nodes), so a call keeps waiting for a descheduled BLAS thread: with two
CPU-bound processes beside it on this 2-core machine, the shipped model's semseg head took a median
26.9 ms with OpenBLAS's default threads against 3.4 ms with one (60 runs each, same process). The
heavy work has its own threads, which the user sets (the cpu backend's ``threads`` option).

``limit_blas_threads`` changes nothing when ``OPENBLAS_NUM_THREADS`` or ``OMP_NUM_THREADS`` is
set (the user's choice wins) or when numpy does not use OpenBLAS. It is process-wide, so the
executables call it once at start, as they call ``allocator.tune_allocator``; library code never
does.

``check_blas_kernels`` (also once at start) warns when OpenBLAS did not recognise the CPU and runs
its generic SSE3 ("Prescott") kernels on one with AVX2: numpy 1.26's OpenBLAS 0.3.23 does that on
an Intel Xeon of family 6 model 207 (AVX-512), where a 1024^3 float32 product ran at 21-31 GFLOP/s
against 126 with ``OPENBLAS_CORETYPE=SkylakeX``. The kernel set is chosen when the library loads,
so only the environment of the next start can change it; the native kernels (backbone and heads)
do not use OpenBLAS, but the numpy fallbacks do.
"""

from __future__ import annotations

import ctypes
import logging
import os

import numpy as np  # noqa: F401 - loads numpy's OpenBLAS, the library this module talks to

log = logging.getLogger(__name__)

#: Environment variables through which the user picks BLAS threads (read by OpenBLAS at load).
ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
#: OpenBLAS's names for its generic x86 kernel sets (what it falls back to on a CPU it does not
#: know).
GENERIC_CORES = ("Prescott", "Core2", "Katmai", "Coppermine", "Northwood", "Banias", "Atom")
#: Symbol names across OpenBLAS builds: ILP64 as numpy's wheels ship it, then the plain names.
_SUFFIXES = ("64_", "_64", "")


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process (numpy's, and any other)."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh
                     if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/"))


def _function(lib: ctypes.CDLL, stem: str) -> ctypes._CFuncPtr | None:
    for suffix in _SUFFIXES:
        fn = getattr(lib, stem + suffix, None)
        if fn is not None:
            return fn
    return None


def blas_threads() -> int | None:
    """Threads numpy's OpenBLAS uses now, or None if it cannot be asked."""
    for path in _loaded_openblas():
        get = _function(ctypes.CDLL(path), "openblas_get_num_threads")
        if get is not None:
            get.restype = ctypes.c_int
            return int(get())
    return None


def limit_blas_threads(threads: int = 1) -> bool:
    """Set every loaded OpenBLAS to ``threads``; True if that is now in effect.

    Returns False and changes nothing when the environment already names a thread count, or no
    OpenBLAS with a settable thread count is loaded; logs why at debug level.
    """
    chosen = [v for v in ENV_VARS if v in os.environ]
    if chosen:
        log.debug("BLAS threads left as %s says", chosen[0])
        return False
    done = False
    for path in _loaded_openblas():
        setter = _function(ctypes.CDLL(path), "openblas_set_num_threads")
        if setter is not None:
            setter.argtypes = [ctypes.c_int]
            setter(int(threads))
            done = True
    if not done:
        log.debug("BLAS threads unchanged: no OpenBLAS with openblas_set_num_threads is loaded")
    return done and blas_threads() == threads


def blas_core() -> str | None:
    """The kernel set numpy's OpenBLAS picked at load ("Haswell", "SkylakeX", ...), or None."""
    for path in _loaded_openblas():
        get = _function(ctypes.CDLL(path), "openblas_get_corename")
        if get is not None:
            get.restype = ctypes.c_char_p
            return get().decode(errors="replace")
    return None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def check_blas_kernels() -> str | None:
    """Warn (and return the advice) when OpenBLAS runs generic kernels on a CPU with AVX2."""
    core, flags = blas_core(), _cpu_flags()
    if (core is None or core not in GENERIC_CORES or "avx2" not in flags
            or "OPENBLAS_CORETYPE" in os.environ):
        return None
    suggest = "SkylakeX" if "avx512f" in flags else "Haswell"
    advice = (f"numpy's OpenBLAS does not recognise this CPU and runs its generic '{core}' "
              "kernels (about a quarter of the speed here); start with "
              f"OPENBLAS_CORETYPE={suggest} for the numpy paths (the cpu backend's native kernels "
              "do not use OpenBLAS)")
    log.warning(advice)
    return advice
