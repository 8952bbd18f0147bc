# SPDX-License-Identifier: Apache-2.0
"""The analytic accelerator latency model: tied to the HLS code, internally consistent, and
responsive to each of its assumptions."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from edgemoe_ros.accel import interface as itf
from edgemoe_ros.accel.latency_model import (
    EDGE_MOE_BOARD_MS,
    AcceleratorParams,
    estimate,
    expected_tokens_per_expert,
    linear_cycles,
    reload_ms,
)
from edgemoe_ros.model.config import ModelConfig, tiny_config

SPEC = ModelConfig()
HLS = Path(__file__).resolve().parents[1] / "hls_accel"
HLS_INCLUDE = HLS / "include"
LINEAR_STAGES = {"patch_embed", "qkv", "proj", "dense_mlp", "router", "experts"}
NO_OVERLAP = AcceleratorParams(tile_load_overlap=False, tile_fetch_overlap=False)


def _hls_constant(header: str, name: str) -> int:
    """``static const int name = N;`` of a header, N a literal or a generated-header constant."""
    text = (HLS_INCLUDE / header).read_text()
    m = re.search(rf"static const int {name} = (\w+);", text)
    assert m, f"{header}: no 'static const int {name} = N;'"
    value = m.group(1)
    if value.isdigit():
        return int(value)
    m = re.search(
        rf"static const int {value} = (\d+);", (HLS_INCLUDE / "edgemoe_interface.h").read_text()
    )
    assert m, f"{header}: {name} = {value}, which edgemoe_interface.h does not define"
    return int(m.group(1))


def _dataflow_tasks(header: str) -> list[list[str]]:
    """Calls in each function body that holds a DATAFLOW region (a comment does not count): loads
    overlap compute in hardware only when the load and the compute are tasks of one region."""
    text = (HLS_INCLUDE / header).read_text()
    regions = []
    for m in re.finditer(r"^\s*#pragma HLS DATAFLOW\s*$", text, re.M):
        body = text[m.end():text.index("\n}\n", m.end())]
        regions.append(re.findall(r"^\s*([a-z_]+)(?:<[^>]*>)?\(", body, re.M))
    return regions


def test_params_match_the_hls_code():
    """Tile size, attention parallelism, lanes, beat width and load overlap are what hls_accel/
    implements."""
    p = AcceleratorParams()
    assert p.tile == _hls_constant("linear.h", "tile")
    assert p.attn_parallel == _hls_constant("attention.h", "par")
    for header in ("layernorm.h", "gelu.h", "moe.h", "patch_embed.h", "attention.h"):
        assert p.elements_per_cycle == _hls_constant(header, "lanes") == itf.ELEM_LANES, header
    assert (
        p.weight_words_per_cycle
        == _hls_constant("burst.h", "words_per_beat")
        == itf.WORDS_PER_BEAT
    )
    assert p.tile_load_overlap == (["burst_read", "linear_group"] in _dataflow_tasks("linear.h"))
    assert _dataflow_tasks("moe.h") == []  # no expert-level overlap exists, so the model has none
    keys = re.search(
        r"Keys:.*?#pragma HLS PIPELINE II = (\d+)", (HLS_INCLUDE / "attention.h").read_text(), re.S
    )
    assert keys and p.attn_key_ii == int(keys.group(1))
    core = (HLS / "src" / "edgemoe_core.cpp").read_text()
    assert "variable = param_cache cyclic factor = WORDS_PER_BEAT" in core
    assert p.param_reads_per_cycle == 2 * itf.WORDS_PER_BEAT
    ln_out = re.search(
        r"LnOut:.*?#pragma HLS PIPELINE II = (\d+)",
        (HLS_INCLUDE / "layernorm.h").read_text(),
        re.S,
    )
    assert ln_out and int(ln_out.group(1)) == -(
        -2 * p.elements_per_cycle // p.param_reads_per_cycle
    )
    assert p.tile_fetch_overlap == ("RowsFetch:" in (HLS_INCLUDE / "linear.h").read_text())
    assert p.clock_mhz == itf.CLOCK_MHZ


def test_weight_masters_are_beat_wide():
    """The estimate's weight rate assumes whole-beat reads: the top's weight ports are beat_t."""
    top = (HLS / "src" / "edgemoe_top.cpp").read_text()
    for name in ("weights_one_time", "weights_experts"):
        assert re.search(rf"const beat_t \*{name}\b", top), name
    assert "hls::vector<word_t, WORDS_PER_BEAT> beat_t" in (HLS_INCLUDE / "burst.h").read_text()


@pytest.mark.parametrize(
    "params", [AcceleratorParams(), NO_OVERLAP], ids=["as_written", "no_overlap"]
)
def test_linear_unit_cycles_cover_exactly_the_linear_macs(params):
    """MAC cycles x tile^2 = every linear MAC of the config's cost model (dims are tile
    multiples)."""
    est = estimate(SPEC, params=params)
    linear = sum(s.compute_cycles for s in est.stages if s.name in LINEAR_STAGES) * params.tile**2
    attention_macs = SPEC.depth * 2 * SPEC.num_tokens**2 * SPEC.dim
    assert linear == SPEC.backbone_macs() - attention_macs


def test_totals_are_sums_of_stages_and_clock_converts_cycles():
    est = estimate(SPEC)
    assert est.total_cycles == sum(s.cycles for s in est.stages) == sum(est.by_kind().values())
    assert est.ms_per_call == pytest.approx(est.total_cycles / (itf.CLOCK_MHZ * 1e3))
    assert est.speedup_vs_edge_moe == pytest.approx(EDGE_MOE_BOARD_MS / est.ms_per_image)
    assert {s.block for s in est.stages if s.name == "attention"} == {
        f"block{b}" for b in range(SPEC.depth)
    }
    assert sum(s.name == "experts" for s in est.stages) == len(SPEC.moe_layers)
    assert sum(s.name == "dense_mlp" for s in est.stages) == SPEC.depth - len(SPEC.moe_layers)


def test_double_clock_halves_the_time():
    base = estimate(SPEC)
    fast = estimate(SPEC, params=AcceleratorParams(clock_mhz=2 * itf.CLOCK_MHZ))
    assert fast.total_cycles == base.total_cycles
    assert fast.ms_per_image == pytest.approx(base.ms_per_image / 2)


def test_images_of_a_batch_run_one_after_the_other():
    one, four = estimate(SPEC, 1), estimate(SPEC, 4)
    assert four.total_cycles == 4 * one.total_cycles
    assert four.ms_per_image == pytest.approx(one.ms_per_image)


@pytest.mark.parametrize(
    "params", [AcceleratorParams(), NO_OVERLAP], ids=["as_written", "no_overlap"]
)
def test_expert_layers_are_memory_bound(params):
    experts = [s for s in estimate(SPEC, params=params).stages if s.name == "experts"]
    assert experts and all(s.bound == "memory" for s in experts)


def test_experts_never_beat_the_bus():
    """Expert weights are read once per layer, so the expert stage cannot be faster than moving
    all of them through one AXI master at its sustained rate."""
    p = AcceleratorParams()
    layout = itf.weight_layout(SPEC)
    floor = len(SPEC.moe_layers) * SPEC.num_experts * layout.expert_words / p.weight_rate
    experts = estimate(SPEC).by_kind()["experts"]
    # above the floor: per used expert, the first band of fc1 and of fc2 and the two bias bursts
    # are exposed, and gather, GELU and scatter run in sequence (no DATAFLOW spans experts)
    assert floor <= experts < 1.3 * floor


def test_narrower_weight_loads_slow_down_loads_only():
    base = estimate(SPEC)
    narrow = estimate(SPEC, params=AcceleratorParams(weight_words_per_cycle=1))
    b, n = base.by_kind(), narrow.by_kind()
    assert n["experts"] > 5 * b["experts"] and n["patch_embed"] > b["patch_embed"]
    assert n["attention"] == b["attention"] and n["layernorm"] == b["layernorm"]


def test_bus_width_caps_the_weight_rate():
    p = AcceleratorParams(weight_words_per_cycle=64)
    assert p.weight_rate == pytest.approx(p.axi_bytes_per_cycle * p.axi_efficiency / 2)


def test_overlapping_loads_with_compute_saves_cycles():
    base = estimate(SPEC, params=NO_OVERLAP).by_kind()
    tiles = estimate(
        SPEC, params=dataclasses.replace(NO_OVERLAP, tile_load_overlap=True)
    ).by_kind()
    fetch = estimate(
        SPEC, params=dataclasses.replace(NO_OVERLAP, tile_fetch_overlap=True)
    ).by_kind()
    assert tiles["qkv"] < base["qkv"] and tiles["attention"] == base["attention"]
    assert tiles["experts"] < base["experts"]
    assert fetch["experts"] < base["experts"] and fetch["qkv"] < base["qkv"]


def test_overlap_hides_every_load_but_the_first():
    """Streamed layer: band 0 is exposed, later bands hide behind compute-bound groups."""
    p = AcceleratorParams()
    rows, k, o = SPEC.num_tokens, SPEC.dim, 3 * SPEC.dim
    cycles, _, loads = linear_cycles(p, rows, k, o)
    _, _, loads_onchip = linear_cycles(p, rows, k, o, onchip=True)
    compute_only, _, _ = linear_cycles(p, rows, k, o, onchip=True)
    assert loads_onchip == 0
    band = p.load_cycles(p.tile * k)
    assert band < compute_only // (o // p.tile)  # each group's compute outlasts the next band
    assert cycles == compute_only + band and loads == (o // p.tile) * band


def test_bigger_tile_quarters_the_mac_cycles():
    p16, p32 = AcceleratorParams(), dataclasses.replace(AcceleratorParams(), tile=32)
    _, mac16, _ = linear_cycles(p16, SPEC.num_tokens, SPEC.dim, SPEC.mlp_hidden)
    _, mac32, _ = linear_cycles(p32, SPEC.num_tokens, SPEC.dim, SPEC.mlp_hidden)
    assert mac32 * 4 == mac16


def test_measured_routing_changes_the_expert_cost():
    """Routing every token to experts 0 and 1 loads 2 expert blocks per layer instead of all 16."""
    routing = np.zeros((1, len(SPEC.moe_layers), SPEC.num_tokens, SPEC.top_k), np.int32)
    routing[..., 1] = 1
    skewed = [s for s in estimate(SPEC, routing=routing).stages if s.name == "experts"]
    uniform = [s for s in estimate(SPEC).stages if s.name == "experts"]
    assert (
        sum(s.load_cycles for s in skewed) * SPEC.num_experts
        == sum(s.load_cycles for s in uniform) * 2
    )
    assert sum(s.cycles for s in skewed) < sum(s.cycles for s in uniform)


def test_routing_of_the_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="routing shape"):
        estimate(
            SPEC,
            num_images=2,
            routing=np.zeros((1, len(SPEC.moe_layers), SPEC.num_tokens, 2), np.int32),
        )


def test_expected_tokens_per_expert_preserves_the_token_count():
    cfg = tiny_config()
    counts = expected_tokens_per_expert(cfg)
    assert counts.sum() == cfg.num_tokens * cfg.top_k
    assert counts.max() - counts.min() <= 1


def test_reload_cost_is_the_parameter_section_at_the_load_rate():
    p = AcceleratorParams()
    words = itf.weight_layout(SPEC).params_words
    cycles = words / p.weight_rate + p.axi_read_latency + p.loop_overhead
    assert reload_ms(SPEC) == pytest.approx(cycles / (p.clock_mhz * 1e3), rel=1e-4)


def test_block_table_lists_every_layer_with_its_kind():
    est = estimate(SPEC)
    per_block = est.by_block()
    assert list(per_block) == ["embed", *(f"block{b}" for b in range(SPEC.depth)), "final"]
    assert sum(per_block.values()) == est.total_cycles
    lines = est.block_table().splitlines()
    assert sum(" moe " in line for line in lines) == len(SPEC.moe_layers)
    assert sum(" dense " in line for line in lines) == SPEC.depth - len(SPEC.moe_layers)


def test_table_names_the_comparison_with_edge_moe():
    text = estimate(SPEC).table()
    assert "experts" in text and f"{EDGE_MOE_BOARD_MS:g} ms" in text


def test_spec_model_meets_the_edge_moe_target():
    """<= 59 ms per image per task at 300 MHz, with the IIs and the overlap the code has."""
    est = estimate(SPEC)
    assert est.ms_per_image <= EDGE_MOE_BOARD_MS
    assert "key loop II=2" in est.table() and "band_step" in est.table()


def test_weight_rate_follows_the_block_design_hp_ports():
    """A master that shares its HP port with another gets half of it."""
    alone = AcceleratorParams(hp_port_sharers=1)
    shared = AcceleratorParams(hp_port_sharers=2)
    assert shared.weight_rate == pytest.approx(alone.weight_rate / 2)
    assert AcceleratorParams().hp_port_sharers == 1  # gmem1 and gmem2 each have an HP port


def test_key_loop_ii_scales_the_attention_rows():
    slow = estimate(SPEC, params=AcceleratorParams(attn_key_ii=4)).by_kind()
    base = estimate(SPEC).by_kind()
    assert slow["attention"] > 1.5 * base["attention"] and slow["qkv"] == base["qkv"]


def test_rejects_an_empty_batch():
    with pytest.raises(ValueError, match="num_images"):
        estimate(SPEC, num_images=0)
