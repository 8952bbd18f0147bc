# SPDX-License-Identifier: Apache-2.0
"""Training loop: it learns, resumes where it stopped, and exports a loadable weights file."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgemoe_ros.model.config import tiny_config  # noqa: E402
from edgemoe_ros.model.weights import load_weights, read_metadata  # noqa: E402
from edgemoe_ros.training import data  # noqa: E402
from edgemoe_ros.training.metrics import SegDepthMeter, boundary_band  # noqa: E402
from edgemoe_ros.training.train import (  # noqa: E402
    CHECKPOINT_NAME,
    Hyper,
    Trainer,
    class_weights,
    depth_targets,
    edge_band,
    lovasz_softmax,
    main,
    weighted_cross_entropy,
)


@pytest.fixture(scope="module")
def tiny_frames():
    cfg = tiny_config()
    return data.render_set(
        range(data.TRAIN_SEED_START, data.TRAIN_SEED_START + 4), cfg.img_w, cfg.img_h
    )


def test_a_few_steps_decrease_the_loss(tiny_frames):
    torch.set_num_threads(1)
    trainer = Trainer(tiny_config(), Hyper(batch=4, lr=3e-3, warmup_steps=1), seed=0)
    batch = (tiny_frames["rgb"], tiny_frames["labels"], tiny_frames["depth"])
    with torch.no_grad():
        before = {k: float(v) for k, v in trainer.losses(*batch, train=False).items()}
    for _ in range(40):
        trainer.step(*batch, progress=0.0)
    with torch.no_grad():
        after = {k: float(v) for k, v in trainer.losses(*batch, train=False).items()}
    assert after["seg"] < 0.8 * before["seg"]
    assert after["depth"] < 0.8 * before["depth"]
    assert trainer.step_count == 40


def test_weights_stay_inside_fixed_point_ranges(tiny_frames):
    trainer = Trainer(tiny_config(), Hyper(batch=4), seed=0)
    assert trainer._ranges, "accelerator formats should constrain the backbone weights"
    name = "blocks.0.attn.qkv.weight"
    with torch.no_grad():
        dict(trainer.model.named_parameters())[name].fill_(10.0)
    trainer.step(tiny_frames["rgb"], tiny_frames["labels"], tiny_frames["depth"], progress=0.5)
    for p, lo, hi in trainer._ranges:
        assert float(p.detach().min()) >= lo and float(p.detach().max()) <= hi
    # ap_fixed<16,2>
    assert float(dict(trainer.model.named_parameters())[name].detach().max()) < 2.0


def _mean_iou_present(pred: np.ndarray, labels: np.ndarray, ignore: int) -> float:
    valid = labels != ignore
    ious = [
        ((pred == k) & (labels == k) & valid).sum() / (((pred == k) | (labels == k)) & valid).sum()
        for k in np.unique(labels[valid])
    ]
    return float(np.mean(ious))


def test_lovasz_softmax_is_one_minus_miou_for_hard_predictions():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, size=(2, 12, 20))
    labels[0, :3] = 255  # ignored pixels count for nothing
    pred = np.where(
        rng.random(labels.shape) < 0.7, labels % 255, rng.integers(0, 5, size=labels.shape)
    )
    logits = (
        torch.nn.functional.one_hot(torch.from_numpy(pred), 5).permute(0, 3, 1, 2).double() * 60.0
    )
    loss = float(lovasz_softmax(logits, torch.from_numpy(labels), ignore_index=255))
    assert loss == pytest.approx(1.0 - _mean_iou_present(pred, labels, 255), abs=1e-9)
    perfect = (
        torch.nn.functional.one_hot(torch.from_numpy(labels % 255), 5).permute(0, 3, 1, 2).double()
        * 60.0
    )
    assert float(
        lovasz_softmax(perfect, torch.from_numpy(labels), ignore_index=255)
    ) == pytest.approx(0.0, abs=1e-9)


def test_lovasz_term_has_gradients_and_joins_the_segmentation_loss(tiny_frames):
    batch = (tiny_frames["rgb"], tiny_frames["labels"], tiny_frames["depth"])
    plain = Trainer(tiny_config(), Hyper(batch=4), seed=0)
    with_iou = Trainer(tiny_config(), Hyper(batch=4, lovasz_weight=0.5), seed=0)
    a, b = (
        {k: float(v.detach()) for k, v in t.losses(*batch, train=False).items()}
        for t in (plain, with_iou)
    )
    assert "lovasz" not in a and 0.0 < b["lovasz"] <= 1.0
    assert b["seg"] == pytest.approx(a["seg"] + 0.5 * b["lovasz"], rel=1e-5)
    logits = torch.randn(2, 4, 6, 8, requires_grad=True)
    lovasz_softmax(logits, torch.randint(0, 4, (2, 6, 8))).backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_edge_band_is_the_band_eval_model_scores(radius):
    labels = np.random.default_rng(radius).integers(0, 4, (2, 12, 17)).astype(np.int64)
    labels[0, :, :5] = 2  # a region with an edge, and ignored pixels as a label of their own
    labels[1, 3:6, 4:9] = 255
    got = edge_band(torch.from_numpy(labels), radius).numpy()
    np.testing.assert_array_equal(got, boundary_band(labels.astype(np.uint8), radius))
    flat = torch.full((1, 6, 6), 3, dtype=torch.int64)
    assert not edge_band(flat, 2).any()  # the image border is not an edge


def test_weighted_cross_entropy_matches_its_definition():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 5, (2, 6, 7), generator=gen)
    labels[0, 0, :3] = 255
    class_w = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=torch.float64)
    ones = torch.ones(2, 6, 7, dtype=torch.float64)
    plain = torch.nn.functional.cross_entropy(logits, labels, weight=class_w, ignore_index=255)
    assert float(weighted_cross_entropy(logits, labels, class_w, ones)) == pytest.approx(
        float(plain), rel=1e-12
    )
    assert float(weighted_cross_entropy(logits, labels, class_w, None)) == pytest.approx(
        float(plain), rel=1e-12
    )
    pixel_w = 1.0 + 4.0 * torch.rand(2, 6, 7, generator=gen, dtype=torch.float64)
    logp = logits.log_softmax(1).numpy()
    num = den = 0.0
    for b, y, x in np.ndindex(2, 6, 7):
        k = int(labels[b, y, x])
        if k != 255:
            w = float(pixel_w[b, y, x]) * float(class_w[k])
            num, den = num - w * logp[b, k, y, x], den + w
    got = float(weighted_cross_entropy(logits, labels, class_w, pixel_w))
    assert got == pytest.approx(num / den, rel=1e-12)
    assert got != pytest.approx(float(plain), rel=1e-3)  # the weights do change it


def test_edge_weight_joins_the_segmentation_loss_only_near_edges(tiny_frames):
    batch = (tiny_frames["rgb"], tiny_frames["labels"], tiny_frames["depth"])
    plain = Trainer(tiny_config(), Hyper(batch=4), seed=0)
    edged = Trainer(tiny_config(), Hyper(batch=4, edge_weight=3.0), seed=0)
    # the same random perturbation: a fresh model is equally unsure everywhere
    for trainer in (plain, edged):
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for param in trainer.model.parameters():
                param.add_(0.3 * torch.randn(param.shape, generator=gen))
    a, b = (
        {k: float(v.detach()) for k, v in t.losses(*batch, train=False).items()}
        for t in (plain, edged)
    )
    assert b["seg"] != pytest.approx(a["seg"], rel=1e-5) and b["depth"] == pytest.approx(
        a["depth"], rel=1e-6
    )
    # no edges: the band is empty, the loss unchanged
    flat = np.full_like(tiny_frames["labels"], 3)
    a, b = (
        float(
            t.losses(tiny_frames["rgb"], flat, tiny_frames["depth"], train=False)["seg"].detach()
        )
        for t in (plain, edged)
    )
    assert b == pytest.approx(a, rel=1e-6)


def test_lr_schedule_warms_up_and_decays():
    trainer = Trainer(tiny_config(), Hyper(lr=1e-3, warmup_steps=10, min_lr_frac=0.0))
    assert trainer.lr_at(0.0) == pytest.approx(1e-4)
    trainer.step_count = 100
    assert trainer.lr_at(0.0) == pytest.approx(1e-3)
    assert trainer.lr_at(0.5) == pytest.approx(5e-4)
    assert trainer.lr_at(1.0) == pytest.approx(0.0)


def test_depth_targets_are_log_metres_and_sky_is_weighted_down():
    cfg = tiny_config()
    depth = torch.tensor([[2.0, float("inf"), 1000.0, 0.1]])
    labels = torch.tensor([[0, 6, 0, 2]])
    target, weight = depth_targets(depth, labels, cfg, sky_weight=0.1)
    np.testing.assert_allclose(
        target.numpy(), np.log([[2.0, cfg.max_depth, cfg.max_depth, cfg.min_depth]]), rtol=1e-6
    )
    np.testing.assert_allclose(weight.numpy(), [[1.0, 0.1, 1.0, 1.0]])


def test_class_weights_favour_rare_classes_within_bounds():
    w = class_weights(np.array([0.4, 0.005, 0.1, 0.3, 0.02, 0.07, 0.1]), 0.5).numpy()
    assert w[1] > w[2] > w[0]
    assert w.min() >= 0.5 and w.max() <= 5.0


def test_metrics_on_known_values():
    m = SegDepthMeter(num_classes=3, max_depth=80.0)
    gt = np.array([[0, 0, 1, 2]], dtype=np.uint8)
    m.add_semseg(np.array([[0, 1, 1, 2]], dtype=np.uint8), gt)
    iou = m.iou()
    np.testing.assert_allclose(iou, [0.5, 0.5, 1.0])
    m.add_depth(np.array([[2.0, 3.0, 10.0, 5.0]]), np.array([[2.0, 2.0, 100.0, np.inf]]),
                np.array([[0, 0, 0, 2]]))  # 100 m is beyond max_depth; class 2 is not sky here
    s = m.summary()
    assert s["miou"] == pytest.approx(2 / 3)
    assert s["delta1"] == pytest.approx(0.5)  # 2/2 exact, 3/2 = 1.5 fails; inf and 100 m excluded
    assert s["absrel"] == pytest.approx(0.25)


def _train_cli(tmp_path, *extra):
    return main(
        [
            "--out",
            str(tmp_path / "run"),
            "--tiny",
            "--batch",
            "2",
            "--cache",
            str(tmp_path / "cache"),
            "--initial-shards",
            "1",
            "--no-refresh",
            "--val-frames",
            "2",
            "--export",
            str(tmp_path / "w.safetensors"),
            "--threads",
            "1",
            *extra,
        ]
    )


def test_cli_resume_continues_step_count_and_export_loads(tmp_path):
    assert _train_cli(tmp_path, "--steps", "3") == 0
    ckpt = tmp_path / "run" / CHECKPOINT_NAME
    # plain data only: the safe loader reads it
    assert torch.load(ckpt, weights_only=True)["step"] == 3
    assert _train_cli(tmp_path, "--steps", "5", "--resume") == 0
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 5
    assert state["images_seen"] == 10
    weights = load_weights(tmp_path / "w.safetensors", expect=tiny_config())
    notes = weights.config.notes
    assert notes["steps"] == 5 and "--resume" in notes["command"]
    header_len = int.from_bytes((tmp_path / "w.safetensors").read_bytes()[:8], "little")
    header = json.loads((tmp_path / "w.safetensors").read_bytes()[8:8 + header_len])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F16"}
    assert "edgemoe.config" in read_metadata(tmp_path / "w.safetensors")


def test_init_from_a_light_model_fine_tunes_a_guided_head_and_resumes(tmp_path):
    """--init copies every matching tensor; the guided refinement is new, learns faster, survives
    --resume."""
    assert _train_cli(tmp_path, "--steps", "2") == 0
    light = load_weights(tmp_path / "w.safetensors")
    assert light.config.head == "light"
    guided_out = tmp_path / "guided.safetensors"
    args = [
        "--out",
        str(tmp_path / "g"),
        "--tiny",
        "--batch",
        "2",
        "--cache",
        str(tmp_path / "cache"),
        "--initial-shards",
        "1",
        "--no-refresh",
        "--val-frames",
        "2",
        "--export",
        str(guided_out),
        "--threads",
        "1",
        "--init",
        str(tmp_path / "w.safetensors"),
        "--head",
        "guided",
        "--new-lr-mult",
        "7",
    ]
    assert main([*args, "--steps", "1"]) == 0
    state = torch.load(tmp_path / "g" / CHECKPOINT_NAME, weights_only=False)
    new = set(state["fresh"])
    assert new == {f"heads.{t}.{layer}.{kind}" for t in ("semseg", "depth")
                   for layer in ("guide", "fuse", "refine") for kind in ("weight", "bias")}
    assert sorted(g["lr_mult"] for g in state["opt"]["param_groups"]) == [1.0, 1.0, 7.0, 7.0]
    guided = load_weights(guided_out)
    assert guided.config.head == "guided"
    # Backbone tensors started from the file: after one small step they are still close to it.
    moved = np.abs(guided["blocks.0.attn.qkv.weight"] - light["blocks.0.attn.qkv.weight"]).max()
    assert 0 < moved < 0.05
    assert main([*args, "--steps", "2", "--resume"]) == 0
    assert torch.load(tmp_path / "g" / CHECKPOINT_NAME, weights_only=False)["step"] == 2
    assert load_weights(guided_out).config.head == "guided"
    with pytest.raises(SystemExit, match="trains a 'guided' head"):
        main([*args[:-4], "--head", "light", "--steps", "3", "--resume"])


def test_init_rejects_a_file_of_another_shape(tmp_path):
    from edgemoe_ros.model.weights import random_init
    from edgemoe_ros.training.torch_model import build_torch_model
    from edgemoe_ros.training.train import copy_matching

    other = random_init(tiny_config(light_hidden=5))
    with pytest.raises(ValueError, match="heads.semseg.fc1.weight"):
        copy_matching(build_torch_model(tiny_config()), other.tensors)


def test_cache_shards_are_seed_disjoint_from_evaluation(tmp_path):
    cfg = tiny_config()
    data.ensure_shards(tmp_path, 2, cfg.img_w, cfg.img_h)
    seeds = sorted(int(p.stem.split("_")[1]) for p in data.list_shards(tmp_path))
    assert seeds == [data.TRAIN_SEED_START, data.TRAIN_SEED_START + data.SHARD_FRAMES]
    assert data.next_seed(tmp_path) == data.TRAIN_SEED_START + 2 * data.SHARD_FRAMES
    assert data.EVAL_SEED_START + 10_000 <= data.VAL_SEED_START < data.TRAIN_SEED_START
    pool = data.FramePool(tmp_path)
    assert pool.reload() and len(pool) == 2 * data.SHARD_FRAMES
    assert not pool.reload()  # unchanged shard set: no reload
    assert np.isinf(pool.depth[pool.labels == 6]).all()


class _RunsCodeWhenUnpickled:
    """What a hostile checkpoint carries: unpickling calls a function of the attacker's choice."""

    def __reduce__(self):
        return (_HOSTILE_CALLS.append, ("code ran",))


