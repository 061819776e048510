"""cocotb testbench of the runtime's AXI4-Lite master (:class:`cosim.axil.AxiLiteHost`), unit ``axil``.

The master drives the two slaves of ``cosim/tb/units_axil.py``: cocotbext-axi's
slave model, with random idle cycles and back-pressure on all five channels
and SLVERR above ``REFUSED``, and the chip's register bank behind a register
slice (SLVERR for a read-only register, DECERR off the map). A passive
:class:`AxilMonitor` on each port checks the master's side of the protocol (a
raised valid stays up, its payload unchanged, until its handshake) and
rebuilds every access from the handshakes it sees; an
:class:`AccessScoreboard` holds what each access should have done, from a
reference model of the slave, and compares both what the master returned
and what crossed the bus, so a lost, repeated or altered access fails, as
does a wrong value or an ignored response. Resets come in the middle of
accesses on both ports. The slave model's response channels are also driven
by hand, to offer a response nobody asked for.

``OPENRDU_AXIL_MASTER`` (``module:Class``, default ``cosim.axil:AxiLiteHost``)
names the master under test: ``tests/test_axil.py`` checks that wrong ones
fail here. ``OPENRDU_AXIL_OPS`` sets the random accesses per port (default 400).
"""

import importlib
import logging
import os
import warnings
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge, gather, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteSlave
from cocotbext.axi.axil_channels import AxiLiteBTransaction, AxiLiteRTransaction

from cosim.components import pauses
from cosim.sim_clock import start_clock
from cosim.tb.units_axil import IDENT, REGISTERS
from hw.mem.csr import RESP_DECERR, RESP_OKAY, RESP_SLVERR, RegisterMap
from sw.errors import ChipError

PERIOD_NS = 10
SEED = int(os.environ.get("OPENRDU_SEED", "1"))
OPS = int(os.environ.get("OPENRDU_AXIL_OPS", "400"))
MODEL_BYTES = 4096
REFUSED = 0xF00          # the slave model refuses accesses at and above this offset
LIMIT_CYCLES = 2000      # no access may take longer, back-pressure included
REGMAP = RegisterMap(REGISTERS)
RESP_NAMES = {RESP_SLVERR: "SLVERR", RESP_DECERR: "DECERR"}
# cocotbext-axi 0.1.28 still uses cocotb APIs that 2.x deprecates.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.axi")


def master_class():
    """The master under test, from ``OPENRDU_AXIL_MASTER``."""
    module, _, name = os.environ.get("OPENRDU_AXIL_MASTER", "cosim.axil:AxiLiteHost").partition(":")
    return getattr(importlib.import_module(module), name)


class AxiLiteProtocolError(AssertionError):
    """The master broke an AXI rule, or a response came with no request outstanding."""


@dataclass(frozen=True)
class Access:
    """One register access as it crossed the bus: ``kind`` ``"write"`` or ``"read"``, its response code."""

    kind: str
    offset: int
    data: int
    resp: int

    def __str__(self):
        return f"{self.kind} {self.data:#x} at {self.offset:#x} resp {self.resp}"


