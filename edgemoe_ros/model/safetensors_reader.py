# SPDX-License-Identifier: Apache-2.0
"""A numpy reader of the safetensors format, so loading a model needs no ``safetensors`` package.

A rosdep install has no key for ``safetensors`` (rosdistro's rosdep/python.yaml lists none), and
the node loads its model at configure: it must get by with numpy. The format is simple enough to
read and check in full here (https://github.com/huggingface/safetensors, "Format"):

    8 bytes   N, unsigned little-endian: the header's length
    N bytes   UTF-8 JSON object: {"name": {"dtype": "F32", "shape": [2, 3],
              "data_offsets": [begin, end]}, ..., "__metadata__": {"key": "value"}}
    rest      the data buffer: raw little-endian, C order; offsets are relative to its start

Everything is validated before any tensor is built, with the rules of the reference
implementation: the header is at most :data:`MAX_HEADER_BYTES` (checked before it is read, so a
hostile length cannot make us allocate gigabytes), every dtype is known, every shape matches its
byte range, and the byte ranges tile the data buffer exactly (no overlap, no gap, nothing after).
Writing stays with the ``safetensors`` package (training and import tools).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Largest header accepted; the reference implementation's limit too (100 MB).
MAX_HEADER_BYTES = 100_000_000
#: Bytes of the little-endian header-length prefix.
PREFIX_BYTES = 8
#: Key of the free-form string->string metadata in the header.
METADATA_KEY = "__metadata__"
#: safetensors dtype codes -> numpy dtypes (little-endian, as the format stores them). BF16 and
#: the FP8 codes have no numpy dtype and are refused as unknown.
DTYPES: dict[str, np.dtype] = {
    code: np.dtype(spec) for code, spec in (
        ("F64", "<f8"), ("F32", "<f4"), ("F16", "<f2"),
        ("I64", "<i8"), ("I32", "<i4"), ("I16", "<i2"), ("I8", "i1"),
        ("U64", "<u8"), ("U32", "<u4"), ("U16", "<u2"), ("U8", "u1"), ("BOOL", "?"),
    )
}
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})


class SafetensorsFormatError(ValueError):
    """A file that is not valid safetensors; ``tensor`` names the offending entry, if any."""

    def __init__(self, message: str, tensor: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.tensor = tensor


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's header entry, validated: numpy dtype, shape and byte range in the buffer."""

    dtype_code: str
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """The validated header: metadata, entries in file order, where the data buffer starts."""

    metadata: dict[str, str]
    entries: dict[str, TensorEntry]
    data_start: int
    data_size: int


def _prefix_and_size(fh, file_size: int) -> int:
    """The header length from the 8-byte prefix, checked against the cap and the file size."""
    raw = fh.read(PREFIX_BYTES)
    if len(raw) < PREFIX_BYTES:
        raise SafetensorsFormatError(
            f"truncated file ({file_size} bytes, shorter than the {PREFIX_BYTES}-byte "
            "safetensors header length)")
    hlen = int.from_bytes(raw, "little")
    if hlen > MAX_HEADER_BYTES:
        raise SafetensorsFormatError(
            f"header length {hlen} bytes exceeds the {MAX_HEADER_BYTES}-byte limit; "
            "corrupt or not a safetensors file")
    if hlen < 2 or PREFIX_BYTES + hlen > file_size:
        raise SafetensorsFormatError(
            f"truncated or not a safetensors file (header length {hlen}, "
            f"file {file_size} bytes)")
    return hlen


