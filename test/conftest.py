# SPDX-License-Identifier: Apache-2.0
"""Fixtures shared by several test modules."""

from __future__ import annotations

import uuid

import pytest
import rclpy

from edgemoe_ros.backends.native import fastops


@pytest.fixture(scope="session")
def fast() -> fastops.FastOps:
    """The native kernel library, built if needed; tests that need it skip where g++ cannot build
    it."""
    try:
        return fastops.load()
    except fastops.NativeBuildError as exc:
        pytest.skip(f"native kernels unavailable here: {exc}")


@pytest.fixture(scope="session")
def tiny_csim_library():
    """The C-simulation library of ``tiny_config()``, built if needed; skips where it cannot be
    built."""
    from edgemoe_ros.backends import BackendError
    from edgemoe_ros.backends.csim import build_library
    from edgemoe_ros.model.config import tiny_config

    try:
        return build_library(tiny_config())
    except BackendError as exc:
        pytest.skip(f"C-simulation library unavailable: {exc}")


@pytest.fixture
def ros_context() -> rclpy.Context:
    """An initialised rclpy context of its own (random domain 100..199) for in-process nodes."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(uuid.uuid4().int % 100) + 100)
    try:
        yield ctx
    finally:
        rclpy.try_shutdown(context=ctx)