class AxilMonitor:
    """Watches an AXI4-Lite port at every rising edge, with the values the edge samples.

    Checks that a valid the master raised stays up with its payload until its
    handshake (``wstrb`` all ones), and pairs each B with the oldest AW and W
    taken and each R with the oldest AR. Edges in reset carry no handshake
    and drop what is outstanding (counted in ``dropped``).

    Attributes
    ----------
    accesses : list of Access
        Completed accesses, in the order of their responses.
    dropped : int
        Requests taken whose response a reset cut off.
    """

    def __init__(self, dut, prefix, *, clock, reset):
        self.name = prefix
        self.port = {s: getattr(dut, f"{prefix}_{s}") for s in (
            "awaddr", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready", "bresp", "bvalid", "bready",
            "araddr", "arvalid", "arready", "rdata", "rresp", "rvalid", "rready")}
        self.clock, self.reset = clock, reset
        self.accesses, self.dropped = [], 0
        cocotb.start_soon(self._run())

    def _payload(self, channel):
        if channel == "aw":
            return int(self.port["awaddr"].value)
        if channel == "w":
            return int(self.port["wdata"].value), int(self.port["wstrb"].value)
        return int(self.port["araddr"].value)

    async def _run(self):
        edge = RisingEdge(self.clock)
        taken = {"aw": [], "w": [], "ar": []}
        held = dict.fromkeys(taken)
        cycle = 0
        while True:
            await edge
            cycle += 1
            p = self.port
            if self.reset.value != 0:
                self.dropped += max(len(taken["aw"]), len(taken["w"])) + len(taken["ar"])
                taken = {channel: [] for channel in taken}
                held = dict.fromkeys(taken)
                continue
            for channel in taken:
                valid = bool(p[f"{channel}valid"].value)
                payload = self._payload(channel) if valid else None
                if held[channel] is not None and payload != held[channel]:
                    raise AxiLiteProtocolError(
                        f"{self.name}: {channel.upper()} {held[channel]} held by back-pressure was "
                        f"{'withdrawn' if payload is None else f'changed to {payload}'} at edge {cycle}")
                if channel == "w" and valid and payload[1] != 0xF:
                    raise AxiLiteProtocolError(f"{self.name}: wstrb {payload[1]:#x} at edge {cycle}, not all ones")
                if valid and p[f"{channel}ready"].value:
                    taken[channel].append(payload)
                    held[channel] = None
                else:
                    held[channel] = payload
            if p["bvalid"].value and p["bready"].value:
                if not taken["aw"] or not taken["w"]:
                    raise AxiLiteProtocolError(f"{self.name}: a B response at edge {cycle} with no write taken")
                (data, _) = taken["w"].pop(0)
                self.accesses.append(Access("write", taken["aw"].pop(0), data, int(p["bresp"].value)))
            if p["rvalid"].value and p["rready"].value:
                if not taken["ar"]:
                    raise AxiLiteProtocolError(f"{self.name}: an R response at edge {cycle} with no read taken")
                self.accesses.append(Access("read", taken["ar"].pop(0), int(p["rdata"].value),
                                            int(p["rresp"].value)))


class AccessScoreboard:
    """The accesses a port should have seen, each kind in order; :meth:`finish` compares the monitor's."""

    def __init__(self, monitor):
        self.monitor = monitor
        self.expected = []

    def expect(self, kind, offset, data, resp):
        self.expected.append(Access(kind, offset, data, resp))

    def finish(self):
        for kind in ("write", "read"):
            want = [a for a in self.expected if a.kind == kind]
            got = [a for a in self.monitor.accesses if a.kind == kind]
            for k, (w, g) in enumerate(zip(want, got)):
                if w != g:
                    raise AssertionError(f"{self.monitor.name}: {kind} {k} on the bus was {g}, expected {w}")
            if len(got) != len(want):
                raise AssertionError(f"{self.monitor.name}: {len(got)} {kind}s crossed the bus, expected {len(want)}")
        return len(self.expected)


class RefusingMemory:
    """The slave model's target: bytes, whose accesses at and above ``REFUSED`` raise (the model answers SLVERR)."""

    def __init__(self):
        self.mem = bytearray(MODEL_BYTES)

    def _check(self, address):
        if address >= REFUSED:
            raise ValueError(f"refused address {address:#x}")

    async def write(self, address, data):
        self._check(address)
        self.mem[address:address + len(data)] = data

    async def read(self, address, length):
        self._check(address)
        return bytes(self.mem[address:address + length])


class MemoryModel:
    """What the slave model should answer: word offset -> word, SLVERR at and above ``REFUSED``."""

    def __init__(self):
        self.words = {}

    def write(self, offset, value):
        if offset >= REFUSED:
            return RESP_SLVERR
        self.words[offset] = value
        return RESP_OKAY

    def read(self, offset):
        return (RESP_SLVERR, 0) if offset >= REFUSED else (RESP_OKAY, self.words.get(offset, 0))


class RegisterModel:
    """What the register bank of ``units_axil`` should answer, word by word; :meth:`reset` as the chip's reset."""

    def __init__(self):
        # Word offset -> (register, word index).
        self.at = {REGMAP[r.name] + 4 * k: (r, k) for r in REGMAP for k in range(r.words)}
        self.reset()

    def reset(self):
        self.values = {r.name: r.init for r in REGMAP}
        self.pulses = 0

    def write(self, offset, value):
        if offset not in self.at:
            return RESP_DECERR
        reg, k = self.at[offset]
        if reg.access == "ro":
            return RESP_SLVERR
        if reg.access == "w1p":
            self.pulses += (value & ((1 << reg.width) - 1)) != 0
            return RESP_OKAY
        mask = ((1 << reg.width) - 1) & (0xFFFF_FFFF << (32 * k))
        self.values[reg.name] = (self.values[reg.name] & ~mask) | ((value << (32 * k)) & mask)
        return RESP_OKAY

    def read(self, offset):
        if offset not in self.at:
            return RESP_DECERR, 0
        reg, k = self.at[offset]
        if reg.access == "w1p":
            return RESP_OKAY, 0
        value = {"pulses": self.pulses, "ident": IDENT}.get(reg.name, self.values.get(reg.name))
        return RESP_OKAY, (value >> (32 * k)) & 0xFFFF_FFFF


