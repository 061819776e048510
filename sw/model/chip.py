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
  later plus ``AGCU_WRITE_CYCLES``.
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

# (memory parameters, each input's tier and words) -> arrivals: the timing is data-independent, so every
# model in the process (fused and unfused, a sweep's points) computes a launch's arrivals once.
_ARRIVALS = {}


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
        self._arrays = {}
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
        """
        if self.program is None:
            raise RuntimeError("execute before load_program")
        prog, P, lanes = self.program, self.mem_params, self.array_params.lanes
        wb = P.word_bytes
        array = self._arrays.get(id(prog))
        if array is None or array.program is not prog:
            array = self._arrays[id(prog)] = ArrayModel(prog)
        inputs, words_of, reports = {}, {}, {}
        for name, port in prog.host_inputs.items():
            k, pat = self._pattern(reads, "input", name, port)
            tier = P.tiers[pat.tier]
            vectors, last, report = memory_units.transfer_read(self.memory[pat.tier], tier.capacity, pat.base,
                                                               pat.nest, lanes=lanes, word_bytes=wb, bf16=pat.bf16)
            reports[(k, "read")] = (report, pat)
            inputs[name] = (vectors, last)
            words_of[name] = (pat.tier, pat.words)
        shape = tuple(sorted(words_of.items()))
        arrivals = self._known.get(shape)
        if arrivals is None:
            key = (P, shape)
            if key not in _ARRIVALS:
                _ARRIVALS[key] = self._arrivals(words_of)
            arrivals = self._known[shape] = _ARRIVALS[key]
        # An AGCU offers at most one vector a cycle (a bf16 word makes two).
        arrivals = {n: (first, max(end, first + len(inputs[n][0]) - 1)) for n, (first, end) in arrivals.items()}
        run = array.run(inputs, arrivals=arrivals)
        end = max((e for _, e in arrivals.values()), default=0)
        for name, port in prog.host_outputs.items():
            k, pat = self._pattern(writes, "output", name, port)
            tier = P.tiers[pat.tier]
            data = run.outputs[name][0]
            reports[(k, "write")] = (memory_units.transfer_write(self.memory[pat.tier], tier.capacity, pat.base,
                                                                 pat.nest, data, word_bytes=wb), pat)
            end = max(end, run.output_end[name] + AGCU_WRITE_CYCLES + tier.latency)
        for (k, direction), (report, pat) in sorted(reports.items()):
            self.count(pat.tier, "reads" if direction == "read" else "writes", report.words)
            self.count(pat.tier, "errors", report.addresses.size - report.words)
        for (k, direction), (report, pat) in sorted(reports.items()):
            if report.error:
                side, col = self.agcus[k]
                raise MemoryRangeError(f"AGCU {k} ({side}{col}) {direction}: word {report.error_word} of its "
                                       f"pattern at {pat.base:#x} lies outside {TIER_NAMES[pat.tier]}")
        return end + 1, run.outputs

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
            model = TierModel(self.mem_params.tiers[tier_index], word_bytes=self.mem_params.word_bytes)
            total = sum(counts)
            times = model.service((AGCU_START_CYCLES + np.arange(total) // len(names)).tolist())
            for k, n in enumerate(names):
                # Round r serves, in name order, every stream with more than r words: a stream's first word
                # is its rank in round 0, its last the words of all earlier rounds plus its rank in round c - 1.
                c = counts[k]
                last = sum(min(m, c - 1) for m in counts) + sum(1 for m in counts[:k] if m >= c)
                arrivals[n] = (times[k] + AGCU_READ_CYCLES, times[last] + AGCU_READ_CYCLES)
        return arrivals

