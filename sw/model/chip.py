"""Fast model of the whole chip: kernels launched as on the RTL chip, on the tile and memory models.

:class:`ChipModel` offers the kernel-level commands of
:class:`sw.runtime.chip.ChipDriver`, synchronously: memory is two
:class:`FlatMemory` tiers, AGCU transfers move the same bytes as the RTL
(:mod:`sw.model.memory_units`), and the tile array runs on
:class:`ArrayModel`, so outputs are bit-identical to the RTL chip's.

Cycle estimate of a kernel, from the start pulse to the last AGCU done:

- every read stream starts at once; the words of all streams on one tier
  are served round-robin by that tier's :class:`TierModel`, so streams share
  its bandwidth and pay its latency; a stream reaches the fabric
  ``AGCU_READ_CYCLES`` after its words' responses;
- the array model runs on those arrival times;
- each output's last word is written back, done ``QUEUE_CYCLES + latency``
  later plus ``AGCU_WRITE_CYCLES``;
- a read whose pattern waits for a write of the kernel (``Pattern.after``)
  reads memory after that write has stored its words, and its stream is
  offered ``AGCU_GATE_CYCLES`` after the write is done, alone on its tier
  (with the other reads gated at that cycle): the array model then runs
  again on its data. A write that itself needs the gated read's data would
  never finish on the chip; the model refuses such a launch.
"""

import numpy as np

from hw.mem.params import TIER_NAMES
from sw.model import memory_units
from sw.model.array import ArrayModel
from sw.model.memory import FlatMemory, MemoryRangeError, SparseMemory, TierModel
from sw.errors import LaunchError

# Cycles between the start pulse and a first read request, and from a read
# response to its word being offered to the fabric (request register, response
# buffer); from an output's last word to its write request. Calibrated on the
# chip testbench's kernels (cosim/tb/test_chip.py checks the estimate).
AGCU_START_CYCLES = 2
AGCU_READ_CYCLES = 3
AGCU_WRITE_CYCLES = 3
# Cycles a read gated on a write starts after that write's done (the cycle the kernel's end counts for it),
# beyond the start path an ungated read pays from the start pulse: none. The chip unit's gated read-back
# (cosim/tb/test_device.py) is within 10% of the RTL with it.
AGCU_GATE_CYCLES = 0

# (memory parameters, each input's tier and words) -> arrivals: the timing is data-independent, so every
# model in the process (fused and unfused, a sweep's points) computes a launch's arrivals once.
_ARRIVALS = {}
# Built programs -> their ArrayModel, and (memory parameters, program, launch shapes) -> a launch's plan
# (ChipModel._plan): neither depends on a chip's memory contents, so every model in the process shares them.
_ARRAYS = {}
_PLANS = {}


# (tier parameters, word bytes, streams) -> the tier's model and its response cycles so far for that many
# streams offered round-robin from AGCU_START_CYCLES: service is causal, so fewer words are a prefix.
_SERVICE = {}