class Port:
    """A master under test on one port, its monitor, its scoreboard and the reference model of its slave."""

    def __init__(self, dut, prefix, model):
        self.dut, self.name = dut, prefix
        self.master = master_class()(dut, prefix, clock=dut.clk, reset=dut.rst)
        self.monitor = AxilMonitor(dut, prefix, clock=dut.clk, reset=dut.rst)
        self.scoreboard = AccessScoreboard(self.monitor)
        self.model = model
        self.valids = [getattr(dut, f"{prefix}_{s}valid") for s in ("aw", "w", "ar")]

    async def write(self, offset, value):
        """Write through the master; check its answer against the model's and expect the access on the bus."""
        resp = self.model.write(offset, value)
        self.scoreboard.expect("write", offset, value, resp)
        try:
            got = await bounded(self.master.write32(offset, value))
        except ChipError as error:
            assert resp != RESP_OKAY, f"{self.name}: write of {value:#x} at {offset:#x} refused: {error}"
            for part in (f"{value:#x}", f"{offset:#x}", RESP_NAMES[resp]):
                assert part in str(error), f"{self.name}: {error!r} does not name {part}"
            return
        assert resp == RESP_OKAY, f"{self.name}: write of {value:#x} at {offset:#x} gave {got!r}, expected " \
                                  f"{RESP_NAMES[resp]}"
        assert got is True, f"{self.name}: write of {value:#x} at {offset:#x} returned {got!r}, not True"

    async def read(self, offset):
        """Read through the master; check its answer against the model's and expect the access on the bus."""
        resp, want = self.model.read(offset)
        self.scoreboard.expect("read", offset, want, resp)
        try:
            got = await bounded(self.master.read32(offset))
        except ChipError as error:
            assert resp != RESP_OKAY, f"{self.name}: read at {offset:#x} refused: {error}"
            for part in (f"{offset:#x}", RESP_NAMES[resp]):
                assert part in str(error), f"{self.name}: {error!r} does not name {part}"
            return
        assert resp == RESP_OKAY, f"{self.name}: read at {offset:#x} returned {got!r}, expected " \
                                  f"{RESP_NAMES[resp]}"
        assert got == want, f"{self.name}: read at {offset:#x} returned {got:#x}, expected {want:#x}"

    def assert_idle(self):
        assert not any(v.value for v in self.valids), f"{self.name}: a valid is still high"


async def bounded(coro):
    """``coro``, failing the test if it takes more than ``LIMIT_CYCLES``."""
    return await with_timeout(coro, LIMIT_CYCLES * PERIOD_NS, "ns")


async def settled(coro):
    """``bounded(coro)``'s result, or the ChipError it raised: for a task that may raise before it is awaited
    (cocotb fails the test at once when a task nobody awaits raises)."""
    try:
        return await bounded(coro)
    except ChipError as error:
        return error


async def start(dut, *, pause=0.0):
    """Clock, the slave model (``pause``: the probability of an idle or back-pressured cycle on each of its
    channels), the masters on both ports, and a reset; returns the model's :class:`Port`, the register bank's,
    and the model's target and five channels (AW, W, B, AR, R)."""
    start_clock(dut.clk, PERIOD_NS, unit="ns")
    dut.rst.value = 1
    target = RefusingMemory()
    # The model and its channels log every access and reset at INFO, and a refused access at WARNING.
    logging.getLogger(f"cocotb.{dut._name}.m_axil").setLevel(logging.ERROR)
    slave = AxiLiteSlave(AxiLiteBus.from_prefix(dut, "m_axil"), dut.clk, dut.rst, target=target)
    channels = (slave.write_if.aw_channel, slave.write_if.w_channel, slave.write_if.b_channel,
                slave.read_if.ar_channel, slave.read_if.r_channel)
    for k, channel in enumerate(channels):
        channel.set_pause_generator(pauses(pause, (SEED, k)))
    model, regs = Port(dut, "p_axil", MemoryModel()), Port(dut, "s_axil", RegisterModel())
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    return model, regs, (target, channels)


