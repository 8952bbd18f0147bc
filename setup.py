# SPDX-License-Identifier: Apache-2.0
"""ament_python package setup: the same file works with pip (venv) and colcon."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "edgemoe_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    package_data={
        PACKAGE: ["data/*.safetensors", "data/*.json", "data/*.xml", "backends/native/*.cpp"]
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.xml")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools", "numpy", "safetensors"],
    # `pip install .[fleet]`: many bags on local or cluster Ray workers (docs/fleet.md); pin as in
    # requirements-fleet.txt.
    extras_require={"fleet": ["ray[default]==2.60.0"]},
    zip_safe=False,
    maintainer="edgemoe_ros developers",
    maintainer_email="dev@edgemoe-ros.invalid",
    description="Multi-task MoE ViT (M3ViT/Edge-MoE) segmentation and depth node for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "edgemoe_node = edgemoe_ros.ros.executables:edgemoe_node",
            "edgemoe_multi_node = edgemoe_ros.ros.executables:edgemoe_multi_node",
            "edgemoe-infer = edgemoe_ros.cli.infer:main",
            "edgemoe-bag = edgemoe_ros.bag.cli:main",
            "edgemoe-demo = edgemoe_ros.demo:main",
            "edgemoe-import = edgemoe_ros.model.importers:main",
            "edgemoe-dataset = edgemoe_ros.cli.dataset:main",
            "edgemoe-eval = edgemoe_ros.cli.eval:main",
            "edgemoe-train = edgemoe_ros.training.edgemoe_train:main",
            "edgemoe-fpga = edgemoe_ros.cli.fpga:main",
        ],
    },
)
