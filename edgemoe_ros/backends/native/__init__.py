# SPDX-License-Identifier: Apache-2.0
"""Native (C++) kernels for the CPU backend, built with g++ on first use and loaded through ctypes.

``fastops.cpp`` holds the kernels (packed-weight GEMM with fused bias/GELU, residual add +
LayerNorm, softmax, the MoE routing, grouping, experts and gated mix); ``fastops.py`` builds,
caches, checks and binds them. Nothing here is needed for the numpy path, which stays the fallback.
"""