_HOSTILE_CALLS: list[str] = []


def test_resume_never_runs_code_from_a_checkpoint(tmp_path):
    """Checkpoints are copied between machines: --resume reads them with the restricted
    unpickler."""
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"step": 1, "payload": _RunsCodeWhenUnpickled()}, run / CHECKPOINT_NAME)
    _HOSTILE_CALLS.clear()
    with pytest.raises(SystemExit, match="resume"):
        _train_cli(tmp_path, "--steps", "1", "--resume")
    assert _HOSTILE_CALLS == []


def test_checkpoints_hold_only_plain_data(tmp_path):
    from edgemoe_ros.training.checkpoint import load_checkpoint_file, save_checkpoint_file

    path = tmp_path / "ck.pt"
    rng = np.random.default_rng(0)
    save_checkpoint_file(
        path,
        {
            "w": np.arange(3, dtype=np.float32),
            "history": [{"miou": np.float64(0.5)}],
            "np_rng": rng.bit_generator.state,
            "betas": (0.9, 0.99),
        },
    )
    ck = load_checkpoint_file(path)
    assert torch.equal(ck["w"], torch.arange(3, dtype=torch.float32))
    assert ck["history"] == [{"miou": 0.5}] and type(ck["history"][0]["miou"]) is float
    assert ck["np_rng"] == rng.bit_generator.state and ck["betas"] == (0.9, 0.99)
