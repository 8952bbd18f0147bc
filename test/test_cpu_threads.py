# SPDX-License-Identifier: Apache-2.0
"""The native kernels' worker pool (option ``threads`` of the cpu backend) and the attention
kernel: every thread count gives the same bits as one thread, the attention kernel matches its
float64 definition, a pool used by two callers at once stays correct, and bad ``threads`` values
are refused by name."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from edgemoe_ros.backends import BackendError, create_backend, parse_backend_options
from edgemoe_ros.backends.cpu import CpuBackend
from edgemoe_ros.backends.native import fastops
from edgemoe_ros.model.config import ModelConfig, tiny_config
from edgemoe_ros.model.weights import random_init

F32 = np.float32


@pytest.fixture(scope="module")
def pools(fast):
    made = {t: fast.pool(t) for t in (2, 3)}
    yield made
    for pool in made.values():
        pool.close()


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_pool_counts_the_caller_and_refuses_bad_sizes(fast):
    one = fast.pool(1)
    assert one.threads == 1 and one.handle is None  # one thread: nothing started
    three = fast.pool(3)
    assert three.threads == 3 and three.handle
    three.close()
    three.close()  # idempotent
    assert three.handle is None
    for bad in (0, -2, True, 2.0, "2", None):
        with pytest.raises(ValueError, match="threads must be an integer >= 1"):
            fast.pool(bad)


# Big enough to be split (m * k * n well above the kernel's minimum), and small enough not to be.
@pytest.mark.parametrize("m,k,n", [(258, 192, 576), (129, 768, 192), (7, 192, 768), (5, 3, 16)])
def test_gemm_gives_the_same_bits_on_any_number_of_threads(fast, pools, m, k, n):
    rng = _rng(m + n)
    a = rng.normal(size=(m + 3, k)).astype(F32)
    packed = fastops.pack(rng.normal(size=(k, n)).astype(F32))
    bias = rng.normal(size=n).astype(F32)
    rows = rng.permutation(m + 3)[:m].astype(np.int32)
    want = fast.gemm(a, packed, bias=bias, gelu=True, rows=rows)
    for pool in pools.values():
        np.testing.assert_array_equal(
            fast.gemm(a, packed, bias=bias, gelu=True, rows=rows, pool=pool), want
        )
    with pytest.raises(BackendError, match="out of range"):  # checked before any thread starts
        fast.gemm(a, packed, rows=np.array([0, m + 3], np.int32), pool=pools[2])


def test_moe_experts_give_the_same_bits_on_any_number_of_threads(fast, pools):
    rng = _rng(5)
    nsrc, d, hidden, experts = 258, 192, 384, 16
    h = rng.normal(size=(nsrc, d)).astype(F32)
    fc1 = fastops.pack(rng.normal(0, 0.1, (experts, d, hidden)).astype(F32))
    fc2 = fastops.pack(rng.normal(0, 0.1, (experts, hidden, d)).astype(F32))
    b1, b2 = (
        rng.normal(size=(experts, hidden)).astype(F32),
        rng.normal(size=(experts, d)).astype(F32),
    )
    sizes = rng.multinomial(
        2 * nsrc, np.linspace(1, 3, experts) / np.linspace(1, 3, experts).sum()
    )
    sizes[3] = 0  # an expert nobody picked
    bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    uniq_src = rng.integers(0, nsrc, bounds[-1]).astype(np.int32)
    want = fast.moe_experts(h, uniq_src, bounds, fc1, b1, fc2, b2)
    for pool in pools.values():
        np.testing.assert_array_equal(
            fast.moe_experts(h, uniq_src, bounds, fc1, b1, fc2, b2, pool=pool), want
        )


def _attention64(qkv: np.ndarray, streams: int, heads: int) -> np.ndarray:
    rows, width = qkv.shape
    d, n = width // 3, rows // streams
    hd = d // heads
    x = qkv.astype(np.float64).reshape(streams, n, 3, heads, hd)
    q, k, v = (x[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (S, heads, N, hd)
    s = q @ k.transpose(0, 1, 3, 2)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(rows, d)


@pytest.mark.parametrize(
    "streams,n,heads,hd",
    [(1, 129, 3, 64), (2, 129, 3, 64), (3, 5, 2, 3), (1, 1, 1, 1), (2, 17, 4, 20)],
)
def test_attention_kernel_matches_float64_and_threads_change_no_bit(
    fast, pools, streams, n, heads, hd
):
    qkv = _rng(n * heads).normal(0.0, 1.0, (streams * n, 3 * heads * hd)).astype(F32)
    got = fast.attention(qkv, streams, heads)
    assert got.shape == (streams * n, heads * hd) and got.dtype == F32
    np.testing.assert_allclose(got, _attention64(qkv, streams, heads), rtol=0, atol=2e-5)
    for pool in pools.values():
        np.testing.assert_array_equal(fast.attention(qkv, streams, heads, pool=pool), got)


def test_attention_kernel_checks_its_shapes(fast):
    qkv = np.zeros((10, 18), F32)
    with pytest.raises(ValueError, match="does not split"):
        fast.attention(qkv, 3, 2)  # 10 rows into 3 streams
    with pytest.raises(ValueError, match="does not split"):
        fast.attention(qkv, 2, 4)  # 18 columns are not 3 x 4 heads
    with pytest.raises(ValueError, match="out must be"):
        fast.attention(qkv, 2, 2, out=np.empty((10, 5), F32))


def test_a_pool_shared_by_two_callers_at_once_stays_correct(fast, pools):
    """The second caller finds the pool busy and runs on its own thread: never waits, never
    mixes."""
    rng = _rng(9)
    a = [rng.normal(size=(258, 192)).astype(F32) for _ in range(2)]
    packed = fastops.pack(rng.normal(size=(192, 768)).astype(F32))
    want = [fast.gemm(x, packed) for x in a]
    errors: list[str] = []

    def hammer(i: int) -> None:
        for _ in range(60):
            if not np.array_equal(fast.gemm(a[i], packed, pool=pools[3]), want[i]):
                errors.append(f"caller {i}: wrong result")
                return

    callers = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in callers), "a caller hung on the shared pool"
    assert errors == []


@pytest.mark.parametrize("cfg", [ModelConfig(), tiny_config()], ids=["spec", "tiny"])
def test_backend_threads_option_gives_the_same_bits_as_one_thread(fast, cfg):
    weights = random_init(cfg, seed=3)
    images = _rng(3).integers(0, 256, (2, cfg.img_h, cfg.img_w, 3), dtype=np.uint8)
    one, three = (
        CpuBackend(native="on"),
        create_backend("cpu", **parse_backend_options('{"threads": 3}')),
    )
    one.load(weights)
    three.load(weights)
    assert one.threads == 1 and three.threads == 3
    for tasks in (cfg.tasks[:1], cfg.tasks):
        a, b = one.run(images, tasks), three.run(images, tasks)
        for task in tasks:
            np.testing.assert_array_equal(b.features[task], a.features[task])
            np.testing.assert_array_equal(b.routing[task], a.routing[task])
    three.close()
    assert three.threads == 1  # workers joined
    three.load(weights)  # a reload starts them again
    assert three.threads == 3
    np.testing.assert_array_equal(three.run(images, cfg.tasks[:1]).features[cfg.tasks[0]],
                                  one.run(images, cfg.tasks[:1]).features[cfg.tasks[0]])
    three.close()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2", None])
def test_bad_threads_option_is_refused_by_name(bad):
    with pytest.raises(BackendError, match="threads must be an integer >= 1"):
        CpuBackend(threads=bad)


def test_threads_on_the_numpy_path_say_they_do_not_apply(caplog):
    backend = CpuBackend(native="off", threads=2)
    with caplog.at_level(logging.WARNING, logger="edgemoe_ros.backends.cpu"):
        backend.load(random_init(tiny_config(), seed=0))
    assert backend.threads == 1
    assert any("threads=2 applies to the native kernels" in r.getMessage() for r in caplog.records)


def test_guided_refine_gives_the_same_bits_on_any_number_of_threads(fast, pools):
    """Rows are shared out; the per-thread scratch is reused across calls, so a wide call first
    leaves other data past the next (narrower) call's width, which must not leak into it."""
    from edgemoe_ros.model import heads

    for b, h, w in [(2, 9, 70), (1, 16, 33)]:
        cfg = ModelConfig(
            head="guided",
            img_h=h,
            img_w=w,
            guide_channels=8,
            refine_hidden=16,
            patch=1,
            class_names=tuple(f"c{i}" for i in range(7)),
        )
        weights = random_init(cfg, seed=b)
        rng = _rng(h)
        coarse = rng.normal(0.0, 3.0, (b, h, w, 7)).astype(F32)
        images = rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)
        want = heads.guided_refine(weights, cfg, "semseg", coarse, images, native=fast)
        for pool in pools.values():
            got = heads.guided_refine(weights, cfg, "semseg", coarse, images,
                                      native=fastops.PooledHeads(fast, pool))
            np.testing.assert_array_equal(got, want)


