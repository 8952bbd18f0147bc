# SPDX-License-Identifier: Apache-2.0
"""Backend registry. Imports are lazy so a missing optional piece (pynq, the csim library) only
matters to whoever selects that backend."""

from __future__ import annotations

import importlib
import json
from typing import Any

from .base import BackboneResult, Backend, BackendError
from .options import check_options

#: name -> "module:Class", relative to this package.
BACKENDS: dict[str, str] = {
    "cpu": ".cpu:CpuBackend",
    "reference": ".reference:ReferenceBackend",
    "fixed": ".fixed:FixedPointBackend",
    "csim": ".csim:CSimBackend",
    "fpga": ".fpga:FpgaBackend",
    "null": ".null:NullBackend",
}


def parse_backend_options(text: str) -> dict[str, Any]:
    """A JSON object of ``create_backend`` keyword arguments ('' means none).

    One parser for the node's ``backend_options`` parameter and the CLIs' ``--backend-options``,
    so e.g. '{"bitstream": "/opt/edgemoe.bit", "timeout_s": 2.0}' means the same everywhere.
    """
    if not text.strip():
        return {}
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def create_backend(name: str, **options: Any) -> Backend:
    """Instantiate a backend by registry name; unknown names raise ``BackendError`` listing the
    valid ones, options outside ``options.BACKEND_OPTIONS`` raise it naming the option and its
    bounds."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose one of: "
                           f"{', '.join(BACKENDS)}") from None
    check_options(name, options)
    module_name, cls_name = target.split(":")
    module = importlib.import_module(module_name, __name__)
    return getattr(module, cls_name)(**options)


__all__ = ["Backend", "BackboneResult", "BackendError", "BACKENDS", "create_backend",
           "parse_backend_options"]