def _parse_entry(name: str, info: object, data_size: int) -> TensorEntry:
    """One header entry, with every field checked (dtype known, shape matches the byte range)."""
    if not isinstance(info, dict) or set(info) != _ENTRY_KEYS:
        raise SafetensorsFormatError(
            f"corrupt header entry (needs exactly {sorted(_ENTRY_KEYS)})", name)
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(code, str) or code not in DTYPES:
        raise SafetensorsFormatError(
            f"unknown dtype {code!r} (known: {', '.join(DTYPES)})", name)
    if not isinstance(shape, list) or not all(
            type(d) is int and d >= 0 for d in shape):
        raise SafetensorsFormatError(f"corrupt shape {shape!r} (non-negative integers)", name)
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(
            type(o) is int for o in offsets):
        raise SafetensorsFormatError(f"corrupt data_offsets {offsets!r}", name)
    begin, end = offsets
    if not 0 <= begin <= end:
        raise SafetensorsFormatError(f"corrupt data offsets [{begin}, {end}]", name)
    if end > data_size:
        raise SafetensorsFormatError(
            f"truncated file: tensor data ends at byte {end} of a {data_size}-byte data "
            "buffer (offsets past the end)", name)
    dtype = DTYPES[code]
    nbytes = math.prod(shape) * dtype.itemsize
    if end - begin != nbytes:
        raise SafetensorsFormatError(
            f"shape {tuple(shape)} x {code} needs {nbytes} bytes, data_offsets "
            f"[{begin}, {end}] hold {end - begin}", name)
    return TensorEntry(code, dtype, tuple(shape), begin, end)


def _check_tiling(entries: dict[str, TensorEntry], data_size: int) -> None:
    """Byte ranges must tile the buffer: sorted by start, each begins where the last ended."""
    pos, last = 0, None
    for name, e in sorted(entries.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if e.begin < pos:
            raise SafetensorsFormatError(
                f"data_offsets [{e.begin}, {e.end}] overlap tensor {last!r} (ends at {pos})", name)
        if e.begin > pos:
            raise SafetensorsFormatError(
                f"gap of {e.begin - pos} bytes before this tensor's data "
                f"(data_offsets [{e.begin}, {e.end}])", name)
        pos, last = e.end, name
    if pos != data_size:
        raise SafetensorsFormatError(
            f"{data_size - pos} bytes after the last tensor's data; the offsets must cover "
            "the data buffer exactly")


def _parse_metadata(meta: object) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise SafetensorsFormatError("corrupt __metadata__ (must map strings to strings)")
    return dict(meta)


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """JSON objects without repeated keys: a second entry of one name would shadow the first."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise SafetensorsFormatError(f"corrupt header: key {key!r} appears twice", key)
        out[key] = value
    return out


def read_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Parse and validate a file's header without reading any tensor data."""
    p = Path(path)
    file_size = p.stat().st_size
    with open(p, "rb") as fh:
        hlen = _prefix_and_size(fh, file_size)
        raw = fh.read(hlen)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SafetensorsFormatError(
            "corrupt safetensors header (not UTF-8 JSON); not a safetensors file?") from None
    if not isinstance(header, dict):
        raise SafetensorsFormatError("corrupt safetensors header (not a JSON object)")
    data_start = PREFIX_BYTES + hlen
    data_size = file_size - data_start
    metadata = _parse_metadata(header.get(METADATA_KEY))
    entries = {str(name): _parse_entry(str(name), info, data_size)
               for name, info in header.items() if name != METADATA_KEY}
    _check_tiling(entries, data_size)
    return SafetensorsHeader(metadata, entries, data_start, data_size)


def read_tensors(path: str | os.PathLike,
                 header: SafetensorsHeader | None = None) -> dict[str, np.ndarray]:
    """Every tensor of a file, as writable arrays in the stored dtype (little-endian), C order.

    The data buffer is read once into one allocation and each tensor is a view of its byte
    range, so a model costs its file size in memory, not twice that; a view whose start is not
    a multiple of its item size (possible after an odd-sized tensor) is copied so that every
    array handed on is aligned.
    """
    hdr = read_header(path) if header is None else header
    buf = np.empty(hdr.data_size, dtype=np.uint8)
    with open(path, "rb") as fh:
        fh.seek(hdr.data_start)
        got = fh.readinto(memoryview(buf))
    if got != hdr.data_size:
        raise SafetensorsFormatError(
            f"truncated file: read {got} of {hdr.data_size} data bytes (changed while reading?)")
    tensors: dict[str, np.ndarray] = {}
    for name, e in hdr.entries.items():
        arr = buf[e.begin:e.end].view(e.dtype).reshape(e.shape)
        tensors[name] = arr if arr.flags.aligned else arr.copy()
    return tensors
