# SPDX-License-Identifier: Apache-2.0
"""Weights file format: round trips, seeded init, and every bad-file case failing with an error
that names the file and the tensor (SPEC §6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from edgemoe_ros.model.config import ConfigError, ModelConfig, tiny_config
from edgemoe_ros.model.safetensors_reader import MAX_HEADER_BYTES
from edgemoe_ros.model.weights import (
    META_CONFIG,
    META_FORMAT,
    ModelWeights,
    WeightsError,
    backbone_param_count,
    expected_shapes,
    load_weights,
    random_init,
    read_config,
    read_metadata,
    save_weights,
)


@pytest.fixture(scope="module")
def model() -> ModelWeights:
    return random_init(tiny_config(), seed=3)


def write_raw(path: Path, tensors: dict[str, np.ndarray], cfg: ModelConfig) -> Path:
    """A safetensors file written without our validation, to build broken files."""
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
              metadata={META_CONFIG: cfg.to_json(), META_FORMAT: "1"})
    return path


def test_expected_shapes_full_model_matches_spec():
    cfg = ModelConfig()
    shapes = expected_shapes(cfg)
    assert shapes["pos_embed"] == (129, 192)
    assert shapes["blocks.1.moe.router.weight"] == (2, 192, 16)
    assert shapes["blocks.1.moe.fc1.weight"] == (16, 384, 192)
    assert "blocks.0.mlp.fc1.weight" in shapes and "blocks.0.moe.fc1.weight" not in shapes
    # SPEC §2: ~18.0 M backbone parameters, ~14.2 M of them in experts
    assert backbone_param_count(cfg) == pytest.approx(18.0e6, rel=0.02)
    experts = sum(int(np.prod(s)) for k, s in shapes.items() if ".moe.fc" in k)
    assert experts == pytest.approx(14.2e6, rel=0.01)


@pytest.mark.parametrize("dtype,tol", [("float32", 0.0), ("float16", 1e-3)])
def test_round_trip(tmp_path, model, dtype, tol):
    path = tmp_path / f"m_{dtype}.safetensors"
    save_weights(model, path, dtype=dtype)
    loaded = load_weights(path)
    assert loaded.config == model.config
    assert loaded.source == str(path)
    assert set(loaded.tensors) == set(model.tensors)
    for name, arr in model.tensors.items():
        assert loaded[name].dtype == np.float32
        np.testing.assert_allclose(loaded[name], arr, rtol=tol, atol=tol * 1e-1, err_msg=name)
    if dtype == "float16":
        assert path.stat().st_size < 0.6 * sum(a.nbytes for a in model.tensors.values())
    assert not Path(str(path) + ".tmp").exists()


def test_config_in_metadata_builds_the_model(tmp_path):
    cfg = tiny_config(head="up", up_stages=2, tasks=("depth",), resize_mode="crop", max_depth=50.0)
    path = tmp_path / "m.safetensors"
    save_weights(random_init(cfg, seed=1), path)
    meta = read_metadata(path)
    assert json.loads(meta[META_CONFIG])["max_depth"] == 50.0
    assert read_config(path) == cfg
    loaded = load_weights(path, expect=cfg)
    assert loaded.config.tasks == ("depth",) and loaded.config.head == "up"


def test_random_init_is_seeded(model):
    again = random_init(model.config, seed=3)
    other = random_init(model.config, seed=4)
    for name in model.tensors:
        np.testing.assert_array_equal(model[name], again[name])
    assert any(not np.array_equal(model[n], other[n]) for n in model.tensors)
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in model.tensors.values())


def test_save_refuses_invalid_model(tmp_path, model):
    broken = ModelWeights(model.config, dict(model.tensors), source="in-memory")
    del broken.tensors["norm.bias"]
    with pytest.raises(WeightsError, match="norm.bias"):
        save_weights(broken, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_save_float16_overflow_names_tensor(tmp_path, model):
    big = ModelWeights(model.config, dict(model.tensors), source="in-memory")
    big.tensors["pos_embed"] = np.full_like(model["pos_embed"], 1e6)
    with pytest.raises(WeightsError, match="pos_embed"):
        save_weights(big, tmp_path / "x.safetensors", dtype="float16")


def _bad_file(tmp_path: Path, model: ModelWeights, kind: str) -> tuple[Path, str]:
    t = dict(model.tensors)
    path = tmp_path / f"bad_{kind}.safetensors"
    if kind == "missing":
        tensor = "blocks.1.moe.router.weight"
        del t[tensor]
    elif kind == "extra":
        tensor = "blocks.0.attn.rel_pos"
        t[tensor] = np.zeros(4, np.float32)
    elif kind == "shape":
        tensor = "blocks.2.attn.qkv.weight"
        t[tensor] = np.zeros((5, 5), np.float32)
    elif kind == "int_dtype":
        tensor = "patch_embed.bias"
        t[tensor] = t[tensor].astype(np.int32)
    elif kind == "nan":
        tensor = "blocks.3.moe.fc2.bias"
        t[tensor] = t[tensor].copy()
        t[tensor][0, 1] = np.nan
    else:
        raise AssertionError(kind)
    return write_raw(path, t, model.config), tensor


@pytest.mark.parametrize("kind", ["missing", "extra", "shape", "int_dtype", "nan"])
def test_bad_tensor_names_file_and_tensor(tmp_path, model, kind):
    path, tensor = _bad_file(tmp_path, model, kind)
    with pytest.raises(WeightsError) as err:
        load_weights(path)
    assert err.value.path == str(path) and err.value.tensor == tensor
    assert str(path) in str(err.value) and repr(tensor) in str(err.value)


def test_truncated_file_names_file_and_tensor(tmp_path, model):
    path = tmp_path / "m.safetensors"
    save_weights(model, path)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(WeightsError, match="truncated") as err:
        load_weights(path)
    assert str(path) in str(err.value)
    assert err.value.tensor in model.tensors  # the tensor whose data was cut off
    path.write_bytes(data[:5])
    with pytest.raises(WeightsError, match="truncated") as err:
        load_weights(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "content", [b"PNG\x89 not weights at all, just bytes", b"\x08\0\0\0\0\0\0\0[1,2,3]!"]
)
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "image.png"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="safetensors") as err:
        load_weights(path)
    assert str(path) in str(err.value)


def test_safetensors_without_our_config(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(WeightsError, match="no model config") as err:
        load_weights(path)
    assert str(path) in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(WeightsError, match="file not found"):
        load_weights(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError, match="not a regular file"):
        load_weights(tmp_path)


def test_config_mismatch_with_expect(tmp_path, model):
    path = tmp_path / "m.safetensors"
    save_weights(model, path)
    with pytest.raises(WeightsError, match="config mismatch") as err:
        load_weights(path, expect=model.config.replace(num_experts=8, head="up"))
    msg = str(err.value)
    assert str(path) in msg and "num_experts=4 (expected 8)" in msg and "head='light'" in msg


def test_bad_config_json_in_metadata(tmp_path, model):
    path = tmp_path / "m.safetensors"
    save_file({k: v for k, v in model.tensors.items()}, str(path),
              metadata={META_CONFIG: json.dumps({"dim": 25, "num_heads": 3}), META_FORMAT: "1"})
    with pytest.raises(WeightsError, match="bad model config") as err:
        load_weights(path)
    assert str(path) in str(err.value)


def test_newer_format_version_rejected(tmp_path, model):
    path = tmp_path / "m.safetensors"
    save_file(
        dict(model.tensors),
        str(path),
        metadata={META_CONFIG: model.config.to_json(), META_FORMAT: "2"},
    )
    with pytest.raises(WeightsError, match="format version '2'"):
        load_weights(path)


# A config that once passed: every one of these loaded, and reload reported success, while the
# model computed NaN depth and garbage classes (or could not run at all).
_BAD_FIELDS = {
    "negative num_heads": {"num_heads": -3},
    "zero ln_eps": {"ln_eps": 0.0},
    "negative ln_eps": {"ln_eps": -1e-6},
    "NaN ln_eps": {"ln_eps": float("nan")},
    "in_chans 1": {"in_chans": 1},
    "in_chans 0": {"in_chans": 0},
    "float img_h": {"img_h": 32.0},
    "bool top_k": {"top_k": True},
    "negative up_stages": {"up_stages": -1},
    "up_stages past the input": {"head": "up", "up_stages": 40},
    "zero pixel_std": {"pixel_std": [1.0, 0.0, 1.0]},
    "infinite pixel_mean": {"pixel_mean": [0.0, float("inf"), 0.0]},
    "two pixel_mean entries": {"pixel_mean": [0.0, 0.0]},
    "duplicate task": {"tasks": ["semseg", "semseg"]},
    "no classes": {"class_names": []},
    "empty class name": {"class_names": ["road", ""]},
    "256 classes": {"class_names": [f"c{i}" for i in range(256)]},
    "negative pyramid_mix": {"head": "pyramid", "pyramid_mix": [-1, 1]},
    "zero pyramid_dec": {"head": "pyramid", "pyramid_dec": [48, 0, 16]},
    "tasks not a list": {"tasks": "semseg"},
    "notes not an object": {"notes": [1, 2]},
    "infinite max_depth": {"max_depth": float("inf")},
}


@pytest.mark.parametrize("change", list(_BAD_FIELDS.values()), ids=list(_BAD_FIELDS))
def test_every_config_field_is_validated(change):
    data = tiny_config().to_dict()
    data.update(change)
    with pytest.raises(ConfigError, match="invalid model config"):
        ModelConfig.from_dict(data)


def test_weights_file_with_negative_num_heads_is_refused(tmp_path, model):
    """dim % -3 == 0 in Python, so the tensors' shapes fit: only the field check catches it."""
    data = model.config.to_dict()
    data["num_heads"] = -model.config.num_heads
    path = tmp_path / "m.safetensors"
    save_file(
        dict(model.tensors), str(path), metadata={META_CONFIG: json.dumps(data), META_FORMAT: "1"}
    )
    with pytest.raises(WeightsError, match="num_heads"):
        load_weights(path)


def test_huge_header_length_is_refused_before_reading(tmp_path):
    """A (sparse) file claiming a 4 GB header was read for 22 s at ~1 GB RSS before being
    refused."""
    path = tmp_path / "huge_header.safetensors"
    claimed = 4 * 1000 ** 3
    with open(path, "wb") as fh:
        fh.write(claimed.to_bytes(8, "little"))
        fh.truncate(8 + claimed + 16)  # sparse: no disk used, but the size check passes
    with pytest.raises(WeightsError, match="exceeds"):
        load_weights(path)
    assert MAX_HEADER_BYTES == 100 * 1000 * 1000  # the safetensors library's own limit
