# SPDX-License-Identifier: Apache-2.0
"""Analytic latency of our ``edgemoe_top`` accelerator at its synthesis clock.

No board runs here, so the FPGA time of a frame is estimated from the HLS code in ``hls_accel/``:
the trip counts of its pipelined loops (II = 1 each), the tile size of the shared linear unit, the
row parallelism of the attention unit, the lanes of the elementwise loops, the width of the weight
masters and whether weight loads overlap compute. Every number the estimate rests on is in
:class:`AcceleratorParams` (clock, bus width, lanes and the integer-math step counts come from
``accel/interface.py``); the defaults describe the code as written, and
``test/test_latency_model.py`` re-reads the tile size, the attention parallelism, the lanes, the
beat-wide weight ports and the presence of the DATAFLOW regions from the C++ so they cannot drift.

Per image and task (the kernel processes the images of a batch one after the other):

* weight loads (``burst.h``): one AXI beat (``WORDS_PER_BEAT`` 16-bit words) per cycle, derated by
  ``axi_efficiency`` (DDR refresh, page misses, HP-port arbitration), plus ``axi_read_latency``
  cycles before the first beat of each burst;
* shared linear unit (``linear.h``), per ``tile``-wide output group: initialise the accumulators
  (one row per cycle), fetch the first ``tile x tile`` tile (one tile row per cycle), then per
  input tile ``max(rows, tile)`` cycles (rows through the MAC array while the next tile's rows are
  fetched into the other register half), then narrow one row per cycle. Streamed layers burst the
  next group's band (``tile`` weight rows) while the current group computes (``band_step``, a
  DATAFLOW region), so a group costs ``max(band load, group compute)`` and only the first band is
  exposed; expert layers read bands already on chip;
* attention (``attention.h``): q, k and v converted to the attention format one after the other,
  ``elements_per_cycle`` per cycle; then ``attn_parallel`` query rows at once, each walking all
  keys once at ``attn_key_ii`` cycles per key (the loop carries the running max and the rescale, a
  variable right shift and an add of the ``ATTN_ACC_W``-bit sums, from key to key: assumed 2 cycles
  at 3.33 ns, not 1), then the reciprocal (bit-serial) and the output;
* MoE (``moe.h``): router (streamed linear), per token top-k, exp2 softmax and its reciprocal;
  clear the mix; per used expert: gather its queued tokens, load its two bias vectors, then fc1
  and fc2 as streamed linears (band by band, the ``band_step`` DATAFLOW overlap, first band of
  each exposed), GELU and the scatter into the mix, all in sequence (no DATAFLOW spans experts);
  each used expert's weights are read once per layer, unused experts never;
* LayerNorm: per row three passes of ``elements_per_cycle`` lanes, the output pass slowed to the
  II its gamma/beta reads from the ``WORDS_PER_BEAT``-bank parameter cache allow (2), plus the
  bit-serial isqrt and reciprocal; GELU, residual adds, mix clear/combine, class/position
  embedding: ``elements_per_cycle`` per cycle; patch gathering: one burst per patch row (``patch *
  chans`` bytes, one per cycle, plus the read latency); feature write-back: one element per cycle;
* every pipelined loop invocation pays ``loop_overhead`` cycles of fill and drain.

Overlap exists only where the code has a DATAFLOW region (``band_step``: a weight band's burst
and the previous band's compute); everything else runs in sequence. The weight masters' rate is
the HP port's: 128-bit beats at the kernel clock, derated by ``axi_efficiency`` and shared with
any other bundle the block design (``accel/hwh.py`` BLOCK_DESIGN) puts on the same HP port.

The anchor for comparison is Edge-MoE's measured ~59 ms per image per task on a ZCU102 (SPEC §3).
No synthesis report or board run has confirmed any number here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..model.config import ModelConfig
from . import interface as itf
from .hwh import BLOCK_DESIGN

#: Edge-MoE (ICCAD 2023) measured on the ZCU102, per image per task (SPEC §3).
EDGE_MOE_BOARD_MS = 59.0
#: Steps of the bit-serial units of edgemoe_math.h: isqrt yields one of 32 root bits per step,
#: recip<S> one of S + 1 quotient bits per step.
ISQRT_STEPS = 32


def bundles_sharing_hp_port(bundle: str) -> int:
    """Masters the block design connects to the HP port of ``bundle`` (itself included)."""
    port = BLOCK_DESIGN.hp_port_of_bundle[bundle]
    return sum(p == port for p in BLOCK_DESIGN.hp_port_of_bundle.values())


#: The weight masters: gmem1 (one-time weights) and gmem2 (expert weights).
WEIGHT_BUNDLES = ("gmem1", "gmem2")


def recip_steps(shift: int) -> int:
    """Cycles of ``edgemoe::recip<shift>`` (restoring division, one quotient bit per cycle)."""
    return shift + 1


@dataclass(frozen=True)
class AcceleratorParams:
    """The architectural numbers of the estimate (one table). Defaults: ``hls_accel/`` as
    written."""

    clock_mhz: float = itf.CLOCK_MHZ
    #: Shared linear unit tile: ``linear_config::tile`` in linear.h (Edge-MoE: 16 x 16).
    tile: int = itf.LINEAR_TILE
    #: Query rows processed in parallel: ``attention_config::par`` in attention.h (Edge-MoE: 4).
    attn_parallel: int = itf.ATTENTION_ROWS
    #: Cycles per key of the attention key loop (its loop-carried rescale; the PIPELINE II pragma).
    attn_key_ii: int = 2
    #: Reads per cycle of the on-chip parameter cache: WORDS_PER_BEAT banks (edgemoe_core.cpp's
    #: cyclic partition, the width of the burst that fills it), two ports each. LayerNorm's output
    #: pass reads gamma and beta for every lane, so it needs 2 * lanes reads per cycle.
    param_reads_per_cycle: int = 2 * itf.WORDS_PER_BEAT
    #: Elements per cycle of the elementwise loops (``ELEM_LANES``: LayerNorm, GELU, residual,
    #: ...).
    elements_per_cycle: int = itf.ELEM_LANES
    #: 16-bit weight words the load loops accept per cycle (one AXI beat: ``WORDS_PER_BEAT``).
    weight_words_per_cycle: int = itf.WORDS_PER_BEAT
    #: One AXI master's data width (interface.py) and the share of it HP ports sustain on bursts.
    axi_bytes_per_cycle: int = itf.AXI_DATA_WIDTH_BITS // 8
    axi_efficiency: float = 0.8
    #: Masters sharing the weight masters' HP port in the block design (1: a port of their own).
    hp_port_sharers: int = max(bundles_sharing_hp_port(b) for b in WEIGHT_BUNDLES)
    #: Cycles from a burst's address to its first beat (ZynqMP HP port to PS DDR4: ~200 ns).
    axi_read_latency: int = 60
    #: Streamed weight bands load while the previous band computes (``band_step`` DATAFLOW).
    tile_load_overlap: bool = True
    #: The next weight tile is fetched into registers while the current one multiplies (RowsFetch).
    tile_fetch_overlap: bool = True
    #: Fill/drain cycles of one pipelined loop invocation.
    loop_overhead: int = 8

    @property
    def weight_rate(self) -> float:
        """Weight words per cycle actually moved: the loop's rate, capped by the AXI master."""
        bus_words = (self.axi_bytes_per_cycle * self.axi_efficiency / self.hp_port_sharers
                     / (itf.WEIGHT_WORD_BITS // 8))
        return min(float(self.weight_words_per_cycle), bus_words)

    def load_cycles(self, words: float) -> int:
        """One burst of ``words`` weight words (0 words: the idle half of a ping-pong step)."""
        if words <= 0:
            return 0
        return math.ceil(words / self.weight_rate) + self.axi_read_latency + self.loop_overhead

    def elementwise(self, n: int) -> int:
        return math.ceil(n / self.elements_per_cycle) + self.loop_overhead

    def serial(self, n: int) -> int:
        """A pipelined loop moving one element per cycle (not laned)."""
        return n + self.loop_overhead


@dataclass(frozen=True)
class Stage:
    """One step of the schedule: its cycles and, for information, the MAC-cycle and load parts."""

    block: str
    name: str
    cycles: int
    compute_cycles: int
    load_cycles: int

    @property
    def bound(self) -> str:
        return "memory" if self.load_cycles > self.compute_cycles else "compute"


@dataclass
class LatencyEstimate:
    """Estimated accelerator time for ``num_images`` images of one task."""

    config: ModelConfig
    params: AcceleratorParams
    num_images: int
    stages: list[Stage] = field(default_factory=list)

    @property
    def total_cycles(self) -> int:
        return sum(s.cycles for s in self.stages)

    @property
    def ms_per_call(self) -> float:
        return self.total_cycles / (self.params.clock_mhz * 1e3)

    @property
    def ms_per_image(self) -> float:
        """Milliseconds per image per task (what Edge-MoE's ~59 ms is)."""
        return self.ms_per_call / self.num_images

    @property
    def speedup_vs_edge_moe(self) -> float:
        return EDGE_MOE_BOARD_MS / self.ms_per_image

    def by_kind(self) -> dict[str, int]:
        """Cycles summed over blocks per stage name (qkv, attention, experts, ...)."""
        out: dict[str, int] = {}
        for s in self.stages:
            out[s.name] = out.get(s.name, 0) + s.cycles
        return out

    def by_block(self) -> dict[str, int]:
        """Cycles per block (embed, block0..block11, final), summed over the images of the call."""
        out: dict[str, int] = {}
        for s in self.stages:
            out[s.block] = out.get(s.block, 0) + s.cycles
        return out

    def table(self) -> str:
        """A short human-readable breakdown (bench scripts print it)."""
        total = self.total_cycles
        mhz = self.params.clock_mhz
        lines = [f"{'stage':<14}{'cycles':>13}{'ms':>9}{'share':>8}"]
        for name, cyc in sorted(self.by_kind().items(), key=lambda kv: -kv[1]):
            lines.append(f"{name:<14}{cyc:>13,}{cyc / (mhz * 1e3):>9.3f}{cyc / total:>8.1%}")
        lines.append(f"{'total':<14}{total:>13,}{self.ms_per_call:>9.3f}{1:>8.0%}")
        lines.append(f"per image per task: {self.ms_per_image:.2f} ms at {mhz:g} MHz "
                     f"(Edge-MoE board, measured: {EDGE_MOE_BOARD_MS:g} ms; ratio board/estimate "
                     f"{self.speedup_vs_edge_moe:.2f})")
        lines.append("assumptions: " + self.assumptions())
        return "\n".join(lines)

    def assumptions(self) -> str:
        """The numbers the estimate rests on, in one line (printed beside it)."""
        p = self.params
        return (f"{p.clock_mhz:g} MHz; linear unit {p.tile}x{p.tile}, II=1; attention "
                f"{p.attn_parallel} rows, key loop II={p.attn_key_ii}; {p.elements_per_cycle} "
                "elements/cycle elementwise (LayerNorm out "
                f"II={math.ceil(2 * p.elements_per_cycle / p.param_reads_per_cycle)}); weight "
                f"masters {p.axi_bytes_per_cycle * 8}-bit at {p.axi_efficiency:.0%} of the HP "
                f"port, shared by {p.hp_port_sharers}, {p.axi_read_latency}-cycle burst latency; "
                f"overlap only in band_step (DATAFLOW); {p.loop_overhead} cycles fill/drain per "
                "loop; expert loads once per used expert; not confirmed by csynth or a board")

    def block_table(self) -> str:
        """Per-layer breakdown: cycles and ms of each block, dense or MoE."""
        mhz = self.params.clock_mhz
        lines = [f"{'block':<9}{'kind':<7}{'cycles':>12}{'ms':>9}"]
        for blk, cyc in self.by_block().items():
            kind = ""
            if blk.startswith("block"):
                kind = "moe" if self.config.is_moe(int(blk.removeprefix("block"))) else "dense"
            lines.append(f"{blk:<9}{kind:<7}{cyc:>12,}{cyc / (mhz * 1e3):>9.3f}")
        return "\n".join(lines)


def _group_compute(p: AcceleratorParams, rows: int, k: int) -> int:
    """One output group of ``linear_group``: init, first tile fetch, input tiles, narrow."""
    t = p.tile
    n_in = math.ceil(k / t)
    per_tile = (max(rows, t) if p.tile_fetch_overlap else rows + t) + p.loop_overhead
    return p.serial(rows) + p.serial(t) + n_in * per_tile + p.serial(rows)


def linear_cycles(p: AcceleratorParams, rows: int, k: int, o: int,
                  onchip: bool = False) -> tuple[int, int, int]:
    """(cycles, MAC cycles, load cycles) of one linear layer: rows x k -> rows x o.

    ``onchip``: weights already on chip (expert blocks, ``linear_onchip``): no band loads.
    """
    t = p.tile
    n_out, n_in = math.ceil(o / t), math.ceil(k / t)
    compute = _group_compute(p, rows, k)
    bands = [0 if onchip else p.load_cycles(min(t, o - g * t) * k) for g in range(n_out)]
    if p.tile_load_overlap:  # band g+1 loads while group g computes; band 0 exposed
        cycles = bands[0] + sum(max(compute, bands[g + 1] if g + 1 < n_out else 0)
                                for g in range(n_out))
    else:
        cycles = sum(bands) + n_out * compute
    return cycles, n_out * n_in * rows, sum(bands)


def attention_cycles(p: AcceleratorParams, cfg: ModelConfig) -> int:
    n, hd = cfg.num_tokens, cfg.head_dim
    groups = math.ceil(n / p.attn_parallel)
    row = (n * p.attn_key_ii + p.loop_overhead + recip_steps(itf.SOFTMAX_RECIP_SHIFT)
           + p.elementwise(hd))
    # q, k, v conversion; query rows
    return cfg.num_heads * (3 * p.elementwise(n * hd) + groups * row)


def layer_norm_cycles(p: AcceleratorParams, rows: int, dim: int) -> int:
    """Sum and variance passes at full lane rate; the output pass at the II its gamma/beta reads
    from the parameter cache allow; the bit-serial isqrt and reciprocal per row."""
    row_math = ISQRT_STEPS + recip_steps(itf.ln_std_frac() + itf.LN_RSTD_FRAC)
    out_ii = math.ceil(2 * p.elements_per_cycle / p.param_reads_per_cycle)
    out_pass = math.ceil(dim / p.elements_per_cycle) * out_ii + p.loop_overhead
    return rows * (2 * p.elementwise(dim) + out_pass + row_math)


def expected_tokens_per_expert(cfg: ModelConfig) -> np.ndarray:
    """Token count per expert in one layer when routing is spread evenly (the default
    assumption)."""
    total = cfg.num_tokens * cfg.top_k
    counts = np.full(cfg.num_experts, total // cfg.num_experts, dtype=np.int64)
    counts[: total % cfg.num_experts] += 1
    return counts


def expert_compute_cycles(p: AcceleratorParams, cfg: ModelConfig,
                          rows: int) -> tuple[int, int, int]:
    """(cycles, MAC cycles, load cycles) of one used expert on ``rows`` queued tokens: biases, fc1
    and fc2 streamed band by band, GELU, scatter into the mix."""
    d, h = cfg.dim, cfg.expert_hidden
    c1, m1, l1 = linear_cycles(p, rows, d, h)
    c2, m2, l2 = linear_cycles(p, rows, h, d)
    biases = p.load_cycles(h) + p.load_cycles(d)
    scatter = rows * p.elementwise(d)
    return biases + c1 + p.elementwise(rows * h) + c2 + scatter, m1 + m2, l1 + l2 + biases


def _moe_cycles(p: AcceleratorParams, cfg: ModelConfig,
                counts: np.ndarray) -> tuple[int, int, int]:
    """(cycles, MAC cycles, load cycles) of the experts of one MoE layer for one image."""
    cycles = compute = load = 0
    for rows in (int(c) for c in counts):
        cycles += p.loop_overhead  # the queue check of an expert
        if rows == 0:
            continue
        work, macs, loads = expert_compute_cycles(p, cfg, rows)
        cycles += rows * p.elementwise(cfg.dim) + work  # gather, then the expert
        compute += macs
        load += loads
    return cycles, compute, load


def estimate(cfg: ModelConfig, num_images: int = 1, params: AcceleratorParams | None = None,
             routing: np.ndarray | None = None) -> LatencyEstimate:
    """Estimate one kernel call of ``num_images`` images and one task.

    ``routing``: optional (B, num_moe_layers, num_tokens, top_k) expert ids of a real run; the
    per-expert token counts of each image then come from it instead of an even spread.
    """
    p = params or AcceleratorParams()
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if routing is not None and np.asarray(routing).shape[:2] != (num_images, len(cfg.moe_layers)):
        raise ValueError(f"routing shape {np.asarray(routing).shape} does not match "
                         f"({num_images}, {len(cfg.moe_layers)}, ...)")
    n, d = cfg.num_tokens, cfg.dim
    est = LatencyEstimate(cfg, p, num_images)

    def add(block: str, name: str, cycles: int, compute: int | None = None, load: int = 0) -> None:
        est.stages.append(Stage(block, name, int(cycles),
                                int(cycles if compute is None else compute), int(load)))

    for img in range(num_images):
        # gather: one burst of patch * chans bytes per patch row, each paying the read latency
        row_burst = cfg.patch * cfg.in_chans + p.axi_read_latency + p.loop_overhead
        add("embed", "patch_embed", cfg.num_patches * cfg.patch * row_burst, 0)
        add("embed", "patch_embed",
            *linear_cycles(p, cfg.num_patches, cfg.in_chans * cfg.patch ** 2, d))
        # class token, position
        add("embed", "patch_embed", p.elementwise(d) + p.elementwise(n * d), 0)
        for blk in range(cfg.depth):
            tag = f"block{blk}"
            add(tag, "layernorm", 2 * layer_norm_cycles(p, n, d), 0)
            add(tag, "qkv", *linear_cycles(p, n, d, 3 * d))
            add(tag, "attention", attention_cycles(p, cfg))
            add(tag, "proj", *linear_cycles(p, n, d, d))
            add(tag, "residual", 2 * p.elementwise(n * d), 0)
            if not cfg.is_moe(blk):
                c1, m1, l1 = linear_cycles(p, n, d, cfg.mlp_hidden)
                c2, m2, l2 = linear_cycles(p, n, cfg.mlp_hidden, d)
                add(tag, "dense_mlp", c1 + p.elementwise(n * cfg.mlp_hidden) + c2, m1 + m2,
                    l1 + l2)
                continue
            add(tag, "router", *linear_cycles(p, n, d, cfg.num_experts))
            e, k = cfg.num_experts, cfg.top_k
            # top-k, softmax, gates
            per_token = k * e + 2 * e + k + recip_steps(itf.SOFTMAX_RECIP_SHIFT)
            add(tag, "route", n * per_token + 2 * p.elementwise(n * d), 0)  # + clear mix, combine
            layer = cfg.moe_layers.index(blk)
            counts = (np.bincount(np.asarray(routing)[img, layer].ravel(), minlength=e)
                      if routing is not None
                      else expected_tokens_per_expert(cfg))
            add(tag, "experts", *_moe_cycles(p, cfg, counts))
        add("final", "layernorm", layer_norm_cycles(p, n, d), 0)
        add("final", "write_out", p.serial(cfg.num_patches * d), 0)
    return est


def reload_ms(cfg: ModelConfig, params: AcceleratorParams | None = None) -> float:
    """Time to refresh the on-chip parameter cache (``reload_one_time_weights=1``), once per
    model."""
    p = params or AcceleratorParams()
    return p.load_cycles(itf.weight_layout(cfg).params_words) / (p.clock_mhz * 1e3)
