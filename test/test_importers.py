# SPDX-License-Identifier: Apache-2.0
"""Importers: checkpoints built here with the upstream names/layouts round-trip exactly.

The upstream layouts are written out independently in this file (not via the importer's own
tables), so a wrong mapping in the importer shows up as a mismatch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgemoe_ros.model.config import TASKS, tiny_config
from edgemoe_ros.model.importers import (
    M3VIT_PIXEL_MEAN,
    M3VIT_PIXEL_STD,
    import_edgemoe,
    import_m3vit,
    main,
)
from edgemoe_ros.model.weights import ModelWeights, WeightsError, load_weights, random_init

torch = pytest.importorskip("torch")


# ------------------------------------------------------------------------------------------------
# M3ViT: a MultiTaskModel state_dict as VITA-Group/M3ViT names it
# ------------------------------------------------------------------------------------------------
def m3vit_state_dict(w: ModelWeights) -> dict[str, np.ndarray]:
    cfg, t = w.config, w.tensors
    d = cfg.dim
    sd = {
        "backbone.patch_embed.proj.weight": t["patch_embed.weight"],
        "backbone.patch_embed.proj.bias": t["patch_embed.bias"],
        "backbone.cls_token": t["cls_token"].reshape(1, 1, d),
        "backbone.pos_embed": t["pos_embed"].reshape(1, cfg.num_tokens, d),
    }
    for b in range(cfg.depth):
        p, q = f"backbone.blocks.{b}.", f"blocks.{b}."
        for leaf in ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                     "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias"):
            sd[p + leaf] = t[q + leaf]
        if cfg.is_moe(b):
            sd[p + "mlp.experts.htoh4.weight"] = t[q + "moe.fc1.weight"]
            sd[p + "mlp.experts.htoh4.bias"] = t[q + "moe.fc1.bias"]
            sd[p + "mlp.experts.h4toh.weight"] = t[q + "moe.fc2.weight"]
            sd[p + "mlp.experts.h4toh.bias"] = t[q + "moe.fc2.bias"]
            for i, _task in enumerate(cfg.tasks):
                sd[p + f"mlp.gate.{i}.w_gate"] = t[q + "moe.router.weight"][i]
                sd[p + f"mlp.gate.{i}.w_noise"] = np.full((d, cfg.num_experts), 7.0, np.float32)
        else:
            for leaf in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
                sd[p + "mlp." + leaf] = t[q + "mlp." + leaf]
    for task in cfg.tasks:
        p, q = f"decoders.{task}.", f"heads.{task}."
        sd[p + "norm.weight"], sd[p + "norm.bias"] = t[q + "norm.weight"], t[q + "norm.bias"]
        for s in range(cfg.up_stages + 1):
            sd[p + f"conv_{s}.weight"], sd[p + f"conv_{s}.bias"] = (
                t[q + f"conv_{s}.weight"],
                t[q + f"conv_{s}.bias"],
            )
        for s in range(cfg.up_stages):
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                sd[p + f"syncbn_fc_{s}.{leaf}"] = t[q + f"bn_{s}.{leaf}"]
            sd[p + f"syncbn_fc_{s}.num_batches_tracked"] = np.array(1234, dtype=np.int64)
    return sd


def save_m3vit(sd: dict[str, np.ndarray], path: Path, wrapper: str | None = "state_dict",
               prefix: str = "module.") -> Path:
    tensors = {prefix + k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
    obj = {wrapper: tensors, "epoch": 99} if wrapper else tensors
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def up_model() -> ModelWeights:
    return random_init(tiny_config(head="up"), seed=11)


def assert_same_model(
    imported: ModelWeights, original: ModelWeights, skip: tuple[str, ...] = ()
) -> None:
    assert set(imported.tensors) == set(original.tensors)
    for name, arr in original.tensors.items():
        if name in skip:
            continue
        np.testing.assert_array_equal(imported[name], arr, err_msg=name)
        assert imported[name].dtype == np.float32


@pytest.mark.parametrize(
    "wrapper,prefix", [("state_dict", "module."), ("model", ""), (None, "module.module.")]
)
def test_m3vit_round_trip(tmp_path, up_model, wrapper, prefix):
    path = save_m3vit(m3vit_state_dict(up_model), tmp_path / "m3vit.pth", wrapper, prefix)
    # num_heads cannot be read off a state_dict; light_hidden is unused by an up-head model.
    imported = import_m3vit(
        path, config_overrides={"num_heads": 3, "light_hidden": up_model.config.light_hidden}
    )
    assert_same_model(imported, up_model, skip=("norm.weight", "norm.bias"))
    # M3ViT has no backbone final norm (the head's norm is it): imported as identity.
    np.testing.assert_array_equal(
        imported["norm.weight"], np.ones(up_model.config.dim, np.float32)
    )
    np.testing.assert_array_equal(imported["norm.bias"], np.zeros(up_model.config.dim, np.float32))
    cfg = imported.config
    assert cfg.replace(pixel_mean=(0.0,) * 3, pixel_std=(1.0,) * 3) == up_model.config.replace(
        depth_output="linear"
    )
    # torchvision's u8/255 normalisation expressed on our u8/256 scale: same normalised pixels.
    u8 = np.arange(256.0)
    ours = (u8[:, None] / 256 - np.array(cfg.pixel_mean)) / np.array(cfg.pixel_std)
    theirs = (u8[:, None] / 255 - np.array(M3VIT_PIXEL_MEAN)) / np.array(M3VIT_PIXEL_STD)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert cfg.notes["importer"] == "m3vit" and cfg.depth_output == "linear"


def test_m3vit_router_task_order_follows_decoder_order(tmp_path, up_model):
    """Gates are numbered in the checkpoint's task order; ours is TASKS order (semseg=0)."""
    sd = m3vit_state_dict(up_model)
    reordered = {k: v for k, v in sd.items() if not k.startswith("decoders.semseg.")}
    # depth first
    reordered.update({k: v for k, v in sd.items() if k.startswith("decoders.semseg.")})
    for b in up_model.config.moe_layers:
        router = up_model[f"blocks.{b}.moe.router.weight"]
        reordered[f"backbone.blocks.{b}.mlp.gate.0.w_gate"] = router[TASKS.index("depth")]
        reordered[f"backbone.blocks.{b}.mlp.gate.1.w_gate"] = router[TASKS.index("semseg")]
    imported = import_m3vit(save_m3vit(reordered, tmp_path / "m.pth"))
    for b in up_model.config.moe_layers:
        name = f"blocks.{b}.moe.router.weight"
        np.testing.assert_array_equal(imported[name], up_model[name])


