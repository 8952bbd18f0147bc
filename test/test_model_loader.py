# SPDX-License-Identifier: Apache-2.0
"""The node's model holder: shipped-path resolution, fallback engine, reload-vs-rebuild
decision."""

import dataclasses

import numpy as np
import pytest

from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.model.weights import WeightsError, random_init
from edgemoe_ros.ros import model_loader as ml
from edgemoe_ros.ros import params as P


def _params(**changes):
    base = {
        p.name: (tuple(p.default) if isinstance(p.default, list) else p.default) for p in P.PARAMS
    }
    base.update(changes)
    return P.NodeParams(**base)


def test_empty_weights_path_means_shipped_model(tmp_path):
    assert ml.resolve_weights_path("") == ml.SHIPPED_WEIGHTS
    assert (
        ml.SHIPPED_WEIGHTS.parent.name == "data"
        and ml.SHIPPED_WEIGHTS.parent.parent.name == "edgemoe_ros"
    )
    assert ml.resolve_weights_path(str(tmp_path / "m.safetensors")) == tmp_path / "m.safetensors"


def test_missing_weights_file_names_it(tmp_path):
    with pytest.raises(WeightsError, match="nope.safetensors"):
        ml.load_weights_for(_params(weights_path=str(tmp_path / "nope.safetensors")))


def test_load_model_with_fallback_and_reload_on_same_setup():
    weights = random_init(tiny_config(), seed=0)
    params = _params(backend="reference", fallback_backend="cpu")
    model = ml.load_model(params, weights)
    try:
        assert model.fallback is not None and model.fallback_backend == "cpu"
        img = np.random.default_rng(0).integers(0, 256, (40, 80, 3), dtype=np.uint8)
        a = model.engine.infer(img, tasks=("depth",)).depth
        b = model.fallback.infer(img, tasks=("depth",)).depth
        np.testing.assert_allclose(a, b, rtol=1e-3)  # the fallback computes the same model

        other = random_init(tiny_config(), seed=1)
        assert model.same_setup(params, other.config)
        model.reload(other, params)
        assert model.source is params  # what runs, for a failed later reload to restore
        assert not np.allclose(model.engine.infer(img, tasks=("depth",)).depth, a)
        assert not model.same_setup(dataclasses.replace(params, backend="cpu"), other.config)
        assert not model.same_setup(params, tiny_config(dim=48))
    finally:
        model.close()


def test_fallback_equal_to_backend_is_ignored():
    model = ml.load_model(
        _params(backend="cpu", fallback_backend="cpu"), random_init(tiny_config())
    )
    try:
        assert model.fallback is None and model.fallback_backend == ""
        assert model.same_setup(_params(backend="cpu", fallback_backend="cpu"), model.config)
    finally:
        model.close()
