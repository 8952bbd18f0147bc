"""Command-line tools built on ``edgemoe_ros.engine`` (no ROS needed): ``edgemoe-infer``."""
