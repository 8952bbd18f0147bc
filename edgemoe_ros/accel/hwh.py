# SPDX-License-Identifier: Apache-2.0
"""Overlay metadata for our accelerator, generated from the register map in ``accel/interface.py``.

``pynq.Overlay(path)`` wants three files side by side: the bitstream (``.bit``), the Vivado
hardware handoff (``.hwh``, from which pynq learns the IP's name, base address and registers) and,
on the embedded XRT flow of pynq 4, an ``.xclbin`` describing the memory topology (pynq would
otherwise call the proprietary ``xclbinutil`` to make one). No Vivado runs here, so for the
simulated device (and for tests that check the driver sees the same register map as the C++) we
write all three ourselves:

* the ``.hwh`` describes what ``hls_accel/vitis/block_design.tcl`` builds: a Zynq UltraScale+ PS
  with PL clock 0 at the accelerator clock, ``edgemoe_top_0`` with its AXI-lite ``control`` bundle
  reached through ``M_AXI_HPM0_FPD``, and its AXI masters reaching PS DDR through the HP ports. It
  is a stand-in: it carries what pynq reads (modules, parameters, register maps, address maps),
  not the netlist;
* the ``.xclbin`` holds only the two sections pynq parses (embedded platform XML and the memory
  topology, one PS DDR bank), written with the layout of XRT's ``axlf`` header;
* the ``.bit`` is a syntactically valid Xilinx bit file (header fields, then a tiny payload) that
  pynq's header parser accepts. It programs nothing; loading it on a real board is refused because
  real use passes ``download=True`` with the bitstream Vivado produced.

``register_map_mismatch`` is the driver's check of a real bitstream's ``.hwh``: the IP's registers
must be :func:`hwh_registers` (``interface.py``'s register map in Vitis HLS naming) or the driver
refuses the overlay, naming the first difference.

Everything design-level that the Vivado block design must agree with (instance names, base
address, which AXI master goes to which HP port) is in :data:`BLOCK_DESIGN`; the test of the tcl
scripts reads it from here.
"""

from __future__ import annotations

import logging
import struct
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from . import interface as itf

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockDesign:
    """The Vivado block design of ``hls_accel/vitis/block_design.tcl``, as data."""

    name: str = "edgemoe"
    board: str = "xilinx.com:zcu102:part0:3.4"
    ps_instance: str = "zynq_ultra_ps_e_0"
    ps_vlnv: str = "xilinx.com:ip:zynq_ultra_ps_e:3.5"
    ip_instance: str = "edgemoe_top_0"
    ip_vendor: str = "edgemoe.org"
    ip_library: str = "hls"
    ip_version: str = "1.0"
    #: PS master port that carries the AXI-lite control traffic, and the control window.
    control_master: str = "M_AXI_HPM0_FPD"
    control_base: int = 0xA000_0000
    control_range: int = 0x1_0000
    #: AXI master bundle -> PS high-performance slave port (through a SmartConnect each).
    #: The expert-weight stream gets an HP port of its own: it is the bandwidth-critical one.
    hp_port_of_bundle: dict[str, str] = field(default_factory=lambda: {
        "gmem0": "S_AXI_HP0_FPD",
        "gmem1": "S_AXI_HP1_FPD",
        "gmem2": "S_AXI_HP2_FPD",
        "gmem3": "S_AXI_HP3_FPD",
        "gmem4": "S_AXI_HP0_FPD",
    })
    #: ZCU102 PS DDR as seen from the HP ports: (segment, base, size).
    ddr_segments: tuple[tuple[str, int, int], ...] = (
        ("HP_DDR_LOW", 0x0000_0000, 0x8000_0000),
        ("HP_DDR_HIGH", 0x8_0000_0000, 0x8000_0000),
    )
    #: PS-to-PL reset that drives the accelerator's ``ap_rst_n`` (through a proc_sys_reset): the
    #: driver pulses it to reset a hung kernel (``pl_reset.PsGpioPlReset``).
    pl_reset_pin: str = "pl_resetn0"
    #: ZCU102 PS reference: PL clock 0 = IOPLL (1500 MHz) / DIVISOR0 / DIVISOR1.
    iopll_mhz: float = 1500.0
    pl0_divisor1: int = 1

    @property
    def ip_vlnv(self) -> str:
        return f"{self.ip_vendor}:{self.ip_library}:{itf.TOP_FUNCTION}:{self.ip_version}"

    @property
    def pl0_divisor0(self) -> int:
        """Divisor giving the accelerator clock from the IOPLL (1500 / 5 = 300 MHz)."""
        return round(self.iopll_mhz / (itf.CLOCK_MHZ * self.pl0_divisor1))


