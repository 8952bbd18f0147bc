# SPDX-License-Identifier: Apache-2.0
"""Task heads against slow, direct (loop-per-pixel) implementations, and the decoders."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgemoe_ros.model.config import ConfigError, tiny_config
from edgemoe_ros.model.heads import BN_EPS, decode_depth, decode_semseg, run_head
from edgemoe_ros.model.layers import resize_bilinear
from edgemoe_ros.model.weights import random_init


def _features(cfg, batch=2, seed=0):
    return (
        np.random.default_rng(seed)
        .normal(size=(batch, cfg.num_patches, cfg.dim))
        .astype(np.float32)
    )


def _gelu(x):
    return x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _slow_light_head(w, cfg, task, feats):
    p, c, k = f"heads.{task}.", cfg.head_out_channels(task), cfg.patch
    out = np.zeros((feats.shape[0], c, cfg.img_h, cfg.img_w))
    for b in range(feats.shape[0]):
        for tok in range(cfg.num_patches):
            gy, gx = divmod(tok, cfg.grid_w)
            hidden = _gelu(w[p + "fc1.weight"] @ feats[b, tok] + w[p + "fc1.bias"])
            vec = w[p + "fc2.weight"] @ hidden + w[p + "fc2.bias"]
            for ky in range(k):
                for kx in range(k):
                    for ch in range(c):
                        out[b, ch, gy * k + ky, gx * k + kx] = vec[(ky * k + kx) * c + ch]
    return out


def _images(cfg, batch=2, seed=0):
    return np.random.default_rng(seed).integers(
        0, 256, (batch, cfg.img_h, cfg.img_w, cfg.in_chans), dtype=np.uint8
    )


def _slow_guided_head(w, cfg, task, feats, images):
    """Light head, then per pixel: [coarse, GELU(3x3 conv of u8/256)] -> fuse -> GELU -> refine,
    added."""
    p = f"heads.{task}."
    coarse = _slow_light_head(w, cfg, task, feats)
    out = np.zeros_like(coarse)
    for b in range(feats.shape[0]):
        pixels = images[b].astype(np.float64).transpose(2, 0, 1) / 256.0
        guide = _gelu(_slow_conv(pixels, w[p + "guide.weight"], w[p + "guide.bias"]))
        for y in range(cfg.img_h):
            for x in range(cfg.img_w):
                vec = np.concatenate([coarse[b, :, y, x], guide[:, y, x]])
                hidden = _gelu(w[p + "fuse.weight"] @ vec + w[p + "fuse.bias"])
                out[b, :, y, x] = (
                    coarse[b, :, y, x] + w[p + "refine.weight"] @ hidden + w[p + "refine.bias"]
                )
    return out


def _slow_conv(x, weight, bias):
    """Direct 3x3 / 1x1 conv, zero padding, on (C, H, W) float64."""
    cout, cin, kh, kw = weight.shape
    pad = kh // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    h, w = x.shape[1:]
    out = np.zeros((cout, h, w))
    for ky in range(kh):
        for kx in range(kw):
            out += np.einsum("oc,chw->ohw", weight[:, :, ky, kx], xp[:, ky:ky + h, kx:kx + w])
    return out + bias[:, None, None]


def _slow_upsample(x, out_h, out_w):
    """PyTorch bilinear, align_corners=False, written per output pixel."""
    c, h, w = x.shape
    out = np.zeros((c, out_h, out_w))
    for oy in range(out_h):
        sy = max((oy + 0.5) * h / out_h - 0.5, 0.0)
        y0 = min(int(sy), h - 1)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for ox in range(out_w):
            sx = max((ox + 0.5) * w / out_w - 0.5, 0.0)
            x0 = min(int(sx), w - 1)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            top = x[:, y0, x0] * (1 - fx) + x[:, y0, x1] * fx
            bottom = x[:, y1, x0] * (1 - fx) + x[:, y1, x1] * fx
            out[:, oy, ox] = top * (1 - fy) + bottom * fy
    return out


def _slow_up_head(w, cfg, task, feats):
    p = f"heads.{task}."
    outs = []
    for b in range(feats.shape[0]):
        t = feats[b].astype(np.float64)
        t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + cfg.ln_eps)
        x = (t * w[p + "norm.weight"] + w[p + "norm.bias"]).T.reshape(
            cfg.dim, cfg.grid_h, cfg.grid_w
        )
        for s in range(cfg.up_stages):
            x = _slow_conv(x, w[f"{p}conv_{s}.weight"], w[f"{p}conv_{s}.bias"])
            mean, var = w[f"{p}bn_{s}.running_mean"], w[f"{p}bn_{s}.running_var"]
            x = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + BN_EPS)
            x = x * w[f"{p}bn_{s}.weight"][:, None, None] + w[f"{p}bn_{s}.bias"][:, None, None]
            x = _slow_upsample(np.maximum(x, 0), x.shape[1] * 2, x.shape[2] * 2)
        x = _slow_conv(x, w[f"{p}conv_{cfg.up_stages}.weight"], w[f"{p}conv_{cfg.up_stages}.bias"])
        if x.shape[1:] != (cfg.img_h, cfg.img_w):
            x = _slow_upsample(x, cfg.img_h, cfg.img_w)
        outs.append(x)
    return np.stack(outs)


def _slow_depthwise(x, weight, bias):
    """Depthwise 3x3 conv, zero padding, on (C, H, W) float64: each channel its own filter."""
    return np.stack(
        [
            _slow_conv(x[c : c + 1], weight[c : c + 1], bias[c : c + 1])[0]
            for c in range(x.shape[0])
        ]
    )


def _slow_pyramid_head(w, cfg, task, feats, images):
    """The pyramid head as its docstring states it: every fusion a 1x1 conv over the concatenation
    [bilinear-upsampled coarser map, pixel features, coordinates], computed at the finer
    resolution."""
    p = f"heads.{task}."

    def conv(x, name, stride=1):
        return _gelu(
            _slow_conv(x, w[p + name + ".weight"], w[p + name + ".bias"])[:, ::stride, ::stride]
        )

    def fuse(name, coarse, pixels):
        h, wd = pixels.shape[1:]
        ys = (np.arange(h) + 0.5) / h * 2 - 1
        xs = (np.arange(wd) + 0.5) / wd * 2 - 1
        coords = np.stack([np.repeat(ys[:, None], wd, 1), np.repeat(xs[None, :], h, 0)])
        x = np.concatenate([_slow_upsample(coarse, h, wd), pixels, coords])
        return _gelu(
            np.einsum("oc,chw->ohw", w[p + name + ".weight"], x)
            + w[p + name + ".bias"][:, None, None]
        )

    def mix(name, x):
        y = _slow_depthwise(x, w[p + name + ".dw.weight"], w[p + name + ".dw.bias"])
        return x + _gelu(
            np.einsum("oc,chw->ohw", w[p + name + ".pw.weight"], y)
            + w[p + name + ".pw.bias"][:, None, None]
        )

    outs = []
    for b in range(feats.shape[0]):
        mean, std = (
            np.asarray(v, np.float64)[:, None, None] for v in (cfg.pixel_mean, cfg.pixel_std)
        )
        pixels = (images[b].astype(np.float64).transpose(2, 0, 1) / 256.0 - mean) / std
        tok = _gelu(feats[b] @ w[p + "tok.weight"].T + w[p + "tok.bias"]).T.reshape(
            -1, cfg.grid_h, cfg.grid_w
        )
        p2 = conv(pixels, "enc2", 2)
        p4 = conv(p2, "enc4", 2)
        x = fuse("fuse4", tok, p4)
        for i in range(cfg.pyramid_mix[0]):
            x = mix(f"mix4.{i}", x)
        x = fuse("fuse2", x, p2)
        for i in range(cfg.pyramid_mix[1]):
            x = mix(f"mix2.{i}", x)
        x = fuse("fuse1", x, conv(pixels, "enc1"))
        outs.append(
            np.einsum("oc,chw->ohw", w[p + "out.weight"], x) + w[p + "out.bias"][:, None, None]
        )
    return np.stack(outs)


#: Not the defaults (0, 1): the heads must normalise their pixels as the backbone does.
PIXEL_NORM = dict(pixel_mean=(0.45, 0.4, 0.35), pixel_std=(0.25, 0.2, 0.3))


def _pyramid_tiny(**kw):
    widths = dict(
        pyramid_token=5,
        pyramid_enc=(3, 4),
        pyramid_dec=(6, 5, 4),
        pyramid_guide=3,
        pyramid_mix=(2, 1),
    )
    return tiny_config(head="pyramid", **(widths | PIXEL_NORM | kw))


@pytest.mark.parametrize("task", ["semseg", "depth"])
def test_pyramid_head_matches_direct_implementation(task):
    cfg = _pyramid_tiny()
    w = random_init(cfg, seed=12)
    feats, images = _features(cfg, seed=13), _images(cfg, seed=14)
    got = run_head(w, cfg, task, feats, images)
    assert (
        got.shape == (2, cfg.head_out_channels(task), cfg.img_h, cfg.img_w)
        and got.dtype == np.float32
    )
    want = _slow_pyramid_head(w.astype(np.float64), cfg, task, feats.astype(np.float64), images)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_pyramid_head_without_mixing_blocks():
    cfg = _pyramid_tiny().replace(pyramid_mix=(0, 0))
    w = random_init(cfg, seed=15)
    feats, images = _features(cfg, seed=16), _images(cfg, seed=17)
    want = _slow_pyramid_head(
        w.astype(np.float64), cfg, "semseg", feats.astype(np.float64), images
    )
    np.testing.assert_allclose(
        run_head(w, cfg, "semseg", feats, images), want, rtol=1e-4, atol=1e-4 * np.abs(want).max()
    )


@pytest.mark.parametrize(
    "bad",
    [
        dict(pyramid_enc=(3,)),
        dict(pyramid_dec=(6, 0, 4)),
        dict(pyramid_mix=(-1, 1)),
        dict(img_h=34, patch=2),
        dict(img_h=36, img_w=72, patch=6),
    ],
)
def test_pyramid_config_is_validated(bad):
    with pytest.raises(ConfigError, match="pyramid"):
        _pyramid_tiny(**bad)


@pytest.mark.parametrize("task", ["semseg", "depth"])
def test_light_head_matches_direct_implementation(task):
    cfg = tiny_config()
    w = random_init(cfg, seed=1)
    feats = _features(cfg)
    got = run_head(w, cfg, task, feats)
    assert (
        got.shape == (2, cfg.head_out_channels(task), cfg.img_h, cfg.img_w)
        and got.dtype == np.float32
    )
    want = _slow_light_head(w.astype(np.float64), cfg, task, feats.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("task", ["semseg", "depth"])
def test_guided_head_matches_direct_implementation(task):
    cfg = tiny_config(head="guided", guide_channels=3, refine_hidden=5)
    w = random_init(cfg, seed=4)
    feats, images = _features(cfg, seed=5), _images(cfg, seed=6)
    got = run_head(w, cfg, task, feats, images)
    assert (
        got.shape == (2, cfg.head_out_channels(task), cfg.img_h, cfg.img_w)
        and got.dtype == np.float32
    )
    want = _slow_guided_head(w.astype(np.float64), cfg, task, feats.astype(np.float64), images)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # The refinement does something: the guided output is not the light head's.
    light = run_head(w, cfg.replace(head="light"), task, feats)
    assert np.abs(got - light).max() > 1e-3 * np.abs(light).max()


@pytest.mark.parametrize("head", ["guided", "pyramid"])
def test_pixel_heads_need_the_model_input_images(head):
    cfg = tiny_config(head=head)
    w = random_init(cfg)
    with pytest.raises(ValueError, match=f"{head} head needs the model-input images"):
        run_head(w, cfg, "semseg", _features(cfg))
    with pytest.raises(ValueError, match=f"{head} head needs the model-input images"):
        run_head(w, cfg, "semseg", _features(cfg), _images(cfg, batch=1))


@pytest.mark.parametrize("task,stages", [("semseg", 4), ("depth", 4), ("semseg", 2)])
def test_up_head_matches_direct_implementation(task, stages):
    # stages=2 leaves the output at 1/4 size: the head's final bilinear resize must restore it.
    cfg = tiny_config(head="up", up_stages=stages, up_channels=6)
    w = random_init(cfg, seed=2)
    feats = _features(cfg, seed=3)
    got = run_head(w, cfg, task, feats)
    assert (
        got.shape == (2, cfg.head_out_channels(task), cfg.img_h, cfg.img_w)
        and got.dtype == np.float32
    )
    want = _slow_up_head(w.astype(np.float64), cfg, task, feats)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_up_head_matches_pytorch_when_installed():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    cfg = tiny_config(head="up", up_channels=5)
    w = random_init(cfg, seed=4)
    feats = _features(cfg, batch=1, seed=5)
    p, t = "heads.semseg.", lambda name: torch.from_numpy(w[name].astype(np.float64))
    x = F.layer_norm(
        torch.from_numpy(feats).double(),
        (cfg.dim,),
        t(p + "norm.weight"),
        t(p + "norm.bias"),
        cfg.ln_eps,
    )
    x = x.transpose(1, 2).reshape(1, cfg.dim, cfg.grid_h, cfg.grid_w)
    for s in range(cfg.up_stages):
        x = F.conv2d(x, t(f"{p}conv_{s}.weight"), t(f"{p}conv_{s}.bias"), padding=1)
        x = F.batch_norm(x, t(f"{p}bn_{s}.running_mean"), t(f"{p}bn_{s}.running_var"),
                         t(f"{p}bn_{s}.weight"), t(f"{p}bn_{s}.bias"), False, 0.0, BN_EPS)
        x = F.interpolate(F.relu(x), scale_factor=2, mode="bilinear", align_corners=False)
    x = F.conv2d(x, t(f"{p}conv_{cfg.up_stages}.weight"), t(f"{p}conv_{cfg.up_stages}.bias"))
    want = x.numpy()
    np.testing.assert_allclose(
        run_head(w, cfg, "semseg", feats), want, rtol=1e-4, atol=1e-4 * np.abs(want).max()
    )


def test_resize_bilinear_odd_ratio_matches_direct():
    x = np.random.default_rng(6).normal(size=(1, 5, 7, 2)).astype(np.float32)
    got = resize_bilinear(x, 9, 4)
    want = _slow_upsample(x[0].transpose(2, 0, 1).astype(np.float64), 9, 4).transpose(1, 2, 0)
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", ["light", "guided"])
def test_head_macs_budget_of_light_heads(head):
    """SPEC: the shipped light head costs <= 10 % of the backbone on the host; up-head does not."""
    from edgemoe_ros.model.config import ModelConfig

    cfg = ModelConfig(head=head)
    for task in cfg.tasks:
        assert cfg.head_macs(task) <= 0.10 * cfg.backbone_macs()
    # The guided refinement's cost is counted: per pixel 3x3 guide + fuse + refine on top of the
    # light head.
    extra = cfg.head_macs("semseg") - ModelConfig(head="light").head_macs("semseg")
    assert extra == (
        0 if head == "light" else cfg.img_h * cfg.img_w * (9 * 3 * 8 + (7 + 8) * 16 + 16 * 7)
    )
    assert ModelConfig(head="up").head_macs("semseg") > cfg.backbone_macs()


def _pyramid_macs_from_shapes(cfg, task):
    """MACs counted from the head's tensor shapes and the resolution each layer runs at; a fusion's
    coarse block runs at the coarser map (before upsampling), its pixel and coordinate blocks at
    the finer."""
    from edgemoe_ros.model.weights import head_shapes

    n1 = cfg.img_h * cfg.img_w
    at = {"tok": cfg.num_patches, "enc2": n1 // 4, "enc4": n1 // 16, "enc1": n1, "mix4": n1 // 16,
          "mix2": n1 // 4, "out": n1}
    fusions = {"fuse4": (cfg.pyramid_token, cfg.num_patches, cfg.pyramid_enc[1], n1 // 16),
               "fuse2": (cfg.pyramid_dec[0], n1 // 16, cfg.pyramid_enc[0], n1 // 4),
               "fuse1": (cfg.pyramid_dec[1], n1 // 4, cfg.pyramid_guide, n1)}
    total = 0
    for name, shape in head_shapes(cfg, task).items():
        layer = name.split(".")[2]
        if not name.endswith(".weight"):
            continue
        if layer in fusions:
            coarse, coarse_px, pixels, pixels_px = fusions[layer]
            coords = shape[1] - coarse - pixels
            total += shape[0] * (coarse * coarse_px + (pixels + coords) * pixels_px)
        else:
            total += int(np.prod(shape)) * at[layer]
    return total


def test_pyramid_head_macs_budget():
    """The shipped pyramid head stays within 10 % of the backbone's MACs, counted two ways."""
    from edgemoe_ros.model.config import ModelConfig

    cfg = ModelConfig(head="pyramid")
    for task in cfg.tasks:
        assert cfg.head_macs(task) == _pyramid_macs_from_shapes(cfg, task)
        assert cfg.head_macs(task) <= 0.10 * cfg.backbone_macs()