def test_m3vit_shared_gate_is_replicated(tmp_path, up_model):
    sd = m3vit_state_dict(up_model)
    for b in up_model.config.moe_layers:
        for i in range(2):
            del sd[f"backbone.blocks.{b}.mlp.gate.{i}.w_gate"]
        sd[f"backbone.blocks.{b}.mlp.gate.w_gate"] = up_model[f"blocks.{b}.moe.router.weight"][0]
    imported = import_m3vit(save_m3vit(sd, tmp_path / "m.pth"))
    b = up_model.config.moe_layers[0]
    r = imported[f"blocks.{b}.moe.router.weight"]
    np.testing.assert_array_equal(r[0], r[1])
    np.testing.assert_array_equal(r[0], up_model[f"blocks.{b}.moe.router.weight"][0])


def _bad_m3vit(up_model: ModelWeights, kind: str) -> tuple[dict[str, np.ndarray], str]:
    sd = m3vit_state_dict(up_model)
    b = up_model.config.moe_layers[0]
    if kind == "missing":
        key = "backbone.blocks.0.attn.proj.bias"
        del sd[key]
    elif kind == "extra":
        key = "backbone.blocks.0.attn.rel_pos_bias"
        sd[key] = np.zeros(3, np.float32)
    elif kind == "shape":
        key = f"backbone.blocks.{b}.mlp.experts.h4toh.bias"
        sd[key] = np.zeros((up_model.config.num_experts, 5), np.float32)
    elif kind == "task_onehot_gate":
        key = f"backbone.blocks.{b}.mlp.gate.w_gate"
        for i in range(2):
            del sd[f"backbone.blocks.{b}.mlp.gate.{i}.w_gate"]
        sd[key] = np.zeros((up_model.config.dim + 2, up_model.config.num_experts), np.float32)
    elif kind == "int_dtype":
        key = "backbone.pos_embed"
        sd[key] = sd[key].astype(np.int32)
    else:
        raise AssertionError(kind)
    return sd, key


@pytest.mark.parametrize("kind", ["missing", "extra", "shape", "task_onehot_gate", "int_dtype"])
def test_m3vit_bad_checkpoint_names_file_and_tensor(tmp_path, up_model, kind):
    sd, key = _bad_m3vit(up_model, kind)
    path = save_m3vit(sd, tmp_path / f"bad_{kind}.pth")
    with pytest.raises(WeightsError) as err:
        import_m3vit(path)
    assert str(path) in str(err.value)
    assert key in str(err.value)


def test_m3vit_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(WeightsError, match="cannot read PyTorch checkpoint") as err:
        import_m3vit(path)
    assert str(path) in str(err.value)


