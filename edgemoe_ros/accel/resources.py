# SPDX-License-Identifier: Apache-2.0
"""Resource model of ``edgemoe_top``: BRAM36 and DSP48E2 from the constants the C++ uses.

No Vitis runs here, so whether the accelerator fits the ZCU102's xczu9eg (912 BRAM36, 2,520 DSP)
is estimated from the code itself:

* **BRAM**: every array the kernel declares is listed in :func:`onchip_buffers` with its C type,
  element count and partitioning (``test/test_resources.py`` parses the array declarations and
  ``ARRAY_PARTITION``/``ARRAY_RESHAPE``/``STREAM`` pragmas of ``hls_accel/`` and fails when the
  two lists differ, so the model cannot drift from the code). Each bank (one partition, or the
  whole array) is packed into the cheapest BRAM18 aspect ratio (16Kx1 ... 512x36); two BRAM18 make
  a BRAM36. Plus the constant tables as ROMs (one dual-port copy per parallel reader pair) and the
  m_axi adapters' burst FIFOs.
* **DSP**: every multiplier of the datapath, per instance that exists in hardware after the
  ``ALLOCATION`` limits of the code (one linear unit, one LayerNorm, ``ATTENTION_ROWS`` attention
  rows), at the operand widths of the exact-width types (datatypes.h) or of the values it sees.
  A signed a x b product takes ``chunks(a, 27) * chunks(b, 18)`` DSP48E2 in the better orientation
  (lower chunks unsigned 26 / 17 bits). Adders are counted as fabric, not DSPs.

Assumptions (what Vitis may do differently, all printed by :func:`ResourceEstimate.table`):
banks of at most ``LUTRAM_MAX_BITS`` bits become LUTRAM or registers (0 BRAM); arrays partitioned
``complete`` are registers; Vitis packs no two arrays into one BRAM; each m_axi read or write
channel holds one burst of ``max_read_burst_length`` beats in a FIFO; no DSP is spent on adders,
comparators or constant multiplications by powers of two. LUT and FF counts are not modelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..model.config import ModelConfig
from . import interface as itf

#: xczu9eg-ffvb1156-2-e (ZCU102): block RAMs (36 Kb each) and DSP48E2 slices.
DEVICE_BRAM36 = 912
DEVICE_DSP = 2520
#: Budget of issue 18: leave a quarter of the device for routing, the m_axi/SmartConnect fabric
#: and timing closure at 300 MHz.
BUDGET_FRACTION = 0.75
#: Banks of at most this many bits map to LUTRAM / registers instead of a BRAM18.
LUTRAM_MAX_BITS = 1024
#: BRAM18 aspect ratios (depth, width) in simple dual-port mode.
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
#: Beats of one m_axi burst (max_read_burst_length / max_write_burst_length of edgemoe_top.cpp).
AXI_BURST_BEATS = 256
#: Width of the TokenSlot of moe.h (two int32).
TOKEN_SLOT_BITS = 64


def c_type_bits(cfg: ModelConfig | None = None) -> dict[str, int]:
    """Bits of each C element type the kernel's arrays use (test_resources checks the typedefs)."""
    dims = itf.accel_dims(cfg or ModelConfig())
    return {
        "word_t": itf.WEIGHT_WORD_BITS,
        "act_raw_t": 32,
        "int32_t": 32,
        "acc_t": 64,
        "bool": 1,
        "attn_raw_t": itf.FORMATS["attn"].width,
        "attn_acc_t": dims["ATTN_ACC_W"],
        "lin_acc_vec": dims["LINEAR_TILE"] * dims["LIN_ACC_W"],
        "word_vec": dims["LINEAR_TILE"] * itf.WEIGHT_WORD_BITS,
        "TokenSlot": TOKEN_SLOT_BITS,
    }


