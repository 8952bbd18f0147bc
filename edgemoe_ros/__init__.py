# SPDX-License-Identifier: Apache-2.0
"""edgemoe_ros: multi-task Mixture-of-Experts ViT (M3ViT / Edge-MoE) perception for ROS 2.

Dependency direction: ``model`` (numpy math) <- ``backends`` <- ``engine`` <- ``ros`` / CLIs.
Nothing under ``model`` or ``backends`` imports rclpy.
"""

__version__ = "0.1.0"