def test_m3vit_pos_embed_token_count_must_match_input_size(tmp_path, up_model):
    path = save_m3vit(m3vit_state_dict(up_model), tmp_path / "m.pth")
    with pytest.raises(WeightsError, match="img_h/img_w") as err:
        import_m3vit(path, config_overrides={"img_h": 64})
    assert "backbone.pos_embed" in str(err.value)


def test_m3vit_conflicting_config_json(tmp_path, up_model):
    path = save_m3vit(m3vit_state_dict(up_model), tmp_path / "m.pth")
    with pytest.raises(WeightsError, match="dim=24 but the given config says dim=48"):
        import_m3vit(path, config_overrides={"dim": 48})


# ------------------------------------------------------------------------------------------------
# Edge-MoE: directory of raw float32 .bin files as sharc-lab/Edge-MoE's test bench reads them
# ------------------------------------------------------------------------------------------------
def write_edgemoe_dir(w: ModelWeights, root: Path) -> Path:
    cfg, t = w.config, w.tensors
    root.mkdir(parents=True, exist_ok=True)

    def put(stem: str, arr: np.ndarray) -> None:
        np.ascontiguousarray(arr, dtype="<f4").tofile(root / f"{stem}.float32.bin")

    put("patch_embed_weight", t["patch_embed.weight"])
    put("patch_embed_bias", t["patch_embed.bias"])
    pos = t["pos_embed"].copy()
    pos[0] += t["cls_token"][0]  # Edge-MoE writes pos_embed[0] as the class token
    put("pos_embed", pos)
    for b in range(cfg.depth):
        q = f"blocks.{b}."
        for n in (1, 2):
            put(f"l{b}_norm{n}_weight", t[f"{q}norm{n}.weight"])
            put(f"l{b}_norm{n}_bias", t[f"{q}norm{n}.bias"])
        put(f"l{b}_qkv_weight", t[q + "attn.qkv.weight"])
        put(f"l{b}_qkv_bias", t[q + "attn.qkv.bias"])
        put(f"l{b}_attn_proj_weight", t[q + "attn.proj.weight"])
        put(f"l{b}_attn_proj_bias", t[q + "attn.proj.bias"])
        if cfg.is_moe(b):
            put(f"l{b}_htoh4_weight", t[q + "moe.fc1.weight"])
            put(f"l{b}_htoh4_bias", t[q + "moe.fc1.bias"])
            put(f"l{b}_h4toh_weight", t[q + "moe.fc2.weight"])
            put(f"l{b}_h4toh_bias", t[q + "moe.fc2.bias"])
            for i in range(len(cfg.tasks)):
                put(f"l{b}_w_gate_T_task{i}", t[q + "moe.router.weight"][i].T)
        else:
            for n in (1, 2):
                put(f"l{b}_fc{n}_weight", t[f"{q}mlp.fc{n}.weight"])
                put(f"l{b}_fc{n}_bias", t[f"{q}mlp.fc{n}.bias"])
    # Not weights: the test-bench image and a reference activation; must be skipped.
    put("image", np.zeros((3, cfg.img_h, cfg.img_w)))
    put(f"l{cfg.depth - 1}_x_post_moe", np.zeros((cfg.num_tokens, cfg.dim)))
    return root


@pytest.fixture(scope="module")
def light_model() -> ModelWeights:
    return random_init(tiny_config(), seed=5)


def test_edgemoe_round_trip_with_donor_heads(tmp_path, light_model):
    root = write_edgemoe_dir(light_model, tmp_path / "weights")
    imported = import_edgemoe(root, complete_from=light_model)
    assert imported.config == light_model.config
    assert_same_model(imported, light_model, skip=("cls_token", "pos_embed"))
    np.testing.assert_array_equal(imported["cls_token"], 0.0)
    np.testing.assert_array_equal(imported["pos_embed"][1:], light_model["pos_embed"][1:])
    # token 0 sees the same input embedding: cls_token + pos_embed[0]
    np.testing.assert_array_equal(imported["cls_token"][0] + imported["pos_embed"][0],
                                  light_model["cls_token"][0] + light_model["pos_embed"][0])


def test_edgemoe_random_heads_and_identity_norm(tmp_path, light_model):
    root = write_edgemoe_dir(light_model, tmp_path / "weights")
    overrides = {k: v for k, v in light_model.config.to_dict().items() if k != "notes"}
    a = import_edgemoe(root, config_overrides=overrides, random_heads_seed=3)
    b = import_edgemoe(root, config_overrides=overrides, random_heads_seed=3)
    np.testing.assert_array_equal(a["norm.weight"], 1.0)
    np.testing.assert_array_equal(a["norm.bias"], 0.0)
    for name in a.tensors:
        np.testing.assert_array_equal(a[name], b[name])
    assert a.config.notes["random_heads_seed"] == 3


