# SPDX-License-Identifier: Apache-2.0
"""Bit-exact numpy emulator of the ``hls_accel/`` kernels (integer arithmetic only).

``quant`` converts between floats and the raw integers of the SPEC §3 formats, ``ops`` mirrors the
C++ operations one by one, ``emulator`` chains them into the whole backbone, and ``accuracy``
compares the result with the float reference.
"""
