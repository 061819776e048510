"""The fast model of a looped kernel (:mod:`sw.compiler.loop`): its body once per iteration.

A looped program (``Program.iterations`` = n > 1) runs every PMU's passes n times and walks n times the
outermost level of every AGCU pattern. What it computes is its body's (the program with each PMU's passes
divided by n) run n times in order, iteration i on the i-th outer pass of each pattern: a read that waits for
the previous iteration's write (``lag`` 1) finds it stored, since iteration i - 1 ran before; one that waits
for this iteration's write (lag 0) is gated inside the body's run, as any gated read of a kernel.

Timing: iteration 0 costs its body's cycles. Each later iteration starts when the previous one ends, its last
write (the value its lag-1 reads wait for) done; by then each read no write gates has up to the AGCU's
``agcu_outstanding`` words of the new iteration in its buffer (credits the previous iteration's consumers gave
back), fetched in the previous iteration's idle tier cycles as far as those suffice (:func:`_prefetched`), and
the body's run is timed with those words already there (``ChipModel.execute``'s ``held``).
"""

from dataclasses import replace

import numpy as np

from facts.loopnest import LEVELS
from hw.mem.params import TIER_NAMES
from sw.errors import LaunchError
from sw.loopnest import LoopNest

_BODIES = {}
_TIERS = {name: index for index, name in TIER_NAMES.items()}


