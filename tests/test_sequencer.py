"""The launch sequencer without a simulator: its constructor's checks, its registers, its timing on the fast model.

The RTL itself runs in the ``chip`` unit (cosim/tb/test_sequencer.py), which
also checks that the model's sequencing cycles equal the RTL's.
"""

import pytest

from hw.chip import chip_registers
from hw.mem.agcu import PEERS, transfer_layout
from hw.mem.launch_list import direction_record_layout, record_words
from hw.mem.params import HBM
from hw.mem.sequencer import Sequencer
from sw.layout import pack, unpack
from sw.loopnest import LoopNest
from sw.runtime import launch_list
from sw.runtime.chip import Pattern, gate_wait
from sw.model.sequencer import SEQ_DONE_CYCLES, SEQ_FIRST_WORD_CYCLES, SEQ_PROGRAM_CYCLES, list_cycles
from sw.target import CHIP

M = CHIP.memory
LATENCY = M.hbm.latency


@pytest.mark.parametrize("agcus", [0, 17, True, 2.0])
def test_sequencer_refuses_bad_agcu_counts(agcus):
    with pytest.raises(ValueError, match="agcus"):
        Sequencer(M, agcus=agcus)


def test_sequencer_registers_follow_the_others():
    names = [r.name for r in chip_registers(CHIP.array, M, CHIP.agcus)]
    first = names.index("seq_list")
    assert all(name.startswith("seq_") for name in names[first:]), "the sequencer's registers come last"
    assert not any(name.startswith("seq_") for name in names[:first])


def test_resident_kernels_run_back_to_back():
    one, _ = list_cycles([(27, None, 500)], memory=M, tier=HBM)
    assert one == SEQ_FIRST_WORD_CYCLES + LATENCY + 27 + 500 + SEQ_DONE_CYCLES
    # The second entry's 27 words are parsed while the first kernel runs: not one cycle between the kernels.
    two, launch = list_cycles([(27, None, 500), (27, None, 300)], memory=M, tier=HBM)
    assert two == one + 300 and launch == one - 500


def test_a_program_load_costs_latency_and_padded_words():
    resident, _ = list_cycles([(27, None, 500), (27, None, 300)], memory=M, tier=HBM)
    loaded, launch = list_cycles([(27, None, 500), (27, 114, 300)], memory=M, tier=HBM)
    # 114 bitstream words stream as 116: whole 16-byte memory words.
    assert loaded - resident == LATENCY + SEQ_PROGRAM_CYCLES + 116
    assert launch - (resident - 800) == LATENCY + SEQ_PROGRAM_CYCLES + 2


def test_a_list_parsed_slower_than_its_kernels_waits_for_its_records():
    fast, _ = list_cycles([(27, None, 10), (27, None, 10)], memory=M, tier=HBM)
    # Entry 1's parse starts the cycle after kernel 0 starts: its 27 words outlast a 10-cycle kernel.
    assert fast == SEQ_FIRST_WORD_CYCLES + LATENCY + 27 + 1 + 27 + 10 + SEQ_DONE_CYCLES


def test_a_gated_read_keeps_its_write_through_the_list_and_the_registers():
    """``Pattern.after`` rides the transfer record: the launch list's words, the AGCU registers, the same record
    widths (the direction records' word counts and the register offsets do not move)."""
    gated = Pattern.linear(HBM, 4096, 6, after=5)
    entry = launch_list.ListEntry(None, {1: launch_list.ListDirection(gated, 0, 64)},
                                  {5: launch_list.ListDirection(Pattern.linear(HBM, 4096, 6), 0, 64)})
    back = launch_list.decode(launch_list.encode([entry], M, len(CHIP.agcus)), M, len(CHIP.agcus))[0]
    assert back.reads[1].pattern.after == 5 and back.writes[5].pattern.after is None
    assert back.reads[1].at(0, 2).fields(M.word_bytes) == Pattern.linear(HBM, 4096 + 128, 6, after=5).fields(
        M.word_bytes)
    fields = pack(transfer_layout(M), gated.fields(M.word_bytes))
    assert unpack(transfer_layout(M), fields)["after"] == 6                 # AGCU 5's write: 5 + 1, 0 is none
    assert record_words(direction_record_layout(M)) == 9 and transfer_layout(M).size <= 7 * 32
    with pytest.raises(ValueError, match="after"):
        Pattern.linear(HBM, 0, 1, after=PEERS)
    with pytest.raises(ValueError, match="entry 0: AGCU 1's read waits for AGCU 5's write"):
        launch_list.encode([launch_list.ListEntry(None, entry.reads)], M, len(CHIP.agcus))


def test_a_lagged_read_keeps_its_lag_through_the_list_and_the_registers():
    """``Pattern.lag`` rides the transfer record after ``after``: encode and decode keep it on a looped gated read,
    the ``agcuK_read`` register holds it, and a lag without a gate is refused."""
    looped = LoopNest((6, 1, 1, 3), (1, 0, 0, 64))
    lagged = Pattern(HBM, 4096, looped, after=2, lag=1)
    entry = launch_list.ListEntry(None, {1: launch_list.ListDirection(lagged, 0, 64),
                                         3: launch_list.ListDirection(Pattern(HBM, 8192, looped, after=2), 16, 0)},
                                  {2: launch_list.ListDirection(Pattern(HBM, 4096 + 64 * 16, looped), 0, 64)})
    back = launch_list.decode(launch_list.encode([entry], M, len(CHIP.agcus)), M, len(CHIP.agcus))[0]
    wb = M.word_bytes
    assert back.reads[1].pattern.fields(wb) == lagged.fields(wb) and back.reads[1].pattern.lag == 1
    assert back.reads[3].pattern.lag == 0 and back.writes[2].pattern.lag == 0
    assert back.reads[1].at(0, 1).fields(wb) == Pattern(HBM, 4096 + 64, looped, after=2, lag=1).fields(wb)
    assert lagged.iterations == 3 and Pattern.linear(HBM, 0, 6).iterations == 1
    fields = unpack(transfer_layout(M), pack(transfer_layout(M), lagged.fields(M.word_bytes)))
    assert (fields["after"], fields["lag"]) == (3, 1)                      # AGCU 2 (2 + 1), lag 1
    with pytest.raises(ValueError, match="lag 1 needs pattern.after"):
        Pattern.linear(HBM, 0, 1, lag=1)
    with pytest.raises(ValueError, match="lag must be 0 or 1"):
        Pattern.linear(HBM, 0, 1, after=0, lag=2)


def test_a_stall_report_names_the_write_iteration_a_gated_read_waits_for():
    write = Pattern(HBM, 0, LoopNest((8, 1, 1, 4), (1, 0, 0, 8)))
    read = Pattern(HBM, 0, LoopNest((6, 1, 1, 4), (1, 0, 0, 8)), after=5)
    # 12 words read: iteration 2 is next; 16 written: iterations 0 and 1 complete, so lag 0 waits and lag 1 not.
    assert gate_wait(read, 12, write, 16) == (", waiting for AGCU 5's write to complete iteration 2 (2 of 4 "
                                              "complete) before iteration 2 of 4")
    assert gate_wait(Pattern(HBM, 0, read.nest, after=5, lag=1), 12, write, 16) == ""
    assert gate_wait(read, 24, write, 0) == ""                           # every word read: not held by the gate
    assert gate_wait(Pattern.linear(HBM, 0, 6, after=5), 0, Pattern.linear(HBM, 0, 8), 7) == \
        ", waiting for AGCU 5's write"
