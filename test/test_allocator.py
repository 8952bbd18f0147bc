# SPDX-License-Identifier: Apache-2.0
"""The allocator tuning keeps frame-sized buffers in the heap: no page faults on reuse (glibc)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgemoe_ros import allocator

# A "frame": three 3.7 MB buffers (720p depth-sized) alive together, touched, then freed, as the
# node's output path does. Prints the minor page faults per frame after two warm-up frames.
_FRAMES = textwrap.dedent("""
    import resource, numpy as np
    from edgemoe_ros.allocator import tune_allocator
    applied = tune_allocator()
    def frame():
        bufs = [np.ones(720 * 1280 * 4, np.uint8) for _ in range(3)]
        return sum(int(b[::4096].sum()) for b in bufs)
    for _ in range(2):
        frame()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        frame()
    print(int(applied), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 8)
""")


def _faults_per_frame(switch: str) -> tuple[bool, float]:
    env = dict(os.environ, **{allocator.ENV_SWITCH: switch})
    out = subprocess.run([sys.executable, "-c", _FRAMES], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    return out[0] == "1", float(out[1])


@pytest.mark.skipif(allocator._glibc() is None, reason="allocator tuning is glibc-only")
def test_tuned_process_reuses_frame_buffers_without_page_faults() -> None:
    applied, tuned = _faults_per_frame("1")
    assert applied
    pages_per_frame = 3 * 720 * 1280 * 4 // 4096
    assert tuned < 0.05 * pages_per_frame, f"{tuned} faults per frame with tuning"
    applied, default = _faults_per_frame("0")
    assert not applied
    # The defaults give every frame fresh pages: this is what the tuning exists to avoid.
    assert default > 0.5 * pages_per_frame, f"only {default} faults per frame with the defaults"


@pytest.mark.parametrize(("value", "enabled"),
                         [("1", True), ("", True), ("0", False), ("off", False),
                          ("False", False), ("no", False), ("yes", True)])
def test_environment_switch(value: str, enabled: bool) -> None:
    assert allocator.tuning_enabled({allocator.ENV_SWITCH: value}) is enabled
    assert allocator.tuning_enabled({}) is True


# Frees ~200 MB of heap-sized blocks (below the tuned mmap threshold, so they come from the heap)
# while one later block stays alive above them: no trim at the top can return them. Prints RSS
# in MB after the free, then after release_free_memory().
_RELEASE = textwrap.dedent("""
    import numpy as np
    from edgemoe_ros.allocator import release_free_memory, tune_allocator
    def rss():
        return next(int(l.split()[1]) for l in open("/proc/self/status")
                    if l.startswith("VmRSS")) / 1024
    tune_allocator()
    blocks = [np.ones(4 << 20, np.uint8) for _ in range(50)]
    pin = np.ones(1 << 20, np.uint8)
    del blocks
    before = rss()
    released = release_free_memory()
    print(int(released), round(before), round(rss()))
