"""The device interface the runtime drives, and its fast-model backend.

One runtime, two backends: :class:`ModelDevice` here runs kernels on the
chip's fast model (:class:`sw.model.chip.ChipModel`); the co-simulation
backend (``cosim.device.CocotbDevice``) runs them on the Verilator chip
through the register driver. Both implement :class:`Device`, so the
runtime's decode loop (:mod:`sw.runtime.decode`) is the same code on both,
and the command line alone picks one (:mod:`sw.runtime.backends`).
"""

import abc

import numpy as np

from hw.mem.launch_list import direction_record_layout, header_layout, program_record_layout, record_words
from hw.mem.params import TIER_NAMES
from sw.errors import ChipError, LaunchError
from sw.model import memory_units, sequencer
from sw.model.chip import ChipModel
from sw.model.memory import MemoryRangeError
from sw.runtime import launch_list, trace
from sw.runtime.launch_list import program_pattern


class Device(abc.ABC):
    """A chip built from a :class:`sw.target.Target`, driven with the SN40L's commands.

    Every call is a coroutine. Tiers are the indices of
    ``hw.mem.params.TIER_NAMES`` (``HBM``, ``DDR``); offsets are bytes from the
    start of a tier; words are uint32. A mistake the chip would refuse (an
    access outside a tier, a program that is not where it is said to be, a
    kernel that stalls or whose AGCU pattern leaves its tier) raises
    :class:`sw.errors.ChipError` on every backend, with a message that names it.

    Attributes
    ----------
    backend : str
        ``"model"`` or ``"rtl"``: the name reports and the command line use.
    target : sw.target.Target
        What the chip was built from.
    """

    backend: str
    target: object

    async def start(self):
        """Make the chip ready for commands (the RTL releases reset); idempotent, and every other call does it."""

    @abc.abstractmethod
    async def write(self, tier, offset, words):
        """Store ``words`` (uint32 array, any shape, written flat) at byte ``offset`` of ``tier``.

        The host's back door to a tier: it stands for a DMA whose cost the
        runtime accounts itself, at the host link's bandwidth.
        """

    @abc.abstractmethod
    async def read(self, tier, offset, nwords):
        """The ``nwords`` uint32 words at byte ``offset`` of ``tier`` (array of shape (nwords,)), by the back door."""

    @abc.abstractmethod
    async def load_program(self, program, tier, offset):
        """Program Load of ``program`` (a built :class:`sw.tile.kernel.Program`) whose words lie at ``offset``.

        The words must be there already (the runtime writes them, zero-padded
        to whole memory words); a mismatch is refused. Returns the loader's
        cycles (int).
        """

    @abc.abstractmethod
    async def execute(self, reads, writes):
        """Argument Load and Execute of the loaded program.

        ``reads`` and ``writes`` map an AGCU index (into ``target.agcus``) to
        its :class:`sw.runtime.chip.Pattern`; every host port of the program
        needs one. Returns the kernel's cycles (int), from the start command
        to the last AGCU done.
        """

    def program_loader(self):
        """:meth:`load_program` as a plain function of the same arguments and result, for a runtime's launches
        that then make no coroutine a load; None where the backend has no such form (this default) and
        :meth:`load_program` is awaited."""
        return None

    def launcher(self, reads, writes):
        """The loaded program's launch with patterns of the shapes of ``reads`` / ``writes`` as a function of their
        bases, for a runtime that runs it again with only the bases moved: ``(ins, outs, go)``, ``ins`` / ``outs``
        the AGCUs whose bases ``go(read_bases, write_bases)`` takes in that order; ``go`` is :meth:`execute` of
        the patterns moved there, its cycles, or None with nothing done (then :meth:`execute` runs the launch).
        None where the backend has no such form (this default) or not yet for this launch."""
        return None

    @abc.abstractmethod
    async def run_list(self, tier, offset, nwords, *, token, pos, programs):
        """Run the launch list of ``nwords`` 32-bit words at byte ``offset`` of ``tier`` on the chip's sequencer.

        The list (:mod:`sw.runtime.launch_list`) is walked on chip for the step
        of ``token`` at ``pos``: per entry Program Load (skipped when that
        program is resident), Argument Load with stepped bases, Execute; one
        done for the whole list. ``programs`` maps each ``(tier, byte offset)``
        a program record names to its built :class:`~sw.tile.kernel.Program`
        (the fast model runs it; the RTL reads the bitstream). Returns a dict
        of ints: ``cycles`` (start to done), ``kernel_cycles`` (all entries),
        ``program_load_cycles``, ``program_loads``, ``entries`` and
        ``sequencer_cycles`` (``cycles`` less kernels and Program Loads).
        Raises :class:`~sw.errors.ChipError` naming the entry for a malformed
        list, a refused program, an error response or a stall.
        """

    @abc.abstractmethod
    async def copy(self, src_tier, src, dst_tier, dst, nbytes):
        """A copy-engine transfer of ``nbytes`` (whole memory words) between tiers; returns its cycles."""

    async def start_copy(self, src_tier, src, dst_tier, dst, nbytes):
        """Start a copy-engine transfer as :meth:`copy` does, and return at once: it runs beside kernels.

        One copy at a time; :meth:`wait_copy` collects it. Neither end may be
        used by anything else until then. This default copies at once, so a
        backend without concurrency reports no overlap.
        """
        if getattr(self, "_pending_copy", None) is not None:
            raise ChipError("start_copy: the copy engine is busy with an earlier copy; wait_copy first")
        self._pending_copy = await self.copy(src_tier, src, dst_tier, dst, nbytes)

    async def wait_copy(self):
        """Wait for the copy :meth:`start_copy` began; returns ``{"cycles": its cycles, "waited": cycles}``.

        ``waited`` is how long the chip was left waiting for the copy when
        this was called: the part of ``cycles`` that kernels and Program Loads
        since the start did not cover (``cycles - waited`` were hidden).
        """
        cycles = getattr(self, "_pending_copy", None)
        if cycles is None:
            raise ChipError("wait_copy: no copy was started")
        self._pending_copy = None
        return {"cycles": cycles, "waited": cycles}

    @abc.abstractmethod
    async def tier_stats(self):
        """Each tier's controller counters, by tier name (``"hbm"``, ``"ddr"``).

        Every backend gives ``reads``, ``writes`` (memory words performed by
        kernels' AGCUs and the copy engine, not the back door) and ``errors``
        (words refused for lying outside the tier); the RTL adds the rest of
        ``hw.mem.controller.stats_layout``.
        """

    async def record(self, on=True):
        """Start (``on``) or stop recording what the chip does inside each :meth:`execute` and :meth:`run_list`
        for :meth:`activity` (traces: it costs time on every backend). A backend that cannot record keeps
        :meth:`activity` None."""

    async def activity(self):
        """What the chip did during the latest :meth:`load_program`, :meth:`execute` or :meth:`run_list` while
        recording; None otherwise, or where the backend cannot tell.

        A dict, all cycles counted from that command's start (its kernel's start pulse for ``execute``):

        - ``source``: ``"measured"`` (the RTL's counters) or ``"modelled"`` (the fast model's timing);
        - ``kernels``: per kernel ``(start, cycles)`` (the RTL gives none under ``run_list``: its sequencer
          reports totals);
        - ``units``: per unit and kernel (per iteration of a looped kernel on the model) a dict of ``pos``
          (row, col), ``kind`` (``pcu``/``pmu``), ``start``/``end`` (its span; ``end`` None where the counts
          span the whole command), ``busy`` and ``stall`` cycles, and ``kernel`` (index into ``kernels``;
          None where a count spans the whole command);
        - ``streams``: per transfer ``agcu`` (None for the program loader's and the launch list reader's,
          named by ``track``), ``direction``, ``tier`` name, ``words``, ``start``/``end`` (the RTL gives
          them for ``execute`` only: AGCU statuses describe their latest transfer);
        - ``samples``: ``[(cycle, {"hbm": bytes, "ddr": bytes})]``, the bytes the tier controllers had moved
          since the command's start, about every 1,000 cycles.
        """
        return None

    async def close(self):
        """Release what the backend holds; the device is not used after this."""


