# SPDX-License-Identifier: Apache-2.0
"""The resource model of the accelerator: the SPEC configuration fits the xczu9eg with margin, and
the model's buffer list is the C++'s array declarations (parsed here), so the two cannot drift."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from edgemoe_ros.accel import interface as itf
from edgemoe_ros.accel import resources
from edgemoe_ros.model.config import ModelConfig, tiny_config

SPEC = ModelConfig()
HLS = Path(__file__).resolve().parents[1] / "hls_accel"
SHIMS = {"hls_stream.h", "hls_vector.h", "edgemoe_interface.h"}
DECL = re.compile(
    r"^\s*(?:static\s+)?([A-Za-z_][\w:<>]*)\s+([a-z_]\w*)((?:\[[^\]]+\])+)\s*;", re.M
)
PRAGMA = re.compile(
    r"#pragma HLS (ARRAY_PARTITION|ARRAY_RESHAPE|STREAM) variable = (\w+) (.*)$", re.M
)


def _kernel_sources() -> list[Path]:
    return [p for p in sorted((HLS / "include").glob("*.h")) if p.name not in SHIMS] + [
        HLS / "src" / "edgemoe_core.cpp"
    ]


def _constants() -> dict[str, int]:
    text = (HLS / "include" / "edgemoe_interface.h").read_text()
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"static const \w+ (\w+) = (-?\d+);", text)
    }


def _eval(expr: str, consts: dict[str, int]) -> int:
    names = set(re.findall(r"[A-Za-z_]\w*", expr))
    assert names <= set(consts), (
        f"array size '{expr}' uses {names - set(consts)}: size arrays by generated constants"
    )
    return int(eval(expr, {"__builtins__": {}}, consts))  # noqa: S307 - names checked above


def _declared() -> dict[str, tuple[str, tuple[int, ...]]]:
    consts = _constants()
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for path in _kernel_sources():
        for m in DECL.finditer(path.read_text()):
            ctype, name = m.group(1), m.group(2)
            ctype = "TokenSlot" if ctype == "hls::stream<TokenSlot>" else ctype
            assert name not in out, (
                f"{path.name}: array name '{name}' declared twice (the model keys by name)"
            )
            dims = tuple(_eval(d, consts) for d in re.findall(r"\[([^\]]+)\]", m.group(3)))
            out[name] = (ctype, dims)
    return out


def _partitions() -> dict[str, object]:
    consts = _constants()
    out: dict[str, object] = {}
    for path in _kernel_sources():
        for kind, name, rest in PRAGMA.findall(path.read_text()):
            if kind == "STREAM":
                out[name] = ("stream", _eval(re.search(r"depth = (\w+)", rest).group(1), consts))
            elif kind == "ARRAY_RESHAPE":
                out[name] = "reshape"
            elif "cyclic" in rest:
                out[name] = ("cyclic", _eval(re.search(r"factor = (\w+)", rest).group(1), consts))
            else:
                out[name] = "complete"
    return out


def test_model_lists_exactly_the_arrays_the_cpp_declares():
    declared = _declared()
    model = {b.name: b for b in resources.onchip_buffers(SPEC)}
    assert set(model) == set(declared)
    for name, (ctype, dims) in declared.items():
        assert model[name].ctype == ctype, name
        assert model[name].elements == math.prod(dims), name


def test_model_banks_arrays_as_the_pragmas_do():
    pragmas = _partitions()
    for b in resources.onchip_buffers(SPEC):
        want = pragmas.get(b.name, "none")
        if b.partition == "stream":
            assert want == ("stream", b.stream_depth), b.name
        else:
            assert b.partition == want, b.name


def test_type_widths_are_the_cpp_typedefs():
    text = "\n".join(p.read_text() for p in _kernel_sources())
    consts = _constants() | {"FMT_ATTN_W": itf.FORMATS["attn"].width}
    bits = resources.c_type_bits(SPEC)
    for m in re.finditer(r"typedef ap_(u?)int<(\w+)> (\w+);", text):
        if m.group(3) in bits:
            assert bits[m.group(3)] == _eval(m.group(2), consts), m.group(3)
    for m in re.finditer(r"typedef hls::vector<(\w+), (\w+)> (\w+);", text):
        if m.group(3) in bits:
            elem = {"lin_acc_t": _constants()["LIN_ACC_W"], "word_t": 16}[m.group(1)]
            assert bits[m.group(3)] == elem * _eval(m.group(2), consts), m.group(3)


def test_allocation_limits_are_what_the_dsp_count_assumes():
    """One linear unit, one LayerNorm, ATTENTION_ROWS attention rows: the pragmas say so."""
    text = "\n".join(p.read_text() for p in _kernel_sources())
    limits = dict(re.findall(r"ALLOCATION function instances = (\w+) limit = (\w+)", text))
    assert limits == {
        "linear_group": "1",
        "linear_stream": "1",
        "layernorm": "1",
        "attention": "1",
        "attention_row": "ATTENTION_ROWS",
    }
    assert _constants()["ATTENTION_ROWS"] == itf.ATTENTION_ROWS


def test_spec_configuration_fits_the_zcu102_with_margin():
    est = resources.estimate(SPEC)
    assert est.bram36 <= resources.BUDGET_FRACTION * resources.DEVICE_BRAM36, est.table()
    assert est.dsp <= resources.BUDGET_FRACTION * resources.DEVICE_DSP, est.table()
    assert est.as_dict() == {
        "bram36": est.bram36,
        "dsp": est.dsp,
        "bram_pct": round(est.bram_pct, 1),
        "dsp_pct": round(est.dsp_pct, 1),
    }


def test_the_old_memory_plan_would_not_fit():
    """The plan before issue 18 (whole expert blocks double-buffered on chip, own patch and
    expert scratch buffers) on top of today's blows the BRAM budget, as the review counted."""
    bits = resources.c_type_bits(SPEC)
    n, d = SPEC.num_tokens, SPEC.dim
    block = itf.weight_layout(SPEC).expert_words
    act = ("cyclic", itf.ELEM_LANES)
    old = [
        resources.Buffer("wbuf_a", "word_t", (block,), ("cyclic", itf.LINEAR_TILE)),
        resources.Buffer("wbuf_b", "word_t", (block,), ("cyclic", itf.LINEAR_TILE)),
        resources.Buffer("patches", "act_raw_t", (SPEC.num_patches * 3 * SPEC.patch**2,), act),
        resources.Buffer("hq", "act_raw_t", (n * SPEC.expert_hidden,), act),
        resources.Buffer("yq", "act_raw_t", (n * d,), act),
        resources.Buffer("xq", "act_raw_t", (n * d,), act),
    ]
    extra = sum(b.bram18(bits) for b in old) / 2
    assert sum(b.bram18(bits) for b in old[:2]) / 2 == pytest.approx(
        160, abs=8
    )  # the review's count
    assert (
        resources.estimate(SPEC).bram36 + extra
        > resources.BUDGET_FRACTION * resources.DEVICE_BRAM36
    )


@pytest.mark.parametrize(
    "depth,width,want",
    [(1024, 18, 1), (1548, 32, 4), (6192, 32, 13), (129, 1536, 43), (16, 32, 0)],
)
def test_bank_packing(depth, width, want):
    assert resources.bank_bram18(depth, width) == want


@pytest.mark.parametrize(
    "a,b,want", [(16, 16, 1), (32, 16, 2), (24, 24, 2), (18, 24, 1), (32, 32, 4), (49, 24, 3)]
)
def test_dsp_per_multiplier(a, b, want):
    assert resources.dsp_per_multiplier(a, b) == want


def test_smaller_model_needs_fewer_resources():
    big, small = resources.estimate(SPEC), resources.estimate(tiny_config())
    assert small.bram36 < big.bram36 and small.dsp <= big.dsp
