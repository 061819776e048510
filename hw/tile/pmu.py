"""Pattern Memory Unit: banked scratchpad with affine read and write address generators.

See docs/pmu.md for the behaviour and docs/tile-array.md for the port contract.
"""

import functools
from amaranth import Module, Signal, Array, Mux, Cat, Const, signed
from amaranth.lib import data, enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from facts.loopnest import COUNT_BITS, LAST_LEVEL_BITS, LEVELS
from hw.loopnest import LoopNestCounter
from .params import ArrayParams
from .streams import scalar_stream, vector_stream

MAX_BUFFERS = 4
PASS_BITS = 16
READS_PER_FILL_BITS = 8
# Signed width of an address being generated: wide enough that no pattern with
# fields in range (a 32-bit runtime base, a capacity of up to 2**21 words, four
# levels of 2**16 iterations) overflows, so an out-of-range address is always
# seen as one and never wraps back in.
GEN_ADDR_BITS = 48


def addr_bits(params):
    """Bits of a word address inside one PMU."""
    return (params.pmu_words - 1).bit_length()


def pmu_pattern_layout(params):
    """Configuration record of one address generator (see facts/loopnest.py for the nest).

    ``bounds[k]`` iterations (>= 1) of level k, which adds ``strides[k]`` per
    iteration; ``offset`` is added to every address; ``runtime_base`` takes a
    base per pass from the scalar input; ``last_level`` k marks the iteration
    where levels 0..k all finish, ``LAST_NEVER`` (4..7) marks none.
    """
    a = addr_bits(params)
    return data.StructLayout({
        "bounds": data.ArrayLayout(COUNT_BITS, LEVELS),
        "strides": data.ArrayLayout(signed(a + 1), LEVELS),
        "offset": a,
        "runtime_base": 1,
        "last_level": LAST_LEVEL_BITS,
    })


class PmuReadMode(enum.Enum, shape=2):
    """What one read address returns: a row, a column of ``lanes`` rows, or one word on every lane."""

    ROW = 0
    COLUMN = 1
    BROADCAST = 2


@functools.lru_cache(maxsize=64)
def pmu_config_layout(params):
    """Configuration record of a PMU; see docs/pmu.md for each field."""
    pattern = pmu_pattern_layout(params)
    return data.StructLayout({
        "enable": 1,
        "write": pattern,
        "read": pattern,
        "read_mode": PmuReadMode,
        "stripe": 1,
        "buffers": 3,
        "buffer_words": addr_bits(params),
        "reads_per_fill": READS_PER_FILL_BITS,
        "write_passes": PASS_BITS,
        "read_passes": PASS_BITS,
    })


def _wrap_inc(value, limit):
    """``value + 1`` modulo ``limit``, where a limit of 0 or 1 gives 0."""
    return Mux(value + 1 >= limit, 0, value + 1)


