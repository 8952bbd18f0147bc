# SPDX-License-Identifier: Apache-2.0
"""One process owns the accelerator: an ``flock`` on a lock file per device.

Two processes that each open the overlay would re-program the PL under each other and interleave
register writes to one kernel. So the first driver of a device takes an exclusive, non-blocking
``fcntl.flock`` on ``<lock dir>/edgemoe-fpga-<device>.lock`` and writes who it is into the file;
a driver in another process then fails at once with a message naming that process. The kernel
drops the lock when the owner exits, however it exits, so a crashed node never blocks the next.

Inside the owning process a second driver *attaches* instead: it shares the claim (no
re-programming: the caller opens the overlay with ``download=False``), the claim's re-entrant
lock serialises every kernel call of all drivers of the device, and ``cache_owner`` records which
driver's parameters are in the kernel's on-chip cache, so another driver's next run reloads them.
Attaching needs the same bitstream (compared by content): the PL holds only one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Where lock files go: /run/lock (tmpfs, cleared at boot) when writable, else the temp directory.
LOCK_DIRS = (Path("/run/lock"), Path(tempfile.gettempdir()))


class DeviceLockError(RuntimeError):
    """The device is owned by another process, or by this one with another bitstream."""


@dataclass
class DeviceClaim:
    """This process's hold on one device; shared by every driver of the device in the process."""

    path: Path
    bitstream_digest: str
    bitstream: Path
    fd: int
    #: Serialises kernel calls, weight uploads and resets of all drivers of this device.
    kernel_lock: threading.RLock = field(default_factory=threading.RLock)
    users: int = 0
    #: The driver whose parameters the on-chip cache holds (None: unknown, reload on next run).
    cache_owner: object | None = None


_CLAIMS: dict[Path, DeviceClaim] = {}
_CLAIMS_LOCK = threading.Lock()


def default_lock_path(device_name: str) -> Path:
    """``edgemoe-fpga-<device>.lock`` in the first writable directory of ``LOCK_DIRS``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", device_name) or "device"
    for directory in LOCK_DIRS:
        if directory.is_dir() and os.access(directory, os.W_OK):
            return directory / f"edgemoe-fpga-{safe}.lock"
    raise DeviceLockError(f"no writable lock directory among {', '.join(map(str, LOCK_DIRS))}")


def bitstream_digest(bitstream: Path) -> str:
    return hashlib.sha256(bitstream.read_bytes()).hexdigest()


def claim(path: Path, bitstream: Path) -> tuple[DeviceClaim, bool]:
    """Take (or join) this process's claim on the device locked by ``path``.

    Returns ``(claim, attached)``: ``attached`` is True when another driver of this process
    already holds the device, so the caller must not re-program it.
    """
    path = Path(path).resolve()
    digest = bitstream_digest(bitstream)
    with _CLAIMS_LOCK:
        held = _CLAIMS.get(path)
        if held is not None:
            if held.bitstream_digest != digest:
                raise DeviceLockError(
                    f"this process already drives the device ({path}) with {held.bitstream}; "
                    f"{bitstream} is another bitstream and the PL holds one: close the other "
                    "driver first")
            held.users += 1
            return held, True
        fd = _lock_file(path)
        new = DeviceClaim(path, digest, Path(bitstream), fd, users=1)
        _CLAIMS[path] = new
        return new, False


def release(held: DeviceClaim) -> None:
    """Drop one user of ``held``; the last one unlocks the device. Safe to call once per
    claim()."""
    with _CLAIMS_LOCK:
        held.users -= 1
        if held.users > 0:
            return
        _CLAIMS.pop(held.path, None)
        try:
            fcntl.flock(held.fd, fcntl.LOCK_UN)
        finally:
            os.close(held.fd)


def _lock_file(path: Path) -> int:
    try:
        # children never inherit it
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise DeviceLockError(f"cannot open the device lock {path}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_owner(fd)
        os.close(fd)
        raise DeviceLockError(
            f"the accelerator is in use by another process ({owner}; lock {path}): one process "
            "drives it. Stop that process, or send this work to it (e.g. its ROS node), then "
            "retry") from None

    except OSError as exc:
        os.close(fd)
        raise DeviceLockError(f"cannot lock {path}: {exc}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, _owner_record().encode(), 0)
    return fd


def _owner_record() -> str:
    command = " ".join(sys.argv)[:200] or sys.executable
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    return f"pid {os.getpid()}, {command!r}, since {since}\n"


def _read_owner(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "owner unknown"
