# SPDX-License-Identifier: Apache-2.0
"""The hardware interface of our Edge-MoE accelerator: the single source of truth.

Everything the host and the HLS C++ must agree on lives here and nowhere else:

* the top function ``edgemoe_top``, its arguments in order, their AXI bundles and the AXI-lite
  register map (Vitis HLS ``s_axilite`` layout, docs/ARCHITECTURE.md);
* the fixed-point formats of SPEC §3 plus the few internal formats of our datapath;
* the constants of our integer algorithms (exp2 table, GELU correction table, reciprocal and
  LayerNorm shifts), so the C++ kernels and the numpy emulator use the very same numbers;
* the weight layout: which tensor sits at which word of the two weight buffers, in the order the
  kernel reads them (``pack_weights``), and the shapes of the image/feature/routing buffers.

The C++ side never hard-codes any of this: ``python -m edgemoe_ros.accel.interface --header
hls_accel/include/edgemoe_interface.h`` writes a header with these constants (for the SPEC model;
``--config`` selects another model, which is how tests build a small variant), and a test checks
that the committed header is up to date.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..model.config import ModelConfig, tiny_config
from ..model.weights import ModelWeights

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ kernel & ABI
#: Bumped whenever the argument list, the register map, the layout or the numerics change.
#: 2: weight masters read 128-bit beats; burst-aligned weight layout (padding between tensors).
ABI_VERSION = 2
TOP_FUNCTION = "edgemoe_top"
#: Target device and clock of the synthesis scripts (Edge-MoE's board: ZCU102 at 300 MHz).
FPGA_PART = "xczu9eg-ffvb1156-2-e"
BOARD = "zcu102"
CLOCK_MHZ = 300.0
#: AXI-lite control bundle and its port name in the exported IP.
CONTROL_BUNDLE = "control"
CONTROL_BUNDLE_PORT = "s_axi_control"
#: Width of each AXI master data bus (the HP ports of the Zynq UltraScale+ PS are 128-bit).
AXI_DATA_WIDTH_BITS = 128
#: Largest batch one kernel call accepts (the ``num_images`` register is checked against it).
MAX_IMAGES = 64

# AXI-lite register map (Vitis HLS layout for this argument list).
REG_AP_CTRL = 0x00
REG_GIE = 0x04
REG_IER = 0x08
REG_ISR = 0x0C
#: ap_ctrl bits.
AP_START = 1 << 0
AP_DONE = 1 << 1
AP_IDLE = 1 << 2
AP_READY = 1 << 3
AP_AUTO_RESTART = 1 << 7
#: Bytes of AXI-lite address space the control registers occupy (next power of two above 0x5C).
CONTROL_RANGE_BYTES = 0x80


@dataclass(frozen=True)
class KernelArg:
    """One argument of ``edgemoe_top``: pointers are m_axi masters, scalars plain registers."""

    name: str
    kind: str  # "pointer" | "scalar"
    offset: int  # AXI-lite offset (pointers: low word; high word at offset + 4)
    ctype: str  # C element type (pointer element for pointers)
    bundle: str | None = None  # m_axi bundle for pointers
    direction: str = "in"  # "in" | "out"
    description: str = ""


#: The arguments of ``edgemoe_top`` in declaration order.
KERNEL_ARGS: tuple[KernelArg, ...] = (
    KernelArg("images", "pointer", 0x10, "uint8_t", "gmem0", "in",
              "(B, img_h, img_w, 3) RGB pixels"),
    KernelArg("weights_one_time", "pointer", 0x1C, "int16_t", "gmem1", "in",
              "params + streamed dense weights, packed by pack_weights; read as "
              "WORDS_PER_BEAT-word beats"),
    KernelArg("weights_experts", "pointer", 0x28, "int16_t", "gmem2", "in",
              "per-layer, per-expert weight blocks, packed by pack_weights; read as "
              "WORDS_PER_BEAT-word beats"),
    KernelArg("features_out", "pointer", 0x34, "int32_t", "gmem3", "out",
              "(B, num_patches, dim) raw act format"),
    KernelArg("routing_out", "pointer", 0x40, "int32_t", "gmem4", "out",
              "(B, num_moe_layers, num_tokens, top_k) expert ids"),
    KernelArg("num_images", "scalar", 0x4C, "int32_t", description="batch size B, 1..MAX_IMAGES"),
    KernelArg("task_id", "scalar", 0x54, "int32_t",
              description="selects the router (TASKS order)"),
    KernelArg("reload_one_time_weights", "scalar", 0x5C, "int32_t",
              description="1: refresh the on-chip parameter cache from weights_one_time"),
)
AXI_MASTER_BUNDLES: tuple[str, ...] = tuple(a.bundle for a in KERNEL_ARGS
                                            if a.kind == "pointer")  # type: ignore[misc]
POINTER_ARGS: dict[str, int] = {a.name: a.offset for a in KERNEL_ARGS if a.kind == "pointer"}
SCALAR_ARGS: dict[str, int] = {a.name: a.offset for a in KERNEL_ARGS if a.kind == "scalar"}
#: Every named register, control registers included (pointers by their low word).
REGISTER_MAP: dict[str, int] = {"ap_ctrl": REG_AP_CTRL, "gie": REG_GIE, "ier": REG_IER,
                                "isr": REG_ISR, **POINTER_ARGS, **SCALAR_ARGS}

#: Return codes of ``edgemoe_csim_run`` (the hardware has no return value; the C-sim reports
#: what the hardware would silently get wrong).
CSIM_OK = 0
CSIM_ERR_NUM_IMAGES = -1
CSIM_ERR_TASK_ID = -2
CSIM_ERR_NO_ONE_TIME_WEIGHTS = -3
CSIM_ERRORS: dict[int, str] = {
    CSIM_ERR_NUM_IMAGES: f"num_images outside 1..{MAX_IMAGES}",
    CSIM_ERR_TASK_ID: "task_id outside 0..num_tasks-1",
    CSIM_ERR_NO_ONE_TIME_WEIGHTS: "reload_one_time_weights=0 but no parameters were ever loaded",
}


# ------------------------------------------------------------------------------ number formats
@dataclass(frozen=True)
class FixedFormat:
    """An ap_fixed / ap_ufixed format: ``width`` bits, ``int_bits`` integer bits (sign
    included)."""

    name: str
    width: int
    int_bits: int
    signed: bool = True
    description: str = ""

    @property
    def frac(self) -> int:
        return self.width - self.int_bits

    @property
    def min_raw(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max_raw(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def c_type(self) -> str:
        return f"ap_{'' if self.signed else 'u'}fixed<{self.width}, {self.int_bits}>"

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac


#: SPEC §3 formats (Edge-MoE's) and our internal datapath formats, by name.
FORMATS: dict[str, FixedFormat] = {f.name: f for f in (
    FixedFormat("act", 32, 10, True, "activations"),
    FixedFormat("weight", 16, 2, True, "linear weights (dense, router, experts)"),
    FixedFormat("attn_bias", 16, 7, True, "attention-path biases (qkv, proj)"),
    FixedFormat("bias", 16, 5, True,
                "other biases, LayerNorm scale/shift, cls/pos embedding, pixel norm"),
    FixedFormat("patch_weight", 16, 0, True, "patch-embedding weights"),
    FixedFormat("pixel", 8, 0, False, "input pixels"),
    # Internal formats of our datapath (not stored in DRAM).
    FixedFormat("attn", 24, 8, True, "q (pre-scaled to log2 units), k, v operands of attention"),
    FixedFormat("score", 32, 16, True, "attention / router logits in log2 units"),
    FixedFormat("expo", 17, 1, False, "exp2 results in (0, 1]"),
)}
#: Weight-buffer word type: every stored format is at most 16 bits wide.
WEIGHT_WORD_BITS = 16
#: The weight masters (gmem1, gmem2) read whole AXI beats: this many 16-bit words per cycle.
WORDS_PER_BEAT = AXI_DATA_WIDTH_BITS // WEIGHT_WORD_BITS
#: Every burst-read weight tensor, each expert block, and the end of each weight buffer start on
#: this byte boundary, so bursts begin on a DDR burst / cache-line boundary and never read past
#: the buffer (the Vitis scripts promise the tool this alignment: m_axi_alignment_byte_size).
BURST_ALIGN_BYTES = 64
BURST_ALIGN_WORDS = BURST_ALIGN_BYTES // (WEIGHT_WORD_BITS // 8)
#: Elements per cycle of the elementwise loops (LayerNorm, GELU, residual, narrowing, copies): the
#: on-chip activation buffers are cyclically partitioned by this factor.
ELEM_LANES = 16
#: The shared linear unit multiplies LINEAR_TILE x LINEAR_TILE weights per cycle
#: (Edge-MoE: 16 x 16).
LINEAR_TILE = 16
#: Query rows the attention unit walks in parallel (instances of ``attention_row``). Edge-MoE
#: uses 4; 2 keeps the DSP budget under 75 % of the xczu9eg (accel/resources.py) and costs about
#: 1 ms per image (accel/latency_model.py).
ATTENTION_ROWS = 2

# ----------------------------------------------------------------------------- algorithm constants
#: exp2 unit: 2^f for f in [0, 1) from a (2^EXP2_LUT_BITS + 1)-entry table, linearly interpolated
#: on the remaining fraction bits; results in the ``expo`` format.
EXP2_LUT_BITS = 8
#: Shifts larger than this produce 0 (the value is below one expo LSB).
EXP2_MAX_SHIFT = 31
#: Softmax normalisation: recip = floor(2^SOFTMAX_RECIP_SHIFT / sum(expo)).
SOFTMAX_RECIP_SHIFT = 38
#: Fraction bits of the coefficient constants (attention scale, log2 e).
COEF_FRAC = 16
#: GELU = ReLU(x) - corr(|x|); corr tabulated at
#: x = i / 2^GELU_STEP_SHIFT, i = 0..GELU_TABLE_SIZE-1.
GELU_TABLE_SIZE = 177
GELU_STEP_SHIFT = 5
#: LayerNorm: deviations are shifted right by LN_SQ_SHIFT before squaring (variance then has
#: 2 * (act.frac - LN_SQ_SHIFT) fraction bits), rstd has LN_RSTD_FRAC fraction bits.
LN_SQ_SHIFT = 6
LN_RSTD_FRAC = 24
#: Largest right shift applied to a 64-bit accumulator (shifting by >= 64 is undefined in C++).
MAX_ACC_SHIFT = 63


def ln_var_frac() -> int:
    return 2 * (FORMATS["act"].frac - LN_SQ_SHIFT)


def ln_std_frac() -> int:
    return ln_var_frac() // 2


def ln_eps_raw(cfg: ModelConfig) -> int:
    """LayerNorm epsilon in the variance format (at least one LSB so the rsqrt never divides by
    0)."""
    return max(1, int(round(cfg.ln_eps * 2 ** ln_var_frac())))


def attn_scale_raw(cfg: ModelConfig) -> int:
    """q multiplier: log2(e) / sqrt(head_dim), so scores come out in log2 units for the exp2
    unit."""
    return int(round(math.log2(math.e) / math.sqrt(cfg.head_dim) * 2 ** COEF_FRAC))


def log2e_raw() -> int:
    """log2(e) for the router softmax (logits are natural-log units)."""
    return int(round(math.log2(math.e) * 2 ** COEF_FRAC))


def exp2_table() -> np.ndarray:
    """2^(i / 2^EXP2_LUT_BITS) for i = 0..2^EXP2_LUT_BITS, in expo raw units (2^16 = 1.0)."""
    n = 1 << EXP2_LUT_BITS
    f = FORMATS["expo"].frac
    return np.floor(np.exp2(np.arange(n + 1) / n) * 2 ** f + 0.5).astype(np.int64)


def gelu_correction_table() -> np.ndarray:
    """ReLU(x) - GELU(x) = |x| * Phi(-|x|) at x = i / 32, i = 0..176, in act raw units."""
    x = np.arange(GELU_TABLE_SIZE, dtype=np.float64) / (1 << GELU_STEP_SHIFT)
    phi_neg = 0.5 * np.array([math.erfc(v / math.sqrt(2.0)) for v in x])
    return np.floor(x * phi_neg * 2 ** FORMATS["act"].frac + 0.5).astype(np.int64)


# ------------------------------------------------------------------------------ quantisation
def quantize(x: np.ndarray, fmt: FixedFormat | str) -> tuple[np.ndarray, int]:
    """Round to nearest (ties toward +inf, like AP_RND) and saturate; returns (raw int64,
    #saturated)."""
    f = FORMATS[fmt] if isinstance(fmt, str) else fmt
    scaled = np.floor(np.asarray(x, dtype=np.float64) * 2.0 ** f.frac + 0.5)
    saturated = int(np.count_nonzero((scaled < f.min_raw) | (scaled > f.max_raw)))
    return np.clip(scaled, f.min_raw, f.max_raw).astype(np.int64), saturated


def dequantize(raw: np.ndarray, fmt: FixedFormat | str) -> np.ndarray:
    f = FORMATS[fmt] if isinstance(fmt, str) else fmt
    return np.asarray(raw, dtype=np.float64) * f.lsb


# ------------------------------------------------------------------------------ weight layout
@dataclass(frozen=True)
class LayoutEntry:
    """One stored tensor: ``tensor`` (canonical name) [``index`` along its first axis], possibly
    transposed (``transform``), occupying ``size`` words from ``offset`` of ``buffer``."""

    name: str
    buffer: str  # "one_time" | "experts"
    offset: int
    shape: tuple[int, ...]
    fmt: str
    tensor: str
    index: int | None = None
    #: "router_t": (tasks, dim, E) stored as (tasks, E, dim); "flatten": conv kernel as (out, in).
    transform: str | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class WeightLayout:
    """Where every tensor sits in the two weight buffers.

    ``weights_one_time`` = [params section | streamed section]: the params section (biases,
    LayerNorm, cls/pos embedding, pixel normalisation) is what the kernel caches on chip and
    refreshes only when ``reload_one_time_weights`` is set; the streamed section (patch, qkv, proj,
    dense MLP and router weights) is read tile by tile through the shared linear unit every frame.
    ``weights_experts`` holds one contiguous block per (MoE layer, expert) so that each expert is
    one burst, loaded once per layer.

    The streamed section, every tensor in it, each expert block and each buffer's end are aligned
    to ``BURST_ALIGN_WORDS`` (zero padding in between), so each weight band or expert block is one
    aligned burst of whole AXI beats. Params-section tensors are packed back to back (they are read
    once, as one burst, into the on-chip cache).
    """

    entries: list[LayoutEntry]
    params_words: int  # end of the params section, padded to BURST_ALIGN_WORDS
    one_time_words: int
    expert_words: int  # one expert's tensors
    experts_words: int  # whole buffer
    expert_stride: int  # words from one expert block to the next (expert_words, aligned)

    def by_name(self) -> dict[str, LayoutEntry]:
        return {e.name: e for e in self.entries}


def _block_param_entries(cfg: ModelConfig, b: int) -> list[tuple[str, tuple[int, ...], str]]:
    d, p = cfg.dim, f"blocks.{b}."
    out = [(p + "norm1.weight", (d,), "bias"), (p + "norm1.bias", (d,), "bias"),
           (p + "attn.qkv.bias", (3 * d,), "attn_bias"), (p + "attn.proj.bias", (d,), "attn_bias"),
           (p + "norm2.weight", (d,), "bias"), (p + "norm2.bias", (d,), "bias")]
    if not cfg.is_moe(b):
        out += [(p + "mlp.fc1.bias", (cfg.mlp_hidden,), "bias"),
                (p + "mlp.fc2.bias", (d,), "bias")]
    return out


def align_words(words: int) -> int:
    """``words`` rounded up to the burst alignment (``BURST_ALIGN_WORDS``)."""
    return -(-words // BURST_ALIGN_WORDS) * BURST_ALIGN_WORDS


def weight_layout(cfg: ModelConfig) -> WeightLayout:
    """The packing order of ``pack_weights`` (= the order the kernel reads)."""
    d, n = cfg.dim, cfg.num_tokens
    entries: list[LayoutEntry] = []
    off = 0

    def add(name: str, shape: tuple[int, ...], fmt: str, buffer: str = "one_time",
            tensor: str | None = None,
            index: int | None = None, transform: str | None = None, aligned: bool = False) -> None:
        nonlocal off
        if aligned:
            off = align_words(off)
        entries.append(LayoutEntry(name, buffer, off, shape, fmt, tensor or name, index,
                                   transform))
        off += int(np.prod(shape))

    # params section (cached on chip)
    add("pixel_mean", (cfg.in_chans,), "bias", tensor="config.pixel_mean")
    add("pixel_inv_std", (cfg.in_chans,), "bias", tensor="config.pixel_std")
    add("patch_embed.bias", (d,), "bias")
    add("cls_token", (1, d), "bias")
    add("pos_embed", (n, d), "bias")
    for b in range(cfg.depth):
        for name, shape, fmt in _block_param_entries(cfg, b):
            add(name, shape, fmt)
    add("norm.weight", (d,), "bias")
    add("norm.bias", (d,), "bias")
    params_words = off = align_words(off)
    # streamed section: each tensor an aligned burst source
    add("patch_embed.weight", (d, cfg.in_chans * cfg.patch * cfg.patch), "patch_weight",
        transform="flatten", aligned=True)
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        add(p + "attn.qkv.weight", (3 * d, d), "weight", aligned=True)
        add(p + "attn.proj.weight", (d, d), "weight", aligned=True)
        if cfg.is_moe(b):
            add(p + "moe.router.weight", (len(cfg.tasks), cfg.num_experts, d), "weight",
                transform="router_t", aligned=True)
        else:
            add(p + "mlp.fc1.weight", (cfg.mlp_hidden, d), "weight", aligned=True)
            add(p + "mlp.fc2.weight", (d, cfg.mlp_hidden), "weight", aligned=True)
    one_time_words = align_words(off)
    # experts buffer: one aligned block per (layer, expert); tensors back to back inside a block
    off = 0
    h = cfg.expert_hidden
    for b in cfg.moe_layers:
        p = f"blocks.{b}.moe."
        for e in range(cfg.num_experts):
            q = f"{p}experts.{e}."
            add(q + "fc1.weight", (h, d), "weight", "experts", p + "fc1.weight", e, aligned=True)
            add(q + "fc1.bias", (h,), "bias", "experts", p + "fc1.bias", e)
            add(q + "fc2.weight", (d, h), "weight", "experts", p + "fc2.weight", e)
            add(q + "fc2.bias", (d,), "bias", "experts", p + "fc2.bias", e)
    expert_words = 2 * h * d + h + d
    return WeightLayout(entries, params_words, one_time_words, expert_words, align_words(off),
                        align_words(expert_words))


@dataclass
class PackedWeights:
    """Raw fixed-point weight buffers, ready to copy into device memory."""

    one_time: np.ndarray  # int16, layout.one_time_words
    experts: np.ndarray  # int16, layout.experts_words
    layout: WeightLayout
    #: tensor entry name -> number of values clipped to the format's range (only entries with > 0).
    saturated: dict[str, int] = field(default_factory=dict)


def _entry_values(weights: ModelWeights, e: LayoutEntry) -> np.ndarray:
    cfg = weights.config
    if e.tensor == "config.pixel_mean":
        return np.asarray(cfg.pixel_mean, dtype=np.float64)
    if e.tensor == "config.pixel_std":
        return 1.0 / np.asarray(cfg.pixel_std, dtype=np.float64)
    arr = np.asarray(weights[e.tensor], dtype=np.float64)
    if e.index is not None:
        arr = arr[e.index]
    if e.transform == "router_t":
        arr = np.transpose(arr, (0, 2, 1))
    elif e.transform == "flatten" and arr.size == e.size:
        # conv kernel (dim, c, ky, kx) -> per-patch linear (dim, c*ky*kx)
        arr = arr.reshape(e.shape)
    if arr.shape != e.shape:
        raise ValueError(f"tensor {e.tensor!r}: shape {arr.shape} does not fit layout entry "
                         f"{e.name} {e.shape}")
    return arr


def pack_weights(weights: ModelWeights) -> PackedWeights:
    """Quantise every tensor to its format and lay it out as the kernel reads it.

    Values outside a format's range are saturated and reported (``PackedWeights.saturated`` and
    one warning naming the tensors), because a silently clipped weight is a silent accuracy loss.
    """
    layout = weight_layout(weights.config)
    bufs = {"one_time": np.zeros(layout.one_time_words, np.int16),
            "experts": np.zeros(layout.experts_words, np.int16)}
    saturated: dict[str, int] = {}
    for e in layout.entries:
        raw, n_sat = quantize(_entry_values(weights, e), e.fmt)
        bufs[e.buffer][e.offset:e.offset + e.size] = raw.reshape(-1)
        if n_sat:
            saturated[e.name] = n_sat
    if saturated:
        worst = sorted(saturated.items(), key=lambda kv: -kv[1])[:5]
        log.warning("pack_weights(%s): %d values saturated in %d tensors (worst: %s)",
                    weights.source, sum(saturated.values()), len(saturated),
                    ", ".join(f"{k}: {v}" for k, v in worst))
    return PackedWeights(bufs["one_time"], bufs["experts"], layout, saturated)


def unpack_weights(packed: PackedWeights) -> dict[str, np.ndarray]:
    """Dequantised float64 value of every layout entry (as stored: transposed router, per
    expert)."""
    bufs = {"one_time": packed.one_time, "experts": packed.experts}
    return {e.name: dequantize(bufs[e.buffer][e.offset:e.offset + e.size].reshape(e.shape), e.fmt)
            for e in packed.layout.entries}


def buffer_shapes(cfg: ModelConfig,
                  num_images: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every per-call buffer of ``edgemoe_top`` for ``num_images`` images."""
    if not 1 <= num_images <= MAX_IMAGES:
        raise ValueError(f"num_images {num_images} outside 1..{MAX_IMAGES}")
    b = num_images
    return {
        "images": ((b, cfg.img_h, cfg.img_w, cfg.in_chans), np.dtype(np.uint8)),
        "features_out": ((b, cfg.num_patches, cfg.dim), np.dtype(np.int32)),
        "routing_out": ((b, len(cfg.moe_layers), cfg.num_tokens, cfg.top_k), np.dtype(np.int32)),
    }


def _clog2(n: int) -> int:
    """Bits of an unsigned counter that holds n - 1 (ceil(log2(n)) for n >= 1)."""
    return max(0, (n - 1).bit_length())


def accel_dims(cfg: ModelConfig) -> dict[str, int]:
    """Structure of the accelerator for ``cfg``: the on-chip buffer sizes and exact datapath widths
    the C++ declares (generated into edgemoe_interface.h; accel/resources.py counts the same)."""
    patch_in = cfg.in_chans * cfg.patch * cfg.patch
    max_in = max(patch_in, cfg.dim, cfg.mlp_hidden, cfg.expert_hidden)
    act_w, w_w, attn_w, expo_w = (FORMATS[n].width for n in ("act", "weight", "attn", "expo"))
    return {
        "LINEAR_TILE": LINEAR_TILE, "ATTENTION_ROWS": ATTENTION_ROWS,
        # widest input of any linear layer: the streamed weight band is LINEAR_TILE x this
        "LINEAR_MAX_IN": max_in,
        # columns of the shared wide activation buffer: qkv, MLP hidden, expert hidden, patches
        "ACT_WIDE_COLS": max(3 * cfg.dim, cfg.mlp_hidden, cfg.expert_hidden,
                             -(-cfg.num_patches * patch_in // cfg.num_tokens)),
        # exact accumulator widths: |act x weight| < 2^(act_w + w_w - 2), summed over max_in
        # products plus an aligned bias, never overflows (the emulator's int64 sums are exact)
        "LIN_ACC_W": act_w + w_w + _clog2(max_in + 1),
        "ATTN_DOT_W": 2 * attn_w + _clog2(cfg.head_dim),
        # sum over the keys of expo (<= 1.0) x v
        "ATTN_ACC_W": expo_w + attn_w + _clog2(cfg.num_tokens),
    }


def port_depths(cfg: ModelConfig) -> dict[str, int]:
    """Elements behind each m_axi port for MAX_IMAGES images: the ``depth=`` of the top's INTERFACE
    pragmas (co-simulation copies this many elements; the testbench allocates as much)."""
    layout = weight_layout(cfg)
    shapes = buffer_shapes(cfg, MAX_IMAGES)
    return {
        "images": int(np.prod(shapes["images"][0])),
        "weights_one_time": layout.one_time_words // WORDS_PER_BEAT,
        "weights_experts": layout.experts_words // WORDS_PER_BEAT,
        "features_out": int(np.prod(shapes["features_out"][0])),
        "routing_out": int(np.prod(shapes["routing_out"][0])),
    }


# ------------------------------------------------------------------------------ model identity
def model_signature(cfg: ModelConfig) -> int:
    """31-bit hash of everything the compiled kernel bakes in, so the host can refuse a library
    built for another model or another interface version."""
    dims = model_dims(cfg)
    text = f"abi={ABI_VERSION};" + ";".join(f"{k}={v}" for k, v in dims.items())
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def same_kernel(a: ModelConfig, b: ModelConfig) -> bool:
    """True when ``a`` and ``b`` compile to the same kernel (host-side head settings do not
    count)."""
    return model_dims(a) == model_dims(b)


def is_spec_kernel(cfg: ModelConfig) -> bool:
    """True when ``cfg`` compiles to the SPEC model's kernel."""
    return same_kernel(cfg, ModelConfig())


def model_dims(cfg: ModelConfig) -> dict[str, int]:
    """The compile-time sizes of the kernel, by header name."""
    return {
        "IMG_H": cfg.img_h, "IMG_W": cfg.img_w, "PATCH": cfg.patch, "IN_CHANS": cfg.in_chans,
        "GRID_H": cfg.grid_h, "GRID_W": cfg.grid_w,
        "PATCH_IN": cfg.in_chans * cfg.patch * cfg.patch,
        "DIM": cfg.dim, "DEPTH": cfg.depth, "NUM_HEADS": cfg.num_heads, "HEAD_DIM": cfg.head_dim,
        "MLP_HIDDEN": cfg.mlp_hidden, "NUM_EXPERTS": cfg.num_experts, "TOP_K": cfg.top_k,
        "EXPERT_HIDDEN": cfg.expert_hidden, "MOE_EVERY": cfg.moe_every,
        "NUM_TASKS": len(cfg.tasks), "NUM_PATCHES": cfg.num_patches, "NUM_TOKENS": cfg.num_tokens,
        "NUM_MOE_LAYERS": len(cfg.moe_layers),
        "LN_EPS_RAW": ln_eps_raw(cfg), "ATTN_SCALE_RAW": attn_scale_raw(cfg),
    }


#: Where the committed header for the SPEC model lives (relative to the repository root).
HEADER_PATH = Path("hls_accel/include/edgemoe_interface.h")


def _config_from_arg(value: str) -> ModelConfig:
    if value == "spec":
        return ModelConfig()
    if value == "tiny":
        return tiny_config()
    return ModelConfig.from_json(Path(value).read_text())


def main(argv: list[str] | None = None) -> int:
    """CLI: write the C++ interface header (rendered by ``accel/cpp_header.py``)."""
    from .cpp_header import generate_header

    ap = argparse.ArgumentParser(description="Write hls_accel's edgemoe_interface.h from "
                                             "accel/interface.py.")
    ap.add_argument("--header", required=True, help="output path of the generated C++ header")
    ap.add_argument("--config", default="spec",
                    help="'spec' (default), 'tiny', or a model-config JSON file")
    args = ap.parse_args(argv)
    text = generate_header(_config_from_arg(args.config))
    path = Path(args.header)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
