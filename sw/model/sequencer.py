"""Timing of the on-chip sequencer (``hw/mem/sequencer.py``) on the fast model.

The sequencer reads its launch list through a one-lane AGCU and parses one
32-bit word a cycle. Entry ``i + 1``'s records are parsed while kernel ``i``
runs (from the cycle after its start pulse); its Program Load starts once
kernel ``i`` is in its last cycle and its header and program record are
parsed (its direction records may still be arriving); its kernel starts
once every record is parsed, the program is resident and kernel ``i`` is in
its last cycle. A list whose records are parsed in time therefore runs its
kernels back to back, with no cycle between them. The constants are the
RTL's, checked by the ``chip`` unit's sequencer test (cosim/tb/test_sequencer.py).
"""

from hw.mem.launch_list import header_layout, program_record_layout, record_words
from sw.model.chip import AGCU_READ_CYCLES, AGCU_START_CYCLES

# The start pulse to the cycle the first list word is taken: the list reader's start and read path, beyond
# the tier's latency. A Program Load's first word reaches the array as many cycles after its start.
SEQ_FIRST_WORD_CYCLES = AGCU_START_CYCLES + AGCU_READ_CYCLES + 1
# A Program Load's start pulse to its kernel's start pulse, beyond the tier's latency and the bitstream's
# words padded to whole memory words (the loader streams the padding too): the first word's path, the
# loader's done seen and the program found resident.
SEQ_PROGRAM_CYCLES = SEQ_FIRST_WORD_CYCLES + 1
# The final kernel's last cycle to the sequencer's done.
SEQ_DONE_CYCLES = 1


def list_cycles(entries, *, memory, tier, starts=None):
    """Cycles from the start pulse to the sequencer's done for a list's ``entries``.

    Parameters
    ----------
    entries : sequence of (int, int or None, int)
        Per entry: its 32-bit words in the list, its Program Load cycles
        (the array loader's, one per bitstream word; None when the program
        is resident and the load is skipped), its kernel cycles.
    memory : hw.mem.params.MemParams
    tier : int
        The tier holding the list (and, as assumed here, the programs).
    starts : list, optional
        Each entry appends to it ``(load, kernel)``: the cycles (from the start pulse) its Program Load
        starts (None when skipped) and its kernel starts.

    Returns
    -------
    (total, launch) : int, int
        All cycles, and those spent neither in kernels nor in Program Loads:
        what sequencing costs.
    """
    latency = memory.tiers[tier].latency
    lead = record_words(header_layout()) + record_words(program_record_layout(memory))   # then a load may start
    per_word = memory.word_bytes // 4
    first = SEQ_FIRST_WORD_CYCLES + latency       # the cycle the entry's first word is taken
    last = None                                   # the previous kernel's last cycle: the next may start in it
    busy = 0
    for words, program, kernel in entries:
        start, load = first + words, None
        if program is not None:
            load = first + lead if last is None else max(first + lead, last)
            start = max(start, load + latency + SEQ_PROGRAM_CYCLES + -(-program // per_word) * per_word)
            busy += program
        if last is not None:
            start = max(start, last)
        if starts is not None:
            starts.append((load, start))
        last = start + kernel
        busy += kernel
        first = start + 1
    total = last + SEQ_DONE_CYCLES
    return total, total - busy
