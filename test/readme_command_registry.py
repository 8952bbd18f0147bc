# SPDX-License-Identifier: Apache-2.0
"""Which test exercises each command the README shows (issue 19: every README command is run by a
test or the demo). test_readme_commands.py fails on a README command missing here, on a test named
here that is gone, and on a test that no longer spells the command.

HOW TO ADD A README COMMAND
  1. Write it in README.md; run ``pytest test/test_readme_commands.py``. The failure prints the
     command's key (its signature: tool, subcommand/names, option names, values dropped), e.g.
     ``edgemoe-bag play --rate --clock``.
  2. Paste that key into EXERCISED with the node id(s) of the test(s) that run that command line.
     By default each test's code (with the helpers, fixtures and constants of its module it uses)
     must reference the tool (its name in a string, or the module of its console script) and spell
     every option (``"--clock"``; ``name:=`` as ``"name:=..."`` or a ``{"name": ...}`` key).
  3. Where a test runs the same thing another way (a launch file interpreted without ``ros2``, a
     service called with rclpy), set ``tool``/``evidence`` to what the test's code does contain
     and say in ``why`` what makes it equivalent.
  Shell steps that are not the project's commands (cd, source, ...) go in SHELL_STEPS.
  A command test_readme_commands.py runs itself names its test there; that test looks the README
  line up by the same key, so it runs what the README shows.
"""

from __future__ import annotations

from dataclasses import dataclass

THIS = "test/test_readme_commands.py"


@dataclass(frozen=True)
class Exercised:
    """How one README command is exercised."""

    tests: tuple[str, ...]  # pytest node ids, relative to the repository root
    why: str = ""  # required where the test does not run the README's tool itself
    tool: str | None = ""  # "" = the README's tool; None = no tool check (evidence says it all)
    evidence: tuple[str, ...] | None = None  # None = subcommand + every option of the key
    recipe: str = ""  # make targets: a line `make -n TARGET` must print


