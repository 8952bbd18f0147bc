# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-bag process IN... --out DIR``: one worker without Ray and two on a local Ray write the
same bags as the single-bag form; a corrupt bag fails alone; a rerun resumes; a dying worker is
retried; without Ray the flags say which extra to install.

One local Ray (2 CPUs) serves the whole module: the CLI uses a Ray this process already
initialised, so the start-up (~5 s here) is paid once.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemoe_ros.bag import BagWriter, CameraInfoParams, write_image_bag
from edgemoe_ros.bag import messages as m
from edgemoe_ros.bag.cli import EXIT_BAG, EXIT_MODEL, EXIT_OK, EXIT_USAGE, main
from edgemoe_ros.bag.fleet import (
    PARTIAL_PREFIX,
    FleetError,
    chunk_bounds,
    find_bags,
    merge_bags,
    plan_outputs,
)
from edgemoe_ros.bag.io import BagReader
from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.model.weights import random_init, save_weights

TEST_DIR = Path(__file__).parent
sys.path.insert(0, str(TEST_DIR))
from fault_injection import CRASH_ONCE  # noqa: E402

H, W = 24, 40
T0 = 1_700_000_000_000_000_000
PERIOD = 100_000_000
INFO = CameraInfoParams.pinhole(W, H, 30.0)
#: Small enough that the 9-frame bag becomes 3 chunks on Ray.
CHUNK = "4"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(random_init(tiny_config(), seed=3), path)
    return path


def _frames(n: int, seed: int) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(T0 + i * PERIOD, rng.integers(0, 256, (H, W, 3), dtype=np.uint8)) for i in range(n)]


def _sparse_info_bag(path: Path, n: int, seed: int, every: int) -> None:
    """camera_info only with every ``every``-th frame: a chunk that starts between two must carry
    the one before it (as a single pass does), or its first frames lose their output
    camera_info."""
    with BagWriter(path) as writer:
        for i, (stamp, rgb) in enumerate(_frames(n, seed)):
            if i % every == 0:
                writer.write("/cam/camera_info", stamp, INFO.to_msg(stamp, "cam"))
            writer.write("/cam/image_raw", stamp, m.rgb_to_image(rgb, stamp, "cam", "bgr8"))


@pytest.fixture
def bag_set(tmp_path: Path) -> Path:
    """A folder of bags as a fleet records them: bag directories (mcap, sqlite3) and a bare
    .mcap file."""
    folder = tmp_path / "drives"
    folder.mkdir()
    _sparse_info_bag(folder / "drive_a", 9, seed=1, every=4)
    write_image_bag(
        folder / "drive_b", _frames(5, seed=2), "/cam/image_raw", "cam", "sqlite3", INFO, "rgb8"
    )
    write_image_bag(
        tmp_path / "single",
        _frames(6, seed=4),
        "/cam/image/compressed",
        "cam",
        "mcap",
        encoding="png",
    )
    shutil.move(tmp_path / "single" / "single.mcap", folder / "drive_c.mcap")
    return folder


GOOD = ("drive_a", "drive_b", "drive_c")


@pytest.fixture(scope="module")
def local_ray() -> object:
    ray = pytest.importorskip(
        "ray", reason="Ray (the fleet extra) is installed by scripts/bootstrap.sh"
    )
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=128 * 2**20,
        logging_level=logging.WARNING,
        runtime_env={
            "env_vars": {"PYTHONPATH": str(TEST_DIR)},
            "worker_process_setup_hook": "fault_injection.register",
        },
    )
    yield ray
    ray.shutdown()


def _messages(path: Path) -> list[tuple[str, int, bytes]]:
    """Every message of a bag in stored order: topic, log time, CDR bytes (stamps are inside)."""
    with BagReader(path) as reader:
        return list(reader.raw_messages([t.topic for t in reader.info().topics]))


def _process(inputs: list[Path], out: Path, weights: Path, *extra: str) -> tuple[int, dict]:
    report = out.parent / f"{out.name}.json"
    rc = main(
        [
            "process",
            *map(str, inputs),
            "--out",
            str(out),
            "--weights",
            str(weights),
            "--no-progress",
            "--json",
            str(report),
            *extra,
        ]
    )
    return rc, json.loads(report.read_text())