class ModelDevice(Device):
    """The fast-model backend of a :class:`sw.target.Target`: results bit-identical to the RTL, cycles estimated."""

    backend = "model"

    def __init__(self, target):
        self.target = target
        self.chip = ChipModel(target.array, target.memory, target.agcus)
        self.loaded = None
        # The Program Load pattern (fields) of the resident program: the sequencer skips a load of the same.
        self.resident = None
        # Chip cycles of every command so far, and when the copy in flight (its cycles) ends on that clock.
        self.now, self.copy_end, self.copy_cycles = 0, None, 0
        self._activity, self._listing = None, False
        self._programs, self._load_patterns, self._loads = {}, {}, {}

    async def record(self, on=True):
        self.chip.activity = [] if on else None
        self._activity = None

    async def activity(self):
        done, self._activity = self._activity, None
        return done

    def _recorded(self, kernels, loads=(), listed=None):
        """The :meth:`activity` of a command from the kernel records the chip model appended, one per entry of
        ``kernels`` (start, cycles); ``loads``: Program Loads as (start, cycles, tier, memory words);
        ``listed``: the launch list's (tier, memory words, cycle its last entry is parsed by)."""
        if self.chip.activity is None:
            return
        records, self.chip.activity[:] = list(self.chip.activity), []
        units, streams, tiers = [], [], []
        wb = self.target.memory.word_bytes
        for i, ((start, _), record) in enumerate(zip(kernels, records)):
            units += [dict(u, start=u["start"] + start, end=u["end"] + start, kernel=i) for u in record["units"]]
            for st in record["streams"]:
                streams.append(dict(st, start=st["start"] + start, end=st["end"] + start, kernel=i))
        for start, cycles, tier, words in loads:
            streams.append({"agcu": None, "track": "program loader", "direction": "program load",
                            "tier": TIER_NAMES[tier], "words": words, "start": start, "end": start + cycles})
        if listed is not None:
            tier, words, end = listed
            streams.append({"agcu": None, "track": "launch list reader", "direction": "launch list",
                            "tier": TIER_NAMES[tier], "words": words, "start": 0, "end": max(end, 1)})
        even = [(st["tier"], st["words"] * wb, st["start"], max(st["end"] - 1, st["start"])) for st in streams
                if not st.get("served")]
        served = [(tier, wb, times + start) for (start, _), record in zip(kernels, records)
                  for tier, times in record["words"].items()]
        end = max([s + c for s, c in kernels] + [s + c for s, c, *_ in loads] + [0])
        peaks = {TIER_NAMES[t]: float(p.bytes_per_cycle) for t, p in enumerate(self.target.memory.tiers)}
        self._activity = {"source": "modelled", "kernels": list(kernels), "units": units, "streams": streams,
                          "samples": trace.rate_samples(even, end, served, peaks=peaks)}

    async def write(self, tier, offset, words):
        try:
            self.chip.memory[tier].write(offset, np.ascontiguousarray(words, dtype="<u4"))
        except MemoryRangeError as e:
            raise ChipError(f"host write: {e}") from None

    async def read(self, tier, offset, nwords):
        try:
            return self.chip.memory[tier].read(offset, 4 * nwords).view("<u4").copy()
        except MemoryRangeError as e:
            raise ChipError(f"host read: {e}") from None

    def _program_bytes(self, program):
        """``program.words`` as little-endian bytes, made once per program (kept with the program to tell a
        reused id)."""
        known = self._programs.get(id(program))
        if known is None or known[0] is not program:
            if len(self._programs) >= 4096:
                self._programs.clear()
            known = self._programs[id(program)] = (program, np.asarray(program.words, dtype="<u4").tobytes())
        return known[1]

    def _load_pattern(self, tier, offset, nwords):
        """(memory words, ``fields``) of the Program Load pattern of ``nwords`` words at ``offset``, made once per
        place (the dict is shared: not to modify)."""
        key = (tier, offset, nwords)
        known = self._load_patterns.get(key)
        if known is None:
            if len(self._load_patterns) >= 4096:
                self._load_patterns.clear()
            wb = self.target.memory.word_bytes
            pattern = program_pattern(tier, offset, nwords, wb)
            known = self._load_patterns[key] = (pattern.words, pattern.fields(wb))
        return known

    async def load_program(self, program, tier, offset):
        return self.load_program_now(program, tier, offset)

    def program_loader(self):
        # load_program_now, unless a subclass overrides load_program (the runtime then awaits that).
        return self.load_program_now if type(self).load_program is ModelDevice.load_program else None

    def load_program_now(self, program, tier, offset):
        """:meth:`load_program`, not a coroutine."""
        # Per program and place: its bytes and its load pattern's words and fields, found once.
        known = self._loads.get(id(program))
        memory = self.chip.memory[tier]
        if known is None or known[0] is not program or known[1] != tier or known[2] != offset or \
                known[6] is not memory:
            if len(self._loads) >= 4096:
                self._loads.clear()
            expected = self._program_bytes(program)
            # Where the bitstream lies, range-checked once and compared in place on every load (None: the tier
            # keeps no flat array, and holds() reads it).
            place = memory.view(offset, len(expected))
            known = self._loads[id(program)] = (program, tier, offset, expected,
                                                *self._load_pattern(tier, offset, len(program.words)), memory,
                                                place, self.chip.stats[TIER_NAMES[tier]])
        _, _, _, expected, words, fields, _, place, counter = known
        # Every load compares the memory's words with the program's, as the loader checks the bitstream.
        if not (place.tobytes() == expected if place is not None else memory.holds(offset, expected)):
            raise ChipError(f"program load: the bitstream at {tier}:{offset:#x} is not the program's")
        self.loaded, self.resident = program, fields
        # The loader reads the bitstream's memory words through the tier's controller, as on the RTL.
        counter["reads"] += int(words)
        cycles = self.chip.load_program(program)
        self.now += cycles
        if not self._listing and self.chip.activity is not None:
            self._recorded([], [(0, cycles, tier, words)])
        return cycles

    def launcher(self, reads, writes):
        # ChipModel.launcher's replay of a known plan, which raises no MemoryRangeError (a base that takes a word
        # out of its tier has go return None, and execute then reports it) and records nothing.
        if self.loaded is None:
            return None
        found = self.chip.launcher(reads, writes)
        if found is None:
            return None
        ins, outs, run = found

        def go(read_bases, write_bases):
            if self.loaded is None or self._listing:
                return None
            cycles = run(read_bases, write_bases)
            if cycles is not None:
                self.now += cycles
            return cycles
        return ins, outs, go

    async def run_list(self, tier, offset, nwords, *, token, pos, programs):
        m, began = self.target.memory, self.now
        if 4 * nwords % m.word_bytes:
            raise ChipError(f"launch list: {nwords} words do not fill whole {m.word_bytes}-byte memory words")
        if not (0 <= token < 1 << 32 and 0 <= pos < 1 << 32):
            raise ChipError(f"launch list: token {token} and position {pos} must fit the 32-bit registers")
        try:
            self._listing = True
            return await self._run_list(tier, offset, nwords, token, pos, programs, began)
        except ChipError:
            # As on the RTL: after a failed list nothing counts as loaded.
            self.loaded = self.resident = None
            if self.chip.activity is not None:
                self.chip.activity[:] = []
            raise
        finally:
            self._listing = False

    async def _run_list(self, tier, offset, nwords, token, pos, programs, began):
        m = self.target.memory
        words = await self.read(tier, offset, nwords)
        entries = launch_list.decode(words, m, len(self.target.agcus))
        self.chip.count(tier, "reads", -(-4 * nwords // m.word_bytes))
        timing, kernels, loads, load_cycles = [], [], 0, 0
        for i, entry in enumerate(entries):
            program_cycles = None
            if entry.program is not None and entry.program.fields(m.word_bytes) != self.resident:
                at = (entry.program.tier, entry.program.base)
                if at not in programs:
                    raise ChipError(f"launch list entry {i}: no program at {TIER_NAMES[at[0]]}:{at[1]:#x}")
                try:
                    program_cycles = await self.load_program(programs[at], *at)
                except ChipError as e:
                    raise ChipError(f"launch list entry {i}: {e}") from None
                loads, load_cycles = loads + 1, load_cycles + program_cycles
            try:
                cycles = await self.execute(*entry.patterns(token, pos))
            except (ChipError, LaunchError) as e:
                raise ChipError(f"launch list entry {i}: {e}") from None
            kernels.append(cycles)
            words_of = record_words(header_layout()) + \
                (0 if entry.program is None else record_words(program_record_layout(m))) + \
                (len(entry.reads) + len(entry.writes)) * record_words(direction_record_layout(m))
            timing.append((words_of, program_cycles, cycles))
        starts = []
        total, launch = sequencer.list_cycles(timing, memory=m, tier=tier, starts=starts)
        self.now = began + total
        if self.chip.activity is not None:
            wb = m.word_bytes
            spans = [(load, program, tier, -(-4 * program // wb)) for (load, _), (_, program, _) in zip(starts, timing)
                     if load is not None]
            self._recorded([(start, cycles) for (_, start), cycles in zip(starts, kernels)], spans,
                           (tier, -(-4 * nwords // wb), max((s for _, s in starts), default=0)))
        return {"cycles": total, "kernel_cycles": sum(kernels), "program_load_cycles": load_cycles,
                "program_loads": loads, "entries": len(entries), "sequencer_cycles": launch}

    async def execute(self, reads, writes):
        if self.loaded is None:
            raise ChipError("execute before any program load")
        try:
            cycles, _ = self.chip.execute(reads, writes)
        except MemoryRangeError as e:
            raise ChipError(f"kernel: an AGCU pattern leaves its tier: {e}") from None
        except BaseException:
            if self.chip.activity is not None:
                self.chip.activity[:] = []          # nothing of a failed kernel reaches a trace
            raise
        self.now += cycles
        if not self._listing:
            self._recorded([(0, cycles)])
        return cycles

    async def copy(self, src_tier, src, dst_tier, dst, nbytes):
        if self.copy_end is not None:
            raise ChipError("copy: the copy engine is busy with a started copy; wait_copy first")
        cycles = await self._copy(src_tier, src, dst_tier, dst, nbytes)
        self.now += cycles
        return cycles

    async def start_copy(self, src_tier, src, dst_tier, dst, nbytes):
        """The copy's data moves at once (nothing may use either end until :meth:`wait_copy`); its time
        runs on the chip's clock beside later commands. The HBM bandwidth the copy takes from kernels is
        not modelled (a DDR -> HBM copy writes HBM at DDR's rate, an eighth of HBM's on the 4x8), and the
        tier counters count its words at once, where the RTL's count them as they move."""
        if self.copy_end is not None:
            raise ChipError("start_copy: the copy engine is busy with an earlier copy; wait_copy first")
        cycles = await self._copy(src_tier, src, dst_tier, dst, nbytes)
        self.copy_end, self.copy_cycles = self.now + cycles, cycles
        return None

    async def wait_copy(self):
        if self.copy_end is None:
            raise ChipError("wait_copy: no copy was started")
        waited = max(0, self.copy_end - self.now)
        self.now += waited
        self.copy_end = None
        return {"cycles": self.copy_cycles, "waited": waited}

    async def _copy(self, src_tier, src, dst_tier, dst, nbytes):
        m = self.target.memory
        if nbytes % m.word_bytes:
            raise ChipError(f"copy: {nbytes} bytes is not a whole number of {m.word_bytes}-byte memory words")
        try:
            data = self.chip.memory[src_tier].read(src, nbytes)
            self.chip.memory[dst_tier].write(dst, data)
        except MemoryRangeError as e:
            raise ChipError(f"copy: {e}") from None
        self.chip.count(src_tier, "reads", nbytes // m.word_bytes)
        self.chip.count(dst_tier, "writes", nbytes // m.word_bytes)
        return memory_units.copy_cycles(nbytes, m.tiers[src_tier], m.tiers[dst_tier], word_bytes=m.word_bytes)

    async def tier_stats(self):
        return {name: dict(counts) for name, counts in self.chip.stats.items()}
