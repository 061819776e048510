"""On-chip launch sequencer: walks a launch list (``hw/mem/launch_list.py``) and launches its kernels itself.

The SN40L's hardware orchestration: the host writes a list of kernel launches
to memory once and starts the sequencer with one register write; for each
entry the sequencer does Program Load (skipped when the program is
resident), Argument Load (the AGCU patterns, bases stepped by the token and
the position) and Execute, with no host round trip between kernels, and
raises one done at the end. docs/chip.md, "Launch lists", has the timing.
"""

import enum

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from facts.bitstream import Status
from hw.mem.agcu import direction_status_layout, transfer_layout
from hw.mem.launch_list import (MAX_AGCUS, WORD_BITS, direction_record_layout, header_layout,
                                program_record_layout, record_words)
from hw.mem.params import MemParams
from hw.tile.clock_gate import check_clock_gate, gated_module
from hw.tile.streams import vector_stream

COUNTER_BITS = 32
ENTRY_BITS = 16


class Cause(enum.IntEnum):
    """Why the sequencer stopped with an error (``seq_status.cause``)."""

    NONE = 0
    LIST_ENDED = 1          # the list's words ran out before an entry marked final
    BAD_ENABLE = 2          # an entry enables an AGCU the chip lacks
    LIST_MEMORY = 3         # memory refused a word of the list (its pattern leaves the tier)
    PROGRAM_REFUSED = 4     # the array refused the entry's program, or memory refused a word of it
    MEMORY = 5              # an enabled AGCU direction of the entry's kernel saw an error response


class Phase(enum.IntEnum):
    """What the sequencer waits for (``seq_status.phase``)."""

    FETCH = 0               # the entry's records from the list
    PROGRAM = 1             # the entry's Program Load
    EXECUTE = 2             # the entry's kernel
    DRAIN = 3               # the rest of the list stream, after the final entry or an error


def sequencer_status_layout():
    """``seq_status``: busy, done, error, its cause, the phase and the entry it concerns."""
    return data.StructLayout({"busy": 1, "done": 1, "error": 1, "cause": 3, "phase": 2, "entry": ENTRY_BITS})


