"""DDR -> HBM copy engine: bulk copies between tiers while the tiles compute.

Moving a model's weights from DDR to HBM in the background is what makes
fast model switching (Composition of Experts) possible; the engine reports
the bytes and cycles of each copy so software can measure it.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from hw.mem import tln
from hw.mem.params import MemParams
from hw.tile.clock_gate import check_clock_gate, gated_module

LENGTH_BITS = 32
STATUS_BITS = 32
# Copy addresses are computed this wide, so a copy running past the TLN
# address range is seen as out of range instead of wrapping.
ADDR_WIDE_BITS = 48


def copy_config_layout(params):
    """Configuration of the copy engine; see :class:`CopyEngine`."""
    return data.StructLayout({
        "start": 1,
        "src_tier": 1,
        "dst_tier": 1,
        "src_addr": params.addr_bits,
        "dst_addr": params.addr_bits,
        "length": LENGTH_BITS,
    })


def copy_status_layout():
    """Status of the copy engine; see :class:`CopyEngine`."""
    return data.StructLayout({
        "busy": 1,
        "done": 1,
        "error": 1,
        "error_addr": ADDR_WIDE_BITS,
        "bytes": STATUS_BITS,
        "cycles": STATUS_BITS,
    })


class CopyEngine(wiring.Component):
    """Copy ``length`` bytes from one tier to another (or within one) over the TLN.

    **Configuration** (``cfg``, :func:`copy_config_layout`): ``start`` begins a
    copy in each cycle it is high while the engine is not busy (pulse it; the
    other fields are taken then); ``src_tier``/``src_addr`` and
    ``dst_tier``/``dst_addr`` (byte addresses, word-aligned) and ``length`` in
    bytes, a whole number of TLN words. Overlapping ranges within a tier are
    not supported (words are copied upwards, reads running ahead of writes).

    **Status** (``status``, :func:`copy_status_layout`), cleared at start:

    - ``busy``: from start until every issued request has its response.
    - ``done``: the latest copy has finished, with or without error.
    - ``error``: the copy stopped. On the first error response the engine
      stops issuing, lets every request in flight come back, and finishes;
      ``error_addr`` is the failing address (source for a read, destination
      for a write). A ``length`` that is not a whole number of words is refused
      at once: ``error`` set, ``error_addr`` = ``src_addr``, nothing moved.
    - ``bytes``: bytes written and acknowledged without error.
    - ``cycles``: cycles from start to the last acknowledgement.

    Reads run up to ``params.copy_outstanding`` words ahead of the writes;
    each read reserves a slot in the data buffer, so responses are always
    accepted. One request register alternates reads and writes.

    Parameters
    ----------
    params : MemParams
    tag_bits : int
        Tag width of the TLN port (the crossbar's); the engine sends tag 0.
    clock_gate : bool
        Run the engine's registers on a gated clock (:mod:`hw.tile.clock_gate`) that ticks only after a
        cycle with a ``start``, ``busy``, a request offered, a response arriving, data buffered or reset:
        every register changes only then, so the engine behaves as ungated, and an idle one's registers
        stay still (its next-state logic still runs at every edge of ``clk``; docs/performance.md).

    Attributes
    ----------
    tln : Out(tln.master_signature(params, tag_bits=tag_bits))
    cfg : In(copy_config_layout(params))
    status : Out(copy_status_layout())
    """

    def __init__(self, params, *, tag_bits=1, clock_gate=True):
        if not isinstance(params, MemParams):
            raise ValueError(f"params must be a MemParams, not {params!r}")
        if not isinstance(tag_bits, int) or isinstance(tag_bits, bool) or not 1 <= tag_bits <= 16:
            raise ValueError(f"tag_bits must be an integer in [1, 16], not {tag_bits!r}")
        check_clock_gate(clock_gate)
        self.params, self.tag_bits, self.clock_gate = params, tag_bits, clock_gate
        super().__init__({
            "tln": Out(tln.master_signature(params, tag_bits=tag_bits)),
            "cfg": In(copy_config_layout(params)),
            "status": Out(copy_status_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        P = self.params
        wb = P.word_bytes
        low = (wb - 1).bit_length()
        out_of_range = (1 << P.addr_bits) - wb
        cfg, st = self.cfg, self.status
        req, resp = self.tln.req, self.tln.resp

        m.submodules.buf = buf = SyncFIFOBuffered(width=8 * wb + 1, depth=P.copy_outstanding)
        head = buf.r_data[:8 * wb]
        head_error = buf.r_data[8 * wb]

        src_tier = Signal()
        dst_tier = Signal()
        read_addr = Signal(ADDR_WIDE_BITS)   # next read to issue
        write_addr = Signal(ADDR_WIDE_BITS)  # next write to issue
        read_back = Signal(ADDR_WIDE_BITS)   # address of the next read response
        ack_addr = Signal(ADDR_WIDE_BITS)    # address of the next write acknowledgement
        words = LENGTH_BITS - low + 1
        reads_left = Signal(words)
        reads_out = Signal(words)            # issued, response not yet back
        writes_left = Signal(words)          # not yet issued
        writes_out = Signal(words)           # issued, not yet acknowledged
        stopping = Signal()
        credits = Signal(range(P.copy_outstanding + 1), init=P.copy_outstanding)

        with m.If(cfg.start & ~st.busy):
            m.d.sync += [
                src_tier.eq(cfg.src_tier), dst_tier.eq(cfg.dst_tier),
                read_addr.eq(cfg.src_addr), read_back.eq(cfg.src_addr),
                write_addr.eq(cfg.dst_addr), ack_addr.eq(cfg.dst_addr),
                reads_left.eq(cfg.length[low:]), writes_left.eq(cfg.length[low:]),
                stopping.eq(0), st.error.eq(0), st.error_addr.eq(0), st.bytes.eq(0), st.cycles.eq(0),
            ]
            with m.If(cfg.length[:low] != 0):
                m.d.sync += [st.done.eq(1), st.error.eq(1), st.error_addr.eq(cfg.src_addr)]
            with m.Else():
                m.d.sync += [st.done.eq(cfg.length == 0), st.busy.eq(cfg.length != 0)]
        with m.If(st.busy):
            m.d.sync += st.cycles.eq(st.cycles + 1)

        # One request register, so a request once offered stays offered unchanged.
        req_valid = Signal()
        can_load = Signal()
        m.d.comb += [req.valid.eq(req_valid), can_load.eq(~req_valid | req.ready)]
        with m.If(req.ready):
            m.d.sync += req_valid.eq(0)

        want_r = Signal()
        want_w = Signal()
        pick_r = Signal()
        pick_w = Signal()
        prefer_r = Signal()
        m.d.comb += [
            want_r.eq(st.busy & ~stopping & (reads_left != 0) & (credits != 0)),
            want_w.eq(st.busy & ~stopping & buf.r_rdy & ~head_error),
            pick_r.eq(can_load & want_r & (~want_w | prefer_r)),
            pick_w.eq(can_load & want_w & ~pick_r),
        ]
        with m.If(can_load & want_r & want_w):
            m.d.sync += prefer_r.eq(pick_w)

        def saturated(addr):
            return Mux(addr[P.addr_bits:] != 0, out_of_range, addr[:P.addr_bits])

        with m.If(pick_r):
            m.d.sync += [
                req_valid.eq(1), req.payload.tier.eq(src_tier), req.payload.write.eq(0),
                req.payload.addr.eq(saturated(read_addr)), req.payload.data.eq(0), req.payload.tag.eq(0),
                read_addr.eq(read_addr + wb), reads_left.eq(reads_left - 1),
            ]
        with m.If(pick_w):
            m.d.sync += [
                req_valid.eq(1), req.payload.tier.eq(dst_tier), req.payload.write.eq(1),
                req.payload.addr.eq(saturated(write_addr)), req.payload.data.eq(head), req.payload.tag.eq(0),
                write_addr.eq(write_addr + wb), writes_left.eq(writes_left - 1),
            ]
        # Once stopped, buffered data is dropped so that reads in flight still find room.
        m.d.comb += buf.r_en.eq(pick_w | (buf.r_rdy & (stopping | head_error)))
        m.d.sync += credits.eq(credits - pick_r + buf.r_en)

        rd_resp = Signal()
        wr_resp = Signal()
        m.d.comb += [
            resp.ready.eq(1),
            rd_resp.eq(resp.valid & ~resp.payload.write),
            wr_resp.eq(resp.valid & resp.payload.write),
            buf.w_en.eq(rd_resp),
            buf.w_data.eq(Cat(resp.payload.data, resp.payload.error)),
        ]
        m.d.sync += [reads_out.eq(reads_out + pick_r - rd_resp), writes_out.eq(writes_out + pick_w - wr_resp)]
        with m.If(rd_resp):
            m.d.sync += read_back.eq(read_back + wb)
        with m.If(wr_resp):
            m.d.sync += ack_addr.eq(ack_addr + wb)
            with m.If(~resp.payload.error):
                m.d.sync += st.bytes.eq(st.bytes + wb)
        first_error = Signal()
        m.d.comb += first_error.eq(resp.valid & resp.payload.error & ~stopping)
        with m.If(first_error):
            m.d.sync += [stopping.eq(1), st.error.eq(1),
                         st.error_addr.eq(Mux(resp.payload.write, ack_addr, read_back))]

        # Finished: every word written, or stopped with nothing left in flight.
        idle_tln = Signal()
        m.d.comb += idle_tln.eq((reads_out == 0) & (writes_out == 0) & ~pick_r & ~pick_w & ~resp.valid)
        with m.If(st.busy & idle_tln & (stopping | (writes_left == 0))):
            m.d.sync += [st.busy.eq(0), st.done.eq(1)]
        if not self.clock_gate:
            return m
        # ``req_valid`` and ``resp.valid`` imply ``busy``, which falls only with nothing in flight; ``buf.level``
        # drops what a stopped copy left buffered after ``busy`` fell (docs/memory.md, "Clock-gate enables").
        return gated_module(m, cfg.start | st.busy | req_valid | resp.valid | (buf.level != 0), name="copy")
