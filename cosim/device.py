"""The co-simulation backend of the runtime's device interface: the Verilator chip.

:class:`CocotbDevice` implements :class:`sw.runtime.device.Device` (see it
for the contract of each call) on a chip built from a
:class:`sw.target.Target` and simulated under cocotb. Host writes and reads
go through the tiers' back door (:class:`cosim.store.TierStore`), standing
for DMA the runtime accounts for itself; Program Load, Argument Load,
Execute and copies go through the runtime's register driver
(:class:`sw.runtime.chip.ChipDriver`) over AXI4-Lite, and their cycle counts
are the RTL's own counters.
"""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge, Timer
from cocotb.utils import get_sim_time

from cosim.chip_bus import CocotbChipBus
from cosim.sim_clock import start_clock
from cosim.store import TierStore
from hw.mem.params import TIER_NAMES
from sw.runtime import launch_list
from sw.runtime.chip import ChipDriver, ChipError
from sw.runtime.device import Device

# Cycles one command may wait for its done line: a decode step's largest
# kernel streams a few hundred thousand words, so this only trips on a stall.
BUS_LIMIT = 5_000_000
RESET_CYCLES = 4
# How often a recording device samples the tiers' counters (Device.activity).
SAMPLE_CYCLES = 1000


class CocotbDevice(Device):
    """The RTL backend of a :class:`sw.target.Target`, inside a running cocotb test.

    Construct it in the test with the toplevel built from ``target.chip()``;
    it starts the clock and holds reset, and the first call releases reset
    (:meth:`start` does so explicitly). The tiers' backing files are those of
    the running simulation (``$OPENRDU_STORE_DIR``).

    Parameters
    ----------
    dut : cocotb handle
        The chip's toplevel.
    target : sw.target.Target
        What the chip was built from: sizes, AGCU positions, register map.
    limit : int
        Cycles a command may wait for its done line before it is reported
        as stalled (:class:`~sw.runtime.chip.ChipError`).
    """

    backend = "rtl"

    def __init__(self, dut, target, *, limit=BUS_LIMIT):
        self.dut, self.target = dut, target
        self.word_bytes = target.memory.word_bytes
        # The simulator's loop toggles the clock (cosim.sim_clock): a Python clock task costs two wake-ups a
        # cycle, cocotb's C clock a timer and an empty model evaluation per edge.
        start_clock(dut.clk, 10, unit="ns")
        dut.rst.value = 1
        self.bus = CocotbChipBus(dut, limit=limit)
        self.driver = ChipDriver(self.bus, target.array, target.memory, target.agcus)
        self.stores = {index: TierStore(index, target.memory.tiers[index].capacity) for index in TIER_NAMES}
        self.loaded = None
        self._started = False
        # While recording (record): the latest command's activity, and the units' (row, col, kind).
        self._recording, self._activity = False, None
        self._units = target.array.units()
        # The chip's cycle count when the copy in flight started (None: the copy engine is idle).
        self._copy_started = None

    async def start(self):
        """Release reset (once); every other call does this first."""
        if self._started:
            return
        await ClockCycles(self.dut.clk, RESET_CYCLES)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)
        self._started = True

    async def write(self, tier, offset, words):
        await self.start()
        try:
            self.stores[tier].write(offset, np.ascontiguousarray(words, dtype="<u4"))
        except ValueError as e:
            raise ChipError(f"host write: {e}") from None

    async def read(self, tier, offset, nwords):
        await self.start()
        try:
            return self.stores[tier].read(offset, 4 * nwords).view("<u4")
        except ValueError as e:
            raise ChipError(f"host read: {e}") from None

    async def load_program(self, program, tier, offset):
        """Program Load of ``program``, whose words the caller wrote at ``offset``, zero-padded to whole TLN words.

        Returns the array loader's cycles.
        """
        await self.start()
        n = len(program.words)
        try:
            words = self.stores[tier].read(offset, 4 * n).view("<u4")
        except ValueError as e:
            raise ChipError(f"program load: {e}") from None
        # The model backend refuses a mismatch the same way; the array itself would only catch a corrupt one.
        if not np.array_equal(words, np.asarray(program.words, dtype=np.uint32)):
            raise ChipError(f"program load: the bitstream at {TIER_NAMES[tier]}:{offset:#x} is not the program's")
        self.loaded = None
        command = self.driver.load_program(tier, offset, n + -n % (self.word_bytes // 4))
        if self._recording:
            cycles, _, samples, done = await self._recorded("program_done", command)
            self._activity = {"source": "measured", "kernels": [], "units": [], "streams": [],
                              "samples": self._from(samples, done - cycles)}
        else:
            cycles = await command
        self.loaded = program
        return cycles

    async def execute(self, reads, writes):
        """Argument Load and Execute; returns the kernel's cycles (the chip's ``kernel_cycles``)."""
        await self.start()
        if self.loaded is None:
            # The array would wait for a configuration until the bus limit; say why at once.
            raise ChipError("execute before load_program")
        if not self._recording:
            cycles, _ = await self.driver.execute(reads, writes, statuses=False)
            return cycles
        (cycles, statuses), units, samples, done = await self._recorded(
            "kernel_done", self.driver.execute(reads, writes, statuses=True))
        start = done - cycles
        patterns = {"read": reads, "write": writes}
        streams = [{"agcu": k, "direction": direction, "tier": TIER_NAMES[patterns[direction][k].tier],
                    "words": s["words"], "start": 0, "end": s["cycles"]} for (k, direction), s in statuses.items()]
        self._activity = {"source": "measured", "kernels": [(0, cycles)], "units": units, "streams": streams,
                          "samples": self._from(samples, start)}
        return cycles

    async def run_list(self, tier, offset, nwords, *, token, pos, programs):
        """The launch list at ``offset`` on the chip's sequencer; the cycle counts are the RTL's counters.

        The list is decoded here too, only to check each program record's
        bitstream against ``programs`` (as :meth:`load_program` does) and to
        name each unit's progress should the sequencer stall; the chip itself
        reports a malformed list. After an error nothing counts as loaded:
        a host :meth:`execute` needs a :meth:`load_program` first.
        """
        await self.start()
        if 4 * nwords % self.word_bytes:
            raise ChipError(f"launch list: {nwords} words do not fill whole {self.word_bytes}-byte memory words")
        words = await self.read(tier, offset, nwords)
        try:
            entries = launch_list.decode(words, self.target.memory, len(self.target.agcus))
        except ChipError:
            entries = None
        resident = self.loaded
        for i, entry in enumerate(entries or ()):
            if entry.program is None:
                continue
            at = (entry.program.tier, entry.program.base)
            program = programs.get(at)
            if program is not None:
                n = len(program.words)
                if not np.array_equal(await self.read(*at, n), np.asarray(program.words, dtype=np.uint32)):
                    raise ChipError(f"launch list entry {i}: the bitstream at {TIER_NAMES[at[0]]}:{at[1]:#x} is not "
                                    f"the program's")
            # What the list leaves resident: its last program (the record where no Program object is given).
            resident = program if program is not None else at
        self.loaded = None
        command = self.driver.run_list(tier, offset, 4 * nwords // self.word_bytes, token, pos, entries=entries)
        if self._recording:
            out, units, samples, done = await self._recorded("seq_done", command)
            start = done - out["cycles"]
            self._activity = {"source": "measured", "kernels": [], "units": units, "streams": [],
                              "samples": self._from(samples, start)}
        else:
            out = await command
        self.loaded = resident
        out["sequencer_cycles"] = out["cycles"] - out["kernel_cycles"] - out["program_load_cycles"]
        return out

    async def copy(self, src_tier, src, dst_tier, dst, nbytes):
        """A copy-engine transfer of ``nbytes`` (whole TLN words); returns its cycles."""
        await self.start_copy(src_tier, src, dst_tier, dst, nbytes)
        return (await self.wait_copy())["cycles"]

    async def start_copy(self, src_tier, src, dst_tier, dst, nbytes):
        """Start the copy and return: it runs in the simulation beside whatever the chip does next."""
        await self.start()
        if self._copy_started is not None:
            raise ChipError("start_copy: the copy engine is busy with an earlier copy; wait_copy first")
        if nbytes % self.word_bytes:
            raise ChipError(f"copy: the copy engine moves whole {self.word_bytes}-byte words, not {nbytes} bytes")
        await self.driver.start_copy(src_tier, src, dst_tier, dst, nbytes)
        # The chip's cycle counter right after the start pulse: the copy's own counter starts there.
        self._copy_started = await self.driver.read("cycle")

    async def wait_copy(self):
        """The copy's cycles (its engine's counter) and how many of them were still to run at this call."""
        await self.start()
        if self._copy_started is None:
            raise ChipError("wait_copy: no copy was started")
        called = await self.driver.read("cycle")
        started, self._copy_started = self._copy_started, None
        cycles = (await self.driver.wait_copy())["cycles"]
        return {"cycles": cycles, "waited": max(0, started + cycles - called)}

    async def tier_stats(self):
        """Each tier's controller counters (all of ``hw.mem.controller.stats_layout``), by tier name."""
        await self.start()
        return {name: await self.driver.tier_stats(name) for name in TIER_NAMES.values()}

    async def record(self, on=True):
        await self.start()
        self._recording, self._activity = bool(on), None

    async def activity(self):
        done, self._activity = self._activity, None
        return done

    def _cycle(self):
        return int(get_sim_time("ns") // self.bus.period_ns)

    async def _unit_counters(self):
        return [(await self.driver.read(f"unit{i}_busy"), await self.driver.read(f"unit{i}_stall"))
                for i in range(len(self._units))]

    async def _bytes(self):
        stats = {name: await self.driver.tier_stats(name) for name in ("hbm", "ddr")}
        return {name: self.word_bytes * (s["reads"] + s["writes"]) for name, s in stats.items()}

    async def _recorded(self, line, command):
        """Run ``command`` (a coroutine ending with the chip's ``line`` done pulse) while sampling the tier
        counters every SAMPLE_CYCLES; returns its result, the units' busy/stall counts over it, the samples
        (cycle, bytes moved since the first) and the cycle ``line`` rose."""
        before = await self._unit_counters()
        base, samples, done = await self._bytes(), [], []

        async def sample():
            while True:
                at, now = self._cycle(), await self._bytes()
                samples.append((at, {k: now[k] - base[k] for k in now}))
                await Timer(SAMPLE_CYCLES * self.bus.period_ns, "ns")

        async def watch():
            await RisingEdge(getattr(self.dut, line))
            done.append(self._cycle())

        sampler, watcher = cocotb.start_soon(sample()), cocotb.start_soon(watch())
        try:
            result = await command
        finally:
            sampler.cancel()
            if not watcher.done():
                watcher.cancel()
        end, now = self._cycle(), await self._bytes()
        at = done[0] if done else end
        samples.append((at, {k: now[k] - base[k] for k in now}))
        after = await self._unit_counters()
        units = [{"pos": (r, c), "kind": kind, "start": 0, "end": None, "busy": b1 - b0, "stall": s1 - s0,
                  "kernel": None} for (r, c, kind), (b0, s0), (b1, s1) in zip(self._units, before, after)
                 if b1 - b0 or s1 - s0]
        return result, units, [(t, b) for t, b in samples if t <= at], at

    @staticmethod
    def _from(samples, start):
        """``samples`` from the command's ``start`` on, in cycles from it; nothing moves before it."""
        kept = [(t - start, b) for t, b in samples if t > start]
        return [(0, {k: 0 for k in kept[0][1]})] + kept if kept else []

    async def close(self):
        # The simulator owns the tiers' files and the clock task ends with the test: nothing to release.
        pass
