# SPDX-License-Identifier: Apache-2.0
"""Command-line tools built on ``edgemoe_ros.engine`` (no ROS needed): ``edgemoe-infer``,
``edgemoe-eval``, ``edgemoe-dataset``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable


def run_engine_tool(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """The shared body of the engine tools' ``main``: logging, allocator and BLAS set-up as the
    node has them (so timings match), then ``run(args)``; a bad model, backend, dataset or file
    becomes ``error: ...`` on stderr and exit status 2 instead of a traceback."""
    from ..allocator import tune_allocator
    from ..backends import BackendError
    from ..blas_threads import check_blas_kernels, limit_blas_threads
    from ..model.weights import WeightsError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    tune_allocator()
    limit_blas_threads()
    check_blas_kernels()
    try:
        return run(args)
    # ConfigError, FitError, DatasetError too
    except (WeightsError, BackendError, ValueError, OSError) as exc:

        print(f"error: {exc}", file=sys.stderr)
        return 2
