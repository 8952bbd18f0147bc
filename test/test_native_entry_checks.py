# SPDX-License-Identifier: Apache-2.0
"""Every public entry into native code refuses what the C would misread or overwrite.

The kernels trust their pointers and sizes: a wrong shape reads past a buffer, a read-only output
(a view of immutable ``bytes``) is rewritten behind Python's back, and an output overlapping an
input gives garbage. The wrappers must raise instead.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgemoe_ros.accel import interface as itf
from edgemoe_ros.backends.base import BackendError
from edgemoe_ros.backends.native import fastops
from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.model.weights import random_init

_RNG = np.random.default_rng(0)


def _readonly(shape: tuple[int, ...], dtype: type = np.float32) -> tuple[np.ndarray, bytes]:
    raw = bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return np.frombuffer(raw, dtype).reshape(shape), raw


def _f32(*shape: int) -> np.ndarray:
    return _RNG.standard_normal(shape).astype(np.float32)


def _calls_writing(fast: fastops.FastOps, out: np.ndarray, kind: str):
    """One call per kernel, writing its output into ``out`` (of the shape that kernel needs)."""
    if kind == "gemm":
        return lambda: fast.gemm(_f32(4, 8), fastops.pack(_f32(8, 6)), out=out)
    if kind == "attention":
        return lambda: fast.attention(_f32(5, 18), streams=1, heads=2, out=out)
    if kind == "add_layernorm":
        return lambda: fast.add_layernorm(_f32(3, 8), _f32(3, 8), out, 1e-6)
    if kind == "softmax_rows":
        return lambda: fast.softmax_rows(out)
    if kind == "moe_route":
        return lambda: fast.moe_route(_f32(4, 5), 0, 5, out, np.empty((4, 2), np.float32))
    if kind == "moe_combine":
        return lambda: fast.moe_combine(_f32(6, 8), np.zeros((3, 2), np.int32), _f32(3, 2), out)
    raise AssertionError(kind)


_OUT_SHAPES = {
    "gemm": ((4, 6), np.float32),
    "attention": ((5, 6), np.float32),
    "add_layernorm": ((3, 8), np.float32),
    "softmax_rows": ((3, 8), np.float32),
    "moe_route": ((4, 2), np.int32),
    "moe_combine": ((3, 8), np.float32),
}


@pytest.mark.parametrize("kind", sorted(_OUT_SHAPES))
def test_read_only_outputs_are_refused_and_left_untouched(fast, kind):
    shape, dtype = _OUT_SHAPES[kind]
    out, raw = _readonly(shape, dtype)
    before = bytes(raw)
    with pytest.raises(ValueError, match="read-only"):
        _calls_writing(fast, out, kind)()
    assert raw == before, "the kernel rewrote an immutable buffer"
    writable = np.zeros(shape, dtype)  # the same call on a writeable buffer works
    _calls_writing(fast, writable, kind)()


def test_outputs_overlapping_inputs_are_refused(fast):
    a = _f32(4, 8)
    with pytest.raises(ValueError, match="overlaps"):
        fast.gemm(a, fastops.pack(_f32(8, 4)), out=a[:, :4])
    qkv = _f32(5, 18)
    with pytest.raises(ValueError, match="overlaps"):
        fast.attention(qkv, streams=1, heads=2, out=qkv[:, :6])
    x = _f32(3, 8)
    with pytest.raises(ValueError, match="overlaps"):
        fast.add_layernorm(x, _f32(3, 8), x, 1e-6)
    logits = _f32(4, 5)
    gates = np.empty((4, 2), np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        fast.moe_route(logits, 0, 5, logits[:, :2].view(np.int32), gates)
    expert_out = _f32(6, 8)
    with pytest.raises(ValueError, match="overlaps"):
        fast.moe_combine(expert_out, np.zeros((3, 2), np.int32), _f32(3, 2), expert_out[:3])


def test_add_layernorm_refuses_a_read_only_x_it_would_update(fast):
    x, raw = _readonly((3, 8))
    with pytest.raises(ValueError, match="read-only"):
        fast.add_layernorm(x, _f32(3, 8), np.empty((3, 8), np.float32), 1e-6)
    # Without a delta x is only read: a read-only x is fine.
    fast.add_layernorm(x, None, np.empty((3, 8), np.float32), 1e-6)
    with pytest.raises(ValueError, match="eps"):
        fast.add_layernorm(_f32(3, 8), None, np.empty((3, 8), np.float32), 0.0)


@pytest.mark.parametrize("heads", [0, -2])
def test_attention_never_returns_an_unwritten_buffer(fast, heads):
    with pytest.raises(ValueError, match="heads"):
        fast.attention(_f32(5, 18), streams=1, heads=heads)
    # The C entry itself refuses, so no caller can get uninitialised memory back as features.
    qkv, ctx = _f32(5, 18), np.full((5, 6), 7.0, np.float32)
    rc = fast._lib.fastops_attention(qkv.ctypes.data, 1, 5, heads, 3, ctx.ctypes.data, None)
    assert rc == -3 and np.all(ctx == 7.0)


# ---------------------------------------------------------------------------- csim (C-simulation)
@pytest.fixture(scope="module")
def csim():
    from edgemoe_ros.backends.csim import CSimBackend

    cfg = tiny_config()
    backend = CSimBackend()
    try:
        backend.load(random_init(cfg, seed=0))
    except BackendError as exc:
        pytest.skip(f"C-simulation library unavailable here: {exc}")
    yield backend
    backend.close()


def _images(n: int, h: int = 32, w: int = 64, c: int = 3, dtype: type = np.uint8) -> np.ndarray:
    return np.zeros((n, h, w, c), dtype)


@pytest.mark.parametrize(
    "images",
    [
        _images(1, h=16),
        _images(1, w=128),
        _images(1, c=4),
        _images(1, dtype=np.float32),
        _images(1, dtype=np.int16),
        np.zeros((32, 64, 3), np.uint8),
        _images(0),
    ],
    ids=["short", "wide", "4-channel", "float32", "int16", "no-batch-axis", "empty"],
)
def test_csim_run_raw_refuses_images_the_kernel_would_misread(csim, images):
    with pytest.raises(BackendError, match="csim"):
        csim.run_raw(images, 0)


def test_csim_library_refuses_oversized_batches_and_foreign_weights(csim):
    lib, packed = csim._lib, csim.packed
    with pytest.raises(BackendError, match="MAX_IMAGES|B <="):
        lib.run(_images(itf.MAX_IMAGES + 1), packed, 0, owner=object())
    short = itf.PackedWeights(packed.one_time[:-8], packed.experts, packed.layout)
    with pytest.raises(BackendError, match="one_time"):
        lib.run(_images(1), short, 0, owner=object())
    wrong_dtype = itf.PackedWeights(
        packed.one_time, packed.experts.astype(np.int32), packed.layout
    )
    with pytest.raises(BackendError, match="experts"):
        lib.run(_images(1), wrong_dtype, 0, owner=object())
    feats, routing = csim.run_raw(_images(2), 0)  # the checks pass a good call through
    assert feats.shape[0] == 2 and routing.shape[0] == 2
