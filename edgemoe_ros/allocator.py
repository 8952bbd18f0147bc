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
from collections.abc import Mapping

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
#: Malloc arenas at most: one, the main heap, for every thread. Large buffers come from the heap
#: under the raised mmap threshold either way; what threads would gain from arenas of their own is
#: less lock contention on small allocations, which the frame path does not make many of (the
#: kernels allocate nothing per call; Python's small objects have their own allocator). The cap
#: binds only threads that take an arena after it is set, so the node's console scripts set it
#: before importing rclpy (ros/executables.py). Set after it, the node ran on three arenas whose
#: 64 MB heaps held 164 MB resident six minutes into a soak, with ~305 MB in use in the whole
#: process, and RSS per cycle kept rising (docs/HARDENING.md); a single arena had ended an earlier
#: soak 4.6 % below its start.
ARENA_MAX = 1
#: Environment switch: "0" / "false" / "off" keeps the defaults.
ENV_SWITCH = "EDGEMOE_MALLOC_TUNING"

_applied: bool | None = None


def tuning_enabled(environ: Mapping[str, str] | None = None, switch: str = ENV_SWITCH) -> bool:
    """False when the environment switch ``switch`` (``EDGEMOE_MALLOC_TUNING`` unless named) is
    set to 0/false/off/no: the one reading of every process-tuning switch."""
    value = (environ if environ is not None else os.environ).get(switch, "1")
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
    no_huge_pages_for_numpy()
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and \
        bool(libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold))) and \
        bool(libc.mallopt(M_ARENA_MAX, int(arena_max)))
    if not ok:
        log.warning("allocator tuning: glibc mallopt refused mmap threshold %d / trim threshold "
                    "%d / arena max %d", mmap_threshold, trim_threshold, arena_max)
    _applied = ok
    return ok


def no_huge_pages_for_numpy() -> bool:
    """Stop numpy asking for transparent huge pages on its large arrays; True if it was asked.

    Why: numpy ``madvise(MADV_HUGEPAGE)``s every array of 4 MB or more, which marks those heap
    ranges for khugepaged. With the kernel's default ``max_ptes_none`` (511), khugepaged
    collapses any 2 MB range of them with a single page in use back into a whole huge page. So
    the frame buffers that ``malloc_trim`` handed back were filled in again, zeroed, while the
    heap in use stayed flat. Measured in bench/soak.py (720p, cpu-speed fpga model, 1,500 frames):
    AnonHugePages 66 -> 164 MB and RSS minus heap in use 150 -> 192 MB over 4 minutes, with heap
    in use level at 303-316 MB (docs/HARDENING.md). The arrays stay on 4 KiB pages (no measurable
    effect on the kernels: docs/HARDENING.md); ``NUMPY_MADVISE_HUGEPAGE=1`` in the environment
    keeps numpy's choice.
    """
    if os.environ.get("NUMPY_MADVISE_HUGEPAGE") is not None:
        return False  # the user chose
    try:
        from numpy.core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy 2 moved it
        try:
            from numpy._core.multiarray import _set_madvise_hugepage  # type: ignore[no-redef]
        except ImportError:
            return False
    return bool(_set_madvise_hugepage(False))


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


def rss_bytes() -> int | None:
    """This process's resident set size, from ``/proc/self/statm`` (None where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class FreeMemoryDecay:
    """Give freed heap pages back to the kernel once a burst has left them unused.

    Why: ``tune_allocator`` keeps freed frame buffers in the heap so the next frame does not
    re-fault them; the price is that a burst (a reload, a backlog of frames, a device fault and
    its fallback) leaves its freed buffers resident for good. jemalloc's answer is decay purging
    (dirty pages returned ~10 s after they were freed); glibc has none. So the node calls
    :meth:`tick` from its diagnostics timer, and this calls ``malloc_trim(0)`` when RSS stands
    more than ``slack_bytes`` above its settled level, so at most once per ``period_s``. The
    settled level is RSS ``period_s`` after the first tick or the last trim (the frames have
    re-faulted their buffers by then), or lower if RSS falls below it. In steady state frames
    reuse their buffers and RSS stays level: nothing is trimmed. After a burst: one trim, then
    each frame buffer is re-faulted once (a few ms). No ``gc.collect`` here (that is
    :func:`release_free_memory`'s, for rare events): a full collection holds the GIL for tens of
    ms on a model-sized heap.
    """

    def __init__(self, period_s: float = 10.0, slack_bytes: int = 32 * 1024 * 1024) -> None:
        self.period_s = period_s
        self.slack_bytes = slack_bytes
        self.trims = 0
        self._settled: int | None = None
        self._settle_at: float | None = None

    def tick(self, now: float) -> bool:
        """Trim if due (see the class); True if it trimmed. ``now``: a monotonic clock, s."""
        rss = rss_bytes()
        if rss is None or not _applied:
            return False
        if self._settle_at is None:
            self._settle_at = now + self.period_s
        if self._settled is None:
            if now >= self._settle_at:
                self._settled = rss
            return False
        if rss < self._settled:
            self._settled = rss
            return False
        if rss - self._settled <= self.slack_bytes:
            return False
        libc = _glibc()
        if libc is None:
            return False
        libc.malloc_trim(0)
        self.trims += 1
        self._settled, self._settle_at = None, now + self.period_s
        return True