def test_one_worker_and_two_ray_workers_write_what_the_single_bag_form_writes(
    bag_set: Path, weights_file: Path, tmp_path: Path, local_ray: object
) -> None:
    rc1, one = _process([bag_set], tmp_path / "one", weights_file, "--workers", "1")
    rc2, two = _process(
        [bag_set], tmp_path / "two", weights_file, "--workers", "2", "--chunk-frames", CHUNK
    )
    assert (rc1, rc2) == (EXIT_OK, EXIT_OK)
    assert one["executor"] == "this process" and two["executor"].startswith("Ray")
    assert (one["done"], two["done"], one["frames"], two["frames"]) == (3, 3, 20, 20)
    assert {b["output"]: b["chunks"] for b in two["bags"]} == {
        str(tmp_path / "two" / "drive_a"): 3,
        str(tmp_path / "two" / "drive_b"): 2,
        str(tmp_path / "two" / "drive_c"): 2,
    }
    for name, src in (
        ("drive_a", bag_set / "drive_a"),
        ("drive_b", bag_set / "drive_b"),
        ("drive_c", bag_set / "drive_c.mcap"),
    ):
        alone = tmp_path / f"alone_{name}"
        assert (
            main(
                ["process", str(src), str(alone), "--weights", str(weights_file), "--no-progress"]
            )
            == EXIT_OK
        )
        want = _messages(alone)
        assert _messages(tmp_path / "one" / name) == want, name
        assert _messages(tmp_path / "two" / name) == want, name
        assert "/cam/depth/image" in {t for t, _, _ in want}
    assert "/cam/depth/camera_info" in {t for t, _, _ in _messages(tmp_path / "two" / "drive_a")}
    assert not list((tmp_path / "two").glob(f"{PARTIAL_PREFIX}*"))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_corrupt_bag_is_reported_and_the_others_finish(
    bag_set: Path, weights_file: Path, tmp_path: Path, workers: str, request: pytest.FixtureRequest
) -> None:
    if workers != "1":
        request.getfixturevalue("local_ray")
    (bag_set / "garbage.mcap").write_bytes(b"not an mcap file " * 64)
    truncated = bag_set / "truncated"
    shutil.copytree(bag_set / "drive_a", truncated)
    data = truncated / "drive_a.mcap"
    data.write_bytes(data.read_bytes()[:300])
    rc, doc = _process(
        [bag_set, tmp_path / "missing_bag"],
        tmp_path / "out",
        weights_file,
        "--workers",
        workers,
        "--chunk-frames",
        CHUNK,
    )
    assert rc == EXIT_BAG
    assert (doc["done"], doc["failed"], doc["frames"]) == (3, 3, 20)
    errors = doc["errors"]
    assert set(errors) == {
        str(bag_set / "garbage.mcap"),
        str(truncated),
        str(tmp_path / "missing_bag"),
    }
    assert "not a readable rosbag2 bag" in errors[str(bag_set / "garbage.mcap")]
    assert "not a readable rosbag2 bag" in errors[str(truncated)]
    assert "no such file or directory" in errors[str(tmp_path / "missing_bag")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        GOOD
    )  # no partial left behind