def test_pyramid_head_gives_the_same_bits_on_any_number_of_threads(fast, pools):
    from edgemoe_ros.model.heads import run_head

    for cfg in (tiny_config(head="pyramid", img_h=48, img_w=80), ModelConfig(head="pyramid")):
        weights = random_init(cfg, seed=23)
        rng = _rng(24)
        feats = rng.normal(0.0, 1.0, (2, cfg.num_patches, cfg.dim)).astype(F32)
        images = rng.integers(0, 256, (2, cfg.img_h, cfg.img_w, 3), dtype=np.uint8)
        want = run_head(weights, cfg, "semseg", feats, images, native=fast)
        for pool in pools.values():
            got = run_head(
                weights, cfg, "semseg", feats, images, native=fastops.PooledHeads(fast, pool)
            )
            np.testing.assert_array_equal(got, want)


def test_engine_runs_the_heads_on_the_backends_threads(fast):
    from edgemoe_ros.engine import Engine

    cfg = tiny_config(head="guided")
    weights = random_init(cfg, seed=12)
    image = _rng(13).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    with Engine(weights, backend="cpu", native_heads="on") as one:
        assert one.backend.threads == 1 and one._head_pool is None
        want = one.infer(image)
    eng = Engine(weights, backend="cpu", backend_options={"threads": 2}, native_heads="on")
    assert eng.backend.threads == 2 and eng._head_pool is not None and eng._head_pool.threads == 2
    got = eng.infer(image)
    np.testing.assert_array_equal(got.semseg, want.semseg)
    np.testing.assert_array_equal(got.depth, want.depth)
    eng.reload(weights)  # same thread count: the pool is kept
    assert eng._head_pool is not None and eng._head_pool.threads == 2
    eng.close()
    assert eng._head_pool is None and eng.backend.threads == 1
    eng.close()  # twice is fine
