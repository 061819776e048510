"""Control and status registers behind an AXI4-Lite slave.

One list of :class:`Register` descriptions makes both the hardware
(:class:`CsrBank`) and the software's view of it (:class:`RegisterMap`,
names to byte offsets), so the driver reads and writes by name and the two
cannot drift apart.

Registers are laid out in list order, each on as many consecutive 32-bit
words as its width needs, least significant word first.
"""

import keyword
from dataclasses import dataclass

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

RESP_OKAY, RESP_SLVERR, RESP_DECERR = 0, 2, 3
ACCESS = ("rw", "ro", "w1p")
WORD_BYTES = 4
AXIL_PREFIX = "s_axil"
# Attributes of CsrBank that a register's port would shadow.
_RESERVED = frozenset({"signature", "elaborate", "map", "addr_bits", "axil_members"})


def axil_slave_members(*, addr_bits, prefix=AXIL_PREFIX):
    """Flat AXI4-Lite slave ports with 32-bit data (no ``prot``), seen from the slave."""
    p = f"{prefix}_"
    return {
        f"{p}awaddr": In(addr_bits), f"{p}awvalid": In(1), f"{p}awready": Out(1),
        f"{p}wdata": In(32), f"{p}wstrb": In(4), f"{p}wvalid": In(1), f"{p}wready": Out(1),
        f"{p}bresp": Out(2), f"{p}bvalid": Out(1), f"{p}bready": In(1),
        f"{p}araddr": In(addr_bits), f"{p}arvalid": In(1), f"{p}arready": Out(1),
        f"{p}rdata": Out(32), f"{p}rresp": Out(2), f"{p}rvalid": Out(1), f"{p}rready": In(1),
    }