BLOCK_DESIGN = BlockDesign()

#: Vitis HLS control register bit fields (offset 0x00), pynq/HWH naming, bits from interface.py.
_CTRL_FIELDS: tuple[tuple[str, int, int, str], ...] = tuple(
    (name, mask.bit_length() - 1, 1, access) for name, mask, access in (
        ("AP_START", itf.AP_START, "read-write"),
        ("AP_DONE", itf.AP_DONE, "read-only"),
        ("AP_IDLE", itf.AP_IDLE, "read-only"),
        ("AP_READY", itf.AP_READY, "read-only"),
        ("AUTO_RESTART", itf.AP_AUTO_RESTART, "read-write"),
    ))


@dataclass(frozen=True)
class HwhRegister:
    """One 32-bit register as it appears in a Vitis HLS generated ``.hwh``."""

    name: str
    offset: int
    access: str
    description: str
    fields: tuple[tuple[str, int, int, str], ...] = ()


def hwh_registers() -> list[HwhRegister]:
    """The AXI-lite registers of ``edgemoe_top`` named as Vitis HLS names them in the ``.hwh``.

    64-bit pointer arguments become ``<arg>_1`` (low word) and ``<arg>_2`` (high word); argument
    registers are write-only, as HLS exports them (the driver writes them by offset).
    """
    regs = [
        HwhRegister("CTRL", itf.REG_AP_CTRL, "read-write", "Control signals", _CTRL_FIELDS),
        HwhRegister("GIER", itf.REG_GIE, "read-write", "Global Interrupt Enable Register",
                    (("Enable", 0, 1, "read-write"),)),
        HwhRegister("IP_IER", itf.REG_IER, "read-write", "IP Interrupt Enable Register",
                    (("CHAN0_INT_EN", 0, 1, "read-write"), ("CHAN1_INT_EN", 1, 1, "read-write"))),
        HwhRegister("IP_ISR", itf.REG_ISR, "read-write", "IP Interrupt Status Register",
                    (("CHAN0_INT_ST", 0, 1, "read-write"), ("CHAN1_INT_ST", 1, 1, "read-write"))),
    ]
    for arg in itf.KERNEL_ARGS:
        if arg.kind == "pointer":
            for word, half in ((0, "low"), (1, "high")):
                regs.append(HwhRegister(f"{arg.name}_{word + 1}", arg.offset + 4 * word,
                                        "write-only",
                                        f"Data signal of {arg.name} ({half} 32 bits): "
                                        f"{arg.description}", ((arg.name, 0, 32, "write-only"),)))
        else:
            regs.append(HwhRegister(arg.name, arg.offset, "write-only",
                                    f"Data signal of {arg.name}: {arg.description}",
                                    ((arg.name, 0, 32, "write-only"),)))
    return sorted(regs, key=lambda r: r.offset)


def expected_registers() -> dict[str, int]:
    """Register name -> AXI-lite offset that the ``.hwh`` of a matching bitstream lists for our
    IP."""
    return {r.name: r.offset for r in hwh_registers()}


def register_map_mismatch(found: Mapping[str, int]) -> str | None:
    """The first difference between an IP's registers (name -> offset, as a ``.hwh`` lists them)
    and ``interface.py``'s register map, in words; None when they agree.

    Expected registers are walked in offset order, so the message names the lowest register that
    is missing or moved; registers the ``.hwh`` has beyond ours come last (an accelerator built
    from other sources). The driver programs registers by offset, so any difference means it
    would write arguments into the wrong places.
    """
    expected = expected_registers()
    by_offset = {offset: name for name, offset in found.items()}
    for name, offset in sorted(expected.items(), key=lambda kv: kv[1]):
        if name not in found:
            there = by_offset.get(offset)
            held = (f"the .hwh has {there!r} there" if there is not None
                    else "the .hwh has no register there")
            return f"register {name!r} (0x{offset:02X} in interface.py) is missing: {held}"
        if found[name] != offset:
            return (f"register {name!r} is at 0x{found[name]:02X} in the .hwh but at "
                    f"0x{offset:02X} in interface.py")
    extra = sorted((offset, name) for name, offset in found.items() if name not in expected)
    if extra:
        offset, name = extra[0]
        return (f"the .hwh has register {name!r} at 0x{offset:02X}, which "
                "interface.py does not know")
    return None