""")


@pytest.mark.skipif(allocator._glibc() is None, reason="malloc_trim is glibc-only")
def test_release_free_memory_returns_a_freed_model_to_the_system() -> None:
    """What a reload leaves behind (the old model's freed blocks) goes back to the kernel."""
    out = subprocess.run([sys.executable, "-c", _RELEASE], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    released, before, after = (int(v) for v in out)
    assert released == 1
    assert before - after >= 150, f"RSS {before} MB -> {after} MB: freed heap memory was kept"


# ~200 MB of heap blocks held only by a reference cycle (as an exception's traceback holds the
# frames of a failed call and the model they ran): unreachable, but not freed until a cyclic
# collection. Automatic collection is off, so only release_free_memory itself can free them.
_RELEASE_CYCLE = textwrap.dedent("""
    import gc
    import numpy as np
    from edgemoe_ros.allocator import release_free_memory, tune_allocator
    def rss():
        return next(int(l.split()[1]) for l in open("/proc/self/status")
                    if l.startswith("VmRSS")) / 1024
    gc.disable()
    tune_allocator()
    cycle = {"blocks": [np.ones(4 << 20, np.uint8) for _ in range(50)]}
    cycle["self"] = cycle
    pin = np.ones(1 << 20, np.uint8)
    del cycle
    before = rss()
    release_free_memory()
    print(round(before), round(rss()))
""")


@pytest.mark.skipif(allocator._glibc() is None, reason="malloc_trim is glibc-only")
def test_release_free_memory_frees_what_only_a_reference_cycle_held() -> None:
    """Garbage in a reference cycle is freed first, or the trim cannot return it (the soak's RSS
    grew per device fault: the fault's traceback kept the old model past the reload's trim)."""
    out = subprocess.run([sys.executable, "-c", _RELEASE_CYCLE], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    before, after = (int(v) for v in out)
    assert before - after >= 150, f"RSS {before} MB -> {after} MB: the cycle's memory was kept"


# Threads that allocate at the same time, then glibc's own account of its heaps (malloc_info).
_ARENAS = textwrap.dedent("""
    import ctypes, ctypes.util, threading
    from edgemoe_ros.allocator import tune_allocator
    tune_allocator()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    barrier = threading.Barrier(8)
    def work():
        blocks = []
        barrier.wait()
        for _ in range(200):
            blocks.append(libc.malloc(4096))
        barrier.wait()
        for b in blocks:
            libc.free(b)
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    buf, size = ctypes.c_char_p(), ctypes.c_size_t()
    libc.open_memstream.restype = ctypes.c_void_p
    fp = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
    libc.malloc_info(0, ctypes.c_void_p(fp))
    libc.fclose(ctypes.c_void_p(fp))
    print(buf.value.decode().count("<heap nr="))
""")


@pytest.mark.skipif(allocator._glibc() is None, reason="allocator tuning is glibc-only")
@pytest.mark.parametrize("switch", ["1", "0"])
def test_arenas_are_capped_so_threads_do_not_keep_heaps_of_their_own(switch):
    """8 threads allocating at once: at most ARENA_MAX heaps with the tuning; more without it
    (the check can fail: glibc's default is up to 8 arenas per core)."""
    env = dict(os.environ, **{allocator.ENV_SWITCH: switch})
    out = subprocess.run([sys.executable, "-c", _ARENAS], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    heaps = int(out.split()[-1])
    if switch == "1":
        assert heaps <= allocator.ARENA_MAX, heaps
    else:
        assert heaps > allocator.ARENA_MAX, heaps


# FreeMemoryDecay with a fake clock: frames that reuse their buffers (no trim), then a burst of
# ~200 MB freed under a live block (one trim, at the first tick allowed), then steady again.
# Prints one line per phase: trims so far and RSS in MB.
_DECAY = textwrap.dedent("""
    import numpy as np
    from edgemoe_ros.allocator import FreeMemoryDecay, rss_bytes, tune_allocator
    def mb():
        return round(rss_bytes() / 2**20)
    tune_allocator()
    decay = FreeMemoryDecay(period_s=10.0, slack_bytes=32 << 20)
    t = 0.0
    def frames(seconds):
        global t
        for _ in range(int(seconds)):
            frame = np.ones(8 << 20, np.uint8)  # one frame's buffers, freed each time
            del frame
            decay.tick(t)
            t += 1.0
    frames(30)
    print(decay.trims, mb())
    burst = [np.ones(4 << 20, np.uint8) for _ in range(50)]
    pin = np.ones(1 << 20, np.uint8)
    del burst
    peak = mb()
    frames(15)
    print(decay.trims, peak, mb())
    frames(60)
    print(decay.trims, mb())
""")


@pytest.mark.skipif(allocator._glibc() is None, reason="malloc_trim is glibc-only")
def test_free_memory_decay_trims_after_a_burst_and_not_in_steady_state() -> None:
    lines = subprocess.run([sys.executable, "-c", _DECAY], capture_output=True, text=True,
                           timeout=60, check=True).stdout.splitlines()
    steady_trims, steady_mb = (int(v) for v in lines[0].split())
    burst_trims, peak_mb, after_mb = (int(v) for v in lines[1].split())
    end_trims, end_mb = (int(v) for v in lines[2].split())
    assert steady_trims == 0, lines  # frames reuse their buffers: nothing to give back
    assert burst_trims == 1 and peak_mb - after_mb >= 150, lines  # the burst went back, once
    assert end_trims == 1 and end_mb - steady_mb < 32, lines  # and steady state is steady again


# Whether the memory of a large numpy array is marked for transparent huge pages ("hg" in the
# VmFlags of its mapping in /proc/self/smaps), with or without the tuning.
_HUGEPAGE = textwrap.dedent("""
    import sys
    import numpy as np
    from edgemoe_ros.allocator import tune_allocator
    if sys.argv[1] == "1":
        tune_allocator()
    array = np.ones(16 << 20, np.uint8)
    address = array.ctypes.data + (8 << 20)  # mid-array: numpy advises from the next page on
    flags = None
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and ":" not in head:
            start, end = (int(v, 16) for v in head.split("-"))
            inside = start <= address < end
        elif inside and line.startswith("VmFlags:"):
            flags = line.split()[1:]
    print("hg" in flags)
""")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux /proc only")
@pytest.mark.parametrize("tuned, marked", [("0", True), ("1", False)])
def test_tuned_process_keeps_numpy_arrays_off_transparent_huge_pages(tuned, marked):
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    out = subprocess.run([sys.executable, "-c", _HUGEPAGE, tuned], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    assert out == str(marked)
