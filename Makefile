# Top-level entry points. `make demo` and `make test` are the README's two commands.
VENV := .venv
PY := $(VENV)/bin/python
export ROS_LOG_DIR ?= $(CURDIR)/build/ros_log
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp

.PHONY: venv demo test test-slow lint bench hls clean

venv:
	@bash scripts/bootstrap.sh

demo: venv
	$(VENV)/bin/edgemoe-demo --out demo_out

test: venv
	$(PY) -m pytest

test-slow: venv
	$(PY) -m pytest -m slow

lint: venv
	$(VENV)/bin/ruff check edgemoe_ros test bench scripts

hls: venv
	$(MAKE) -C hls_accel

clean:
	rm -rf build hls_accel/build demo_out
