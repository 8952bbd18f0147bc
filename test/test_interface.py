# SPDX-License-Identifier: Apache-2.0
"""The hardware interface: generated header, register map, kernel signature, weight packing."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from edgemoe_ros.accel import interface as itf
from edgemoe_ros.accel.cpp_header import generate_header
from edgemoe_ros.model.config import ModelConfig, tiny_config
from edgemoe_ros.model.weights import expected_shapes, random_init

ROOT = Path(__file__).resolve().parents[1]
TOP_CPP = ROOT / "hls_accel" / "src" / "edgemoe_top.cpp"


def test_committed_header_is_up_to_date():
    committed = (ROOT / itf.HEADER_PATH).read_text()
    assert committed == generate_header(ModelConfig()), (
        "hls_accel/include/edgemoe_interface.h is stale: run "
        "python -m edgemoe_ros.accel.interface --header hls_accel/include/edgemoe_interface.h")


def test_header_cli_writes_variant(tmp_path):
    out = tmp_path / "h" / "edgemoe_interface.h"
    assert itf.main(["--header", str(out), "--config", "tiny"]) == 0
    text = out.read_text()
    assert f"static const int DIM = {tiny_config().dim};" in text
    assert f"MODEL_SIGNATURE = {itf.model_signature(tiny_config())};" in text
    assert itf.model_signature(tiny_config()) != itf.model_signature(ModelConfig())


@pytest.mark.parametrize("host_head", [ModelConfig(head="guided", guide_channels=4),
                                       ModelConfig(head="pyramid", pyramid_dec=(40, 24, 8))])
def test_host_side_head_does_not_change_the_kernel(host_head):
    """The shipped model (pyramid head) runs on the committed SPEC kernel; a backbone change does
    not."""
    from edgemoe_ros.backends.csim import HLS_DIR, _variant_dirs

    assert itf.is_spec_kernel(host_head) and itf.model_signature(host_head) == itf.model_signature(
        ModelConfig()
    )
    assert generate_header(host_head) == generate_header(ModelConfig())
    assert _variant_dirs(host_head, HLS_DIR) == (HLS_DIR / "build", None)
    wider = ModelConfig(expert_hidden=256)
    assert not itf.is_spec_kernel(wider) and _variant_dirs(wider, HLS_DIR)[1] is not None


def test_register_map_is_the_documented_one():
    # docs/ARCHITECTURE.md, "Accelerator interface".
    assert itf.REGISTER_MAP == {
        "ap_ctrl": 0x00,
        "gie": 0x04,
        "ier": 0x08,
        "isr": 0x0C,
        "images": 0x10,
        "weights_one_time": 0x1C,
        "weights_experts": 0x28,
        "features_out": 0x34,
        "routing_out": 0x40,
        "num_images": 0x4C,
        "task_id": 0x54,
        "reload_one_time_weights": 0x5C,
    }
    assert (itf.AP_START, itf.AP_DONE, itf.AP_IDLE, itf.AP_READY, itf.AP_AUTO_RESTART) == (
        1,
        2,
        4,
        8,
        128,
    )
    assert itf.AXI_MASTER_BUNDLES == ("gmem0", "gmem1", "gmem2", "gmem3", "gmem4")
    offsets = sorted(itf.REGISTER_MAP.values())
    assert len(set(offsets)) == len(offsets) and max(offsets) < itf.CONTROL_RANGE_BYTES


def test_top_function_matches_interface():
    src = TOP_CPP.read_text()
    sig = re.search(rf"void {itf.TOP_FUNCTION}\((.*?)\)\s*{{", src, re.S)
    assert sig, f"{itf.TOP_FUNCTION} not defined in {TOP_CPP}"
    names = [p.split()[-1].lstrip("*") for p in sig.group(1).replace("\n", " ").split(",")]
    assert names == [a.name for a in itf.KERNEL_ARGS]
    for a in itf.KERNEL_ARGS:
        assert re.search(
            rf"s_axilite port = {a.name} bundle = {itf.CONTROL_BUNDLE} offset = 0x{a.offset:X}\b",
            src,
        ), f"s_axilite pragma of {a.name}"
        if a.kind == "pointer":
            assert re.search(
                rf"m_axi port = {a.name} offset = slave bundle = {a.bundle}\b", src
            ), a.name


@pytest.mark.parametrize("cfg", [tiny_config(), ModelConfig()], ids=["tiny", "spec"])
def test_layout_covers_every_backbone_tensor_once_without_overlap(cfg):
    """Tensors never overlap; the only gaps are burst-alignment padding before aligned tensors."""
    layout = itf.weight_layout(cfg)
    for buf, total in (("one_time", layout.one_time_words), ("experts", layout.experts_words)):
        entries = sorted((e for e in layout.entries if e.buffer == buf), key=lambda e: e.offset)
        end = 0
        for e in entries:
            assert e.offset >= end, f"overlap before {e.name}"
            if e.offset > end:
                assert e.offset == itf.align_words(end), (
                    f"gap before {e.name} is not alignment padding"
                )
            end = e.offset + e.size
        assert total == itf.align_words(end)
    tensors = {e.tensor for e in layout.entries if not e.tensor.startswith("config.")}
    assert tensors == {k for k in expected_shapes(cfg) if not k.startswith("heads.")}
    params = [
        e for e in layout.entries if e.buffer == "one_time" and e.offset < layout.params_words
    ]
    assert all(e.fmt not in ("weight", "patch_weight") for e in params)
    assert layout.expert_stride * cfg.num_experts * len(cfg.moe_layers) == layout.experts_words
    assert (
        layout.expert_words <= layout.expert_stride < layout.expert_words + itf.BURST_ALIGN_WORDS
    )


@pytest.mark.parametrize("cfg", [tiny_config(), ModelConfig()], ids=["tiny", "spec"])
def test_burst_sources_are_aligned_to_whole_beats(cfg):
    """Every streamed weight tensor, every expert block and both buffer ends sit on a burst
    boundary, so the kernel's wide reads start on a beat and never run past a buffer."""
    layout = itf.weight_layout(cfg)
    assert itf.WORDS_PER_BEAT * itf.WEIGHT_WORD_BITS == itf.AXI_DATA_WIDTH_BITS
    assert itf.BURST_ALIGN_WORDS % itf.WORDS_PER_BEAT == 0
    streamed = [
        e for e in layout.entries if e.buffer == "one_time" and e.offset >= layout.params_words
    ]
    assert streamed and all(e.offset % itf.BURST_ALIGN_WORDS == 0 for e in streamed)
    blocks = [e for e in layout.entries if e.buffer == "experts" and e.name.endswith("fc1.weight")]
    assert [e.offset for e in blocks] == [i * layout.expert_stride for i in range(len(blocks))]
    for words in (
        layout.params_words,
        layout.one_time_words,
        layout.expert_stride,
        layout.experts_words,
    ):
        assert words % itf.BURST_ALIGN_WORDS == 0


