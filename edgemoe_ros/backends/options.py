# SPDX-License-Identifier: Apache-2.0
"""Every backend option, its type and its bounds, in one table checked in one place.

Why: an option is a JSON value from a parameter or a command line, and an unbounded one is a
denial of service (issue 22: ``{"threads": 100000}`` was accepted; the reload never answered and
the node died with MemoryError). :func:`check_options` runs in ``create_backend`` (every CLI and
the node) and in the node's parameter validation, so a bad value is refused before anything is
built, with a message naming the backend, the option and the allowed range.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..accel.interface import MAX_IMAGES
from .base import BackendError
from .native.fastops import MODES as NATIVE_MODES

#: Native worker threads of the cpu backend: beyond any host this node runs on; each is a real
#: OS thread with its own stack, and more threads than cores only slow the GEMMs down.
MAX_THREADS = 64
#: Seconds an accelerator call may take before the driver gives up (fpga ``timeout_s``).
TIMEOUT_S_RANGE = (0.01, 600.0)
#: Longest path string accepted for a file option.
MAX_PATH_CHARS = 4096


@dataclass(frozen=True)
class Option:
    """One keyword argument of a backend constructor: JSON type and bounds."""

    name: str
    kind: str  # "bool" | "int" | "float" | "str" | "path"
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable, or None."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind in ("int", "float"):
            number = int | float if self.kind == "float" else int
            if (isinstance(value, bool) or not isinstance(value, number)
                    or not math.isfinite(value)):
                return (f"must be {'a number' if self.kind == 'float' else 'an integer'} "
                        f"in [{self.lo:g}, {self.hi:g}]")
            if not self.lo <= value <= self.hi:
                return f"must be in [{self.lo:g}, {self.hi:g}]"
            return None
        if self.kind == "path":
            text = os.fspath(value) if isinstance(value, str | os.PathLike) else None
            if (not isinstance(text, str) or not text or len(text) > MAX_PATH_CHARS
                    or "\x00" in text):
                return f"must be a non-empty path of at most {MAX_PATH_CHARS} characters"
            return None
        if self.choices and (not isinstance(value, str) or value not in self.choices):
            return f"must be one of {', '.join(self.choices)}"
        if not isinstance(value, str):
            return "must be a string"
        return None


#: Built-in backend name -> its options. A backend registered at run time (a plug-in, a test
#: double) is not in this table and checks its own keyword arguments.
BACKEND_OPTIONS: dict[str, tuple[Option, ...]] = {
    "cpu": (Option("native", "str", choices=NATIVE_MODES),
            Option("threads", "int", 1, MAX_THREADS)),
    "reference": (),
    "fixed": (),
    "null": (),
    "csim": (Option("sanitize", "bool"),),
    "fpga": (Option("bitstream", "path"), Option("timeout_s", "float", *TIMEOUT_S_RANGE),
             Option("simulate", "bool"), Option("max_images", "int", 1, MAX_IMAGES),
             Option("csim_library", "path"), Option("download", "bool")),
}


def check_options(backend: str, options: Mapping[str, Any]) -> None:
    """Raise :class:`BackendError` unless every option is one ``backend`` takes, within bounds."""
    if backend not in BACKEND_OPTIONS:
        return
    known = {o.name: o for o in BACKEND_OPTIONS[backend]}
    for name, value in options.items():
        opt = known.get(name)
        if opt is None:
            takes = ", ".join(known) or "none"
            raise BackendError(f"{backend}: unknown option {name!r} (options it takes: {takes})")
        reason = opt.problem(value)
        if reason:
            raise BackendError(f"{backend}: option {name} = {value!r} {reason}")


def check_options_any_backend(options: Mapping[str, Any]) -> None:
    """Raise :class:`BackendError` if an option a built-in backend takes is out of its bounds
    (for a value checked before the backend it goes with is known; :func:`check_options` does
    the rest)."""

    for name, value in options.items():
        owners = [b for b, opts in BACKEND_OPTIONS.items() if any(o.name == name for o in opts)]
        if owners:
            check_options(owners[0], {name: value})