def test_decoders():
    cfg = tiny_config()
    logits = np.zeros((1, 7, 2, 3), np.float32)
    logits[0, 4, 0, 0] = 1.0
    logits[0, 6, 1, 2] = 2.0
    ids = decode_semseg(logits)
    assert ids.dtype == np.uint8 and ids.shape == (1, 2, 3)
    np.testing.assert_array_equal(ids[0], [[4, 0, 0], [0, 0, 6]])  # ties (all zero) → class 0
    log_depth = np.log(np.array([[[[0.1, 1.0, 10.0, 1e3], [np.nan, 2.0, 3.0, 4.0]]]], np.float32))
    depth = decode_depth(log_depth, cfg)
    assert depth.dtype == np.float32 and depth.shape == (1, 2, 4)
    np.testing.assert_allclose(depth[0, 0], [cfg.min_depth, 1.0, 10.0, cfg.max_depth], rtol=1e-6)
    # no Inf
    assert decode_depth(np.full((1, 1, 1, 1), 1e4, np.float32), cfg)[0, 0, 0] == cfg.max_depth


def test_run_head_rejects_bad_input():
    cfg = tiny_config()
    w = random_init(cfg)
    with pytest.raises(ValueError, match=r"features must be \(B, 8, 24\)"):
        run_head(w, cfg, "semseg", np.zeros((1, 9, cfg.dim), np.float32))
    with pytest.raises(ConfigError, match="unknown task 'normals'"):
        run_head(w, cfg, "normals", _features(cfg))


