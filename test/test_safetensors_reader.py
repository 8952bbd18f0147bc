# SPDX-License-Identifier: Apache-2.0
"""The numpy safetensors reader: the same tensors as the ``safetensors`` package, hostile files
refused with a clear message, and a node that loads its model with ``safetensors`` unimportable
(a rosdep install has no key for it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from edgemoe_ros.model import safetensors_reader as st
from edgemoe_ros.model.weights import WeightsError, load_weights, shipped_weights_path

#: Packages with no rosdep key that the node must run without (test_rosdep.NOT_NODE_RUNTIME).
BLOCKED = ("safetensors", "torch", "pynq")
#: A sitecustomize that makes importing them fail in every process that sees it.
BLOCKER = f'''
import importlib.abc
import sys


class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
        return None


sys.meta_path.insert(0, _Blocked())
'''


def _raw(path: Path, header: dict, data: bytes, prefix: int | None = None) -> Path:
    """A file written byte by byte, to build exactly the broken file a test needs."""
    blob = json.dumps(header).encode()
    n = len(blob) if prefix is None else prefix
    path.write_bytes(n.to_bytes(8, "little") + blob + data)
    return path


def _entry(dtype: str, shape: list[int], begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def _assert_same(mine: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    assert mine.keys() == theirs.keys()
    for name, ref in theirs.items():
        got = mine[name]
        assert got.dtype == ref.dtype and got.shape == ref.shape, name
        np.testing.assert_array_equal(got, ref, err_msg=name)
        assert got.flags.aligned and got.flags.writeable, name


# ----- same tensors as the safetensors package -----
def test_shipped_model_reads_identically():
    path = shipped_weights_path()
    assert path is not None, "the shipped model is part of the package"
    _assert_same(st.read_tensors(path), load_file(str(path)))
    with safe_open(str(path), "np") as fh:
        assert st.read_header(path).metadata == fh.metadata()


def test_tiny_file_every_dtype_reads_identically(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "f64": rng.standard_normal((2, 3)),
        "f32": rng.standard_normal((4,)).astype(np.float32),
        "f16": rng.standard_normal((3, 1, 2)).astype(np.float16),
        "i64": rng.integers(-9, 9, (5,), dtype=np.int64),
        "i32": rng.integers(-9, 9, (2, 2), dtype=np.int32),
        "i16": rng.integers(-9, 9, (3,), dtype=np.int16),
        "i8": rng.integers(-9, 9, (7,), dtype=np.int8),  # odd size: the next tensor is unaligned
        "u8": rng.integers(0, 255, (3,), dtype=np.uint8),
        "u16": rng.integers(0, 9, (3,), dtype=np.uint16),
        "u32": rng.integers(0, 9, (1,), dtype=np.uint32),
        "u64": rng.integers(0, 9, (2,), dtype=np.uint64),
        "bool": np.array([True, False, True]),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(2.5, np.float32),
    }
    path = tmp_path / "tiny.safetensors"
    save_file(arrays, str(path), metadata={"k": "v"})
    _assert_same(st.read_tensors(path), load_file(str(path)))
    assert st.read_header(path).metadata == {"k": "v"}


def test_unaligned_tensor_is_copied_aligned(tmp_path):
    # An odd-sized u8 tensor first puts the f32 at an odd offset in the buffer.
    data = bytes([1, 2, 3]) + np.arange(2, dtype="<f4").tobytes()
    path = _raw(tmp_path / "odd.safetensors",
                {"a": _entry("U8", [3], 0, 3), "b": _entry("F32", [2], 3, 11)}, data)
    out = st.read_tensors(path)
    assert out["b"].flags.aligned
    np.testing.assert_array_equal(out["b"], [0.0, 1.0])


# ----- hostile files -----
GOOD = {"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [1], 8, 12)}
GOOD_DATA = np.arange(3, dtype="<f4").tobytes()


@pytest.mark.parametrize("header,data,match,tensor", [
    ({"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [1], 4, 8)}, bytes(8),
     "overlap tensor 'a'", "b"),
    ({"a": _entry("F32", [2], 0, 8), "b": _entry("F32", [1], 8, 12)}, bytes(8),
     "offsets past the end", "b"),
    ({"a": _entry("BF16", [2], 0, 4)}, bytes(4), "unknown dtype 'BF16'", "a"),
    ({"a": _entry("Q4", [2], 0, 4)}, bytes(4), "unknown dtype 'Q4'", "a"),
    ({"a": _entry("F32", [3], 0, 8)}, bytes(8), r"shape \(3,\) x F32 needs 12 bytes", "a"),
    ({"a": _entry("F32", [1], 4, 8)}, bytes(8), "gap of 4 bytes", "a"),
    ({"a": _entry("F32", [1], 0, 4)}, bytes(8), "4 bytes after the last tensor", None),
    ({"a": _entry("F32", [-1], 0, 4)}, bytes(4), "corrupt shape", "a"),
    ({"a": _entry("F32", [1], 8, 4)}, bytes(8), r"corrupt data offsets \[8, 4\]", "a"),
    ({"a": {"dtype": "F32", "shape": [1]}}, bytes(4), "corrupt header entry", "a"),
    ({"a": _entry("F32", [1], 0, 4), "__metadata__": {"k": 1}}, bytes(4),
     "corrupt __metadata__", None),
])
def test_hostile_header_refused(tmp_path, header, data, match, tensor):
    path = _raw(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(st.SafetensorsFormatError, match=match) as err:
        st.read_tensors(path)
    assert err.value.tensor == tensor


def test_truncated_file_refused_naming_the_cut_tensor(tmp_path):
    path = _raw(tmp_path / "cut.safetensors", GOOD, GOOD_DATA[:-2])
    with pytest.raises(st.SafetensorsFormatError, match="truncated") as err:
        st.read_tensors(path)
    assert err.value.tensor == "b"
    path.write_bytes(b"\x10\x00\x00")
    with pytest.raises(st.SafetensorsFormatError, match="truncated file"):
        st.read_header(path)


def test_huge_header_length_refused_before_reading_it(tmp_path):
    # A sparse file big enough to hold the claimed header: only the cap can refuse it.
    path = tmp_path / "huge.safetensors"
    claimed = st.MAX_HEADER_BYTES + 1
    with open(path, "wb") as fh:
        fh.write(claimed.to_bytes(8, "little"))
        fh.truncate(8 + claimed + 16)
    with pytest.raises(st.SafetensorsFormatError, match="exceeds the 100000000-byte limit"):
        st.read_header(path)
    path.write_bytes((1 << 62).to_bytes(8, "little") + b"{}")
    with pytest.raises(st.SafetensorsFormatError, match="exceeds"):
        st.read_header(path)


def test_duplicate_tensor_name_refused(tmp_path):
    blob = (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
            b' "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}')
    path = tmp_path / "dup.safetensors"
    path.write_bytes(len(blob).to_bytes(8, "little") + blob + bytes(8))
    with pytest.raises(st.SafetensorsFormatError, match="'a' appears twice"):
        st.read_header(path)


def test_load_weights_reports_reader_errors_with_file_and_tensor(tmp_path):
    path = _raw(tmp_path / "bad.safetensors", {"a": _entry("BF16", [2], 0, 4)}, bytes(4))
    with pytest.raises(WeightsError, match="unknown dtype") as err:
        load_weights(path)
    assert err.value.path == str(path) and err.value.tensor == "a"


# ----- the node's load path without the safetensors package -----
def _blocked_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "block_safetensors"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.mark.parametrize("module", BLOCKED)
def test_blocker_really_blocks(tmp_path, module):
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], env=_blocked_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "blocked by the test" in proc.stderr


@pytest.mark.ros
def test_node_loads_shipped_model_and_infers_without_packages_rosdep_lacks(tmp_path):
    from ros_testing import NodeProcess, RosClient, make_image, ros_env
    from sensor_msgs.msg import Image

    env = {**ros_env(tmp_path), "PYTHONPATH": _blocked_env(tmp_path)["PYTHONPATH"]}
    node = NodeProcess(tmp_path, env, params={"weights_path": ""})  # '' = the shipped model
    try:
        with RosClient(env) as client:
            client.wait_for_state("/edgemoe_node", "active")
            seg = client.collect("segmentation/image", Image)
            pub = client.publisher("image", Image)
            client.wait_for_subscribers(pub)
            client.wait_for_matched(seg)
            pub.publish(make_image(stamp=(7, 1)))
            msg = seg.wait_for(lambda m: m.header.stamp.sec == 7)
            assert msg.width > 0 and len(msg.data) == msg.step * msg.height
    finally:
        node.stop()
    log = node.output()
    assert "blocked by the test" not in log, log[-3000:]