# ----------------------------------------------------------------------------------- .hwh
def _prop(name: str, value: object) -> str:
    return f'<PROPERTY NAME="{name}" VALUE={quoteattr(str(value))}/>'


def _register_xml(reg: HwhRegister) -> str:
    fields = "".join(
        f'<FIELD NAME="{f}">{_prop("DESCRIPTION", f)}{_prop("ADDRESS_OFFSET", lsb)}'
        f'{_prop("ACCESS", acc)}{_prop("BIT_OFFSET", lsb)}{_prop("BIT_WIDTH", width)}</FIELD>'
        for f, lsb, width, acc in reg.fields)
    return (f'<REGISTER NAME="{reg.name}">{_prop("DESCRIPTION", reg.description)}'
            f'{_prop("ADDRESS_OFFSET", reg.offset)}{_prop("SIZE", 32)}'
            f'{_prop("ACCESS", reg.access)}{_prop("IS_ENABLED", "true")}'
            f'{_prop("RESET_VALUE", 0)}<FIELDS>{fields}</FIELDS></REGISTER>')


def _param(name: str, value: object) -> str:
    return f'<PARAMETER NAME="{name}" VALUE={quoteattr(str(value))}/>'


def _bus(name: str, kind: str, busname: str, width: int) -> str:
    return (f'<BUSINTERFACE BUSNAME="{busname}" DATAWIDTH="{width}" NAME="{name}" TYPE="{kind}" '
            f'VLNV="xilinx.com:interface:aximm:1.0"/>')


def _memrange(block: str, base: int, size: int, instance: str, master: str, slave: str,
              memtype: str, basename: str) -> str:
    return (f'<MEMRANGE ADDRESSBLOCK="{block}" BASENAME="{basename}" BASEVALUE="0x{base:08X}" '
            f'HIGHNAME="{basename.replace("BASEADDR", "HIGHADDR")}" '
            f'HIGHVALUE="0x{base + size - 1:08X}" INSTANCE="{instance}" IS_DATA="TRUE" '
            f'IS_INSTRUCTION="TRUE" MASTERBUSINTERFACE="{master}" MEMTYPE="{memtype}" '
            f'SLAVEBUSINTERFACE="{slave}"/>')


def generate_hwh(bd: BlockDesign = BLOCK_DESIGN) -> str:
    """The ``.hwh`` XML of our block design, with the register map of ``interface.py``."""
    ip, ps = bd.ip_instance, bd.ps_instance
    ctrl_bus = f"{ps}_{bd.control_master}"
    regs = "".join(_register_xml(r) for r in hwh_registers())
    ip_buses = [_bus(itf.CONTROL_BUNDLE_PORT, "SLAVE", ctrl_bus, 32)]
    ip_ranges = []
    for bundle in itf.AXI_MASTER_BUNDLES:
        port = f"m_axi_{bundle}"
        ip_buses.append(_bus(port, "MASTER", f"{ip}_{port}", itf.AXI_DATA_WIDTH_BITS))
        for seg, base, size in bd.ddr_segments:
            ip_ranges.append(_memrange(seg, base, size, ps, port, bd.hp_port_of_bundle[bundle],
                                       "MEMORY", "C_BASEADDR"))
    ps_buses = [_bus(bd.control_master, "MASTER", ctrl_bus, 128)]
    for hp in sorted(set(bd.hp_port_of_bundle.values())):
        ps_buses.append(_bus(hp, "SLAVE", f"{ps}_{hp}", 128))

    pl_params = []
    for clk in range(4):
        enabled = clk == 0
        pl_params += [
            _param(f"PSU__FPGA_PL{clk}_ENABLE", int(enabled)),
            _param(f"PSU__CRL_APB__PL{clk}_REF_CTRL__SRCSEL", "IOPLL"),
            _param(f"PSU__CRL_APB__PL{clk}_REF_CTRL__DIVISOR0",
                   bd.pl0_divisor0 if enabled else 15),
            _param(f"PSU__CRL_APB__PL{clk}_REF_CTRL__DIVISOR1", bd.pl0_divisor1 if enabled else 1),
        ]
        if enabled:
            pl_params += [_param(f"PSU__CRL_APB__PL{clk}_REF_CTRL__FREQMHZ", itf.CLOCK_MHZ),
                          _param(f"PSU__CRL_APB__PL{clk}_REF_CTRL__ACT_FREQMHZ", itf.CLOCK_MHZ)]
    ctrl_basename = f"C_S_AXI_{itf.CONTROL_BUNDLE.upper()}_BASEADDR"
    part = itf.FPGA_PART  # e.g. xczu9eg-ffvb1156-2-e
    device, package, speed = part.split("-")[:3]
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(0))
    clock_hz = int(round(itf.CLOCK_MHZ * 1e6))
    ctrl_range = _memrange("Reg", bd.control_base, bd.control_range, ip, bd.control_master,
                           itf.CONTROL_BUNDLE_PORT, "REGISTER", ctrl_basename)
    # A backslash at a line end continues the template without a newline (the text is unchanged).
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no" ?>
<!-- Generated by edgemoe_ros.accel.hwh from accel/interface.py; stand-in for Vivado's export. -->
<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="{stamp}" VIVADOVERSION="2023.2">
  <SYSTEMINFO ARCH="zynquplus" BOARD="{bd.board}" DEVICE="{device}" NAME="{bd.name}" \
