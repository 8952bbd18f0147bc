# SPDX-License-Identifier: Apache-2.0
"""Backend options are bounded in one table (backends/options.py, issue 22)."""

import pytest

from edgemoe_ros.backends import BACKENDS, BackendError, create_backend
from edgemoe_ros.backends.options import (
    BACKEND_OPTIONS,
    MAX_THREADS,
    check_options,
    check_options_any_backend,
)


def test_every_builtin_backend_has_an_entry():
    assert set(BACKEND_OPTIONS) == set(BACKENDS)


@pytest.mark.parametrize("backend,options,says", [
    ("cpu", {"threads": 100000}, f"[1, {MAX_THREADS}]"),
    ("cpu", {"threads": 0}, "[1,"),
    ("cpu", {"threads": 2.5}, "integer"),
    ("cpu", {"native": "maybe"}, "one of"),
    ("cpu", {"bitstream": "/x.bit"}, "unknown option"),
    ("null", {"threads": 2}, "options it takes: none"),
    ("fpga", {"timeout_s": float("inf")}, "number"),
    ("fpga", {"timeout_s": 1e9}, "[0.01, 600]"),
    ("fpga", {"max_images": 10**6}, "max_images"),
    ("fpga", {"bitstream": ""}, "path"),
    ("csim", {"sanitize": "yes"}, "true or false"),
])
def test_out_of_bounds_or_unknown_options_refused_before_anything_is_built(backend, options, says):
    with pytest.raises(BackendError, match="option") as err:
        create_backend(backend, **options)
    assert says in str(err.value)
    with pytest.raises(BackendError):
        check_options(backend, options)


def test_options_within_bounds_accepted():
    check_options("cpu", {"threads": MAX_THREADS, "native": "off"})
    check_options("fpga", {"simulate": True, "timeout_s": 2, "max_images": 1})
    check_options_any_backend({"threads": 4, "timeout_s": 2.0})
    with pytest.raises(BackendError):
        check_options_any_backend({"threads": 100000})
    check_options("a_plugin_backend", {"anything": 1})  # not ours to check
