"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest

from edgemoe_ros.backends.native import fastops


@pytest.fixture(scope="session")
def fast() -> fastops.FastOps:
    """The native kernel library, built if needed; tests that need it skip where g++ cannot build it."""
    try:
        return fastops.load()
    except fastops.NativeBuildError as exc:
        pytest.skip(f"native kernels unavailable here: {exc}")