class Sequencer(wiring.Component):
    """Walks a launch list read through a one-lane AGCU (the list reader) and launches each entry's kernel.

    **List.** ``start`` (a pulse) starts the list reader on ``list`` and takes
    ``token`` and ``pos``; words arrive on ``words``, one 32-bit word a cycle,
    and are parsed in order (header, program record, direction records). An
    entry's direction records go, base stepped to ``base + token *
    token_stride + pos * pos_stride`` bytes, into ``reads`` / ``writes``; a
    stepped base outside ``[0, 2**addr_bits)`` becomes all ones, misaligned
    and beyond every tier, so each of its accesses is refused and none wraps.

    **Launch.** Entry ``i + 1`` is parsed while kernel ``i`` runs (an AGCU
    takes its pattern at the start pulse). Once kernel ``i`` is done (the
    cycle ``kernel_last`` is high suffices) and entry ``i + 1``'s header and
    program record are parsed, its Program Load starts unless the program is
    resident, while its direction records are still read; its kernel starts
    (``kernel_start``, ``kernel_enable``) once every record is parsed and the
    program is resident. After the final entry's kernel the rest of the list
    stream (padding) is consumed and ``done`` rises.

    **Resident program.** The record of the latest Program Load the array
    accepted, whoever issued it: the host's (``host_program``, passed to
    ``loader`` while the sequencer is idle) or the sequencer's. Any load that
    starts invalidates it; an accepted one sets it.

    **Errors.** A malformed list (``Cause.LIST_ENDED``, ``BAD_ENABLE``,
    ``LIST_MEMORY``), a refused program (``PROGRAM_REFUSED``) or a kernel with
    an error response (``MEMORY``) stops the sequencer: no further launch, the
    running kernel and Program Load finish, the list stream drains, then
    ``done`` rises with ``status.error``, ``cause`` and ``entry`` set.

    Parameters
    ----------
    params : MemParams
    agcus : int
        Kernel AGCUs the sequencer drives, 1 to ``MAX_AGCUS``.
    clock_gate : bool
        Run the sequencer's registers on a gated clock (:mod:`hw.tile.clock_gate`) that ticks only after
        a cycle with ``start``, a run under way, the parser out of its idle state, a Program Load started
        or in flight, or reset: every register changes only then, so it behaves as ungated, and an idle
        sequencer's registers (the host launching) stay still (its next-state logic still runs at every
        edge of ``clk``; docs/performance.md).

    Attributes
    ----------
    start : In(1)
    list : In(transfer_layout(params))
        The list's pattern in TLN words (``start`` ignored).
    token, pos : In(32)
        The step's token id and position.
    list_cfg : Out(transfer_layout(params))
        The list reader's read direction.
    list_status : In(direction_status_layout())
    words : In(vector_stream(1))
        The list reader's words.
    host_program : In(transfer_layout(params))
        The host's ``program`` register, its ``start`` the ``program_start`` pulse.
    loader : Out(transfer_layout(params))
        The program loader's read direction: the host's while idle, the sequencer's while busy.
    loader_status : In(direction_status_layout())
    config_busy : In(1)
    config_status : In(4)
    config_loads_ok, config_load_cycles : In(32)
        The array's configuration loader.
    active : Out(1)
        Busy: the chip takes kernel starts and AGCU patterns from here, not the registers.
    kernel_start : Out(1)
    kernel_enable : Out(2 * agcus)
    reads, writes : Out(ArrayLayout(transfer_layout(params), agcus))
    kernel_busy, kernel_last, kernel_error : In(1)
        The chip's kernel is running; it is in its last cycle (every enabled direction done); an
        enabled direction saw an error response.
    kernel_cycles : In(32)
        The running kernel's cycles so far (its total is this plus one in its last cycle).
    status : Out(sequencer_status_layout())
    enable : Out(2 * agcus)
        ``kernel_enable`` of the latest entry launched.
    cycles, kernel_total, program_cycles, entries, program_loads : Out(32)
        Start to done; the sum of the kernels' cycles; the sum of the array loader's cycles of its
        Program Loads; kernels completed; Program Loads issued.
    done : Out(1)
        The latest run has finished (cleared at the next start).
    """

    def __init__(self, params, *, agcus, clock_gate=True):
        if not isinstance(params, MemParams):
            raise ValueError(f"params must be a MemParams, not {params!r}")
        if not isinstance(agcus, int) or isinstance(agcus, bool) or not 1 <= agcus <= MAX_AGCUS:
            raise ValueError(f"agcus must be an integer in [1, {MAX_AGCUS}], not {agcus!r}")
        check_clock_gate(clock_gate)
        self.params, self.n, self.clock_gate = params, agcus, clock_gate
        transfer = transfer_layout(params)
        super().__init__({
            "start": In(1), "list": In(transfer), "token": In(32), "pos": In(32),
            "list_cfg": Out(transfer), "list_status": In(direction_status_layout()), "words": In(vector_stream(1)),
            "host_program": In(transfer), "loader": Out(transfer), "loader_status": In(direction_status_layout()),
            "config_busy": In(1), "config_status": In(4), "config_loads_ok": In(32), "config_load_cycles": In(32),
            "active": Out(1), "kernel_start": Out(1), "kernel_enable": Out(2 * agcus),
            "reads": Out(data.ArrayLayout(transfer, agcus)), "writes": Out(data.ArrayLayout(transfer, agcus)),
            "kernel_busy": In(1), "kernel_last": In(1), "kernel_error": In(1), "kernel_cycles": In(32),
            "status": Out(sequencer_status_layout()), "enable": Out(2 * agcus),
            **{name: Out(COUNTER_BITS) for name in ("cycles", "kernel_total", "program_cycles", "entries",
                                                    "program_loads")},
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        P, n = self.params, self.n
        transfer = transfer_layout(P)
        header, prog_layout, direction = header_layout(), program_record_layout(P), direction_record_layout(P)
        hw_, pw, dw = record_words(header), record_words(prog_layout), record_words(direction)
        rmax = max(hw_, pw, dw)

        running, done = Signal(), Signal()
        token, pos = Signal(32), Signal(32)
        error, cause, err_entry = Signal(), Signal(3), Signal(ENTRY_BITS)
        pentry, lentry = Signal(ENTRY_BITS), Signal(ENTRY_BITS)     # the entry being parsed / latest launched
        ours = Signal()             # the running kernel is the sequencer's
        last_started = Signal()     # the final entry's kernel has started
        loading = Signal()          # the sequencer's Program Load is in flight
        kenable = Signal(2 * n)
        begin = Signal()
        m.d.comb += [begin.eq(self.start & ~running), self.active.eq(running), self.done.eq(done),
                     self.list_cfg.eq(self.list), self.list_cfg.start.eq(begin), self.enable.eq(kenable)]

        def fail(why, entry):
            with m.If(~error):
                m.d.sync += [error.eq(1), cause.eq(why), err_entry.eq(entry)]

        # Parser: one list word a cycle into a shift register whose top words hold the latest record.
        buf = Signal(WORD_BITS * rmax)
        nxt = Cat(buf[WORD_BITS:], self.words.payload.data[0])
        record = lambda layout, words: data.View(layout, nxt[WORD_BITS * (rmax - words):][:layout.size])
        left = Signal(range(rmax + 1))
        enable, todo = Signal(2 * n), Signal(2 * n)
        has_program, final = Signal(), Signal()
        program = Signal(transfer)
        take, list_over, complete = Signal(), Signal(), Signal()
        m.d.comb += [take.eq(self.words.valid & self.words.ready),
                     list_over.eq(self.list_status.done & ~self.list_status.busy),
                     complete.eq(take & (left == 1))]
        with m.If(take):
            m.d.sync += [buf.eq(nxt), left.eq(left - 1)]

        # Launcher: Program Load as soon as the program record is parsed and the chip is free of kernels.
        kernel_free, resident_ok, want_load, want_start, stop = Signal(), Signal(), Signal(), Signal(), Signal()
        resident, resident_valid = Signal(transfer), Signal()
        pending, snapshot, in_flight, accepted = Signal(transfer), Signal(32), Signal(), Signal()

        with m.FSM(name="parser") as parser:
            with m.State("IDLE"):
                with m.If(begin):
                    m.d.sync += left.eq(hw_)
                    m.next = "HEADER"
            for state in ("HEADER", "PROGRAM", "DIRS"):
                with m.State(state):
                    m.d.comb += self.words.ready.eq(~error)
                    with m.If(error):
                        m.next = "DRAIN"
                    with m.Elif(take & self.list_status.error):
                        fail(Cause.LIST_MEMORY, pentry)
                    with m.Elif(~self.words.valid & list_over):
                        fail(Cause.LIST_ENDED, pentry)
                    with m.Elif(complete):
                        if state == "HEADER":
                            h = record(header, hw_)
                            e = h.enable[:2 * n]
                            # An enable naming an AGCU beyond the chip's is refused.
                            with m.If(h.enable[2 * n:].any() if 2 * n < WORD_BITS else Const(0)):
                                fail(Cause.BAD_ENABLE, pentry)
                            with m.Else():
                                m.d.sync += [enable.eq(e), todo.eq(e), has_program.eq(h.program),
                                             final.eq(h.final)]
                                with m.If(h.program):
                                    m.d.sync += left.eq(pw)
                                    m.next = "PROGRAM"
                                with m.Elif(e.any()):
                                    m.d.sync += left.eq(dw)
                                    m.next = "DIRS"
                                with m.Else():
                                    m.next = "READY"
                        elif state == "PROGRAM":
                            m.d.sync += program.eq(record(prog_layout, pw))
                            with m.If(todo.any()):
                                m.d.sync += left.eq(dw)
                                m.next = "DIRS"
                            with m.Else():
                                m.next = "READY"
                        else:
                            self._direction(m, record(direction, dw), todo, token, pos)
                            rest = (todo & (todo - 1))[:2 * n]
                            m.d.sync += [todo.eq(rest), left.eq(dw)]
                            with m.If(~rest.any()):
                                m.next = "READY"
            with m.State("READY"):
                with m.If(error):
                    m.next = "DRAIN"
                with m.Elif(want_start):
                    m.d.sync += [pentry.eq(pentry + 1), left.eq(hw_)]
                    with m.If(final):
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "HEADER"
            with m.State("DRAIN"):
                m.d.comb += self.words.ready.eq(1)
                with m.If(begin):
                    m.d.sync += left.eq(hw_)
                    m.next = "HEADER"
                with m.Elif(~running):
                    m.next = "IDLE"

        # The resident program: the latest load the array accepted, from the host or from here.
        loader_over = self.loader_status.done & ~self.loader_status.busy & ~self.config_busy
        m.d.comb += [
            accepted.eq((self.config_loads_ok != snapshot) & (self.config_status == Status.OK)
                        & ~self.loader_status.error),
            resident_ok.eq(resident_valid & (resident.as_value()[1:] == program.as_value()[1:])),
            kernel_free.eq(~self.kernel_busy | (self.kernel_last & ~self.kernel_error)),
            stop.eq(error | (last_started & ~ours)),
            # Nothing starts while anyone's Program Load is in flight.
            want_load.eq(running & ~stop & has_program & (parser.ongoing("DIRS") | parser.ongoing("READY"))
                         & ~resident_ok & ~loading & ~in_flight & kernel_free),
            want_start.eq(running & ~stop & parser.ongoing("READY") & (~has_program | resident_ok) & ~loading
                          & ~in_flight & kernel_free),
        ]
        with m.If(running):
            m.d.comb += [self.loader.eq(program), self.loader.start.eq(want_load)]
        with m.Else():
            m.d.comb += self.loader.eq(self.host_program)
        with m.If(self.loader.start & ~self.loader_status.busy):
            m.d.sync += [resident_valid.eq(0), in_flight.eq(1), pending.eq(self.loader),
                         snapshot.eq(self.config_loads_ok)]
        with m.Elif(in_flight & loader_over):
            m.d.sync += in_flight.eq(0)
            with m.If(accepted):
                m.d.sync += [resident_valid.eq(1), resident.eq(pending)]
            with m.If(loading):
                m.d.sync += [loading.eq(0), self.program_cycles.eq(self.program_cycles + self.config_load_cycles)]
                with m.If(~accepted):
                    fail(Cause.PROGRAM_REFUSED, pentry)
        with m.If(want_load):
            m.d.sync += [loading.eq(1), self.program_loads.eq(self.program_loads + 1)]

        # Execute: the chip's kernel logic, started the cycle the previous kernel ends.
        m.d.comb += [self.kernel_start.eq(want_start), self.kernel_enable.eq(enable)]
        with m.If(ours & self.kernel_last):
            m.d.sync += [ours.eq(0), self.kernel_total.eq(self.kernel_total + self.kernel_cycles + 1),
                         self.entries.eq(self.entries + 1)]
            with m.If(self.kernel_error):
                fail(Cause.MEMORY, lentry)
        with m.If(want_start):
            m.d.sync += [ours.eq(1), lentry.eq(pentry), kenable.eq(enable), last_started.eq(final)]

        finish = running & stop & ~ours & ~loading & parser.ongoing("DRAIN") & list_over
        with m.If(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(finish):
            m.d.sync += [running.eq(0), done.eq(1)]
        with m.If(begin):
            m.d.sync += [running.eq(1), done.eq(0), error.eq(0), cause.eq(0), err_entry.eq(0), pentry.eq(0),
                         lentry.eq(0), last_started.eq(0), kenable.eq(0), token.eq(self.token), pos.eq(self.pos)]
            m.d.sync += [getattr(self, name).eq(0) for name in ("cycles", "kernel_total", "program_cycles",
                                                                 "entries", "program_loads")]

        phase = Mux(loading, int(Phase.PROGRAM), Mux(ours, int(Phase.EXECUTE),
                                                      Mux(parser.ongoing("DRAIN"), int(Phase.DRAIN), int(Phase.FETCH))))
        m.d.comb += [
            self.status.busy.eq(running), self.status.done.eq(done), self.status.error.eq(error),
            self.status.cause.eq(cause), self.status.phase.eq(phase),
            self.status.entry.eq(Mux(error, err_entry, Mux(ours | parser.ongoing("DRAIN"), lentry, pentry))),
        ]
        if not self.clock_gate:
            return m
        # ``running`` implies the parser is out of IDLE (it leaves with ``begin``, returns once ``running`` fell);
        # the parser term lets DRAIN return to IDLE after ``done``. Without ``in_flight`` a host Program Load
        # ending while the sequencer is idle would be recorded at the next tick (a start or the next load) just
        # the same, as nothing reads it before then (docs/memory.md, "Clock-gate enables").
        en = self.start | running | ~parser.ongoing("IDLE") | self.loader.start | in_flight
        return gated_module(m, en, name="sequencer")

    def _direction(self, m, d, todo, token, pos):
        """A parsed direction record into the pattern of the lowest direction left in ``todo``, base stepped."""
        P, n = self.params, self.n
        addr = Signal(signed(max(P.addr_bits, 2 * 33) + 2))
        m.d.comb += addr.eq(d.transfer.base + Cat(token, Const(0, 1)).as_signed() * d.token_stride
                            + Cat(pos, Const(0, 1)).as_signed() * d.pos_stride)
        pattern = Signal(transfer_layout(P))
        # Outside the address range: all ones, misaligned, so every access is refused and none wraps.
        m.d.comb += [pattern.eq(d.transfer),
                     pattern.base.eq(Mux(addr[P.addr_bits:].any(), (1 << P.addr_bits) - 1, addr[:P.addr_bits]))]
        lowest = (todo & (~todo + 1))[:2 * n]
        for k in range(n):
            with m.If(lowest[2 * k]):
                m.d.sync += self.reads[k].eq(pattern)
            with m.If(lowest[2 * k + 1]):
                m.d.sync += self.writes[k].eq(pattern)
