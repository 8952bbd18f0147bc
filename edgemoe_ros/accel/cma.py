# SPDX-License-Identifier: Apache-2.0
"""Is there enough contiguous (CMA) memory for the accelerator's buffers?

``pynq.allocate`` on a Zynq UltraScale+ takes physically contiguous memory from the kernel's CMA
pool (XRT's ``zocl`` allocates there); the accelerator needs about 36 MB of it for the SPEC model
(the two weight buffers dominate). A pool that is too small makes XRT fail deep inside
``allocate`` with an unhelpful message, or succeed for the first buffers and fail on the last. So
the driver checks first, with what the kernel reports in ``/proc/meminfo`` (``CmaTotal`` /
``CmaFree``; pynq 4 itself exposes no CMA figures), and says how to fix it.

``CmaFree`` counts free pages, not the largest free run, so a fragmented pool can still fail an
allocation this check passed: the driver then reports the allocation error as it comes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
#: Allocations are whole pages.
PAGE_BYTES = 4096


@dataclass(frozen=True)
class CmaStatus:
    total_bytes: int
    free_bytes: int


class CmaError(RuntimeError):
    """Not enough contiguous memory for the buffers."""


def read_cma(meminfo: Path = MEMINFO) -> CmaStatus | None:
    """``CmaTotal``/``CmaFree`` from ``meminfo``; None when the kernel reports no CMA pool
    there."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("CmaTotal", "CmaFree"):
            number, _, unit = rest.strip().partition(" ")
            values[key] = int(number) * (1024 if unit.strip() == "kB" else 1)
    if "CmaTotal" not in values or "CmaFree" not in values:
        return None
    return CmaStatus(values["CmaTotal"], values["CmaFree"])


def pages(nbytes: int) -> int:
    """``nbytes`` rounded up to whole pages (what an allocation really takes)."""
    return -(-max(nbytes, 1) // PAGE_BYTES) * PAGE_BYTES


def check_cma(buffer_bytes: dict[str, int], status: CmaStatus | None) -> None:
    """Raise :class:`CmaError` when ``status`` cannot hold the buffers (name -> bytes)."""
    if status is None:
        return
    needed = sum(pages(n) for n in buffer_bytes.values())
    if needed <= status.free_bytes:
        return
    largest = max(buffer_bytes, key=buffer_bytes.__getitem__)
    mb = 1 / (1 << 20)
    raise CmaError(
        f"the accelerator's buffers need {needed * mb:.1f} MiB of contiguous (CMA) memory "
        f"(largest: {largest}, {buffer_bytes[largest] * mb:.1f} MiB) but only "
        f"{status.free_bytes * mb:.1f} MiB of {status.total_bytes * mb:.1f} MiB CMA is free: "
        "free buffers held by other programs (e.g. another overlay's notebook) or boot with a "
        "larger pool (kernel argument cma=, e.g. cma=512M)")