@dataclass(frozen=True)
class Buffer:
    """One on-chip array as the C++ declares it (name, element type, dims) and how it is banked.

    ``partition``: ``"none"``, ``("cyclic", factor)``, ``"complete"`` (registers), ``"reshape"``
    (complete reshape of the last dim into one wide word) or ``"stream"`` (one FIFO per element of
    the array, each ``stream_depth`` deep).
    """

    name: str
    ctype: str
    dims: tuple[int, ...]
    partition: object = "none"
    instances: int = 1
    stream_depth: int = 0
    role: str = ""

    @property
    def elements(self) -> int:
        return math.prod(self.dims)

    def banks(self, bits: dict[str, int]) -> list[tuple[int, int]]:
        """(depth, width in bits) of each physical memory of one instance."""
        w = bits[self.ctype]
        if self.partition == "complete":
            return []
        if self.partition == "stream":
            return [(self.stream_depth, w)] * self.elements
        if self.partition == "reshape":
            return [(math.prod(self.dims[:-1]), w * self.dims[-1])]
        if isinstance(self.partition, tuple):
            factor = self.partition[1]
            return [(math.ceil(self.elements / factor), w)] * factor
        return [(self.elements, w)]

    def bram18(self, bits: dict[str, int]) -> int:
        return self.instances * sum(bank_bram18(d, w) for d, w in self.banks(bits))


def bank_bram18(depth: int, width: int) -> int:
    """BRAM18 of one memory of depth x width bits in its cheapest aspect ratio (0: LUTRAM)."""
    if depth * width <= LUTRAM_MAX_BITS:
        return 0
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in BRAM18_SHAPES)


def onchip_buffers(cfg: ModelConfig) -> list[Buffer]:
    """Every array of hls_accel/, as declared (test_resources.py compares with the C++)."""
    a = itf.accel_dims(cfg)
    n, d, e, hd = cfg.num_tokens, cfg.dim, cfg.num_experts, cfg.head_dim
    tile, lanes, rows = a["LINEAR_TILE"], itf.ELEM_LANES, a["ATTENTION_ROWS"]
    params = itf.weight_layout(cfg).params_words
    act = ("cyclic", lanes)
    return [
        Buffer(
            "param_cache",
            "word_t",
            (params,),
            ("cyclic", itf.WORDS_PER_BEAT),
            role="on-chip parameters",
        ),
        Buffer("x", "act_raw_t", (n * d,), act, role="residual stream"),
        Buffer("xn", "act_raw_t", (n * d,), act, role="LayerNorm output"),
        Buffer("wide", "act_raw_t", (n * a["ACT_WIDE_COLS"],), act, role="qkv | hidden | patches"),
        Buffer("mid", "act_raw_t", (n * d,), act, role="attention out | expert out"),
        Buffer("y", "act_raw_t", (n * d,), act, role="branch out | expert rows"),
        Buffer("acc", "lin_acc_vec", (n,), role="linear accumulators"),
        Buffer("wtile", "word_vec", (2, tile), "complete", role="weight tile registers"),
        Buffer(
            "band_a",
            "word_t",
            (tile * a["LINEAR_MAX_IN"],),
            ("cyclic", tile),
            role="weight band ping",
        ),
        Buffer(
            "band_b",
            "word_t",
            (tile * a["LINEAR_MAX_IN"],),
            ("cyclic", tile),
            role="weight band pong",
        ),
        Buffer("q", "attn_raw_t", (n, hd), "reshape", role="attention q"),
        Buffer("k", "attn_raw_t", (n, hd), "reshape", role="attention k"),
        Buffer("v", "attn_raw_t", (n, hd), "reshape", role="attention v"),
        Buffer("q_reg", "attn_raw_t", (hd,), "complete", rows, role="query row registers"),
        Buffer("row_acc", "attn_acc_t", (hd,), "complete", rows, role="attention row sums"),
        Buffer("taken", "bool", (e,), "complete", role="top-k flags"),
        Buffer("ex", "acc_t", (e,), "complete", role="router exp2"),
        Buffer("p", "act_raw_t", (e,), "complete", role="router probabilities"),
        Buffer("chosen", "int32_t", (cfg.top_k,), "complete", role="top-k ids"),
        Buffer("expert_bias", "word_t", (cfg.expert_hidden + d,), role="expert biases"),
        Buffer("logits", "act_raw_t", (n * e,), role="router logits"),
        Buffer("gates", "act_raw_t", (n, cfg.top_k), role="gates"),
        Buffer("mix", "acc_t", (n * d,), act, role="expert mix"),
        Buffer("queue_tok", "int32_t", (n,), role="queued tokens"),
        Buffer("queue_gate", "act_raw_t", (n,), role="queued gates"),
        Buffer(
            "queues", "TokenSlot", (e,), "stream", stream_depth=n, role="per-expert token queues"
        ),
    ]


