# SPDX-License-Identifier: Apache-2.0
"""Reset the accelerator from the PS without re-programming the PL.

A kernel that never raises ``ap_done`` may still hold AXI transactions towards the PS. Re-
downloading the bitstream then tears the HP-port masters down mid-burst, which can wedge the
Zynq UltraScale+ interconnect until a power cycle. The gentler reset is the one the block design
already has: ``pl_resetn0`` of the PS drives a ``proc_sys_reset`` whose ``peripheral_aresetn``
resets the accelerator and its SmartConnects (``hls_accel/vitis/block_design.tcl``).

On the Zynq UltraScale+ the four PS-to-PL resets ``pl_resetn0..3`` are the outputs of EMIO GPIO
bank 5, bits 31..28 (UG1085, "PS-PL resets"): EMIO pins 95..92. Linux numbers the EMIO pins after
the 78 MIO pins of the ``zynqmp_gpio`` chip, which is what ``pynq.GPIO.get_gpio_pin(index)``
does with an EMIO index. The reset is active low: drive 0, wait, drive 1.

Not verified on a board here (no board in this project's CI): ``docs/fpga.md`` lists this among
the bring-up checks.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

#: EMIO GPIO index of pl_resetn<n> (n = 0..3) on the Zynq UltraScale+ PS.
PL_RESETN_EMIO = {"pl_resetn0": 95, "pl_resetn1": 94, "pl_resetn2": 93, "pl_resetn3": 92}
#: How long the reset is held low. proc_sys_reset needs a few slowest-clock cycles (ns at 300 MHz);
#: a millisecond is ample and still nothing next to a ~59 ms frame.
RESET_PULSE_S = 1e-3


class PsGpioPlReset:
    """Pulse one PS-to-PL reset through pynq's sysfs GPIO (needs root, as pynq itself does)."""

    def __init__(self, pin: str = "pl_resetn0", pulse_s: float = RESET_PULSE_S):
        if pin not in PL_RESETN_EMIO:
            raise ValueError(f"unknown PL reset {pin!r}; one of {', '.join(PL_RESETN_EMIO)}")
        self.pin = pin
        self.pulse_s = pulse_s

    def __call__(self) -> None:
        import pynq

        gpio: Any = pynq.GPIO(pynq.GPIO.get_gpio_pin(PL_RESETN_EMIO[self.pin]), "out")
        log.warning("pulsing %s (Linux GPIO %d) to reset the PL", self.pin, gpio.index)
        gpio.write(0)
        time.sleep(self.pulse_s)
        gpio.write(1)
