# SPDX-License-Identifier: Apache-2.0
"""Keep freed frame-sized buffers in the process heap instead of handing them back to the kernel.

Why: every camera frame allocates and frees megabytes of arrays (decoded input, restored outputs,
colour images, message buffers: ~20 MB per frame at 720p with both tasks). With glibc's defaults a
buffer that large is either ``mmap``'ed fresh and ``munmap``'ed on free, or carved from the heap
top and trimmed back to the kernel when freed. Either way the next frame touches brand-new pages
and pays one page fault per 4 KiB. On the machines we measured (virtualised x86) that is the single
biggest cost around inference: resizing a 128x256 depth map to 720p and wrapping it in a message
took 8.3 ms per frame with the defaults and 0.6 ms with the settings below (same process, 40 runs).

``tune_allocator`` raises glibc's mmap threshold to its maximum and the trim threshold well above
one frame's worth, so freed buffers are reused by the next frame. It also caps the number of
malloc arenas (``ARENA_MAX``): glibc gives threads up to 8 per core of their own, each keeping
its freed frame buffers and its fragments of a freed model, and ``malloc_trim`` cannot hand back
what lies between live chunks there. The node's threads (DDS, executor, worker, watchdog runner,
native pools, the multi-camera stages) then grew RSS by ~10 % over a 600-frame soak; with one
arena the same soak ended 4.6 % below its start (docs/HARDENING.md). The cost is that up to
``TRIM_THRESHOLD_BYTES`` of freed memory may stay in the process (RSS) instead of going back to
the system. It is process-wide, so the executables call it once at start; library code never does.
Set ``EDGEMOE_MALLOC_TUNING=0`` to keep the C library's defaults (e.g. to compare).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os

log = logging.getLogger(__name__)

#: ``mallopt`` parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
#: Allocations below this come from the heap, not a fresh mmap: glibc's largest allowed value on
#: 64-bit (HEAP_MAX_SIZE / 2), well above a 1080p float32 depth map (8.3 MB).
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: Free memory at the heap top is returned to the kernel only beyond this: several frames' worth.
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024
#: Malloc arenas at most: the main one and one shared by every other thread. Large buffers come
#: from the heap under the raised mmap threshold either way; what threads would gain from arenas
#: of their own is less lock contention on small allocations, which the frame path does not make
#: many of (the kernels allocate nothing per call).
ARENA_MAX = 2
#: Environment switch: "0" / "false" / "off" keeps the defaults.
ENV_SWITCH = "EDGEMOE_MALLOC_TUNING"

_applied: bool | None = None


def tuning_enabled(environ: dict[str, str] | None = None) -> bool:
    """False when ``EDGEMOE_MALLOC_TUNING`` is set to 0/false/off/no."""
    value = (environ if environ is not None else os.environ).get(ENV_SWITCH, "1")
    return value.strip().lower() not in ("0", "false", "off", "no")


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it; musl/macOS mallopt differs
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocator(mmap_threshold: int = MMAP_THRESHOLD_BYTES,
                   trim_threshold: int = TRIM_THRESHOLD_BYTES, arena_max: int = ARENA_MAX) -> bool:
    """Apply the thresholds once per process; True if they are in effect.

    Returns False (and changes nothing) when disabled by the environment, or when the C library
    is not glibc; logs why at debug level. Safe to call more than once.
    """
    global _applied
    if _applied is not None:
        return _applied
    if not tuning_enabled():
        log.debug("allocator tuning disabled by %s", ENV_SWITCH)
        _applied = False
        return False
    libc = _glibc()
    if libc is None:
        log.debug("allocator tuning skipped: the C library is not glibc")
        _applied = False
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and \
        bool(libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold))) and \
        bool(libc.mallopt(M_ARENA_MAX, int(arena_max)))
    if not ok:
        log.warning("allocator tuning: glibc mallopt refused mmap threshold %d / trim threshold "
                    "%d / arena max %d", mmap_threshold, trim_threshold, arena_max)
    _applied = ok
    return ok


def release_free_memory() -> bool:
    """Hand freed heap memory back to the kernel now (glibc ``malloc_trim(0)``, every arena).

    Why: a model reload holds the old and the new model together for a moment (the old one keeps
    serving until the new one is ready), ~150 MB each for the shipped model with its packed
    weights. Once the old one is freed, glibc keeps the pages: freed chunks inside the heap are
    never trimmed, and the top only beyond ``TRIM_THRESHOLD_BYTES``. A node that reloads daily
    then grows by a model's worth per reload (measured: 336 -> 537 -> 674 MB). Executables call
    this after a reload or cleanup (rare events, a few ms); the next frames re-fault their
    buffers once. Returns True if memory was released; False where the C library is not glibc.

    Cyclic garbage is collected first: memory only a reference cycle still holds (an exception's
    traceback and the frames in it, with the model a failed call ran) is freed at some later
    full collection, after this trim, and would then stay in the process.
    """
    gc.collect()
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))