@dataclass(frozen=True)
class Register:
    """One register.

    Parameters
    ----------
    name : str
        A Python identifier; also the name of the register's port on
        :class:`CsrBank`.
    width : int
        Bits, 1 to 256; above 32 it spans several words.
    access : str
        ``"rw"``: written and read back by the host, drives an output port;
        ``"ro"``: reads an input port, writes are refused (SLVERR);
        ``"w1p"``: each 1 written gives a one-cycle pulse on that bit of an
        output port, the cycle after the write; reads return 0.
    init : int
        Reset value of an ``rw`` register.
    doc : str
        What it holds, for the generated map.
    """

    name: str
    width: int = 32
    access: str = "rw"
    init: int = 0
    doc: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier() or keyword.iskeyword(self.name):
            raise ValueError(f"register name must be a Python identifier, not {self.name!r}")
        if self.name.startswith(AXIL_PREFIX) or self.name in _RESERVED:
            raise ValueError(f"register name {self.name!r} clashes with the bank's own ports")
        if not isinstance(self.width, int) or isinstance(self.width, bool) or not 1 <= self.width <= 256:
            raise ValueError(f"register {self.name!r}: width must be an integer in [1, 256], not {self.width!r}")
        if self.access not in ACCESS:
            raise ValueError(f"register {self.name!r}: access must be one of {ACCESS}, not {self.access!r}")
        if not isinstance(self.init, int) or not 0 <= self.init < (1 << self.width):
            raise ValueError(f"register {self.name!r}: init {self.init!r} does not fit in {self.width} bits")
        if self.init and self.access != "rw":
            raise ValueError(f"register {self.name!r}: only rw registers have an init value, not {self.init!r}")

    @property
    def words(self):
        return -(-self.width // 32)


class RegisterMap:
    """Byte offsets of a register list, for software.

    Parameters
    ----------
    registers : sequence of Register

    Attributes
    ----------
    offsets : dict
        Register name to the byte offset of its first (least significant) word.
    size : int
        Bytes the map spans.
    """

    def __init__(self, registers):
        registers = tuple(registers)
        if not registers:
            raise ValueError("a register map needs at least one register, not an empty list")
        for reg in registers:
            if not isinstance(reg, Register):
                raise ValueError(f"registers must be Register descriptions, not {reg!r}")
        self.registers = {}
        self.offsets = {}
        offset = 0
        for reg in registers:
            if reg.name in self.registers:
                raise ValueError(f"register name {reg.name!r} is used twice")
            self.registers[reg.name] = reg
            self.offsets[reg.name] = offset
            offset += WORD_BYTES * reg.words
        self.size = offset

    def __getitem__(self, name):
        return self.offsets[name]

    def __iter__(self):
        return iter(self.registers.values())

    def describe(self):
        """The map as plain data: one dict per register, in address order."""
        return [dict(name=r.name, offset=self.offsets[r.name], width=r.width, access=r.access, doc=r.doc)
                for r in self]


class CsrBank(wiring.Component):
    """An AXI4-Lite register file built from :class:`Register` descriptions.

    Each register is a port of the bank named after it: ``rw`` and ``w1p``
    registers are outputs, ``ro`` registers inputs the enclosing design
    drives. Writes honour the byte strobes. One write and one read are
    handled at a time, each answered the cycle after it is accepted.

    Responses: DECERR for an address no register covers; SLVERR for a write
    to an ``ro`` register (not performed). Reading the low word of a wider
    ``ro`` register latches its upper words, which later reads of those
    words return, so a counter read low word first never tears.

    Parameters
    ----------
    registers : sequence of Register
    addr_bits : int
        Width of the AXI4-Lite address; the map must fit in it.

    Attributes
    ----------
    map : RegisterMap
    s_axil_* : AXI4-Lite slave ports (see :func:`axil_slave_members`)
    <register name> : the register's port
    """

    def __init__(self, registers, *, addr_bits=12):
        self.map = RegisterMap(registers)
        if not isinstance(addr_bits, int) or isinstance(addr_bits, bool) or not 3 <= addr_bits <= 32:
            raise ValueError(f"addr_bits must be an integer in [3, 32], not {addr_bits!r}")
        if self.map.size > (1 << addr_bits):
            raise ValueError(f"the register map needs {self.map.size} bytes, more than addr_bits={addr_bits} covers")
        self.addr_bits = addr_bits
        self.axil_members = axil_slave_members(addr_bits=addr_bits)
        ports = dict(self.axil_members)
        for reg in self.map:
            if reg.access == "ro":
                ports[reg.name] = In(reg.width)
            else:
                ports[reg.name] = Out(reg.width, init=reg.init)
        super().__init__(ports)

    def _bus(self, name):
        return getattr(self, f"{AXIL_PREFIX}_{name}")

    def elaborate(self, platform):
        m = Module()
        bus = self._bus

        # Pulses last one cycle unless written again.
        for reg in self.map:
            if reg.access == "w1p":
                m.d.sync += getattr(self, reg.name).eq(0)

        # Write: address and data are taken together.
        bvalid = Signal()
        bresp = Signal(2)
        take_write = Signal()
        m.d.comb += [
            take_write.eq(bus("awvalid") & bus("wvalid") & ~bvalid),
            bus("awready").eq(take_write),
            bus("wready").eq(take_write),
            bus("bvalid").eq(bvalid),
            bus("bresp").eq(bresp),
        ]
        with m.If(bvalid & bus("bready")):
            m.d.sync += bvalid.eq(0)
        wdata, wstrb = bus("wdata"), bus("wstrb")
        with m.If(take_write):
            m.d.sync += [bvalid.eq(1), bresp.eq(RESP_OKAY)]
            with m.Switch(bus("awaddr")[2:]):
                for reg in self.map:
                    port = getattr(self, reg.name)
                    for k in range(reg.words):
                        with m.Case(self.map[reg.name] // WORD_BYTES + k):
                            if reg.access == "ro":
                                m.d.sync += bresp.eq(RESP_SLVERR)
                                continue
                            for b in range(4):
                                lo = 32 * k + 8 * b
                                hi = min(lo + 8, reg.width)
                                if lo >= reg.width:
                                    break
                                with m.If(wstrb[b]):
                                    m.d.sync += port[lo:hi].eq(wdata[8 * b:8 * b + hi - lo])
                with m.Default():
                    m.d.sync += bresp.eq(RESP_DECERR)

        # Read.
        rvalid = Signal()
        rdata = Signal(32)
        rresp = Signal(2)
        m.d.comb += [
            bus("arready").eq(~rvalid),
            bus("rvalid").eq(rvalid),
            bus("rdata").eq(rdata),
            bus("rresp").eq(rresp),
        ]
        with m.If(rvalid & bus("rready")):
            m.d.sync += rvalid.eq(0)
        with m.If(bus("arvalid") & ~rvalid):
            m.d.sync += [rvalid.eq(1), rresp.eq(RESP_OKAY), rdata.eq(0)]
            with m.Switch(bus("araddr")[2:]):
                for reg in self.map:
                    port = getattr(self, reg.name)
                    snapshot = None
                    if reg.access == "ro" and reg.words > 1:
                        snapshot = Signal(reg.width - 32, name=f"{reg.name}_snapshot")
                    for k in range(reg.words):
                        with m.Case(self.map[reg.name] // WORD_BYTES + k):
                            if reg.access == "w1p":
                                continue
                            if snapshot is None:
                                m.d.sync += rdata.eq(port[32 * k:32 * k + 32])
                            elif k == 0:
                                m.d.sync += [rdata.eq(port[:32]), snapshot.eq(port[32:])]
                            else:
                                m.d.sync += rdata.eq(snapshot[32 * (k - 1):32 * k])
                with m.Default():
                    m.d.sync += rresp.eq(RESP_DECERR)
        return m
