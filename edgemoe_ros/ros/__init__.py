# SPDX-License-Identifier: Apache-2.0
"""The ROS 2 face of edgemoe_ros: the lifecycle node and its helpers.

Modules, one job each: ``node`` (the LifecycleNode and ``main``), ``params`` (every parameter,
its descriptor and validator), ``conversions`` (Image/CompressedImage <-> numpy with SPEC §7
validation, CameraInfo relay), ``task_switch`` (which tasks run), ``worker`` (inference off the
DDS callback), ``model_loader`` (weights + engine + fallback), ``diagnostics`` (rates, latency
percentiles, counters -> /diagnostics).

Nothing here is imported by ``model``/``backends``/``engine``: the dependency runs one way.
"""