PACKAGE="{package}" SPEEDGRADE="-{speed}"/>
  <EXTERNALPORTS/>
  <EXTERNALINTERFACES/>
  <MODULES>
    <MODULE FULLNAME="/{ip}" HWVERSION="{bd.ip_version}" INSTANCE="{ip}" IPTYPE="PERIPHERAL" \
IS_ENABLE="1" MODCLASS="PERIPHERAL" MODTYPE="{itf.TOP_FUNCTION}" VLNV="{bd.ip_vlnv}">
      <DOCUMENTS/>
      <PARAMETERS>{_param(ctrl_basename, f"0x{bd.control_base:08X}")}\
{_param("clk_period", 1000.0 / itf.CLOCK_MHZ)}\
{_param("FREQ_HZ", clock_hz)}</PARAMETERS>
      <ADDRESSBLOCKS>
        <ADDRESSBLOCK ACCESS="read-write" INTERFACE="{itf.CONTROL_BUNDLE_PORT}" NAME="Reg" \
RANGE="{bd.control_range}" USAGE="register">
          <REGISTERS>{regs}</REGISTERS>
        </ADDRESSBLOCK>
      </ADDRESSBLOCKS>
      <MEMORYMAP>{"".join(ip_ranges)}</MEMORYMAP>
      <PORTS/>
      <BUSINTERFACES>{"".join(ip_buses)}</BUSINTERFACES>
    </MODULE>
    <MODULE FULLNAME="/{ps}" HWVERSION="3.5" INSTANCE="{ps}" IPTYPE="PERIPHERAL" \
IS_ENABLE="1" IS_PL="FALSE" MODTYPE="zynq_ultra_ps_e" VLNV="{bd.ps_vlnv}">
      <DOCUMENTS/>
      <PARAMETERS>{"".join(pl_params)}</PARAMETERS>
      <PORTS/>
      <BUSINTERFACES>{"".join(ps_buses)}</BUSINTERFACES>
      <MEMORYMAP>{ctrl_range}</MEMORYMAP>
    </MODULE>
  </MODULES>
