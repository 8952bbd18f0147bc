"""A bad parameter at start (issue 22): one FATAL line naming it, exit code 2, no traceback."""

import pytest
from ros_testing import NodeHarness

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("name,value,says", [
    ("backend", "gpu", "must be one of"),
    ("autostart", "maybe", "must be true or false"),  # rclpy's own type check before ours
    ("queue_size", 0, "[1, 100]"),  # rclpy's descriptor range before ours
    ("backend_options", '{"threads": 100000}', "[1, 64]"),
])
def test_bad_parameter_at_start_is_one_fatal_line_and_exit_2(name, value, says):
    h = NodeHarness(params={name: value}, wait_active=False)
    try:
        assert h.node.wait(timeout=30) == 2, h.failure_context()
        out = h.node.output()
        assert "[FATAL]" in out and f"parameter '{name}' = {value!r}" in out and says in out, out
        assert "Traceback" not in out, out
    finally:
        h.close()