def rom_bram18(cfg: ModelConfig) -> dict[str, int]:
    """Constant tables as ROMs: one dual-port copy serves two readers."""
    rows = itf.ATTENTION_ROWS
    exp2 = bank_bram18(len(itf.exp2_table()), itf.FORMATS["expo"].width + 1)
    gelu = bank_bram18(itf.GELU_TABLE_SIZE, 32)
    return {
        "EXP2_TABLE (attention rows + router)": (rows + 1)
        * exp2,  # two reads (idx, idx+1) per unit
        "GELU_CORR_TABLE (per lane)": itf.ELEM_LANES * gelu,  # two reads per lane
    }


def axi_bram18() -> int:
    """Burst FIFOs of the m_axi adapters: one burst per read or write channel in use."""
    per_burst = bank_bram18(AXI_BURST_BEATS, itf.AXI_DATA_WIDTH_BITS)
    return sum(per_burst for a in itf.KERNEL_ARGS if a.kind == "pointer")


def dsp_per_multiplier(a_bits: int, b_bits: int) -> int:
    """DSP48E2 for one signed a x b product (27 x 18 signed; lower chunks unsigned 26 / 17)."""

    def chunks(bits: int, port: int) -> int:
        return 1 if bits <= port else 1 + math.ceil((bits - port) / (port - 1))

    return min(chunks(a_bits, 27) * chunks(b_bits, 18), chunks(b_bits, 27) * chunks(a_bits, 18))


@dataclass(frozen=True)
class Multipliers:
    """``count`` multipliers of ``a_bits`` x ``b_bits`` (signed widths) in one datapath unit."""

    unit: str
    count: int
    a_bits: int
    b_bits: int

    @property
    def dsp(self) -> int:
        return self.count * dsp_per_multiplier(self.a_bits, self.b_bits)


def multipliers(cfg: ModelConfig) -> list[Multipliers]:
    """Every multiplier in hardware after the ALLOCATION limits of the code."""
    a = itf.accel_dims(cfg)
    f = itf.FORMATS
    act, attn, expo = f["act"].width, f["attn"].width, f["expo"].width + 1  # unsigned -> signed
    tile, lanes, rows, hd = a["LINEAR_TILE"], itf.ELEM_LANES, a["ATTENTION_ROWS"], cfg.head_dim
    recip_bits = itf.SOFTMAX_RECIP_SHIFT - f["expo"].frac + 2  # den >= 2^(expo_frac - 1)
    rstd_bits = (
        (1 << (itf.ln_std_frac() + itf.LN_RSTD_FRAC)) // math.isqrt(itf.ln_eps_raw(cfg))
    ).bit_length() + 1
    dev_bits = act + 1
    step_bits = f["act"].frac - itf.GELU_STEP_SHIFT
    gelu_diff = int(max(abs(itf.gelu_correction_table()))).bit_length() + 1
    exp2_diff = int(max(abs(itf.exp2_table()))).bit_length() + 1
    return [
        Multipliers("linear unit (tile x tile MACs)", tile * tile, act, itf.WEIGHT_WORD_BITS),
        Multipliers("attention q.k", rows * hd, attn, attn),
        Multipliers("attention expo x v", rows * hd, expo, attn),
        Multipliers("attention normalise", rows * lanes, a["ATTN_ACC_W"], recip_bits),
        Multipliers("attention exp2 interpolation", rows, exp2_diff, itf.EXP2_LUT_BITS + 1),
        Multipliers("q scale (to_attn_format)", lanes, act, 16),
        Multipliers(
            "LayerNorm variance", lanes, dev_bits - itf.LN_SQ_SHIFT, dev_bits - itf.LN_SQ_SHIFT
        ),
        Multipliers("LayerNorm dev x rstd", lanes, dev_bits, rstd_bits),
        Multipliers(
            "LayerNorm x gamma",
            lanes,
            dev_bits + rstd_bits - itf.LN_RSTD_FRAC,
            itf.WEIGHT_WORD_BITS,
        ),
        Multipliers("GELU interpolation", lanes, gelu_diff, step_bits + 1),
        Multipliers("MoE scatter gate x y", lanes, act, act),
        Multipliers("router softmax (log2e, recip, exp2)", 1, act + 1, 18),
        Multipliers("router softmax normalise", 1, expo, recip_bits),
        Multipliers("router exp2 interpolation", 1, exp2_diff, itf.EXP2_LUT_BITS + 1),
        Multipliers("pixel normalisation", 1, act, itf.WEIGHT_WORD_BITS),
    ]