def _service(tier, word_bytes, streams, total):
    """Response cycles of the first ``total`` requests of ``streams`` streams offering a word each a cycle."""
    known = _SERVICE.get((tier, word_bytes, streams))
    if known is None:
        known = _SERVICE[(tier, word_bytes, streams)] = (TierModel(tier, word_bytes=word_bytes), [])
    model, times = known
    if len(times) < total:
        more = max(total, 2 * len(times))
        times.extend(model.service((AGCU_START_CYCLES + np.arange(len(times), more) // streams).tolist()))
    return times


def _array_model(prog):
    array = _ARRAYS.get(id(prog))
    if array is None or array.program is not prog:
        if len(_ARRAYS) >= 4096:
            _ARRAYS.clear()
        array = _ARRAYS[id(prog)] = ArrayModel(prog)
    return array


def _tier_memory(name, capacity):
    """A :class:`FlatMemory` tier, or a :class:`SparseMemory` one where the system will not reserve
    ``capacity`` bytes at once (a user's target with tens of GiB of DDR); both hold the same bytes."""
    try:
        return FlatMemory(name, capacity)
    except MemoryError:
        return SparseMemory(name, capacity)


class ChipModel:
    """The chip's memory and kernels on the fast models.

    Parameters
    ----------
    array_params, mem_params, agcus
        As given to :class:`hw.chip.Chip`.
    """

    def __init__(self, array_params, mem_params, agcus):
        self.array_params, self.mem_params, self.agcus = array_params, mem_params, tuple(agcus)
        self.memory = {index: _tier_memory(name, mem_params.tiers[index].capacity)
                       for index, name in TIER_NAMES.items()}
        self.program = None
        # Words each tier performed for kernels and copies, and refused: the controllers' counters.
        self.stats = {name: {"reads": 0, "writes": 0, "errors": 0} for name in TIER_NAMES.values()}
        # Per program: its host ports' AGCUs and the launch plans seen, by their patterns' shapes (see _replay).
        self._launches = {}
        self._rows = {}
        # Stream shapes -> arrivals, for this model's memory parameters (hashing them costs more than a lookup).
        self._known = {}

    def count(self, tier, what, words):
        """Add ``words`` to the ``what`` counter (``"reads"``, ``"writes"``, ``"errors"``) of ``tier``."""
        self.stats[TIER_NAMES[tier]][what] += int(words)

    def agcu_at(self, side, col):
        return self.agcus.index((side, col))

    def load_program(self, program):
        """Program Load of a built :class:`~sw.tile.kernel.Program`; returns the loader's cycles (one per word)."""
        self.program = program
        return len(program.words)

    def execute(self, reads, writes):
        """Run the loaded program with AGCU ``reads`` / ``writes`` (index -> Pattern, as the driver takes).

        Returns ``(cycles, outputs)``: the estimate and each host output's ``(data, last)``; the outputs
        are also written to memory where the write patterns say. A pattern with words outside its tier
        raises :class:`~sw.model.memory.MemoryRangeError` once the kernel has run, as the RTL reports it
        after ``kernel_done``: such words read as zeros and are not written.

        The timing and the kernel's plan depend on the patterns' tiers and loop nests, not on their bases
        or the data: a launch of the same shapes as an earlier one replays that one's plan.
        """
        if self.program is None:
            raise RuntimeError("execute before load_program")
        prog = self.program
        known = self._launches.get(id(prog))
        if known is None or known[0] is not prog:
            known = self._launches[id(prog)] = (prog, [self.agcu_at(p.side, p.col) for p in prog.host_inputs.values()],
                                                [self.agcu_at(p.side, p.col) for p in prog.host_outputs.values()], {})
        _, ins, outs, plans = known
        if all(k in reads for k in ins) and all(k in writes for k in outs):
            read_pats, write_pats = [reads[k] for k in ins], [writes[k] for k in outs]
            key = (tuple((p.tier, p.nest, p.bf16, p.after) for p in read_pats),
                   tuple((p.tier, p.nest) for p in write_pats))
            plan = plans.get(key)
            if plan is None:
                plan = _PLANS.get((self.mem_params, id(prog), key))
                if plan is not None and plan[0] is prog:
                    plans[key] = plan
                else:
                    plan = None
            if plan is not None:
                done = self._replay(plan, read_pats, write_pats)
                if done is not None:
                    return done
            cycles, outputs, plan = self._execute(reads, writes)
            if plan is not None:
                if len(plans) >= 1024:
                    plans.clear()
                if len(_PLANS) >= 4096:
                    _PLANS.clear()
                plans[key] = _PLANS[(self.mem_params, id(prog), key)] = plan
            return cycles, outputs
        return self._execute(reads, writes)[:2]

    def _execute(self, reads, writes):
        """:meth:`execute` step by step; returns ``(cycles, outputs, plan)``, the plan None where none can be made
        (a word outside its tier, a tier not kept in one array)."""
        prog, P, lanes = self.program, self.mem_params, self.array_params.lanes
        wb = P.word_bytes
        array = _array_model(prog)
        inputs, words_of, reports = {}, {}, {}

        def read(name, k, pat):
            tier = P.tiers[pat.tier]
            vectors, last, report = memory_units.transfer_read(self.memory[pat.tier], tier.capacity, pat.base,
                                                               pat.nest, lanes=lanes, word_bytes=wb, bf16=pat.bf16)
            reports[(k, "read")] = (report, pat)
            inputs[name] = (vectors, last)

        def write(name, k, pat, data):
            tier = P.tiers[pat.tier]
            reports[(k, "write")] = (memory_units.transfer_write(self.memory[pat.tier], tier.capacity, pat.base,
                                                                 pat.nest, data, word_bytes=wb), pat)

        gated = self._gates(prog, reads, writes)
        for name, port in prog.host_inputs.items():
            k, pat = self._pattern(reads, "input", name, port)
            read(name, k, pat)
            if name not in gated:
                words_of[name] = (pat.tier, pat.words)
        shape = tuple(sorted(words_of.items()))
        arrivals = self._known.get(shape)
        if arrivals is None:
            key = (P, shape)
            if key not in _ARRIVALS:
                _ARRIVALS[key] = self._arrivals(words_of)
            arrivals = self._known[shape] = _ARRIVALS[key]
        arrivals = dict(arrivals)
        if gated:
            # First run: the gated reads' data is stale and their timing a guess, but the writes they wait
            # for do not depend on them; store those writes, read the gated inputs again, time them after.
            arrivals.update(self._gated_arrivals(gated, {}))
            first = array.run_planned(inputs, arrivals=self._per_vector(arrivals, inputs))[0]
            outs = {out for _, _, out, _ in gated.values()}
            for out in sorted(outs):
                k, pat = self._pattern(writes, "output", out, prog.host_outputs[out])
                write(out, k, pat, first.outputs[out][0])
            for name, (k, pat, *_) in gated.items():
                read(name, k, pat)
            arrivals.update(self._gated_arrivals(gated, first.output_end))
        arrivals = self._per_vector(arrivals, inputs)
        run, array_plan = array.run_planned(inputs, arrivals=arrivals)
        if gated:
            self._check_gates(gated, first, run)
        end = max((e for _, e in arrivals.values()), default=0)
        for name, port in prog.host_outputs.items():
            k, pat = self._pattern(writes, "output", name, port)
            write(name, k, pat, run.outputs[name][0])
            end = max(end, run.output_end[name] + AGCU_WRITE_CYCLES + P.tiers[pat.tier].latency)
        for (k, direction), (report, pat) in sorted(reports.items()):
            self.count(pat.tier, "reads" if direction == "read" else "writes", report.words)
            self.count(pat.tier, "errors", report.addresses.size - report.words)
        for (k, direction), (report, pat) in sorted(reports.items()):
            if report.error:
                side, col = self.agcus[k]
                raise MemoryRangeError(f"AGCU {k} ({side}{col}) {direction}: word {report.error_word} of its "
                                       f"pattern at {pat.base:#x} lies outside {TIER_NAMES[pat.tier]}")
        return end + 1, run.outputs, self._plan(prog, array, array_plan, reads, writes, end + 1, gated)

    @staticmethod
    def _per_vector(arrivals, inputs):
        """``arrivals`` with each end no sooner than one vector a cycle allows (a bf16 word makes two)."""
        return {n: (first, max(end, first + len(inputs[n][0]) - 1)) for n, (first, end) in arrivals.items()}

    def _gates(self, prog, reads, writes):
        """Host input name -> (AGCU, pattern, host output it waits for, that write's tier latency) of each read
        whose pattern has ``after``.

        Raises LaunchError when the write it names is not one of this launch's host outputs.
        """
        outputs = {self.agcu_at(port.side, port.col): name for name, port in prog.host_outputs.items()}
        gated = {}
        for name, port in prog.host_inputs.items():
            k = self.agcu_at(port.side, port.col)
            pat = reads.get(k)
            if pat is None or pat.after is None:
                continue
            if pat.after not in outputs or pat.after not in writes:
                side, col = self.agcus[k]
                raise LaunchError(f"AGCU {k} ({side}{col}) read waits for AGCU {pat.after}'s write, which this "
                                  f"kernel does not run: the read would never start")
            gated[name] = (k, pat, outputs[pat.after], self.mem_params.tiers[writes[pat.after].tier].latency)
        return gated

    def _gated_arrivals(self, gated, output_end):
        """Arrivals of the gated inputs: each write's gated reads on one tier round-robin from the cycle after it
        is done (``output_end``: host output -> its last word's cycle; missing ones count as at once)."""
        groups = {}
        for name, (k, pat, out, latency) in gated.items():
            done = output_end[out] + AGCU_WRITE_CYCLES + latency + AGCU_GATE_CYCLES if out in output_end else 0
            groups.setdefault(done, {})[name] = (pat.tier, pat.words)
        arrivals = {}
        for done, words_of in groups.items():
            for name, (first, last) in self._arrivals(words_of).items():
                arrivals[name] = (first + done, last + done)
        return arrivals

    def _check_gates(self, gated, first, run):
        """Refuse a launch whose gating write needs the read that waits for it (its data or timing moved)."""
        for name, (k, pat, out, _) in gated.items():
            if first.output_end[out] != run.output_end[out] or \
                    not np.array_equal(first.outputs[out][0], run.outputs[out][0]):
                side, col = self.agcus[k]
                raise LaunchError(f"AGCU {k} ({side}{col}) read waits for AGCU {pat.after}'s write, which needs "
                                  f"that read's data: the kernel would never finish")

    def _plan(self, prog, array, array_plan, reads, writes, cycles, gated):
        """What a launch like this one (same program, tiers, loop nests and gates; any bases) repeats, or None.

        Only launches whose every word lies in its tier, with tiers kept in one array and writes to distinct
        words, have a plan: replaying it is then one slice or gather per read and one store per write.
        """
        P = self.mem_params
        sides = []
        for ports, patterns in ((prog.host_inputs, reads), (prog.host_outputs, writes)):
            side = []
            for name, port in ports.items():
                pat = patterns[self.agcu_at(port.side, port.col)]
                least, greatest, offsets, n, distinct = memory_units.nest_rows(pat.nest)
                if self._tier_rows(pat.tier) is None or not n or (patterns is writes and not distinct):
                    return None
                side.append((name, pat.tier, offsets, n, least, greatest, getattr(pat, "bf16", False)))
            sides.append(side)
        counts = {}
        for (direction, side) in (("reads", sides[0]), ("writes", sides[1])):
            for _, tier, _, n, *_ in side:
                counts[(TIER_NAMES[tier], direction)] = counts.get((TIER_NAMES[tier], direction), 0) + n
        inputs, outputs = list(prog.host_inputs), list(prog.host_outputs)
        gates = tuple((inputs.index(name), outputs.index(out)) for name, (_, _, out, _) in gated.items())
        return prog, sides[0], sides[1], array, array_plan, tuple(counts.items()), cycles, gates

    def _tier_rows(self, tier):
        """Tier ``tier`` as (capacity / word_bytes, word_bytes) bytes, or None when it is not kept in one array."""
        memory = self.memory[tier]
        known = self._rows.get(tier)
        if known is None or known[0] is not memory:
            P = self.mem_params
            known = self._rows[tier] = (memory, memory_units.tier_rows(memory, P.tiers[tier].capacity, P.word_bytes))
        return known[1]

    def _replay(self, plan, read_pats, write_pats):
        """``(cycles, outputs)`` of :meth:`execute` by ``plan``; None (nothing done) where a base takes a word out
        of its tier or a tier was replaced, for :meth:`_execute` to run and report."""
        _, reads, writes, array, array_plan, counts, cycles, gates = plan
        wb, lanes = self.mem_params.word_bytes, self.array_params.lanes
        starts = []
        for side, patterns in ((reads, read_pats), (writes, write_pats)):
            for (name, tier, offsets, n, least, greatest, bf16), pat in zip(side, patterns):
                rows = self._tier_rows(tier)
                row, rest = divmod(pat.base, wb)
                if rows is None or rest or row + least < 0 or row + greatest >= len(rows):
                    return None
                starts.append((rows, row))
        data = {}

        def read(i):
            name, tier, offsets, n, least, greatest, bf16 = reads[i]
            rows, row = starts[i]
            raw = rows[row + offsets:row + offsets + n].copy() if isinstance(offsets, int) else rows[row + offsets]
            data[name] = memory_units.as_vectors(raw, lanes, bf16)

        def write(i, run):
            name, tier, offsets, n, *_ = writes[i]
            rows, row = starts[len(reads) + i]
            flat = np.ascontiguousarray(np.asarray(run.outputs[name][0], dtype="<u4")).view(np.uint8).reshape(-1)
            words = flat[:n * wb].reshape(n, wb)
            if isinstance(offsets, int):
                rows[row + offsets:row + offsets + n] = words
            else:
                rows[row + offsets] = words

        for i in range(len(reads)):
            read(i)
        if gates:
            # As _execute: the writes gated reads wait for first, then those reads again.
            first = array.replay(array_plan, data)
            for i in sorted({w for _, w in gates}):
                write(i, first)
            for i, _ in gates:
                read(i)
        run = array.replay(array_plan, data)
        for i in range(len(writes)):
            write(i, run)
        for (tier, what), words in counts:
            self.stats[tier][what] += words
        return cycles, run.outputs

    def _pattern(self, patterns, what, name, port):
        """(AGCU index, its pattern) of host port ``name``; LaunchError when the launch gave it none."""
        k = self.agcu_at(port.side, port.col)
        if k not in patterns:
            direction = "read" if what == "input" else "write"
            raise LaunchError(f"host {what} {name!r} at {port.side}{port.col} (AGCU {k}) has no {direction} pattern")
        return k, patterns[k]

    def _arrivals(self, words_of):
        """(first, end) fabric arrival cycles of each input, streams on one tier served round-robin."""
        arrivals = {}
        for tier_index in TIER_NAMES:
            names = [n for n, (t, _) in words_of.items() if t == tier_index]
            if not names:
                continue
            counts = [words_of[n][1] for n in names]
            times = _service(self.mem_params.tiers[tier_index], self.mem_params.word_bytes, len(names), sum(counts))
            for k, n in enumerate(names):
                # Round r serves, in name order, every stream with more than r words: a stream's first word
                # is its rank in round 0, its last the words of all earlier rounds plus its rank in round c - 1.
                c = counts[k]
                last = sum(min(m, c - 1) for m in counts) + sum(1 for m in counts[:k] if m >= c)
                arrivals[n] = (times[k] + AGCU_READ_CYCLES, times[last] + AGCU_READ_CYCLES)
        return arrivals

