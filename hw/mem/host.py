"""The host port: an AXI4 slave for frontdoor transfers into HBM and DDR.

The host (a PCIe-like link, below DDR bandwidth) writes and reads the memory
tiers through one TLN requester port. An AXI byte address is the TLN byte
address with one more bit on top that picks the tier: 0 HBM, 1 DDR.

The AXI ports are flat signals named as AXI4 names them, with the prefix
``s_axi_`` (``s_axi_awaddr``, ``s_axi_wdata``, ...), so a top-level design
that forwards them under the same names (see :func:`forward`) is found by
cocotbext-axi's ``AxiBus.from_prefix(dut, "s_axi")``.
"""

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.mem import tln
from hw.mem.controller import COUNTER_BITS, TokenBucket
from hw.mem.params import MemParams

RESP_OKAY, RESP_SLVERR, RESP_DECERR = 0, 2, 3
BURST_INCR = 1
# Cycles a TLN read spends outside the tier's own latency (controller queue,
# crossbar, response register), covered by the read buffer.
_READ_OVERHEAD = 8


def axi4_slave_members(*, id_bits, addr_bits, data_bytes, prefix="s_axi"):
    """Flat AXI4 slave ports (INCR bursts; no lock, cache, prot, qos, region or user signals).

    Returns a dict of member name to ``In``/``Out``, seen from the slave.
    """
    p = f"{prefix}_"
    return {
        f"{p}awid": In(id_bits), f"{p}awaddr": In(addr_bits), f"{p}awlen": In(8), f"{p}awsize": In(3),
        f"{p}awburst": In(2), f"{p}awvalid": In(1), f"{p}awready": Out(1),
        f"{p}wdata": In(8 * data_bytes), f"{p}wstrb": In(data_bytes), f"{p}wlast": In(1),
        f"{p}wvalid": In(1), f"{p}wready": Out(1),
        f"{p}bid": Out(id_bits), f"{p}bresp": Out(2), f"{p}bvalid": Out(1), f"{p}bready": In(1),
        f"{p}arid": In(id_bits), f"{p}araddr": In(addr_bits), f"{p}arlen": In(8), f"{p}arsize": In(3),
        f"{p}arburst": In(2), f"{p}arvalid": In(1), f"{p}arready": Out(1),
        f"{p}rid": Out(id_bits), f"{p}rdata": Out(8 * data_bytes), f"{p}rresp": Out(2), f"{p}rlast": Out(1),
        f"{p}rvalid": Out(1), f"{p}rready": In(1),
    }


def forward(m, outer, inner, members):
    """Connect flat ports ``members`` of ``inner`` to the same-named ports of ``outer``.

    For a top level that re-exports a sub-component's flat bus under the
    same names: inputs flow in, outputs flow out.
    """
    for name, member in members.items():
        if member.flow == wiring.In:
            m.d.comb += getattr(inner, name).eq(getattr(outer, name))
        else:
            m.d.comb += getattr(outer, name).eq(getattr(inner, name))


class _Prefixed:
    """``bus.awaddr`` for ``component.s_axi_awaddr``."""

    def __init__(self, component, prefix):
        self._component, self._prefix = component, prefix

    def __getattr__(self, name):
        return getattr(self._component, f"{self._prefix}_{name}")


def host_stats_layout():
    return data.StructLayout({"bytes_written": COUNTER_BITS, "bytes_read": COUNTER_BITS, "busy": COUNTER_BITS})


