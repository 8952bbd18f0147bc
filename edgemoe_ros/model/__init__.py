# SPDX-License-Identifier: Apache-2.0
"""Model definition: configuration, weights, reference math. numpy only, no ROS."""