@dataclass
class ResourceEstimate:
    """BRAM36 and DSP of the SPEC (or another) configuration, with the parts they come from."""

    config: ModelConfig
    buffers: dict[str, int] = field(default_factory=dict)  # name -> BRAM18
    roms: dict[str, int] = field(default_factory=dict)
    axi: int = 0
    dsp_units: dict[str, int] = field(default_factory=dict)

    @property
    def bram18(self) -> int:
        return sum(self.buffers.values()) + sum(self.roms.values()) + self.axi

    @property
    def bram36(self) -> int:
        return math.ceil(self.bram18 / 2)

    @property
    def dsp(self) -> int:
        return sum(self.dsp_units.values())

    @property
    def bram_pct(self) -> float:
        return 100.0 * self.bram36 / DEVICE_BRAM36

    @property
    def dsp_pct(self) -> float:
        return 100.0 * self.dsp / DEVICE_DSP

    def as_dict(self) -> dict[str, float]:
        """What bench/bench_fixed.py --json reports."""
        return {
            "bram36": self.bram36,
            "dsp": self.dsp,
            "bram_pct": round(self.bram_pct, 1),
            "dsp_pct": round(self.dsp_pct, 1),
        }

    def table(self) -> str:
        lines = [f"{'on-chip memory':<40}{'BRAM36':>8}"]
        parts = {**self.buffers, **self.roms, "m_axi burst FIFOs": self.axi}
        for name, b18 in sorted(parts.items(), key=lambda kv: -kv[1]):
            if b18:
                lines.append(f"{name:<40}{b18 / 2:>8.1f}")
        lines.append(f"{'total':<40}{self.bram36:>8}  ({self.bram_pct:.1f} % of {DEVICE_BRAM36})")
        lines += ["", f"{'multipliers':<40}{'DSP':>8}"]
        for name, n in sorted(self.dsp_units.items(), key=lambda kv: -kv[1]):
            lines.append(f"{name:<40}{n:>8}")
        lines.append(f"{'total':<40}{self.dsp:>8}  ({self.dsp_pct:.1f} % of {DEVICE_DSP})")
        lines += ["", "assumptions: " + ASSUMPTIONS]
        return "\n".join(lines)


ASSUMPTIONS = (
    f"banks <= {LUTRAM_MAX_BITS} bits and 'complete' partitions are LUTRAM/registers; "
    "each bank in its cheapest BRAM18 aspect ratio, no two arrays share a BRAM; one "
    f"{AXI_BURST_BEATS}-beat FIFO per m_axi channel; ROM tables one dual-port copy per two "
    "readers; "
    "DSP48E2 27x18 signed per multiplier chunk, adders in fabric; one linear unit, one "
    "LayerNorm and ATTENTION_ROWS attention rows (the ALLOCATION pragmas); no Vitis report "
    "has confirmed any of this"
)


def estimate(cfg: ModelConfig | None = None) -> ResourceEstimate:
    """BRAM36 and DSP of the accelerator compiled for ``cfg`` (default: the SPEC model)."""
    cfg = cfg or ModelConfig()
    bits = c_type_bits(cfg)
    return ResourceEstimate(
        config=cfg,
        buffers={b.name: b.bram18(bits) for b in onchip_buffers(cfg)},
        roms=rom_bram18(cfg),
        axi=axi_bram18(),
        dsp_units={m.unit: m.dsp for m in multipliers(cfg)},
    )