class HostPort(wiring.Component):
    """AXI4 slave bridging host bursts to one TLN requester port.

    Each direction handles one burst at a time, and the two directions run
    at once (the link is full duplex). A write burst's beats become TLN
    writes as they arrive; its B response waits for every TLN
    acknowledgement. A read burst's TLN reads are issued ahead into a buffer
    sized to cover the slower tier's latency, and R beats drain it.

    The link bandwidth is a token bucket per direction at
    ``params.host_bytes_per_cycle``, charged one word per data beat (W
    accepted, R sent), so moving N bytes takes about
    ``N / host_bytes_per_cycle`` cycles.

    Errors give SLVERR on the burst's response (B, or every affected R beat):

    - a TLN error (address beyond the tier's capacity): the controller does
      not perform the access and counts it in its own ``errors`` statistic;
      the in-range beats of the burst are performed;
    - a partial write strobe (neither all ones nor all zeros): the beat is
      refused and nothing is written for it (no read-modify-write; the host
      writes whole words); an all-zero strobe is a legal empty beat, skipped
      without error;
    - a burst that is not INCR or whose size is not the full word: the whole
      burst is refused; its beats are still transferred (writes consumed,
      reads answered with zero data).

    Beat addresses are the start address aligned down to a word, plus one
    word per beat. A burst cannot run past the TLN address space into
    address 0: beats beyond it go to the top word of the space, which no
    tier has, so the controller refuses them (AXI's 4 KiB rule keeps
    compliant masters away from this anyway).

    Parameters
    ----------
    params : MemParams
    id_bits : int
        Width of the AXI ID signals; IDs are echoed back.
    tag_bits : int
        Width of the TLN tag; the host port does not need one, and sends 0.

    Attributes
    ----------
    s_axi_* : AXI4 slave ports (see :func:`axi4_slave_members`)
        Data width ``8 * params.word_bytes``; address width
        ``params.addr_bits + 1`` (the top bit selects the tier).
    tln : Out(tln.master_signature)
    stats : Out(host_stats_layout)
        ``bytes_written`` and ``bytes_read`` count link beats times the word
        size; ``busy`` counts cycles with a burst open in either direction.
    """

    def __init__(self, params, *, id_bits=4, tag_bits=1):
        if not isinstance(params, MemParams):
            raise TypeError(f"params must be a MemParams, not {params!r}")
        if not isinstance(id_bits, int) or isinstance(id_bits, bool) or not 1 <= id_bits <= 32:
            raise ValueError(f"id_bits must be an integer in [1, 32], not {id_bits!r}")
        if not isinstance(tag_bits, int) or isinstance(tag_bits, bool) or not 1 <= tag_bits <= 32:
            raise ValueError(f"tag_bits must be an integer in [1, 32], not {tag_bits!r}")
        self.params, self.id_bits, self.tag_bits = params, id_bits, tag_bits
        self.axi_addr_bits = params.addr_bits + 1
        rate = params.host_bytes_per_cycle
        slowest = max(t.latency for t in params.tiers) + _READ_OVERHEAD
        # Reads in flight at the link's rate over the slower tier's round trip.
        self.read_depth = max(4, -(-slowest * rate.numerator // (params.word_bytes * rate.denominator)) + 2)
        self.axi_members = axi4_slave_members(id_bits=id_bits, addr_bits=self.axi_addr_bits,
                                              data_bytes=params.word_bytes)
        super().__init__({
            **self.axi_members,
            "tln": Out(tln.master_signature(params, tag_bits=tag_bits)),
            "stats": Out(host_stats_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        P, wb = self.params, self.params.word_bytes
        axi = _Prefixed(self, "s_axi")
        shift = (wb - 1).bit_length()
        word_bits = P.addr_bits - shift
        # Room for 256 beats past the top, so an overflow is never lost.
        counter_bits = word_bits + 9
        top_word = Const((1 << word_bits) - 1, word_bits)
        full_strobe = (1 << wb) - 1

        def tln_addr(word):
            return Mux(word[word_bits:] != 0, top_word, word[:word_bits]) << shift

        def refused(size, burst):
            return (size != shift) | (burst != BURST_INCR)

        req, resp = self.tln.req, self.tln.resp

        # --- write direction -------------------------------------------------
        w_link = TokenBucket(m, rate=P.host_bytes_per_cycle, word_bytes=wb, name="w_link")
        w_id = Signal(self.id_bits)
        w_tier = Signal()
        w_word = Signal(counter_bits)
        w_len = Signal(8)
        w_count = Signal(8)
        w_bad = Signal()
        w_err = Signal()
        w_pending = Signal(range(257))
        w_busy = Signal()

        beat_full = axi.wstrb == full_strobe
        beat_empty = axi.wstrb == 0
        w_wants = Signal()      # this beat becomes a TLN write
        w_req_valid = Signal()
        w_granted = Signal()
        w_beat = Signal()
        w_ack = Signal()
        m.d.comb += [
            w_wants.eq(~w_bad & beat_full),
            w_ack.eq(resp.valid & resp.payload.write),
        ]

        with m.FSM(name="write"):
            with m.State("IDLE"):
                m.d.comb += axi.awready.eq(1)
                with m.If(axi.awvalid):
                    m.d.sync += [
                        w_id.eq(axi.awid),
                        w_tier.eq(axi.awaddr[P.addr_bits]),
                        w_word.eq(axi.awaddr[shift:P.addr_bits]),
                        w_len.eq(axi.awlen),
                        w_count.eq(0),
                        w_bad.eq(refused(axi.awsize, axi.awburst)),
                        w_err.eq(refused(axi.awsize, axi.awburst)),
                    ]
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [
                    w_busy.eq(1),
                    w_req_valid.eq(axi.wvalid & w_link.ready & w_wants),
                    axi.wready.eq(w_link.ready & (~w_wants | (w_granted & req.ready))),
                    w_beat.eq(axi.wvalid & axi.wready),
                ]
                with m.If(w_beat):
                    m.d.sync += [w_word.eq(w_word + 1), w_count.eq(w_count + 1)]
                    with m.If(~w_bad & ~beat_full & ~beat_empty):
                        m.d.sync += w_err.eq(1)
                    with m.If(w_count == w_len):
                        m.next = "ACKS"
            with m.State("ACKS"):
                m.d.comb += w_busy.eq(1)
                with m.If((w_pending == 0) | ((w_pending == 1) & w_ack)):
                    m.next = "RESP"
            with m.State("RESP"):
                m.d.comb += [
                    w_busy.eq(1),
                    axi.bvalid.eq(1),
                    axi.bid.eq(w_id),
                    axi.bresp.eq(Mux(w_err, RESP_SLVERR, RESP_OKAY)),
                ]
                with m.If(axi.bready):
                    m.next = "IDLE"
        m.d.comb += w_link.take.eq(w_beat)
        w_issue = w_beat & w_wants
        with m.If(w_issue & ~w_ack):
            m.d.sync += w_pending.eq(w_pending + 1)
        with m.Elif(~w_issue & w_ack):
            m.d.sync += w_pending.eq(w_pending - 1)
        with m.If(w_ack & resp.payload.error):
            m.d.sync += w_err.eq(1)

        # --- read direction --------------------------------------------------
        r_link = TokenBucket(m, rate=P.host_bytes_per_cycle, word_bytes=wb, name="r_link")
        m.submodules.read_buffer = buffer = SyncFIFOBuffered(width=8 * wb + 1, depth=self.read_depth)
        r_active = Signal()
        r_id = Signal(self.id_bits)
        r_tier = Signal()
        r_word = Signal(counter_bits)
        r_len = Signal(8)
        r_issued = Signal(9)
        r_sent = Signal(8)
        r_bad = Signal()
        r_inflight = Signal(range(self.read_depth + 1))
        r_req_valid = Signal()
        r_granted = Signal()

        m.d.comb += axi.arready.eq(~r_active)
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += [
                r_active.eq(1),
                r_id.eq(axi.arid),
                r_tier.eq(axi.araddr[P.addr_bits]),
                r_word.eq(axi.araddr[shift:P.addr_bits]),
                r_len.eq(axi.arlen),
                r_issued.eq(0),
                r_sent.eq(0),
                r_bad.eq(refused(axi.arsize, axi.arburst)),
            ]

        # Issue only what the buffer can hold: responses must always be taken.
        room = (r_inflight + buffer.level) < self.read_depth
        m.d.comb += r_req_valid.eq(r_active & ~r_bad & (r_issued <= r_len) & room)
        r_issue = r_req_valid & r_granted & req.ready
        with m.If(r_issue):
            m.d.sync += [r_word.eq(r_word + 1), r_issued.eq(r_issued + 1)]
        r_resp = resp.valid & ~resp.payload.write
        with m.If(r_issue & ~r_resp):
            m.d.sync += r_inflight.eq(r_inflight + 1)
        with m.Elif(~r_issue & r_resp):
            m.d.sync += r_inflight.eq(r_inflight - 1)
        m.d.comb += [
            buffer.w_en.eq(r_resp),
            buffer.w_data.eq(Mux(resp.payload.error, 1 << (8 * wb), resp.payload.data)),
            resp.ready.eq(1),
        ]

        r_error = buffer.r_data[8 * wb]
        r_beat = Signal()
        m.d.comb += [
            axi.rvalid.eq(r_active & r_link.ready & (r_bad | buffer.r_rdy)),
            axi.rid.eq(r_id),
            axi.rdata.eq(Mux(r_bad, 0, buffer.r_data[:8 * wb])),
            axi.rresp.eq(Mux(r_bad | r_error, RESP_SLVERR, RESP_OKAY)),
            axi.rlast.eq(r_sent == r_len),
            r_beat.eq(axi.rvalid & axi.rready),
            buffer.r_en.eq(r_beat & ~r_bad),
            r_link.take.eq(r_beat),
        ]
        with m.If(r_beat):
            m.d.sync += r_sent.eq(r_sent + 1)
            with m.If(r_sent == r_len):
                m.d.sync += r_active.eq(0)

        # --- TLN request arbiter ---------------------------------------------
        # Round robin between the directions; a request held by back-pressure
        # keeps its grant, so the payload stays put until it is taken.
        prefer_read = Signal()
        held = Signal()
        held_read = Signal()
        grant_read = Signal()
        m.d.comb += grant_read.eq(Mux(held, held_read, r_req_valid & (~w_req_valid | prefer_read)))
        m.d.comb += [
            r_granted.eq(grant_read),
            w_granted.eq(~grant_read),
            req.valid.eq(Mux(grant_read, r_req_valid, w_req_valid)),
            req.payload.tier.eq(Mux(grant_read, r_tier, w_tier)),
            req.payload.write.eq(~grant_read),
            req.payload.addr.eq(Mux(grant_read, tln_addr(r_word), tln_addr(w_word))),
            req.payload.data.eq(axi.wdata),
            req.payload.tag.eq(0),
        ]
        m.d.sync += [held.eq(req.valid & ~req.ready), held_read.eq(grant_read)]
        with m.If(req.valid & req.ready):
            m.d.sync += prefer_read.eq(~grant_read)

        # --- statistics ------------------------------------------------------
        stats = self.stats
        with m.If(w_beat):
            m.d.sync += stats.bytes_written.eq(stats.bytes_written + wb)
        with m.If(r_beat):
            m.d.sync += stats.bytes_read.eq(stats.bytes_read + wb)
        with m.If(w_busy | r_active):
            m.d.sync += stats.busy.eq(stats.busy + 1)
        return m