async def idle(dut, rng):
    """Zero to three idle cycles between accesses, zero half the time."""
    gap = int(rng.choice([0, 0, 0, 1, 2, 3]))
    if gap:
        await ClockCycles(dut.clk, gap)


def finish(*ports):
    """Compare each port's scoreboard with its monitor, and check that its valids are low and nothing was dropped."""
    for port in ports:
        n = port.scoreboard.finish()
        port.assert_idle()
        assert port.monitor.dropped == 0, f"{port.name}: {port.monitor.dropped} accesses dropped with no reset"
        port.dut._log.info("%s: %d accesses checked on the bus", port.name, n)


@cocotb.test()
async def model_slave_under_idle_and_backpressure(dut):
    """``OPENRDU_AXIL_OPS`` random writes and reads against cocotbext-axi's slave model, idle cycles and
    back-pressure on each of its channels (AW and W taken in different cycles), idle cycles between accesses,
    a fifth of them a write and a read at once, some in the refused range (SLVERR)."""
    model, _, (target, _) = await start(dut, pause=0.4)
    rng = np.random.default_rng(SEED)

    def anywhere():
        return 4 * int(rng.integers(0, MODEL_BYTES // 4))

    for _ in range(OPS):
        value = int(rng.integers(0, 1 << 32))
        known = list(model.model.words) or [0]
        if rng.random() < 0.2:
            # A read of a word this write does not touch, so the two may complete in either order.
            write_at, read_at = anywhere(), int(rng.choice(known))
            if read_at == write_at:
                read_at = (write_at + 4) % REFUSED
            await gather(model.write(write_at, value), model.read(read_at))
        elif rng.random() < 0.5:
            await model.write(anywhere(), value)
        else:
            await model.read(int(rng.choice(known)) if rng.random() < 0.7 else anywhere())
        await idle(dut, rng)
    await ClockCycles(dut.clk, 4)
    finish(model)
    for offset, word in model.model.words.items():
        assert int.from_bytes(target.mem[offset:offset + 4], "little") == word, f"memory at {offset:#x}"


@cocotb.test()
async def register_bank_behind_a_slice(dut):
    """``OPENRDU_AXIL_OPS`` random writes and reads of the chip's register bank through a register slice:
    rw registers (strobes all set, widths below 32 bits), a multi-word register, a pulse register counted in
    an ro one, writes to ro registers (SLVERR) and accesses off the map (DECERR), idle cycles between."""
    _, regs, _ = await start(dut)
    rng = np.random.default_rng(SEED + 1)
    span = 1 << 6
    for _ in range(OPS):
        offset = 4 * int(rng.integers(0, span // 4))
        if rng.random() < 0.5:
            await regs.write(offset, int(rng.integers(0, 1 << 32)) if rng.random() < 0.8 else 0)
        else:
            await regs.read(offset)
        await idle(dut, rng)
    await ClockCycles(dut.clk, 4)
    finish(regs)
    assert regs.model.pulses > 0, "no pulse register write was counted"


async def reset_after(dut, cycles, hold=2):
    """Wait ``cycles`` rising edges (none: assert it now), then hold reset for ``hold``."""
    if cycles:
        await ClockCycles(dut.clk, cycles)
    dut.rst.value = 1
    await ClockCycles(dut.clk, hold)
    dut.rst.value = 0


@cocotb.test()
async def reset_in_the_middle_of_accesses(dut):
    """A reset while a write or a read is in flight drops it: the write returns False, the read raises
    ChipError, every valid is low and the next accesses go through (the register bank back at its reset
    values). A write called in reset returns False and a read raises, with nothing on the bus."""
    model, regs, (target, channels) = await start(dut)
    _, _, b, _, r = channels
    scratch = REGMAP["scratch"]
    for delay in (0, 1, 2):
        for kind in ("write", "read"):
            await regs.write(scratch, 0xC0DE_0000 + delay)
            call = regs.master.write32(scratch, 0xBAD) if kind == "write" else regs.master.read32(scratch)
            task = cocotb.start_soon(settled(call))
            await reset_after(dut, delay)
            got = await task
            if kind == "write":
                assert got is False, f"a write cut by a reset {delay} cycles in gave {got!r}"
            else:
                assert isinstance(got, ChipError) and "reset" in str(got), \
                    f"a read cut by a reset {delay} cycles in gave {got!r}"
            regs.assert_idle()
            regs.model.reset()
            await ClockCycles(dut.clk, 2)
            await regs.read(scratch)
            await regs.write(scratch, 0x1234_0000 + delay)
            await regs.read(scratch)

    # Three writes at once: a reset while the first is in flight drops the two queued behind it too.
    before = len(regs.monitor.accesses)
    queued = [cocotb.start_soon(settled(regs.master.write32(scratch, 0xBAD))) for _ in range(3)]
    await reset_after(dut, 1)
    for task in queued:
        got = await task
        assert got is False, f"a write queued behind one a reset cut gave {got!r}"
    regs.assert_idle()
    regs.model.reset()
    await ClockCycles(dut.clk, 2)
    assert len(regs.monitor.accesses) == before, "a write queued across a reset went out"
    await regs.read(scratch)

    # On the slave model: its write and read responses held back, so both accesses wait past the reset.
    await model.write(0x40, 0x600D)
    for channel in (b, r):
        channel.set_pause_generator(iter(lambda: True, None))
    write = cocotb.start_soon(settled(model.master.write32(0x40, 0xBAD)))
    read = cocotb.start_soon(settled(model.master.read32(0x40)))
    await reset_after(dut, 20)
    got = await write
    assert got is False, f"a write whose response a reset cut off gave {got!r}"
    got = await read
    assert isinstance(got, ChipError) and "reset" in str(got), f"a read whose response a reset cut off gave {got!r}"
    model.assert_idle()
    for channel in (b, r):
        channel.set_pause_generator(pauses(0.3, SEED))
    await ClockCycles(dut.clk, 2)
    # The model took the dropped write before the reset, which cut only its response: either word may be there.
    word = int.from_bytes(target.mem[0x40:0x44], "little")
    assert word in (0x600D, 0xBAD), f"{word:#x} at 0x40 after a write of 0xbad was dropped"
    model.model.write(0x40, word)
    await model.write(0x44, 0x7777)
    await model.read(0x44)
    await model.read(0x40)
    assert model.monitor.dropped == 2, f"{model.monitor.dropped} accesses dropped on the model's port, not 2"

    # Called in reset: nothing is issued.
    dut.rst.value = 1
    await ClockCycles(dut.clk, 1)
    before = len(regs.monitor.accesses)
    got = await settled(regs.master.write32(scratch, 0xBAD))
    assert got is False, f"a write called in reset gave {got!r}"
    got = await settled(regs.master.read32(scratch))
    assert isinstance(got, ChipError) and "reset" in str(got), f"a read called in reset gave {got!r}"
    await ClockCycles(dut.clk, 2)
    regs.assert_idle()
    dut.rst.value = 0
    await ClockCycles(dut.clk, 3)
    regs.model.reset()
    assert len(regs.monitor.accesses) == before
    await regs.read(scratch)
    # No write the resets dropped got a response.
    assert not any(a.data == 0xBAD for a in regs.monitor.accesses), "a dropped write was answered"
    regs.scoreboard.finish()
    model.scoreboard.finish()


@cocotb.test()
async def cancelled_callers(dut):
    """A caller cancelled while queued only leaves the queue: the accesses behind it go out in call order. One
    cancelled with its access in flight (taken, its response held back) leaves that access to the slave: every
    later access raises ChipError instead of taking the abandoned response for its own, until a reset; then
    accesses go through again."""
    model, regs, (target, channels) = await start(dut)
    _, _, b, _, r = channels
    scratch, ident = REGMAP["scratch"], REGMAP["ident"]
    await regs.write(scratch, 0x5151)
    # Three reads at once on the register bank; the middle one is cancelled before its turn.
    first = cocotb.start_soon(settled(regs.master.read32(scratch)))
    middle = cocotb.start_soon(settled(regs.master.read32(ident)))
    last = cocotb.start_soon(settled(regs.master.read32(scratch)))
    await ClockCycles(dut.clk, 1)
    middle.cancel()
    for task in (first, last):
        got = await task
        assert got == 0x5151, f"a read queued beside a cancelled one gave {got!r}"
    for _ in range(2):
        regs.scoreboard.expect("read", scratch, 0x5151, RESP_OKAY)
    await regs.read(ident)
    regs.assert_idle()

    # On the slave model: a read and a write taken, their responses held back, each caller cancelled.
    await model.write(0x80, 0xAAAA)
    await model.write(0x84, 0xBBBB)
    for channel, call in ((r, lambda: model.master.read32(0x80)), (b, lambda: model.master.write32(0x88, 0xCCCC))):
        channel.set_pause_generator(iter(lambda: True, None))
        task = cocotb.start_soon(settled(call()))
        await ClockCycles(dut.clk, 6)
        assert not task.done(), "an access whose response is held back finished"
        task.cancel()
        await ClockCycles(dut.clk, 1)
        model.assert_idle()
        channel.set_pause_generator(pauses(0.3, SEED))
        for again in (model.master.read32(0x84), model.master.write32(0x84, 0xDDDD)):
            got = await settled(again)
            assert isinstance(got, ChipError) and "cancelled" in str(got), \
                f"an access after one cancelled in flight gave {got!r}"
        await ClockCycles(dut.clk, 40)
        # The abandoned access completed on the bus, answered to no one.
        if channel is r:
            model.scoreboard.expect("read", 0x80, 0xAAAA, RESP_OKAY)
        else:
            model.model.write(0x88, 0xCCCC)
            model.scoreboard.expect("write", 0x88, 0xCCCC, RESP_OKAY)
        await reset_after(dut, 0)
        await ClockCycles(dut.clk, 2)
        regs.model.reset()
        await model.read(0x84)
        await model.read(0x88)
        await regs.read(scratch)
    # numpy integers, as a caller may hold them, are written and read as ints.
    await regs.write(np.int64(scratch), np.uint32(0x7777))
    await regs.read(np.int64(scratch))
    finish(model, regs)


@cocotb.test()
async def unsolicited_responses(dut):
    """A B or an R response the slave offers with no access of its direction outstanding (the slave model's
    channel driven by hand) is not taken: the other direction's accesses go through until an access of the
    response's direction meets it, which raises ChipError naming it; so does every later access, reads and
    writes, with nothing issued, until a reset; then accesses go through. A stray R offered while a write is in
    flight, and a stray B while a read is, count the same."""
    model, _, (target, channels) = await start(dut)
    _, _, b, _, r = channels
    await model.write(0x40, 0x1111)
    await model.read(0x40)
    b_stray = AxiLiteBTransaction(bresp=RESP_SLVERR)
    r_stray = AxiLiteRTransaction(rdata=0xFEED_F00D, rresp=RESP_OKAY)
    b_words = ("write response", "BRESP SLVERR", "no write outstanding", "reset")
    r_words = ("read response", "RRESP OKAY", "RDATA 0xfeedf00d", "no read outstanding", "reset")
    # Offered while idle, or beside an access of the other direction (started in the same cycle).
    for stray, channel, named, beside in ((b_stray, b, b_words, None), (r_stray, r, r_words, None),
                                          (b_stray, b, b_words, "read"), (r_stray, r, r_words, "write")):
        if beside == "read":
            await gather(channel.send(stray), model.read(0x40))
        elif beside == "write":
            await gather(channel.send(stray), model.write(0x44, 0x2222))
        else:
            await channel.send(stray)
        await ClockCycles(dut.clk, 5)
        # The other direction's accesses are not disturbed.
        if channel is b:
            await model.read(0x40)
        else:
            await model.write(0x40, 0x3333)
        before = len(model.monitor.accesses)
        calls = (lambda: model.master.write32(0x48, 0xBAD), lambda: model.master.read32(0x40))
        for call in (calls if channel is b else calls[::-1]) * 2:
            got = await settled(call())
            assert isinstance(got, ChipError), f"an access after an unsolicited response gave {got!r}"
            for word in named:
                assert word in str(got), f"{got!r} does not name {word!r}"
        await ClockCycles(dut.clk, 5)
        assert len(model.monitor.accesses) == before, "an access went out after an unsolicited response"
        model.assert_idle()
        await reset_after(dut, 0)
        await ClockCycles(dut.clk, 2)
        await model.read(0x40)
        await model.write(0x48, 0x4444)
        await model.read(0x48)
    finish(model)


@cocotb.test()
async def stray_responses_back_to_back(dut):
    """A stray B or R offered once an access's request is taken is taken as that access's own (not seen); its own
    response then waits on the bus, and the next access of its direction, called in the timestep the first one
    ended (back to back, where the check at the call does not look), meets it before its own request is taken:
    its request completes and it raises ChipError naming the response."""
    model, _, (_, channels) = await start(dut)
    _, _, b, _, r = channels
    for kind, channel, stray, named in (
            ("write", b, AxiLiteBTransaction(bresp=RESP_OKAY),
             ("write response", "BRESP OKAY", "before this write's request was taken")),
            ("read", r, AxiLiteRTransaction(rdata=0x5A5A_5A5A, rresp=RESP_OKAY),
             ("read response", "RRESP OKAY", "before this read's request was taken"))):
        if kind == "write":
            await model.write(0x40, 0x1111)
            await channel.send(stray)
            first = await settled(model.master.write32(0x44, 0x2222))
            second = await settled(model.master.write32(0x48, 0x3333))
            # Both requests reach the slave; the first's access pairs with the stray on the bus.
            model.model.write(0x44, 0x2222)
            model.model.write(0x48, 0x3333)
            model.scoreboard.expect("write", 0x44, 0x2222, RESP_OKAY)
            assert first is True, f"the write that took the stray B gave {first!r}"
        else:
            await model.read(0x40)
            await channel.send(stray)
            first = await settled(model.master.read32(0x44))
            second = await settled(model.master.read32(0x48))
            model.scoreboard.expect("read", 0x44, 0x5A5A_5A5A, RESP_OKAY)
            assert first == 0x5A5A_5A5A, f"the read that took the stray R gave {first!r}"
        assert isinstance(second, ChipError), f"the {kind} after a stray response gave {second!r}"
        for word in named:
            assert word in str(second), f"{second!r} does not name {word!r}"
        assert "was issued" in str(second), f"{second!r} does not say its request went out"
        await ClockCycles(dut.clk, 1)
        model.assert_idle()
        await reset_after(dut, 0)
        await ClockCycles(dut.clk, 2)
        # The second access's request was taken and its response cut off by the reset.
        assert model.monitor.dropped == 1, f"{model.monitor.dropped} accesses dropped by the reset, expected 1"
        model.monitor.dropped = 0
    await model.write(0x4C, 0x4444)
    await model.read(0x4C)
    finish(model)


async def caller(dut, seed, accesses):
    """Run ``accesses`` (``(port method, args)``) in order, with idle cycles between."""
    rng = np.random.default_rng(seed)
    for method, args in accesses:
        await method(*args)
        await idle(dut, rng)


@cocotb.test()
async def concurrent_callers_in_call_order(dut):
    """Three writers and three readers at once on each port, idle cycles between their accesses and
    back-pressure from the slave model: each direction's accesses cross the bus one at a time in the order
    of the calls (the scoreboards expect that order), and each caller gets its own answer."""
    model, regs, _ = await start(dut, pause=0.5)
    rng = np.random.default_rng(SEED + 2)
    ident, pulses, narrow = REGMAP["ident"], REGMAP["pulses"], REGMAP["narrow"]
    await regs.write(narrow, 0x15)
    for k in range(8):
        await model.write(0x200 + 4 * k, 0x2000 + k)
    # Each writer has words of its own, and the readers read words no writer touches.
    writes = {model: [[0x100 + 32 * w + 4 * k for k in range(8)] for w in range(2)] + [[REFUSED, 0x180]],
              regs: [[REGMAP["scratch"]], [REGMAP["wide"], REGMAP["wide"] + 4], [ident, 0x3C]]}
    reads = {model: [[0x200 + 4 * k for k in range(8)], [REFUSED + 4, 0x204], [0x21C, 0x200]],
             regs: [[narrow, ident], [pulses, 0x3C], [ident, narrow, pulses]]}
    callers = []
    for port in (model, regs):
        for w, words in enumerate(writes[port]):
            accesses = [(port.write, (int(rng.choice(words)), int(rng.integers(0, 1 << 32)))) for _ in range(12)]
            callers.append(caller(dut, (SEED, w), accesses))
        for r, words in enumerate(reads[port]):
            callers.append(caller(dut, (SEED, 3 + r), [(port.read, (int(rng.choice(words)),)) for _ in range(12)]))
    await gather(*callers)
    for port in (model, regs):
        for words in writes[port]:
            for offset in words:
                await port.read(offset)
    await ClockCycles(dut.clk, 4)
    finish(model, regs)
