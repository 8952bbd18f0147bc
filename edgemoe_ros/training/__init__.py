# SPDX-License-Identifier: Apache-2.0
"""Training on procedural scenes (PyTorch, optional dependency) and the numpy metrics shared with
evaluation.

Importing this package does not import torch; only ``torch_model`` and ``train`` do.
"""