def test_alignment_padding_is_zero():
    cfg = tiny_config()
    packed = itf.pack_weights(random_init(cfg, 4))
    for buf, arr in (("one_time", packed.one_time), ("experts", packed.experts)):
        used = np.zeros(arr.size, bool)
        for e in packed.layout.entries:
            if e.buffer == buf:
                used[e.offset:e.offset + e.size] = True
        assert (~used).any(), f"{buf}: the tiny model should need some padding"
        assert not arr[~used].any(), f"{buf}: padding words must be zero"


def test_pack_round_trip_within_half_an_lsb():
    cfg = tiny_config()
    w = random_init(cfg, 3)
    packed = itf.pack_weights(w)
    assert packed.one_time.dtype == np.int16 and packed.experts.dtype == np.int16
    assert packed.saturated == {}
    values = itf.unpack_weights(packed)
    names = packed.layout.by_name()
    for name, val in values.items():
        e = names[name]
        if e.tensor.startswith("config."):
            continue
        src = np.asarray(w[e.tensor], np.float64)
        src = src[e.index] if e.index is not None else src
        if e.transform == "router_t":
            src = src.transpose(0, 2, 1)
        src = src.reshape(e.shape)
        lsb = itf.FORMATS[e.fmt].lsb
        assert np.max(np.abs(val - src)) <= lsb / 2 + 1e-12, name


def test_pack_reports_saturation(caplog):
    cfg = tiny_config()
    w = random_init(cfg, 0)
    w.tensors["blocks.0.attn.qkv.weight"][0, 0] = 5.0  # weight format range is [-2, 2)
    w.tensors["blocks.1.moe.fc2.weight"][2, 1, 0] = -9.0
    with caplog.at_level(logging.WARNING, logger="edgemoe_ros.accel.interface"):
        packed = itf.pack_weights(w)
    assert packed.saturated == {
        "blocks.0.attn.qkv.weight": 1,
        "blocks.1.moe.experts.2.fc2.weight": 1,
    }
    assert "blocks.0.attn.qkv.weight" in caplog.text
    e = packed.layout.by_name()["blocks.0.attn.qkv.weight"]
    assert packed.one_time[e.offset] == itf.FORMATS["weight"].max_raw


def test_quantize_rounds_ties_up_and_saturates():
    raw, n_sat = itf.quantize(np.array([0.5, -0.5, 1.5, -1.5, 1000.0]) * 2.0 ** -14, "weight")
    assert raw.tolist() == [1, 0, 2, -1, 1000] and n_sat == 0  # ties toward +inf, like AP_RND
    raw, n_sat = itf.quantize(np.array([2.0, -2.0, -3.0]), "weight")
    assert raw.tolist() == [2 ** 15 - 1, -2 ** 15, -2 ** 15] and n_sat == 2


def test_spec_formats_table():
    f = itf.FORMATS
    assert (f["act"].width, f["act"].int_bits, f["act"].signed) == (32, 10, True)
    assert (f["weight"].width, f["weight"].int_bits) == (16, 2)
    assert (f["attn_bias"].width, f["attn_bias"].int_bits) == (16, 7)
    assert (f["bias"].width, f["bias"].int_bits) == (16, 5)
    assert (f["patch_weight"].width, f["patch_weight"].int_bits) == (16, 0)
    assert (f["pixel"].width, f["pixel"].int_bits, f["pixel"].signed) == (8, 0, False)


def test_buffer_shapes():
    cfg = ModelConfig()
    s = itf.buffer_shapes(cfg, 3)
    assert s["images"] == ((3, 128, 256, 3), np.dtype(np.uint8))
    assert s["features_out"] == ((3, 128, 192), np.dtype(np.int32))
    assert s["routing_out"] == ((3, 6, 129, 2), np.dtype(np.int32))
    with pytest.raises(ValueError, match="num_images 0"):
        itf.buffer_shapes(cfg, 0)