</EDKSYSTEM>
"""


# ----------------------------------------------------------------------------------- .xclbin
#: XRT ``axlf`` layout (xclbin.h): 8-byte magic, 32-byte cipher, 256-byte key block, u64 unique id,
#: then the 152-byte header and an array of 40-byte section headers.
_AXLF_MAGIC = b"xclbin2\0"
_AXLF_PREFIX = struct.Struct("<8s32s256sQ")
_AXLF_HEADER = struct.Struct("<QQQHBBI16s64s16s16sI4x")
_AXLF_SECTION = struct.Struct("<I16s4xQQ")
_MEM_TOPOLOGY_HEAD = struct.Struct("<i4x")
_MEM_DATA = struct.Struct("<BB6xqQ16s")
_SECTION_EMBEDDED_METADATA = 2
_SECTION_MEM_TOPOLOGY = 6
_MEM_DDR4 = 1


def _platform_xml(bd: BlockDesign) -> str:
    part = itf.FPGA_PART
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<project name={quoteattr(bd.name)}>\n'
            f'  <platform vendor="xilinx" boardid="zcu102" name={quoteattr(bd.name)} '
            'featureRomTime="0">\n    <version major="0" minor="1"/>\n    '
            f'<description>{escape("edgemoe_ros simulated overlay")}</description>\n    <board '
            f'name={quoteattr(bd.board)} vendor="xilinx.com" fpga={quoteattr(part)}>\n      '
            '<memories><memory name="PSDDR" type="ddr4" size="4GB"/></memories>\n    '
            f'</board>\n    <device name="fpga0" fpgaDevice={quoteattr(part)} '
            'addrWidth="0">\n      <core name="OCL_REGION_0" target="bitstream" '
            'type="clc_region" clockFreq="0MHz" numComputeUnits="0">\n        '
            '<kernelClocks><clock port="KERNEL_CLK" '
            f'frequency="{itf.CLOCK_MHZ:.6f}MHz"/></kernelClocks>\n      </core>\n    '
            '</device>\n  </platform>\n</project>\n')


def generate_xclbin(bd: BlockDesign = BLOCK_DESIGN) -> bytes:
    """A minimal ``.xclbin``: platform XML plus a memory topology with one PS DDR bank."""
    ddr_size = sum(size for _, _, size in bd.ddr_segments)
    sections = [
        (_SECTION_EMBEDDED_METADATA, b"metadata", _platform_xml(bd).encode()),
        (_SECTION_MEM_TOPOLOGY, b"mem_topology",
         _MEM_TOPOLOGY_HEAD.pack(1) + _MEM_DATA.pack(_MEM_DDR4, 1, ddr_size // 1024, 0, b"PSDDR")),
    ]
    start = _AXLF_PREFIX.size + _AXLF_HEADER.size + _AXLF_SECTION.size * len(sections)
    headers, payload = b"", b""
    for kind, name, data in sections:
        offset = start + len(payload)
        headers += _AXLF_SECTION.pack(kind, name, offset, len(data))
        payload += data + b"\0" * (-len(data) % 8)
    total = start + len(payload)
    design_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"edgemoe_ros/{bd.name}/{bd.ip_vlnv}").bytes
    header = _AXLF_HEADER.pack(total, 0, 0, 0, 2, 0, 0, b"\0" * 16,
                               b"xilinx_zcu102_base".ljust(64, b"\0"),
                               design_uuid, b"\0" * 16, len(sections))
    # struct's per-field layout lets the array of section headers start right after numSections.
    return _AXLF_PREFIX.pack(_AXLF_MAGIC, b"\0" * 32, b"\0" * 256, 0) + header + headers + payload


# ----------------------------------------------------------------------------------- .bit
#: A bit file: 2-byte length + 9-byte magic, u16 1, then tagged fields 'a'..'d' (u16 length,
#: NUL-terminated ASCII) and 'e' (u32 length, configuration data).
_BIT_MAGIC = bytes.fromhex("0ff00ff00ff00ff000")
#: Placeholder configuration data: the 7-series/US+ sync word, so a real device rejects it as
#: incomplete instead of misprogramming. Length is a multiple of 4, as pynq's bit2bin requires.
_BIT_PAYLOAD = bytes.fromhex("ffffffffaa995566" + "20000000" * 2)


def _bit_field(tag: str, text: str) -> bytes:
    data = text.encode("ascii") + b"\0"
    return tag.encode("ascii") + struct.pack(">H", len(data)) + data


def placeholder_bitstream(bd: BlockDesign = BLOCK_DESIGN) -> bytes:
    """A syntactically valid ``.bit`` naming our design and part; it configures nothing."""
    return (struct.pack(">H", len(_BIT_MAGIC)) + _BIT_MAGIC + struct.pack(">H", 1)
            + _bit_field("a",
                         f"{bd.name};UserID=0XFFFFFFFF;Version=2023.2;edgemoe_ros placeholder")
            + _bit_field("b", itf.FPGA_PART.rsplit("-", 1)[0])
            + _bit_field("c", "1970/01/01") + _bit_field("d", "00:00:00")
            + b"e" + struct.pack(">I", len(_BIT_PAYLOAD)) + _BIT_PAYLOAD)


def write_overlay(directory: str | Path, bd: BlockDesign = BLOCK_DESIGN) -> Path:
    """Write ``<name>.bit``, ``<name>.hwh`` and ``<name>.xclbin`` into ``directory``; return the
    ``.bit`` path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    bit = out / f"{bd.name}.bit"
    bit.write_bytes(placeholder_bitstream(bd))
    bit.with_suffix(".hwh").write_text(generate_hwh(bd), encoding="utf-8")
    bit.with_suffix(".xclbin").write_bytes(generate_xclbin(bd))
    log.debug("wrote simulated overlay %s (+ .hwh, .xclbin)", bit)
    return bit