@pytest.mark.parametrize("head", ["light", "guided", "pyramid", "up"])
def test_heads_match_the_pytorch_training_twin(head):
    """Heads trained in PyTorch must decode identically here (same tensor names, same math)."""
    torch = pytest.importorskip("torch")
    from edgemoe_ros.training.torch_model import build_torch_model

    cfg = tiny_config(head=head, up_channels=6, **PIXEL_NORM)
    w = random_init(cfg, seed=9)
    module = build_torch_model(cfg).double().eval()
    module.load_state_dict(
        {k: torch.from_numpy(v.astype(np.float64)) for k, v in w.tensors.items()}, strict=True
    )
    feats, images = _features(cfg, seed=10), _images(cfg, seed=11)
    # The twin's heads get the pixels its model normalised (EdgeMoEViT._pixels).
    pixels = module._pixels(torch.from_numpy(images).permute(0, 3, 1, 2).double() / 256.0)
    for task in cfg.tasks:
        with torch.no_grad():
            want = module.heads[task](torch.from_numpy(feats).double(), pixels).numpy()
        got = run_head(w, cfg, task, feats, images)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_decode_depth_linear_output_is_metres_not_log() -> None:
    """An imported M3ViT head regresses metres directly: decode must not exponentiate it."""
    cfg_log = tiny_config()
    cfg_lin = tiny_config(depth_output="linear")
    raw = np.array([[[[0.1, 2.0], [30.0, 500.0]]]], dtype=np.float32)
    lin = decode_depth(raw, cfg_lin)[0]
    np.testing.assert_allclose(lin, [[cfg_lin.min_depth, 2.0], [30.0, cfg_lin.max_depth]])
    log = decode_depth(raw, cfg_log)[0]
    np.testing.assert_allclose(log[0, 1], np.exp(2.0), rtol=1e-6)
