# SPDX-License-Identifier: Apache-2.0
"""Model configuration: the numbers of SPEC §2 in one place.

Every size the rest of the code needs (token counts, MoE layer indices, head sizes) is derived
here, so tests can shrink the model by changing a few fields and nothing else has to know.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

#: Task names in task-id order (task id = index; the accelerator takes the id).
TASKS: tuple[str, ...] = ("semseg", "depth")

#: The 7 Cityscapes categories of SPEC §2, in class-id order.
SEMSEG_CLASSES: tuple[str, ...] = (
    "flat", "human", "vehicle", "construction", "object", "nature", "sky",
)

#: Label value for "no class" (training ignore, and pixels outside the crop in crop-fit mode).
IGNORE_INDEX = 255

#: "light": per-token MLP to a patch of pixels; "guided": the light head plus a pixel-level
#: refinement guided by the input image (sharper edges for objects thinner than a patch);
#: "pyramid": an image-guided decoder from the token grid through 1/4 and 1/2 resolution
#: (model/pyramid_head.py); "up": M3ViT's up-head.
HEAD_TYPES = ("light", "guided", "pyramid", "up")
#: Coordinate channels (row, column) the pyramid head appends to each of its fusions.
PYRAMID_COORDS = 2
#: Head types built on the light head's per-token MLP.
LIGHT_HEADS = ("light", "guided")
#: Head types that read the model-input pixels besides the backbone's features.
PIXEL_HEADS = ("guided", "pyramid")
RESIZE_MODES = ("stretch", "crop")
DEPTH_OUTPUTS = ("log", "linear")


#: Input channels: the model reads RGB camera images.
IN_CHANS = 3

#: Per field of ``ModelConfig``: (kind, bound). Kinds: "int" / "ints" (each >= bound), "float" /
#: "floats" (finite, each > bound unless bound is None), "str" / "strs" (distinct, non-empty).
_FIELD_RULES: dict[str, tuple[str, Any]] = {
    **{name: ("int", 1) for name in (
        "img_h", "img_w", "patch", "in_chans", "dim", "depth", "num_heads", "mlp_hidden",
        "moe_every",
        "num_experts", "top_k", "expert_hidden", "light_hidden", "guide_channels", "refine_hidden",
        "pyramid_token", "pyramid_guide", "up_channels")},
    "up_stages": ("int", 0),
    "pyramid_enc": ("ints", 1), "pyramid_dec": ("ints", 1), "pyramid_mix": ("ints", 0),
    "ln_eps": ("float", 0.0), "min_depth": ("float", 0.0), "max_depth": ("float", 0.0),
    "pixel_mean": ("floats", None), "pixel_std": ("floats", 0.0),
    "tasks": ("strs", None), "class_names": ("strs", None),
    "head": ("str", None), "depth_output": ("str", None), "resize_mode": ("str", None),
}


class ConfigError(ValueError):
    """A model configuration that cannot describe a valid model."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the multi-task MoE ViT. Defaults are the SPEC §2 model."""

    img_h: int = 128
    img_w: int = 256
    patch: int = 16
    in_chans: int = 3
    dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_hidden: int = 768
    #: MoE blocks are the odd ones (1, 3, ..., 11); the even ones have a dense MLP.
    moe_every: int = 2
    num_experts: int = 16
    top_k: int = 2
    expert_hidden: int = 384
    ln_eps: float = 1e-6
    tasks: tuple[str, ...] = TASKS
    class_names: tuple[str, ...] = SEMSEG_CLASSES
    #: Display colours of the classes, flat RGB (3 values per class, 0-255); empty: the Cityscapes
    #: category colours of ``postprocess.PALETTE`` (the default classes). ``edgemoe-train
    #: --classes`` stores its scheme's, so the node and the tools draw what the model predicts.
    palette: tuple[int, ...] = ()
    #: "light", "guided" or "pyramid" (<= 10 % of backbone MACs; the shipped model is "pyramid")
    #: or "up" (M3ViT VisionTransformerUpHead, heavier than the backbone).
    head: str = "light"
    #: Hidden width of the light head's per-token MLP.
    light_hidden: int = 192
    #: Guided head: channels of the 3x3 conv on the input image, and hidden width of the per-pixel
    #: refinement that mixes them with the light head's output.
    guide_channels: int = 8
    refine_hidden: int = 16
    #: Pyramid head: token projection width; pixel-encoder widths at 1/2 and 1/4 resolution;
    #: decoder widths at 1/4, 1/2 and full resolution; channels of the full-resolution 3x3 conv on
    #: the pixels; residual depthwise blocks at 1/4 and 1/2 resolution.
    pyramid_token: int = 64
    pyramid_enc: tuple[int, int] = (16, 32)
    pyramid_dec: tuple[int, int, int] = (48, 32, 16)
    pyramid_guide: int = 8
    pyramid_mix: tuple[int, int] = (2, 1)
    #: Channels of the up-head's 3x3 convolutions and number of conv+2x-upsample stages.
    up_channels: int = 256
    up_stages: int = 4
    #: Pixels are u8/256 (Edge-MoE's ap_ufixed<8,0>); mean/std are applied after that scaling.
    pixel_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: What the depth head's channel means: "log" (log-metres, ours) or "linear" (metres, M3ViT's
    #: L1-trained head). Either way outputs are clipped to [min_depth, max_depth].
    depth_output: str = "log"
    min_depth: float = 0.5
    max_depth: float = 80.0
    #: Depth is predicted for a canonical camera with this horizontal field of view across the
    #: model input (focal ``img_w / (2 tan(hfov / 2))`` model pixels); the engine rescales it to
    #: the real camera's K (model/canonical_camera.py). Default: the renderer's camera
    #: (scenes.camera.DEFAULT_HFOV_DEG), which the shipped model was trained with.
    canonical_hfov_deg: float = 90.0
    #: How camera images are fitted to the model input: "stretch" or "crop" (centre crop).
    resize_mode: str = "stretch"
    #: Free-form provenance (training run, importer) carried in the weights file.
    notes: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        self.validate()

    # ----- derived sizes -----
    @property
    def grid_h(self) -> int:
        return self.img_h // self.patch

    @property
    def grid_w(self) -> int:
        return self.img_w // self.patch

    @property
    def num_patches(self) -> int:
        return self.grid_h * self.grid_w

    @property
    def num_tokens(self) -> int:
        """Patches plus the class token."""
        return self.num_patches + 1

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def moe_layers(self) -> tuple[int, ...]:
        """Indices of the blocks whose MLP is a Mixture of Experts."""
        return tuple(i for i in range(self.depth) if i % self.moe_every == self.moe_every - 1)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def is_moe(self, block: int) -> bool:
        return block in self.moe_layers

    def task_id(self, task: str) -> int:
        try:
            return self.tasks.index(task)
        except ValueError:
            raise ConfigError(f"unknown task {task!r}; known tasks: "
                              f"{', '.join(self.tasks)}") from None

    def head_out_channels(self, task: str) -> int:
        return self.num_classes if task == "semseg" else 1

    # ----- cost model (MACs per image per task) -----
    def backbone_macs(self) -> int:
        """Multiply-accumulates of the backbone for one task (SPEC §2: ~0.78 GMAC)."""
        n, d = self.num_tokens, self.dim
        macs = self.num_patches * d * self.in_chans * self.patch * self.patch
        for b in range(self.depth):
            macs += n * d * 3 * d + n * d * d  # qkv + proj
            macs += 2 * n * n * d  # q.k^T and attn.v over all heads
            if self.is_moe(b):
                macs += n * d * self.num_experts  # router
                macs += self.top_k * n * 2 * d * self.expert_hidden
            else:
                macs += n * 2 * d * self.mlp_hidden
        return macs

    def head_macs(self, task: str) -> int:
        """Multiply-accumulates of one task head on the host."""
        c = self.head_out_channels(task)
        n, d = self.num_patches, self.dim
        if self.head in LIGHT_HEADS:
            macs = n * (d * self.light_hidden + self.light_hidden * self.patch * self.patch * c)
            if self.head == "guided":
                g, h = self.guide_channels, self.refine_hidden
                macs += self.img_h * self.img_w * (9 * self.in_chans * g + (c + g) * h + h * c)
            return macs
        if self.head == "pyramid":
            return self._pyramid_macs(c)
        macs, h, w, cin = 0, self.grid_h, self.grid_w, d
        for _ in range(self.up_stages):
            macs += h * w * 9 * cin * self.up_channels
            cin, h, w = self.up_channels, h * 2, w * 2
        return macs + (h * w * cin * c)

    def _pyramid_macs(self, c: int) -> int:
        """What ``model/pyramid_head.py`` multiplies: each fusion's coarse share at the coarser
        resolution (it commutes with bilinear upsampling) and its coordinates' share (row and
        column: two per output channel and pixel) at the finer one."""
        n1 = self.img_h * self.img_w
        n2, n4 = n1 // 4, n1 // 16
        e1, e2 = self.pyramid_enc
        d4, d2, d1 = self.pyramid_dec
        # k: one 3x3 over the pixels
        t, g, k = self.pyramid_token, self.pyramid_guide, 9 * self.in_chans
        macs = self.num_patches * self.dim * t + self.num_patches * t * d4  # tokens, fuse4's share
        macs += n2 * k * e1 + n4 * 9 * e1 * e2 + n1 * k * g  # pixel encoder, full-resolution guide
        macs += n4 * e2 * d4 + self.pyramid_mix[0] * n4 * (9 * d4 + d4 * d4)
        macs += n4 * d4 * d2 + n2 * e1 * d2 + self.pyramid_mix[1] * n2 * (9 * d2 + d2 * d2)
        macs += n2 * d2 * d1 + n1 * g * d1 + n1 * d1 * c
        return macs + PYRAMID_COORDS * (n4 * d4 + n2 * d2 + n1 * d1)

    # ----- validation and (de)serialisation -----
    def validate(self) -> None:
        """Check every field, so a weights file whose config passes loads into a model that
        computes numbers (a negative ``num_heads`` or ``ln_eps`` <= 0 once loaded and gave NaN
        depth)."""
        problems = self._field_problems()
        if problems:  # the checks below assume the fields' types and signs are right
            raise ConfigError("invalid model config: " + "; ".join(problems))
        if self.img_h % self.patch or self.img_w % self.patch:
            problems.append(f"input {self.img_h}x{self.img_w} is not a "
                            f"multiple of patch {self.patch}")
        if self.dim % self.num_heads:
            problems.append(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if not 1 <= self.top_k <= self.num_experts:
            problems.append(f"top_k {self.top_k} not in 1..num_experts ({self.num_experts})")
        if len(self.pixel_mean) != self.in_chans or len(self.pixel_std) != self.in_chans:
            problems.append(f"pixel_mean and pixel_std need {self.in_chans} entries "
                            "(one per input channel)")
        if self.head == "up" and 1 << min(self.up_stages, 63) > self.patch:
            problems.append(f"up_stages {self.up_stages} upsamples the token grid past the input "
                            f"resolution (2**up_stages must be <= patch {self.patch})")
        if self.head not in HEAD_TYPES:
            problems.append(f"head {self.head!r} not one of {HEAD_TYPES}")
        if self.depth_output not in DEPTH_OUTPUTS:
            problems.append(f"depth_output {self.depth_output!r} not one of {DEPTH_OUTPUTS}")
        if self.resize_mode not in RESIZE_MODES:
            problems.append(f"resize_mode {self.resize_mode!r} not one of {RESIZE_MODES}")
        unknown = set(self.tasks) - set(TASKS)
        if unknown or not self.tasks:
            problems.append(f"tasks {self.tasks} must be a non-empty subset of {TASKS}")
        if self.head == "pyramid":
            if (len(self.pyramid_enc), len(self.pyramid_dec), len(self.pyramid_mix)) != (2, 3, 2):
                problems.append("pyramid_enc, pyramid_dec and pyramid_mix need 2, 3 and 2 entries")
            if self.img_h % 4 or self.img_w % 4:
                problems.append("the pyramid head needs an input size divisible by 4, got "
                                f"{self.img_h}x{self.img_w}")
            if self.patch % 4:
                # Its 1/4 map must tile the token grid, so a crop of whole tokens is a crop of it
                # too.
                problems.append("the pyramid head needs a patch size divisible "
                                f"by 4, got {self.patch}")
        if self.palette and (len(self.palette) != 3 * len(self.class_names)
                             or not all(isinstance(v, int) and 0 <= v <= 255
                                        for v in self.palette)):
            problems.append("palette needs 3 values in 0..255 per class "
                            f"({3 * len(self.class_names)}), got {len(self.palette)}")
        if not 1.0 < self.canonical_hfov_deg < 179.0:
            problems.append(f"canonical_hfov_deg {self.canonical_hfov_deg} "
                            "not in (1, 179) degrees")
        if not 0 < self.min_depth < self.max_depth:
            problems.append(f"depth range ({self.min_depth}, {self.max_depth}) is not "
                            "increasing and positive")
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))

    def _field_problems(self) -> list[str]:
        """Type and range of each field on its own (``_FIELD_RULES``)."""
        problems = []
        for name, (kind, low) in _FIELD_RULES.items():
            value = getattr(self, name)
            values = value if kind.endswith("s") else (value,)
            if kind.endswith("s") and not isinstance(value, tuple):
                problems.append(f"{name} must be a list (tuple), got {value!r}")
                continue
            if kind.startswith("int"):
                ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= low
                         for v in values)
                if not ok:
                    problems.append(f"{name} must be "
                                    f"{'an integer' if kind == 'int' else 'integers'} "
                                    f">= {low}, got {value!r}")
            elif kind.startswith("float"):
                ok = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(v) and (low is None or v > low) for v in values)
                if not ok:
                    bound = "" if low is None else f" > {low}"
                    problems.append(f"{name} must be finite number(s){bound}, got {value!r}")
            elif (not all(isinstance(v, str) and v for v in values)
                  or len(set(values)) != len(values)):
                problems.append(f"{name} must be distinct non-empty strings, got {value!r}")
        if isinstance(self.in_chans, int) and self.in_chans != IN_CHANS:
            problems.append(f"in_chans {self.in_chans}: the model reads RGB "
                            f"images ({IN_CHANS} channels)")
        if isinstance(self.class_names, tuple) and not 1 <= len(self.class_names) < IGNORE_INDEX:
            problems.append(f"class_names needs 1..{IGNORE_INDEX - 1} classes (ids are uint8, "
                            f"{IGNORE_INDEX} means ignore), got {len(self.class_names)}")
        if not isinstance(self.notes, dict):
            problems.append(f"notes must be a JSON object, got {type(self.notes).__name__}")
        return problems

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        extra = set(data) - set(known)
        if extra:
            raise ConfigError(f"unknown model config keys: {sorted(extra)}")
        kwargs = {}
        for name, value in data.items():
            if isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"model config is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("model config JSON must be an object")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def tiny_config(**overrides: Any) -> ModelConfig:
    """A small model for fast tests: same structure, smaller sizes."""
    base = dict(img_h=32, img_w=64, patch=16, dim=24, depth=4, num_heads=3, mlp_hidden=48,
                num_experts=4, top_k=2, expert_hidden=32, light_hidden=16, up_channels=8)
    base.update(overrides)
    return ModelConfig(**base)