def body_program(program):
    """``program`` with each PMU's passes divided by its ``iterations``: one pass of the loop (cached)."""
    known = _BODIES.get(id(program))
    if known is not None and known[0] is program:
        return known[1]
    n = program.iterations
    units = {}
    for name, unit in program.units.items():
        if unit.kind == "pmu":
            c = unit.config
            if c.write_passes % n or c.read_passes % n:
                raise LaunchError(f"looped kernel: PMU {name!r} runs {c.write_passes} write and {c.read_passes} read "
                                  f"passes, not a multiple of its {n} iterations")
            unit = replace(unit, config=replace(c, write_passes=c.write_passes // n, read_passes=c.read_passes // n))
        units[name] = unit
    body = replace(program, units=units, iterations=1)
    if len(_BODIES) >= 256:
        _BODIES.clear()
    _BODIES[id(program)] = (program, body)
    return body


def iteration_pattern(pattern, index, iterations, word_bytes, what):
    """The part of a looped kernel's AGCU ``pattern`` that iteration ``index`` moves, as a pattern of its own."""
    bounds, strides = pattern.nest.padded()
    if bounds[-1] != iterations:
        raise LaunchError(f"looped kernel of {iterations} iterations: {what}'s pattern runs its outer level "
                          f"{bounds[-1]} times")
    last = pattern.nest.last_level
    nest = LoopNest(bounds[:-1], strides[:-1], pattern.nest.offset,
                    None if last is None else min(last, LEVELS - 2))
    changes = dict(base=pattern.base + index * strides[-1] * word_bytes, nest=nest)
    if pattern.lag:
        # Iteration i - 1, which the read waits for, ran before: the body's read starts at once.
        changes.update(after=None, lag=0)
    return replace(pattern, **changes)


def execute_looped(chip, reads, writes):
    """:meth:`sw.model.chip.ChipModel.execute` of the looped program ``chip`` has loaded: ``(cycles, outputs)``,
    each host output's data and ``last`` flags concatenated over the iterations."""
    looped = chip.program
    n, P = looped.iterations, chip.mem_params
    body = body_program(looped)
    outputs, total, held = {}, 0, None
    recorded = None if chip.activity is None else len(chip.activity)
    # Reads that may run ahead into the next iteration (those no write of the loop gates): words they may fetch.
    free = {k: (p.tier, min(P.agcu_outstanding, p.words // n)) for k, p in reads.items() if p.after is None}
    try:
        chip.program = body
        for i in range(n):
            r = {k: iteration_pattern(p, i, n, P.word_bytes, f"AGCU {k} read") for k, p in reads.items()}
            w = {k: iteration_pattern(p, i, n, P.word_bytes, f"AGCU {k} write") for k, p in writes.items()}
            before = {tier: dict(counts) for tier, counts in chip.stats.items()}
            cycles, out = chip.execute(r, w, held=held)
            total += cycles
            for name, (data, last) in out.items():
                outputs.setdefault(name, []).append((data, last))
            if i + 1 < n:
                held = _prefetched(chip, free, cycles, before)
    except BaseException:
        if recorded is not None:
            del chip.activity[recorded:]
        raise
    finally:
        chip.program = looped
    if recorded is not None:
        chip.activity[recorded:] = [_merged(chip.activity[recorded:], total, P)]
    return total, {name: (np.concatenate([d for d, _ in parts]), np.concatenate([l for _, l in parts]))
                   for name, parts in outputs.items()}


def _prefetched(chip, free, cycles, before):
    """AGCU -> words of the next iteration each ungated read has in its buffer when that iteration starts: what
    ``free`` (AGCU -> (tier, words)) allows it, its credits' worth, scaled down on a tier whose idle cycles in
    the iteration just run (``cycles`` less the words its controller moved, at its peak rate) could not have
    fetched them all."""
    P = chip.mem_params
    held = {}
    for index, name in TIER_NAMES.items():
        mine = {k: words for k, (tier, words) in free.items() if tier == index}
        if not mine:
            continue
        moved = sum(chip.stats[name][what] - before[name][what] for what in ("reads", "writes"))
        per_word = float(P.word_bytes / P.tiers[index].bytes_per_cycle)
        idle = max(0.0, cycles - moved * per_word)
        scale = min(1.0, idle / (sum(mine.values()) * per_word)) if sum(mine.values()) else 0.0
        held.update({k: int(words * scale) for k, words in mine.items()})
    return held


def _merged(iterations, total, mem_params):
    """The activity records of a looped kernel's iterations (``ChipModel.activity``) as one kernel's: each
    iteration's spans moved by the cycles of those before it and tagged with its index. The words an
    iteration starts with in its AGCUs' buffers (``held``) become ``read ahead`` streams of the iteration
    before, at the tier's peak rate up to its end: fetched in its idle tier cycles with the credits its
    consumers gave back (as :func:`_prefetched` has it)."""
    units, streams, words, at = [], [], {}, 0
    for i, record in enumerate(iterations):
        ahead = {}
        for agcu, held in sorted(record.get("held", {}).items()):
            before = [s for s in streams if s["agcu"] == agcu and s["direction"] == "read" and s["iteration"] == i - 1]
            if before:
                ahead.setdefault(before[-1]["tier"], []).append((before[-1], held))
        for tier, reads in ahead.items():
            per_word = float(mem_params.word_bytes / mem_params.tiers[_TIERS[tier]].bytes_per_cycle)
            times = _idle_slots(np.concatenate(words.get(tier, [np.zeros(0, np.int64)])), at,
                                sum(held for _, held in reads), per_word)
            words.setdefault(tier, []).append(times)
            start = int(times[0]) if len(times) else at
            for read, held in reads:
                streams.append(dict(read, direction="read ahead", words=held, start=start, end=at, served=True))
        for unit in record["units"]:
            units.append(dict(unit, start=unit["start"] + at, end=unit["end"] + at, iteration=i))
        for stream in record["streams"]:
            streams.append(dict(stream, start=stream["start"] + at, end=stream["end"] + at, iteration=i))
        for tier, times in record["words"].items():
            words.setdefault(tier, []).append(times + at)
        at += record["cycles"]
    return {"cycles": total, "units": units, "streams": streams,
            "words": {tier: np.concatenate(parts) for tier, parts in words.items()}}


def _idle_slots(busy, end, n, per_word, window=1000):
    """Cycles for ``n`` more words of a tier that serves a word every ``per_word`` cycles and served words at
    ``busy`` cycles: the free capacity of each ``window`` before ``end``, the latest first."""
    out, hi = [], end
    while n > 0 and hi > 0:
        lo = max(hi - window, 0)
        used = int(np.count_nonzero((busy >= lo) & (busy < hi)))
        free = min(n, max(int((hi - lo) / per_word) - used, 0))
        if free:
            out.append(lo + (np.arange(free) * (hi - lo)) // free)
            n -= free
        hi = lo
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)