class Pmu(wiring.Component):
    """Pattern Memory Unit: ``lanes`` banks, one vector write and one vector read per cycle.

    Parameters
    ----------
    params : ArrayParams

    Attributes
    ----------
    vi0 : In(vector_stream)
        Write data, one row per vector at the write generator's addresses.
    si0, si1 : In(scalar_stream)
        Runtime base of each write / read pass, when the pattern enables it.
    vo0 : Out(vector_stream)
        Read data, one cycle after the read address is issued.
    vi1, vi2 : In(vector_stream); so0 : Out(scalar_stream)
        Unused; never ready and never valid.
    cfg : In(pmu_config_layout(params))
        Active configuration; while ``enable`` is low the pass and buffer
        state is held at its start.
    busy_cycles, stall_cycles, reads, writes, errors : Out(32)
        Cycles with a vi0 or vo0 transfer; cycles with neither while a stream
        held the unit up (vi0 empty during a write pass, vo0 full, a runtime
        base missing); vectors read; vectors written; accesses dropped
        because their address was out of range or misaligned.
    """

    def __init__(self, params):
        if not isinstance(params, ArrayParams):
            raise ValueError(f"params must be an ArrayParams, not {params!r}")
        self.params = params
        vector = vector_stream(params.lanes)
        super().__init__({
            "vi0": In(vector), "vi1": In(vector), "vi2": In(vector),
            "si0": In(scalar_stream()), "si1": In(scalar_stream()),
            "vo0": Out(vector), "so0": Out(scalar_stream()),
            "cfg": In(pmu_config_layout(params)),
            "busy_cycles": Out(32), "stall_cycles": Out(32),
            "reads": Out(32), "writes": Out(32), "errors": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        lanes = p.lanes
        lane_bits = (lanes - 1).bit_length()
        row_bits = (p.pmu_bank_words - 1).bit_length()
        cfg = self.cfg

        banks = []
        for b in range(lanes):
            mem = Memory(shape=32, depth=p.pmu_bank_words, init=[])
            m.submodules[f"bank{b}"] = mem
            banks.append((mem.write_port(), mem.read_port(domain="sync")))

        stride_bits = addr_bits(p) + 1
        m.submodules.wag = wag = LoopNestCounter(stride_bits=stride_bits, addr_bits=GEN_ADDR_BITS)
        m.submodules.rag = rag = LoopNestCounter(stride_bits=stride_bits, addr_bits=GEN_ADDR_BITS)
        m.d.comb += [wag.counts.eq(cfg.write.bounds), wag.strides.eq(cfg.write.strides),
                     rag.counts.eq(cfg.read.bounds), rag.strides.eq(cfg.read.strides)]
        # last_level k marks where levels 0..k finish; LAST_NEVER and above select a zero.
        r_last = Cat(rag.ends, Const(0, (1 << LAST_LEVEL_BITS) - LEVELS)).bit_select(cfg.read.last_level, 1)

        # Buffer handshake: bit b of `full` is set by the end of a write pass
        # into buffer b and cleared by the last read pass of that fill. Both
        # sides see this cycle's updates, so passes chain without a bubble.
        full = Signal(MAX_BUFFERS)
        full_next = Signal(MAX_BUFFERS)

        w_active = Signal()
        w_passes = Signal(PASS_BITS)
        w_buf = Signal(2)
        w_buf_next = Signal(2)
        w_fire = Signal()
        w_end = Signal()
        w_can = Signal()
        w_load = Signal()

        r_active = Signal()
        r_passes = Signal(PASS_BITS)
        r_buf = Signal(2)
        r_buf_next = Signal(2)
        r_fill_count = Signal(READS_PER_FILL_BITS)
        r_release = Signal()
        r_issue = Signal()
        r_end = Signal()
        r_can = Signal()
        r_load = Signal()

        o_valid = Signal()
        advance = Signal()

        def buffer_base(index):
            return index * cfg.buffer_words

        def more(done, limit):
            return (limit == 0) | (done != limit)

        m.d.comb += [
            w_fire.eq(w_active & self.vi0.valid),
            w_end.eq(w_fire & wag.final),
            advance.eq(~o_valid | self.vo0.ready),
            r_issue.eq(r_active & advance),
            r_end.eq(r_issue & rag.final),
            full_next.eq((full | Mux(w_end, 1 << w_buf, 0)) & ~Mux(r_end & r_release, 1 << r_buf, 0)),
            w_can.eq(cfg.enable & (~w_active | w_end) & more(w_passes, cfg.write_passes)
                     & ~full_next.bit_select(w_buf_next, 1)),
            w_load.eq(w_can & (~cfg.write.runtime_base | self.si0.valid)),
            self.si0.ready.eq(w_can & cfg.write.runtime_base),
            r_can.eq(cfg.enable & (~r_active | r_end) & more(r_passes, cfg.read_passes)
                     & full_next.bit_select(r_buf_next, 1)),
            r_load.eq(r_can & (~cfg.read.runtime_base | self.si1.valid)),
            self.si1.ready.eq(r_can & cfg.read.runtime_base),
            self.vi0.ready.eq(w_active),
            wag.step.eq(w_fire),
            wag.load.eq(w_load),
            wag.base.eq(cfg.write.offset + buffer_base(w_buf_next)
                        + Mux(cfg.write.runtime_base, self.si0.payload.data, 0)),
            rag.step.eq(r_issue),
            rag.load.eq(r_load),
            rag.base.eq(cfg.read.offset + buffer_base(r_buf_next)
                        + Mux(cfg.read.runtime_base, self.si1.payload.data, 0)),
        ]
        m.d.sync += full.eq(full_next)

        with m.If(w_load):
            m.d.sync += [
                w_active.eq(1),
                w_passes.eq(w_passes + 1),
                w_buf.eq(w_buf_next),
                w_buf_next.eq(_wrap_inc(w_buf_next, cfg.buffers)),
            ]
        with m.Elif(w_end):
            m.d.sync += w_active.eq(0)

        with m.If(r_load):
            fill_done = r_fill_count + 1 >= cfg.reads_per_fill
            m.d.sync += [
                r_active.eq(1),
                r_passes.eq(r_passes + 1),
                r_buf.eq(r_buf_next),
                r_release.eq(fill_done),
                r_fill_count.eq(Mux(fill_done, 0, r_fill_count + 1)),
                r_buf_next.eq(Mux(fill_done, _wrap_inc(r_buf_next, cfg.buffers), r_buf_next)),
            ]
        with m.Elif(r_end):
            m.d.sync += r_active.eq(0)

        # Write datapath: row r goes to bank (c + r) mod lanes when striped.
        w_addr = wag.addr
        w_row = w_addr[lane_bits:lane_bits + row_bits]
        w_ok = (w_addr >= 0) & (w_addr < p.pmu_words) & (w_addr[:lane_bits] == 0)
        w_rot = Mux(cfg.stripe, w_row[:lane_bits], 0)
        w_lanes = Array(self.vi0.payload.data[lane] for lane in range(lanes))
        for b, (wport, _) in enumerate(banks):
            m.d.comb += [
                wport.addr.eq(w_row),
                wport.data.eq(w_lanes[(b - w_rot)[:lane_bits]]),
                wport.en.eq(w_fire & w_ok),
            ]

        # Read datapath. With k = (row + column) mod lanes under the stripe,
        # lane l of a row or column read comes from bank (l + k) mod lanes and
        # a broadcast comes from bank k; a column read addresses bank b at
        # row + ((b - k) mod lanes).
        r_addr = rag.addr
        is_column = cfg.read_mode == PmuReadMode.COLUMN
        r_row = r_addr[lane_bits:lane_bits + row_bits]
        r_col = r_addr[:lane_bits]
        extent = Mux(is_column, (lanes - 1) * lanes, 0)
        r_ok = ((r_addr >= 0) & (r_addr + extent < p.pmu_words)
                & ~((cfg.read_mode == PmuReadMode.ROW) & (r_col != 0)))
        r_rot = (Mux(cfg.stripe, r_row[:lane_bits], 0) + r_col)[:lane_bits]
        for b, (_, rport) in enumerate(banks):
            m.d.comb += [
                rport.addr.eq(r_row + Mux(is_column, (b - r_rot)[:lane_bits], 0)),
                rport.en.eq(r_issue),
            ]

        o_last = Signal()
        o_zero = Signal()
        o_rot = Signal(lane_bits)
        o_broadcast = Signal()
        with m.If(advance):
            m.d.sync += o_valid.eq(r_issue)
        with m.If(r_issue):
            m.d.sync += [
                o_last.eq(r_last),
                o_zero.eq(~r_ok),
                o_rot.eq(r_rot),
                o_broadcast.eq(cfg.read_mode == PmuReadMode.BROADCAST),
            ]
        r_banks = Array(rport.data for _, rport in banks)
        for lane in range(lanes):
            select = Mux(o_broadcast, o_rot, (o_rot + lane)[:lane_bits])
            m.d.comb += self.vo0.payload.data[lane].eq(Mux(o_zero, 0, r_banks[select]))
        m.d.comb += [self.vo0.valid.eq(o_valid), self.vo0.payload.last.eq(o_last)]

        with m.If(~cfg.enable):
            m.d.sync += [
                full.eq(0), w_active.eq(0), w_passes.eq(0), w_buf.eq(0), w_buf_next.eq(0),
                r_active.eq(0), r_passes.eq(0), r_buf.eq(0), r_buf_next.eq(0), r_fill_count.eq(0),
                r_release.eq(0), o_valid.eq(0),
            ]

        moved_out = self.vo0.valid & self.vo0.ready
        busy = w_fire | moved_out
        held_up = ((w_active & ~self.vi0.valid) | (o_valid & ~self.vo0.ready)
                   | (self.si0.ready & ~self.si0.valid) | (self.si1.ready & ~self.si1.valid))
        m.d.sync += [
            self.busy_cycles.eq(self.busy_cycles + busy),
            self.stall_cycles.eq(self.stall_cycles + (~busy & held_up)),
            self.reads.eq(self.reads + moved_out),
            self.writes.eq(self.writes + w_fire),
            self.errors.eq(self.errors + (w_fire & ~w_ok) + (r_issue & ~r_ok)),
        ]
        return m
