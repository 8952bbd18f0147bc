# SPDX-License-Identifier: Apache-2.0
"""Float <-> raw fixed-point conversion in the formats of ``accel/interface.py``.

Raw values are plain int64 numpy arrays holding the two's-complement integer of the ap_fixed
value (value = raw * 2^-frac); keeping them as integers is what makes the emulator bit-exact.
"""

from __future__ import annotations

import numpy as np

from ..accel.interface import FORMATS, FixedFormat, dequantize, quantize

ACT = FORMATS["act"]


def fmt(name: str | FixedFormat) -> FixedFormat:
    """The format object for a name (``KeyError`` lists nothing: names come from interface.py)."""
    return name if isinstance(name, FixedFormat) else FORMATS[name]


def to_raw(x: np.ndarray, fmt_name: str | FixedFormat) -> np.ndarray:
    """Quantise floats to raw integers (round to nearest, ties up, saturate)."""
    return quantize(x, fmt(fmt_name))[0]


def to_float(raw: np.ndarray, fmt_name: str | FixedFormat = ACT) -> np.ndarray:
    """Raw integers to float64 values."""
    return dequantize(raw, fmt(fmt_name))


def act_to_float32(raw: np.ndarray) -> np.ndarray:
    """Activation raw values (int32 features of the kernel) as float32, i.e. raw / 2^22."""
    return (np.asarray(raw, dtype=np.float64) * ACT.lsb).astype(np.float32)


__all__ = ["ACT", "fmt", "to_raw", "to_float", "act_to_float32", "quantize", "dequantize"]