def test_edgemoe_without_heads_source_fails(tmp_path, light_model):
    root = write_edgemoe_dir(light_model, tmp_path / "weights")
    overrides = {k: v for k, v in light_model.config.to_dict().items() if k != "notes"}
    with pytest.raises(WeightsError, match="--complete-from") as err:
        import_edgemoe(root, config_overrides=overrides)
    assert str(root) in str(err.value) and "heads." in str(err.value)


@pytest.mark.parametrize("kind", ["missing", "truncated", "extra", "nan"])
def test_edgemoe_bad_directory_names_file_and_tensor(tmp_path, light_model, kind):
    root = write_edgemoe_dir(light_model, tmp_path / "weights")
    b = light_model.config.moe_layers[0]
    if kind == "missing":
        f, tensor = root / "l0_qkv_bias.float32.bin", "blocks.0.attn.qkv.bias"
        f.unlink()
    elif kind == "truncated":
        f, tensor = root / f"l{b}_htoh4_weight.float32.bin", f"blocks.{b}.moe.fc1.weight"
        f.write_bytes(f.read_bytes()[:-4])
    elif kind == "extra":  # a layer beyond the configured depth
        f, tensor = root / "l9_qkv_bias.float32.bin", "l9_qkv_bias"
        f.write_bytes(b"\0" * 16)
    else:
        f, tensor = root / "l0_norm1_weight.float32.bin", "blocks.0.norm1.weight"
        arr = np.fromfile(f, "<f4")
        arr[3] = np.nan
        arr.tofile(f)
    with pytest.raises(WeightsError) as err:
        import_edgemoe(root, complete_from=light_model)
    assert str(f) in str(err.value)
    assert tensor in str(err.value)

def test_cli_converts_both_formats(tmp_path, up_model, light_model, capsys):
    src = save_m3vit(m3vit_state_dict(up_model), tmp_path / "m.pth")
    out = tmp_path / "m3vit.safetensors"
    assert main(["m3vit", str(src), str(out), "--float16"]) == 0
    loaded = load_weights(out)
    np.testing.assert_allclose(
        loaded["blocks.1.moe.fc1.weight"],
        up_model["blocks.1.moe.fc1.weight"],
        rtol=1e-3,
        atol=1e-4,
    )
    donor = tmp_path / "donor.safetensors"
    from edgemoe_ros.model.weights import save_weights

    save_weights(light_model, donor)
    root = write_edgemoe_dir(light_model, tmp_path / "w")
    out2 = tmp_path / "edgemoe.safetensors"
    assert main(["edgemoe", str(root), str(out2), "--complete-from", str(donor)]) == 0
    np.testing.assert_array_equal(
        load_weights(out2)["blocks.0.attn.qkv.weight"], light_model["blocks.0.attn.qkv.weight"]
    )
    assert "wrote" in capsys.readouterr().out
    (root / "l0_qkv_bias.float32.bin").unlink()
    assert (
        main(
            ["edgemoe", str(root), str(tmp_path / "x.safetensors"), "--complete-from", str(donor)]
        )
        == 2
    )
    assert "l0_qkv_bias" in capsys.readouterr().err


def test_m3vit_bare_backbone_with_donor_heads(tmp_path, up_model):
    """A VisionTransformerMoE state_dict alone (no backbone./decoders.): heads from a donor
    model."""
    sd = {
        k[len("backbone.") :]: v
        for k, v in m3vit_state_dict(up_model).items()
        if k.startswith("backbone.")
    }
    path = save_m3vit(sd, tmp_path / "backbone.pth", wrapper=None, prefix="")
    with pytest.raises(WeightsError, match="--complete-from"):
        import_m3vit(path)
    imported = import_m3vit(path, complete_from=up_model)
    assert_same_model(imported, up_model)  # final norm and heads both come from the donor


def test_m3vit_heads_keep_identity_norm_even_with_a_donor(tmp_path, up_model):
    """The donor's final norm belongs to the donor's heads; M3ViT's heads normalise themselves."""
    path = save_m3vit(m3vit_state_dict(up_model), tmp_path / "m.pth")
    imported = import_m3vit(path, complete_from=up_model)
    np.testing.assert_array_equal(imported["norm.weight"], 1.0)
    np.testing.assert_array_equal(
        imported["heads.semseg.norm.weight"], up_model["heads.semseg.norm.weight"]
    )
