# SPDX-License-Identifier: Apache-2.0
"""Our Edge-MoE accelerator seen from the host: the hardware interface (register map, number
formats, weight/buffer layout) in ``interface.py``, and the PYNQ driver pieces built on it."""
