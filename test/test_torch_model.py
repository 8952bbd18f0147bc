# SPDX-License-Identifier: Apache-2.0
"""The PyTorch twin must be the same model as the numpy reference: names, shapes, math, routing."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgemoe_ros.model import reference  # noqa: E402
from edgemoe_ros.model.config import ModelConfig, tiny_config  # noqa: E402
from edgemoe_ros.model.weights import WeightsError, expected_shapes, random_init  # noqa: E402
from edgemoe_ros.training.torch_model import (  # noqa: E402
    build_torch_model,
    cv_squared,
    images_to_tensor,
    load_model_weights,
    to_model_weights,
)


@pytest.fixture(scope="module")
def images():
    cfg = tiny_config()
    return np.random.default_rng(0).integers(0, 256, (3, cfg.img_h, cfg.img_w, 3), dtype=np.uint8)


@pytest.mark.parametrize("head", ["light", "guided", "pyramid", "up"])
def test_state_dict_names_and_shapes_are_the_canonical_ones(head):
    cfg = tiny_config(head=head, up_stages=2)
    sd = build_torch_model(cfg).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected_shapes(cfg)


def test_full_spec_model_shapes_and_size():
    cfg = ModelConfig()
    model = build_torch_model(cfg)
    sd = model.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected_shapes(cfg)
    backbone = sum(v.numel() for k, v in sd.items() if not k.startswith("heads."))
    assert 17.5e6 < backbone < 18.5e6  # SPEC §2: ~18.0 M backbone parameters


@pytest.mark.parametrize("task", ["semseg", "depth"])
def test_backbone_matches_reference(images, task):
    cfg = tiny_config()
    weights = random_init(cfg, seed=3)
    model = build_torch_model(cfg)
    load_model_weights(model, weights)
    ref = reference.forward(weights, images, task)
    with torch.no_grad():
        feats, routing, aux = model.backbone_with_routing(images_to_tensor(images), task)
        plain = model.backbone(images_to_tensor(images), task)
    np.testing.assert_allclose(feats.numpy(), ref.features, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(plain.numpy(), feats.numpy())
    np.testing.assert_array_equal(routing.numpy(), ref.routing)
    assert float(aux) >= 0


def test_tasks_route_differently(images):
    cfg = tiny_config()
    model = build_torch_model(cfg)
    load_model_weights(model, random_init(cfg, seed=4))
    with torch.no_grad():
        _, r0, _ = model.backbone_with_routing(images_to_tensor(images), "semseg")
        _, r1, _ = model.backbone_with_routing(images_to_tensor(images), "depth")
    assert not torch.equal(r0, r1)


def test_light_head_pixel_shuffle_order():
    """Token t's vector index (ky*p + kx)*C + c lands at pixel (gy*p + ky, gx*p + kx), channel
    c."""
    cfg = tiny_config()
    model = build_torch_model(cfg)
    head = model.heads["semseg"]
    c, p = cfg.num_classes, cfg.patch
    with torch.no_grad():
        head.fc1.weight.zero_()
        head.fc1.bias.zero_()
        head.fc2.weight.zero_()
        head.fc2.bias.copy_(torch.arange(p * p * c, dtype=torch.float32))
        out = head(torch.zeros(1, cfg.num_patches, cfg.dim))
    gy, gx, ky, kx, ch = 1, 2, 5, 9, 3
    assert out.shape == (1, c, cfg.img_h, cfg.img_w)
    assert float(out[0, ch, gy * p + ky, gx * p + kx]) == (ky * p + kx) * c + ch


def test_forward_tasks_shares_prefix_and_matches_single_task(images):
    cfg = tiny_config()
    model = build_torch_model(cfg)
    load_model_weights(model, random_init(cfg, seed=5))
    x = images_to_tensor(images)
    with torch.no_grad():
        both, aux_both = model.forward_tasks(x, cfg.tasks)
        seg, aux_seg = model(x, "semseg")
        dep, aux_dep = model(x, "depth")
    assert seg.shape == (3, cfg.num_classes, cfg.img_h, cfg.img_w) and dep.shape == (
        3,
        1,
        cfg.img_h,
        cfg.img_w,
    )
    torch.testing.assert_close(both["semseg"], seg)
    torch.testing.assert_close(both["depth"], dep)
    torch.testing.assert_close(aux_both, aux_seg + aux_dep)


def test_weights_round_trip(tmp_path):
    from edgemoe_ros.model.weights import load_weights, save_weights

    cfg = tiny_config()
    model = build_torch_model(cfg)
    exported = to_model_weights(model)
    path = tmp_path / "m.safetensors"
    save_weights(exported, path)
    loaded = load_weights(path, expect=cfg)
    other = build_torch_model(cfg)
    load_model_weights(other, loaded)
    for k, v in other.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k])


def test_load_rejects_other_config():
    model = build_torch_model(tiny_config())
    with pytest.raises(WeightsError, match="config"):
        load_model_weights(model, random_init(tiny_config(num_experts=8)))


def test_load_balancing_loss():
    assert float(cv_squared(torch.ones(16))) == pytest.approx(0.0)
    skewed = torch.zeros(16)
    skewed[0] = 16.0
    assert float(cv_squared(skewed)) == pytest.approx(16.0, rel=0.1)  # var/mean^2 of one-hot * n


def test_moe_gradients_reach_router_and_experts(images):
    cfg = tiny_config()
    model = build_torch_model(cfg)
    out, aux = model(images_to_tensor(images), "depth")
    (out.mean() + aux).backward()
    moe = model.blocks[cfg.moe_layers[0]].moe
    assert moe.router.weight.grad is not None and moe.router.weight.grad[1].abs().sum() > 0
    # semseg's router is untouched by a depth step
    assert moe.router.weight.grad[0].abs().sum() == 0
    assert moe.fc1.weight.grad.abs().sum() > 0


def test_new_guided_head_starts_as_its_light_head(images):
    """The refinement is zero at init, so a light-head model fine-tuned into a guided one starts
    unchanged."""
    guided = build_torch_model(tiny_config(head="guided")).eval()
    light = build_torch_model(tiny_config(head="light")).eval()
    light.load_state_dict(
        {k: v for k, v in guided.state_dict().items() if k in light.state_dict()}, strict=True
    )
    x = images_to_tensor(images)
    with torch.no_grad():
        got, _ = guided.forward_tasks(x, ("semseg", "depth"))
        want, _ = light.forward_tasks(x, ("semseg", "depth"))
    for task in ("semseg", "depth"):
        torch.testing.assert_close(got[task], want[task])
    with pytest.raises(ValueError, match="needs the input pixels"):
        guided.heads["semseg"](torch.zeros(1, guided.cfg.num_patches, guided.cfg.dim))
