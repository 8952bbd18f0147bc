# SPDX-License-Identifier: Apache-2.0
"""The null backend: right shapes/dtypes, zero features, valid evenly spread routing, shared
checks."""

from __future__ import annotations

import numpy as np
import pytest

from edgemoe_ros.backends import BackendError, create_backend
from edgemoe_ros.backends.null import NullBackend, uniform_routing
from edgemoe_ros.model.config import ConfigError, tiny_config
from edgemoe_ros.model.weights import random_init


@pytest.fixture()
def backend() -> NullBackend:
    b = create_backend("null")
    assert isinstance(b, NullBackend) and b.name == "null"
    b.load(random_init(tiny_config(), seed=3))
    return b


@pytest.mark.parametrize("batch", [1, 3])
def test_outputs_have_real_backend_shapes(backend: NullBackend, batch: int) -> None:
    cfg = backend.config
    images = np.full((batch, cfg.img_h, cfg.img_w, 3), 200, np.uint8)
    res = backend.run(images, ["semseg", "depth"])
    assert set(res.features) == set(res.routing) == set(res.expert_counts) == {"semseg", "depth"}
    for task in ("semseg", "depth"):
        f, r, c = res.features[task], res.routing[task], res.expert_counts[task]
        assert f.shape == (batch, cfg.num_patches, cfg.dim) and f.dtype == np.float32
        assert not f.any()
        assert (
            r.shape == (batch, len(cfg.moe_layers), cfg.num_tokens, cfg.top_k)
            and r.dtype == np.int32
        )
        assert c.shape == (len(cfg.moe_layers), cfg.num_experts) and c.dtype == np.int64
        assert c.sum() == batch * len(cfg.moe_layers) * cfg.num_tokens * cfg.top_k


def test_only_requested_tasks(backend: NullBackend) -> None:
    cfg = backend.config
    res = backend.run(np.zeros((1, cfg.img_h, cfg.img_w, 3), np.uint8), ["depth"])
    assert list(res.features) == ["depth"]


@pytest.mark.parametrize("experts,top_k,tokens", [(4, 2, 9), (16, 2, 129), (5, 3, 33), (8, 1, 17)])
def test_routing_is_a_valid_top_k_spread_evenly(experts: int, top_k: int, tokens: int) -> None:
    cfg = tiny_config(num_experts=experts, top_k=top_k, img_h=16, img_w=16 * (tokens - 1))
    r = uniform_routing(cfg, 2)
    assert r.shape == (2, len(cfg.moe_layers), tokens, top_k)
    assert r.min() >= 0 and r.max() < experts
    # k distinct experts per token, like a real top-k
    assert all(len(set(tok)) == top_k for tok in r.reshape(-1, top_k).tolist())
    counts = np.bincount(r[0, 0].ravel(), minlength=experts)
    assert counts.max() - counts.min() <= 1, counts


def test_results_are_independent_arrays(backend: NullBackend) -> None:
    cfg = backend.config
    img = np.zeros((1, cfg.img_h, cfg.img_w, 3), np.uint8)
    first = backend.run(img, ["semseg"])
    first.features["semseg"] += 1.0  # callers may write into results, as with any backend
    first.routing["semseg"][:] = 0
    second = backend.run(img, ["semseg"])
    assert not second.features["semseg"].any()
    np.testing.assert_array_equal(second.routing["semseg"], uniform_routing(cfg, 1))


def test_reload_follows_new_config(backend: NullBackend) -> None:
    cfg = tiny_config(img_h=48, img_w=32, num_experts=6, dim=12)
    backend.load(random_init(cfg))
    # warm the cache with the new config
    backend.run(np.zeros((2, 48, 32, 3), np.uint8), ["semseg"])
    res = backend.run(np.zeros((2, 48, 32, 3), np.uint8), ["semseg"])
    assert res.features["semseg"].shape == (2, cfg.num_patches, 12)
    assert res.expert_counts["semseg"].shape == (len(cfg.moe_layers), 6)


def test_shared_argument_checks() -> None:
    b = NullBackend()
    with pytest.raises(BackendError, match="run\\(\\) before load\\(\\)"):
        b.run(np.zeros((1, 32, 64, 3), np.uint8), ["semseg"])
    b.load(random_init(tiny_config()))
    with pytest.raises(
        BackendError, match=r"must be uint8 \(B, 32, 64, 3\), got uint8 \(1, 64, 32, 3\)"
    ):
        b.run(np.zeros((1, 64, 32, 3), np.uint8), ["semseg"])
    with pytest.raises(BackendError, match="float32"):
        b.run(np.zeros((1, 32, 64, 3), np.float32), ["semseg"])
    with pytest.raises(BackendError, match="no task"):
        b.run(np.zeros((1, 32, 64, 3), np.uint8), [])
    with pytest.raises(ConfigError, match="unknown task 'flow'"):
        b.run(np.zeros((1, 32, 64, 3), np.uint8), ["flow"])
    b.close()
    b.close()  # safe twice


def test_takes_no_options() -> None:
    with pytest.raises(
        BackendError, match="null: unknown option 'device' .options it takes: none"
    ):
        create_backend("null", device="fpga0")