def test_rerun_skips_finished_outputs_and_redoes_partial_ones(
    bag_set: Path, weights_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert _process([bag_set], out, weights_file, "--workers", "1")[0] == EXIT_OK
    want = {name: _messages(out / name) for name in GOOD}
    finished = out / "drive_a" / "drive_a.mcap"
    before = finished.stat().st_mtime_ns
    # An interrupted run: drive_b's work directory holds a half-written bag, no output yet.
    shutil.rmtree(out / "drive_b")
    partial = out / f"{PARTIAL_PREFIX}drive_b"
    partial.mkdir()
    (partial / "drive_b").mkdir()
    (partial / "drive_b" / "drive_b.mcap").write_bytes(b"\x89MCAP0\r\n half")
    rc, doc = _process([bag_set], out, weights_file, "--workers", "1")
    assert rc == EXIT_OK
    assert {Path(b["input"]).name: b["status"] for b in doc["bags"]} == {
        "drive_a": "skipped",
        "drive_b": "done",
        "drive_c.mcap": "skipped",
    }
    assert doc["frames"] == 5
    assert finished.stat().st_mtime_ns == before
    assert _messages(out / "drive_b") == want["drive_b"]
    assert not partial.exists()
    rc, doc = _process([bag_set], out, weights_file, "--workers", "1", "--overwrite")
    assert (rc, doc["done"], doc["frames"]) == (EXIT_OK, 3, 20)
    assert finished.stat().st_mtime_ns != before
    assert {name: _messages(out / name) for name in GOOD} == want


def test_a_dying_worker_is_retried_then_reported(
    bag_set: Path, weights_file: Path, tmp_path: Path, local_ray: object
) -> None:
    trigger = tmp_path / "crash_now"
    options = json.dumps({"trigger_file": str(trigger)})
    alone = tmp_path / "alone"
    assert (
        main(
            [
                "process",
                str(bag_set / "drive_b"),
                str(alone),
                "--weights",
                str(weights_file),
                "--no-progress",
            ]
        )
        == EXIT_OK
    )
    trigger.touch()
    crashing = ["--workers", "2", "--backend", CRASH_ONCE, "--backend-options", options]
    retried = tmp_path / "retried"
    rc, doc = _process([bag_set / "drive_b"], retried, weights_file, *crashing, "--max-retries=1")
    assert not trigger.exists()  # a worker did die on it
    assert (rc, doc["done"]) == (EXIT_OK, 1)
    assert _messages(retried / "drive_b") == _messages(alone)
    trigger.touch()
    both = [bag_set / "drive_b", bag_set / "drive_c.mcap"]
    rc, doc = _process(both, tmp_path / "no_retry", weights_file, *crashing, "--max-retries=0")
    assert not trigger.exists()
    assert (rc, doc["done"], doc["failed"]) == (EXIT_BAG, 1, 1)
    (failed,) = [b for b in doc["bags"] if b["status"] == "failed"]
    assert "worker died" in failed["error"]


def test_without_ray_the_flags_name_the_extra_and_one_worker_still_runs(
    bag_set: Path,
    weights_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    caplog.set_level(logging.INFO, logger="edgemoe-bag")
    for flags in (["--workers", "2"], ["--ray", "ray://head:10001"]):
        rc = main(
            [
                "process",
                str(bag_set),
                "--out",
                str(tmp_path / "o"),
                "--weights",
                str(weights_file),
                *flags,
            ]
        )
        assert rc == EXIT_USAGE
        assert "pip install 'edgemoe_ros[fleet]'" in caplog.text
        assert not (tmp_path / "o").exists()
    caplog.clear()
    rc, doc = _process(
        [bag_set], tmp_path / "o", weights_file
    )  # default: one worker here when Ray is absent
    assert (rc, doc["done"], doc["executor"]) == (EXIT_OK, 3, "this process")
    assert "Ray is not installed" in caplog.text


def test_command_line_mistakes(bag_set: Path, weights_file: Path, tmp_path: Path) -> None:
    a, b = bag_set / "drive_a", bag_set / "drive_b"
    assert (
        main(["process", str(a), str(b), str(tmp_path / "o"), "--weights", str(weights_file)])
        == EXIT_USAGE
    )
    twin = tmp_path / "elsewhere" / "drive_a"
    shutil.copytree(a, twin)
    with pytest.raises(FleetError, match="would both write"):
        plan_outputs(find_bags([a, twin]), tmp_path / "o")
    assert (
        main(
            [
                "process",
                str(a),
                str(twin),
                "--out",
                str(tmp_path / "o"),
                "--weights",
                str(weights_file),
            ]
        )
        == EXIT_BAG
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(FleetError, match="no bags"):
        find_bags([tmp_path / "empty"])


def test_chunks_cover_the_bag_and_merge_back_in_order(bag_set: Path, tmp_path: Path) -> None:
    bounds = chunk_bounds(T0, T0 + 8 * PERIOD, 9, 4)
    assert len(bounds) == 3 and bounds[0][0] is None and bounds[-1][1] is None
    assert all(hi == lo for (_, hi), (lo, _) in zip(bounds, bounds[1:], strict=False))
    assert chunk_bounds(T0, T0, 1, 4) == [(None, None)]
    src = bag_set / "drive_a"
    with BagReader(src) as reader:
        topics = [t.topic for t in reader.info().topics]
        parts = []
        for k, (lo, hi) in enumerate(bounds):
            part = tmp_path / f"part{k}"
            with BagWriter(part) as writer:
                for t, log_time, raw in reader.raw_messages(topics, lo, hi):
                    writer.write_raw(t, reader.msgtype(t), log_time, raw, reader.msgdef(t))
            parts.append(part)
        # in effect at the second chunk's start: frame 0's camera_info (one every 4 frames)
        assert (
            m.stamp_ns(
                reader.deserialize(
                    "/cam/camera_info", reader.last_before("/cam/camera_info", bounds[1][0])
                )
            )
            == T0
        )
        assert reader.last_before("/cam/camera_info", T0) is None
    merge_bags(parts, tmp_path / "merged")
    assert _messages(tmp_path / "merged") == _messages(src)
    assert not any(p.exists() for p in parts)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_backend_the_workers_cannot_load_is_a_model_error(
    bag_set: Path,
    weights_file: Path,
    tmp_path: Path,
    workers: str,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if workers != "1":
        request.getfixturevalue("local_ray")
    out = tmp_path / "out"
    rc = main(
        [
            "process",
            str(bag_set),
            "--out",
            str(out),
            "--weights",
            str(weights_file),
            "--no-progress",
            "--workers",
            workers,
            "--backend",
            "gpu",
        ]
    )
    assert rc == EXIT_MODEL
    assert "unknown backend 'gpu'" in caplog.text
    assert not any(out.iterdir())  # no partial work left behind
