"""Controller of one off-chip memory tier (HBM or DDR)."""

from amaranth import Cat, ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.mem import tln
from hw.mem.params import TIER_NAMES, TierParams

COUNTER_BITS = 48
# Cycles from a request's acceptance to its leaving the (buffered) queue when
# the controller is idle; the unloaded latency is this plus ``tier.latency``.
QUEUE_CYCLES = 2


class TokenBucket:
    """A beat may pass when a word's worth of link bandwidth has accrued.

    The bucket holds at most one beat's worth, so a link idle for a while
    gains no burst credit: it sustains exactly ``rate`` bytes per cycle.
    """

    def __init__(self, m, *, rate, word_bytes, name):
        self.gain, self.cost = rate.numerator, word_bytes * rate.denominator
        self.tokens = Signal(range(self.cost + self.gain + 1), init=self.cost, name=f"{name}_tokens")
        self.take = Signal(name=f"{name}_take")
        self.ready = self.tokens >= self.cost
        with m.If(self.take):
            m.d.sync += self.tokens.eq(self.tokens + self.gain - self.cost)
        with m.Elif(~self.ready):
            m.d.sync += self.tokens.eq(self.tokens + self.gain)


def stats_layout(addr_bits):
    return data.StructLayout({
        "cycles": COUNTER_BITS,
        "reads": COUNTER_BITS,
        "writes": COUNTER_BITS,
        "busy": COUNTER_BITS,
        "errors": 32,
        "first_error_addr": addr_bits,
    })


class MemController(wiring.Component):
    """One memory tier: request queue, bandwidth limit, latency, backing store.

    Requests queue in a FIFO of ``tier.queue_depth``. A token bucket lets one
    word leave the queue when a word's worth of bandwidth has accrued, so the
    tier sustains exactly ``tier.bytes_per_cycle``; a word that leaves is due
    ``tier.latency`` cycles later, when it is performed on the store and its
    response leaves. An address beyond the capacity or not word-aligned is
    not performed: its response has ``error`` set and zero data, ``errors``
    counts it and ``first_error_addr`` keeps the first such address.

    Parameters
    ----------
    tier : TierParams
    tier_index : int
        ``params.HBM`` or ``params.DDR``; selects the backing store file.
    word_bytes, addr_bits, tag_bits : int
        TLN word size, address width and the tag width of requests arriving here.

    Attributes
    ----------
    req : In(request stream)
    resp : Out(response stream)
    stats : Out(stats_layout)
        ``busy`` counts cycles in which a word left the queue.
    """

    def __init__(self, tier, *, tier_index, word_bytes, addr_bits, tag_bits):
        if not isinstance(tier, TierParams):
            raise TypeError(f"tier must be a TierParams, not {tier!r}")
        if TIER_NAMES.get(tier_index) != tier.name:
            raise ValueError(f"tier index {tier_index} does not name the {tier.name} tier")
        if tier.latency < 4:
            raise ValueError(f"{tier.name}: latency {tier.latency} is below the controller's own 4-cycle pipeline")
        if tier.capacity.bit_length() > addr_bits:
            raise ValueError(f"{tier.name}: capacity {tier.capacity} needs more than {addr_bits} address bits")
        self.tier, self.tier_index = tier, tier_index
        self.word_bytes, self.addr_bits, self.tag_bits = word_bytes, addr_bits, tag_bits
        # Words in flight at the full rate, plus the delay FIFO's own latency.
        self.delay_depth = -(-tier.latency * tier.bytes_per_cycle // word_bytes) + 4
        super().__init__({
            "req": In(tln.request_stream(word_bytes=word_bytes, addr_bits=addr_bits, tag_bits=tag_bits)),
            "resp": Out(tln.response_stream(word_bytes=word_bytes, tag_bits=tag_bits)),
            "stats": Out(stats_layout(addr_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        tier, wb = self.tier, self.word_bytes
        req_layout = tln.request_layout(word_bytes=wb, addr_bits=self.addr_bits, tag_bits=self.tag_bits)

        m.submodules.queue = queue = SyncFIFOBuffered(width=req_layout.size, depth=tier.queue_depth)
        m.d.comb += [queue.w_data.eq(self.req.payload), queue.w_en.eq(self.req.valid),
                     self.req.ready.eq(queue.w_rdy)]
        head = data.View(req_layout, queue.r_data)

        now = Signal(32)
        m.d.sync += now.eq(now + 1)

        due_layout = data.StructLayout({"req": req_layout, "due": 32})
        m.submodules.delay = delay = SyncFIFOBuffered(width=due_layout.size, depth=self.delay_depth)
        pending = data.View(due_layout, delay.r_data)

        bucket = TokenBucket(m, rate=tier.bytes_per_cycle, word_bytes=wb, name="bandwidth")
        issue = Signal()
        m.d.comb += [issue.eq(queue.r_rdy & delay.w_rdy & bucket.ready), bucket.take.eq(issue)]
        # ``latency`` counts from leaving the queue to a valid response; the
        # response register adds the last cycle.
        due = now + (tier.latency - 1)
        m.d.comb += [
            queue.r_en.eq(issue),
            delay.w_en.eq(issue),
            delay.w_data.eq(Cat(head.as_value(), due[:32])),
        ]

        out_valid = Signal()
        out_tag = Signal(self.tag_bits)
        out_write = Signal()
        out_error = Signal()
        reached = Signal()
        release = Signal()
        m.d.comb += [
            reached.eq((now - pending.due)[31] == 0),
            release.eq(delay.r_rdy & reached & (~out_valid | self.resp.ready)),
            delay.r_en.eq(release),
        ]

        addr = pending.req.addr
        misaligned = addr[:(wb - 1).bit_length()] != 0 if wb > 1 else Const(0)
        outside = (addr >> (tier.capacity.bit_length() - 1)) != 0
        bad = Signal()
        m.d.comb += bad.eq(misaligned | outside)

        rdata = Signal(8 * wb)
        m.submodules.store = Instance(
            "openrdu_store",
            p_TIER=self.tier_index, p_WORD_BYTES=wb, p_CAPACITY=tier.capacity, p_ADDR_BITS=self.addr_bits,
            i_clk=ClockSignal(), i_en=release & ~bad, i_we=pending.req.write, i_addr=addr,
            i_wdata=pending.req.data, o_rdata=rdata,
        )

        with m.If(release):
            m.d.sync += [out_valid.eq(1), out_tag.eq(pending.req.tag), out_write.eq(pending.req.write),
                         out_error.eq(bad)]
        with m.Elif(self.resp.ready):
            m.d.sync += out_valid.eq(0)
        m.d.comb += [
            self.resp.valid.eq(out_valid),
            self.resp.payload.data.eq(Mux(out_write | out_error, 0, rdata)),
            self.resp.payload.tag.eq(out_tag),
            self.resp.payload.write.eq(out_write),
            self.resp.payload.error.eq(out_error),
        ]

        stats = self.stats
        m.d.sync += stats.cycles.eq(stats.cycles + 1)
        with m.If(issue):
            m.d.sync += stats.busy.eq(stats.busy + 1)
        with m.If(release & ~bad):
            with m.If(pending.req.write):
                m.d.sync += stats.writes.eq(stats.writes + 1)
            with m.Else():
                m.d.sync += stats.reads.eq(stats.reads + 1)
        with m.If(release & bad):
            m.d.sync += stats.errors.eq(stats.errors + 1)
            with m.If(stats.errors == 0):
                m.d.sync += stats.first_error_addr.eq(addr)
        return m
