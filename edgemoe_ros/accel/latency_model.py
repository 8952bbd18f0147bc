"""Analytic latency of our ``edgemoe_top`` accelerator at its synthesis clock.

No board runs here, so the FPGA time of a frame is estimated from the HLS code in ``hls_accel/``:
the trip counts of its pipelined loops, the tile size of the shared linear unit, the row
parallelism of the attention unit, and the words per cycle its weight-load loops move, with or
without overlap of loads and compute (double buffering). Every number the estimate rests on is in
:class:`AcceleratorParams` (clock and bus width come from ``accel/interface.py``); the defaults
describe the code as written, and ``test/test_latency_model.py`` re-reads the tile size and the
attention parallelism from the C++ so the two cannot drift apart.

Per image and task (the kernel processes the images of a batch one after the other):

* shared linear unit (``linear.h``): for each ``tile``-wide group of outputs, every ``tile x tile``
  weight tile is loaded (``tile**2 / weight_rate`` cycles) and then applied to all rows, one row
  per cycle (``tile x tile`` MACs per cycle); the group's accumulators are then narrowed, one
  element per cycle. With ``tile_load_overlap`` the next tile loads while the current one computes;
* attention (``attention.h``): ``attn_parallel`` query rows at once, each walking all keys with a
  fused q.k / softmax / v step per cycle (single pass), after converting q, k, v to the attention
  format one element per cycle;
* MoE (``moe.h``): router linear, top-k and gate softmax per token, then per used expert: gather
  its queued tokens, fc1, GELU, fc2, scatter-add; each expert's weight block is loaded once per
  layer, overlapping the previous expert's compute when ``expert_load_overlap`` is set;
* LayerNorm (three passes), GELU, residual adds, patch gathering, position embedding and the
  feature write-back: one element per cycle (``PIPELINE II=1``);
* every pipelined loop pays ``loop_overhead`` cycles of fill and drain.

The anchor for comparison is Edge-MoE's measured ~59 ms per image per task on a ZCU102 (SPEC §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..model.config import ModelConfig
from . import interface as itf

#: Edge-MoE (ICCAD 2023) measured on the ZCU102, per image per task (SPEC §3).
EDGE_MOE_BOARD_MS = 59.0


@dataclass(frozen=True)
class AcceleratorParams:
    """The architectural numbers of the estimate (one table). Defaults: ``hls_accel/`` as written."""

    clock_mhz: float = itf.CLOCK_MHZ
    #: Shared linear unit tile: ``linear_config::tile`` in linear.h (Edge-MoE: 16 x 16).
    tile: int = 16
    #: Query rows processed in parallel: ``attention_config::par`` in attention.h (Edge-MoE: 4).
    attn_parallel: int = 4
    #: Elements per cycle of the elementwise loops (LayerNorm, GELU, residual, narrowing, gathers).
    elements_per_cycle: int = 1
    #: 16-bit weight words the load loops (LoadTile, LoadExpert, LoadParams) accept per cycle.
    weight_words_per_cycle: int = 1
    #: One AXI master's data width (interface.py) and the share of it HP ports sustain on bursts.
    axi_bytes_per_cycle: int = itf.AXI_DATA_WIDTH_BITS // 8
    axi_efficiency: float = 0.8
    #: Double buffering of linear-unit weight tiles (load tile t+1 while tile t computes).
    tile_load_overlap: bool = False
    #: Double buffering of expert weight blocks (load expert e+1 while expert e computes).
    expert_load_overlap: bool = False
    #: Fill/drain cycles of one pipelined loop invocation.
    loop_overhead: int = 8

    @property
    def weight_rate(self) -> float:
        """Weight words per cycle actually moved: the loop's rate, capped by the AXI master."""
        bus_words = self.axi_bytes_per_cycle * self.axi_efficiency / (itf.WEIGHT_WORD_BITS // 8)
        return min(float(self.weight_words_per_cycle), bus_words)

    def load_cycles(self, words: float) -> int:
        return math.ceil(words / self.weight_rate)

    def elementwise(self, n: int) -> int:
        return math.ceil(n / self.elements_per_cycle) + self.loop_overhead

    @classmethod
    def double_buffered(cls) -> AcceleratorParams:
        """What-if: tile and expert loads at the full AXI width and overlapped with compute, 16
        elementwise lanes (Edge-MoE's design point). Not what the HLS code does today."""
        return cls(elements_per_cycle=16, weight_words_per_cycle=itf.AXI_DATA_WIDTH_BITS // itf.WEIGHT_WORD_BITS,
                   tile_load_overlap=True, expert_load_overlap=True)


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

    def table(self) -> str:
        """A short human-readable breakdown (bench scripts print it)."""
        total = self.total_cycles
        mhz = self.params.clock_mhz
        lines = [f"{'stage':<14}{'cycles':>13}{'ms':>9}{'share':>8}"]
        for name, cyc in sorted(self.by_kind().items(), key=lambda kv: -kv[1]):
            lines.append(f"{name:<14}{cyc:>13,}{cyc / (mhz * 1e3):>9.3f}{cyc / total:>8.1%}")
        lines.append(f"{'total':<14}{total:>13,}{self.ms_per_call:>9.3f}{1:>8.0%}")
        lines.append(f"per image per task: {self.ms_per_image:.2f} ms at {mhz:g} MHz "
                     f"(Edge-MoE board: {EDGE_MOE_BOARD_MS:g} ms; ratio board/estimate "
                     f"{self.speedup_vs_edge_moe:.2f})")
        return "\n".join(lines)


def linear_cycles(p: AcceleratorParams, rows: int, k: int, o: int) -> tuple[int, int, int]:
    """(cycles, MAC cycles, load cycles) of one ``linear_unit`` call: rows x k -> rows x o."""
    t = p.tile
    n_out, n_in = math.ceil(o / t), math.ceil(k / t)
    tile_load = p.load_cycles(t * t) + p.loop_overhead
    row_pass = rows + p.loop_overhead
    step = max(tile_load, row_pass) if p.tile_load_overlap else tile_load + row_pass
    exposed = tile_load if p.tile_load_overlap else 0
    cycles = 0
    for g in range(n_out):
        width = min(t, o - g * t)
        cycles += rows + n_in * step + exposed + p.elementwise(rows * width)  # init, tiles, narrow
    return cycles, n_out * n_in * rows, n_out * n_in * tile_load


def attention_cycles(p: AcceleratorParams, cfg: ModelConfig) -> int:
    n, hd = cfg.num_tokens, cfg.head_dim
    groups = math.ceil(n / p.attn_parallel)
    per_head = p.elementwise(n * hd) + groups * (n + p.loop_overhead + hd)  # convert, rows, normalise
    return cfg.num_heads * per_head


def layer_norm_cycles(p: AcceleratorParams, rows: int, dim: int) -> int:
    return rows * 3 * p.elementwise(dim)


def expected_tokens_per_expert(cfg: ModelConfig) -> np.ndarray:
    """Token count per expert in one layer when routing is spread evenly (the default assumption)."""
    total = cfg.num_tokens * cfg.top_k
    counts = np.full(cfg.num_experts, total // cfg.num_experts, dtype=np.int64)
    counts[: total % cfg.num_experts] += 1
    return counts


def _moe_cycles(p: AcceleratorParams, cfg: ModelConfig, counts: np.ndarray, expert_words: int) -> tuple[int, int, int]:
    """(cycles, MAC cycles, load cycles) of the experts of one MoE layer for one image."""
    d, h = cfg.dim, cfg.expert_hidden
    load = p.load_cycles(expert_words) + p.loop_overhead
    cycles = compute = loads = 0
    used = [int(c) for c in counts if c > 0]
    for i, rows in enumerate(used):
        c1, m1, _ = linear_cycles(p, rows, d, h)
        c2, m2, _ = linear_cycles(p, rows, h, d)
        work = p.elementwise(rows * d) + c1 + p.elementwise(rows * h) + c2 + p.elementwise(rows * d)
        compute += m1 + m2
        loads += load
        if not p.expert_load_overlap:
            cycles += load + work
        else:  # the first load is exposed, later ones hide behind the previous expert's compute
            cycles += (load + work) if i == 0 else max(load, work)
    return cycles, compute, loads


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
    expert_words = itf.weight_layout(cfg).expert_words
    est = LatencyEstimate(cfg, p, num_images)

    def add(block: str, name: str, cycles: int, compute: int | None = None, load: int = 0) -> None:
        est.stages.append(Stage(block, name, int(cycles), int(cycles if compute is None else compute), int(load)))

    for img in range(num_images):
        add("embed", "patch_embed", p.elementwise(cfg.num_patches * cfg.in_chans * cfg.patch ** 2), 0)
        add("embed", "patch_embed", *linear_cycles(p, cfg.num_patches, cfg.in_chans * cfg.patch ** 2, d))
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
                add(tag, "dense_mlp", c1 + p.elementwise(n * cfg.mlp_hidden) + c2, m1 + m2, l1 + l2)
                continue
            add(tag, "router", *linear_cycles(p, n, d, cfg.num_experts))
            e, k = cfg.num_experts, cfg.top_k
            add(tag, "route", n * (k * e + 2 * e + k) + 2 * p.elementwise(n * d), 0)  # top-k, softmax, mix
            layer = cfg.moe_layers.index(blk)
            counts = (np.bincount(np.asarray(routing)[img, layer].ravel(), minlength=e) if routing is not None
                      else expected_tokens_per_expert(cfg))
            add(tag, "experts", *_moe_cycles(p, cfg, counts, expert_words))
        add("final", "layernorm", layer_norm_cycles(p, n, d), 0)
        add("final", "write_out", p.elementwise(cfg.num_patches * d), 0)
    return est


def reload_ms(cfg: ModelConfig, params: AcceleratorParams | None = None) -> float:
    """Time to refresh the on-chip parameter cache (``reload_one_time_weights=1``), once per model."""
    p = params or AcceleratorParams()
    return p.load_cycles(itf.weight_layout(cfg).params_words) / (p.clock_mhz * 1e3)