EXERCISED: dict[str, Exercised] = {
    # --- the two commands
    "make demo": Exercised(
        (
            "test/test_demo.py::test_video_has_every_frame",
            "test/test_demo.py::test_latency_plot_and_summary",
        ),
        tool="edgemoe-demo",
        evidence=("--out",),
        recipe="edgemoe-demo --out demo_out",
        why="`make demo` bootstraps the venv, then runs `edgemoe-demo --out demo_out`; "
        "test_demo runs the demo's main with --out (a tiny model, 8 frames) and checks the "
        "video, mosaics and summary",
    ),
    "make test": Exercised(
        (f"{THIS}::test_every_readme_command_is_exercised",),
        tool=None,
        evidence=(),
        recipe="-m pytest",
        why="`make test` is `python -m pytest` over pytest.ini's testpaths: the suite this "
        "file is in",
    ),
    # --- install and build on a robot (no rosdep/ros2 CLI here; colcon is in the venv)
    "rosdep install --from-paths --ignore-src -y": Exercised(
        (
            "test/test_rosdep.py::test_every_runtime_import_maps_to_a_declared_rosdep_key",
            "test/test_rosdep.py::test_every_declared_key_exists_in_rosdep",
        ),
        tool=None,
        evidence=("package.xml", "exec_depend"),
        why="rosdep installs the keys package.xml declares; test_rosdep checks that every "
        "module the node imports has a declared key and that each key exists in the rosdep "
        "database (no rosdep CLI here)",
    ),
    "colcon build --packages-select": Exercised(
        ("test/test_package.py::test_colcon_build_installs_package_launch_config_and_node",)
    ),
    # --- running the node
    "ros2 launch edgemoe_ros edgemoe.launch.xml namespace:= image:= camera_info:=": Exercised(
        ("test/test_launch.py::test_launch_runs_node_with_remapped_names",),
        tool=None,
        evidence=(
            "launch_description",
            "edgemoe.launch.xml",
            "namespace:=",
            "image:=",
            "camera_info:=",
        ),
        why="no ros2 CLI here: the test resolves the launch file with these arguments as "
        "ros2 launch would (ros_testing.launch_description), starts the same executable with "
        "the same --ros-args and sees outputs on the remapped names",
    ),
    "ros2 launch edgemoe_ros edgemoe.launch.xml autostart:=": Exercised(
        ("test/test_launch.py::test_autostart_arg_false_leaves_node_unconfigured",),
        tool=None,
        evidence=("launch_description", "edgemoe.launch.xml", "autostart"),
        why="no ros2 CLI here: the test resolves the launch file with autostart:=false as ros2 "
        "launch would, starts the node on the resolved command line and sees it stay "
        "unconfigured",
    ),
    "ros2 launch edgemoe_ros edgemoe.launch.xml use_sim_time:= backend:=": Exercised(
        ("test/test_launch.py::test_lifecycle_manager_owns_node_whose_file_says_autostart_false",),
        tool=None,
        evidence=("launch_description", "edgemoe.launch.xml", "use_sim_time", "backend"),
        why="no ros2 CLI here: the test resolves the launch file with use_sim_time:=true "
        "backend:=null, starts the node on the resolved command line and reads both values "
        "back from the running node",
    ),
    "edgemoe_node --ros-args -r __ns:= image:= --params-file": Exercised(
        (f"{THIS}::test_readme_node_command_lines_bring_the_node_up",)
    ),
    "edgemoe_node --ros-args --params-file -p backend_options:=": Exercised(
        (f"{THIS}::test_readme_node_command_lines_bring_the_node_up",)
    ),
    "ros2 service call /front/edgemoe_node/enable_depth": Exercised(
        ("test/test_node_switching.py::test_setbool_services",),
        tool=None,
        evidence=("SetBool", "enable_depth"),
        why="the test calls the node's ~/enable_depth std_srvs/SetBool service with rclpy, as "
        "`ros2 service call` does",
    ),
    "ros2 service call /edgemoe_multi_node/front_left/enable_depth": Exercised(
        ("test/test_multi_camera_switching.py::test_camera_setbool_switches_that_camera_only",),
        tool=None,
        evidence=("SetBool", "enable_depth"),
        why="the test calls one camera's ~/<c>/enable_depth std_srvs/SetBool service of the "
        "multi-camera node with rclpy, as `ros2 service call` does, and checks only that "
        "camera's outputs change",
    ),
    "ros2 param set /front/edgemoe_node tasks": Exercised(
        ("test/test_node_switching.py::test_tasks_parameter",),
        tool=None,
        evidence=("set_parameters", "tasks"),
        why="the test sets the node's `tasks` parameter through rcl_interfaces/SetParameters, the "
        "service `ros2 param set` calls",
    ),
    "ros2 topic pub /front/edgemoe_node/task_request --once": Exercised(
        ("test/test_node_switching.py::test_task_request_topic_and_unknown_request_counted",),
        tool=None,
        evidence=("task_request", "String"),
        why="the test publishes std_msgs/String on ~/task_request with rclpy, as "
        "`ros2 topic pub` does",
    ),
    "ros2 launch edgemoe_ros edgemoe_multi.launch.xml": Exercised(
        ("test/test_multi_camera_launch.py::test_launch_command_serves_all_six_cameras",),
        tool=None,
        evidence=("launch_description", "edgemoe_multi.launch.xml"),
        why="no ros2 CLI here: the test resolves the launch file as ros2 launch would and "
        "runs its node with the 6-camera config",
    ),
    # --- tools
    "edgemoe-infer --tasks --out --fx": Exercised((f"{THIS}::test_readme_infer_line",)),
    "edgemoe-bag process --topic": Exercised((f"{THIS}::test_readme_bag_process_line",)),
    "edgemoe-bag play --rate": Exercised((f"{THIS}::test_readme_bag_play_line",)),
    "edgemoe-bag play --clock": Exercised(
        ("test/test_bag_play_clock.py::test_node_on_sim_time_runs_in_the_bag_time_of_play_clock",)
    ),
    "edgemoe-bag record": Exercised(
        ("test/test_replay.py::test_play_into_node_every_frame_comes_out_with_its_stamp",)
    ),
    "edgemoe-eval --manifest --json --save": Exercised(
        ("test/test_eval.py::test_cli_end_to_end",)
    ),
    "edgemoe-eval --cityscapes --split": Exercised(
        (f"{THIS}::test_readme_dataset_and_eval_lines",)
    ),
    "edgemoe-dataset export --format --out --frames": Exercised(
        (f"{THIS}::test_readme_dataset_and_eval_lines",)
    ),
    "edgemoe-import m3vit": Exercised(("test/test_importers.py::test_cli_converts_both_formats",)),
    "edgemoe-import edgemoe --complete-from": Exercised(
        ("test/test_importers.py::test_cli_converts_both_formats",)
    ),
    "edgemoe-fpga check --bitstream": Exercised(
        (
            "test/test_fpga_check.py::test_check_refuses_a_bitstream_with_another_register_map",
            "test/test_fpga_check.py::test_check_without_a_board_says_so",
        ),
        why="no board here: the tests run `check --bitstream` against the simulated device "
        "(refusing a foreign register map) and without a board (a clear error)",
    ),
    "edgemoe-bag process --out": Exercised(
        ("test/test_bag_fleet.py::test_rerun_skips_finished_outputs_and_redoes_partial_ones",)
    ),
    "edgemoe-bag process --out --workers --json": Exercised(
        (
            "test/test_bag_fleet.py::test_one_worker_and_two_ray_workers_write_what_the_single_bag_form_writes",
        )
    ),
    "edgemoe-bag process --out --ray": Exercised(
        (
            "test/test_bag_fleet.py::test_without_ray_the_flags_name_the_extra_and_one_worker_still_runs",
        ),
        why="no Ray cluster here: the test checks the --ray flag's handling without the extra",
    ),
    # --- training
    "edgemoe-train --out --data --steps": Exercised(
        (
            "test/test_edgemoe_train.py::test_depth_only_data_trains_depth_and_leaves_segmentation_alone",
        )
    ),
    "edgemoe-train --out --data --classes --init --steps --val": Exercised(
        (
            "test/test_edgemoe_train.py::test_trains_on_cityscapes_and_kitti_layouts_with_cityscapes19",
            "test/test_edgemoe_train.py::test_resume_of_a_run_started_from_init_with_a_resized_head",
            f"{THIS}::test_readme_training_line_with_init_and_val",
        ),
        why="the two tests of test_edgemoe_train spell the options between them (--classes "
        "--val in one, --init in the other); the README line as one run is a slow test here",
    ),
    "torchrun --nproc_per_node -m --out": Exercised(
        (
            "test/test_edgemoe_train.py::test_ddp_two_cpu_processes_match_one_process_on_the_same_global_batch",
        ),
        tool=None,
        evidence=(
            "torch.distributed.run",
            "--nproc_per_node",
            "-m",
            "edgemoe_ros.training.edgemoe_train",
            "--out",
        ),
        why="`torchrun` is torch's console script for `python -m torch.distributed.run`, "
        "which the test runs with 2 gloo processes",
    ),
    "edgemoe-train --out --resume": Exercised(
        ("test/test_edgemoe_train.py::test_resume_restores_optimizer_and_schedule",)
    ),
}

#: Shell steps around the project's commands, by signature, and why no test runs them.
SHELL_STEPS: dict[str, str] = {
    "cd": "changes directory",
    "source": "loads the colcon workspace's environment into the shell",
    "git clone": "fetches this repository",
    "pip install": "installs packages (test_readme_commands checks they are listed in "
    "requirements*.txt)",
}
