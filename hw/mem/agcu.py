"""Address Generation and Coalescing Unit: streams tensors between a memory tier and the tile array.

As on the SN40L, the AGCUs are the tile array's only path to off-chip memory.
Each has a read direction (memory -> ``vo``) and a write direction (``vi`` ->
memory) that run independently, each walking its own affine address pattern
in TLN words. ``sw/model/memory_units.py`` models the address sequences and
the data each transfer moves.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from facts.loopnest import COUNT_BITS, LAST_EVERY_BITS, LEVELS
from hw.loopnest import LoopNestCounter
from hw.mem import tln
from hw.mem.params import MemParams
from hw.tile.clock_gate import check_clock_gate, gated_module
from hw.tile.streams import scalar_stream, vector_stream

STATUS_BITS = 32
# Tag bits the AGCU uses: [1] the request is the transfer's final word; [0] for a
# read, its word ends a group (``last_every``), for a write, a top-level iteration
# (level LEVELS-1). Responses tell reads from writes.
TAG_GROUP, TAG_FINAL = 0, 1
MIN_TAG_BITS = 2
# A read's ``after`` field: 0, or k + 1 to wait for AGCU k's write; ``peers`` has a record for each k it can name.
AFTER_BITS = 5
PEERS = (1 << AFTER_BITS) - 1


def word_addr_bits(params):
    """Bits of a TLN word address (a byte address without its in-word offset)."""
    return params.addr_bits - (params.word_bytes - 1).bit_length()


def stride_bits(params):
    """Signed stride width: any word of the address space from any other."""
    return word_addr_bits(params) + 1


def wide_bits(params):
    """Signed width of an address being generated: wide enough that no pattern
    (a base, a 32-bit runtime offset, four levels of 2**16 strides) overflows,
    so an address outside the tiers is always seen as one and never wraps back in."""
    return max(stride_bits(params), 33) + COUNT_BITS + 3


def out_of_range_addr(params):
    """The byte address sent for a generated address that does not fit the TLN
    address: word-aligned and beyond every tier, so its controller flags it."""
    return (1 << params.addr_bits) - params.word_bytes


def tln_address(params, word_addr, low_bits):
    """TLN byte address of a signed wide word address, saturated to
    :func:`out_of_range_addr` when it does not fit (negative or too large)."""
    wab = word_addr_bits(params)
    fits = (word_addr >= 0) & (word_addr < (1 << wab))
    return Mux(fits, Cat(low_bits, word_addr[:wab]), out_of_range_addr(params))


def transfer_layout(params):
    """Configuration of one direction of an AGCU; see :class:`Agcu`."""
    return data.StructLayout({
        "start": 1,
        "tier": 1,
        "runtime_base": 1,
        "last_every": LAST_EVERY_BITS,
        "bf16": 1,
        "base": params.addr_bits,
        "counts": data.ArrayLayout(COUNT_BITS, LEVELS),
        "strides": data.ArrayLayout(signed(stride_bits(params)), LEVELS),
        "after": AFTER_BITS,
        "lag": 1,
    })


def agcu_config_layout(params):
    return data.StructLayout({"read": transfer_layout(params), "write": transfer_layout(params)})


def direction_status_layout():
    """Status of one direction of an AGCU; see :class:`Agcu`."""
    return data.StructLayout({
        "busy": 1,
        "done": 1,
        "error": 1,
        "error_word": STATUS_BITS,
        "words": STATUS_BITS,
        "cycles": STATUS_BITS,
        "tile_stalls": STATUS_BITS,
        "mem_stalls": STATUS_BITS,
    })


def agcu_status_layout():
    return data.StructLayout({"read": direction_status_layout(), "write": direction_status_layout()})


def peer_layout():
    """What a gated read sees of another AGCU's write: ``status.write.done`` and the ``write_iteration`` pulse."""
    return data.StructLayout({"done": 1, "iteration": 1})


def connect_peers(m, agcus):
    """Give every AGCU of ``agcus`` the writes of the first :data:`PEERS` of them (``peers[k]``: AGCU k's)."""
    for agcu in agcus:
        for k, peer in enumerate(agcus[:PEERS]):
            m.d.comb += [agcu.peers[k].done.eq(peer.status.write.done),
                         agcu.peers[k].iteration.eq(peer.write_iteration)]


def _check_lanes(params, lanes):
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
    vector_bytes = 4 * lanes
    wb = params.word_bytes
    if vector_bytes % wb and wb % vector_bytes:
        raise ValueError(f"a vector of {lanes} lanes ({vector_bytes} bytes) is neither a multiple nor a divisor "
                         f"of the {wb}-byte TLN word")


def _check_tag_bits(tag_bits, minimum):
    if not isinstance(tag_bits, int) or isinstance(tag_bits, bool) or not minimum <= tag_bits <= 16:
        raise ValueError(f"tag_bits must be an integer in [{minimum}, 16], not {tag_bits!r}")


class Agcu(wiring.Component):
    """Address Generation and Coalescing Unit: one read and one write stream between a tier and the tiles.

    **Configuration** (``cfg``, one :func:`transfer_layout` record per direction,
    ``cfg.read`` and ``cfg.write``):

    - ``start``: begins a transfer in each cycle it is high while the direction
      is not busy; pulse it for one cycle. The other fields are taken then, so
      they may change during the transfer.
    - ``tier``: ``params.HBM`` or ``params.DDR``.
    - ``base``: byte address of the first word; must be word-aligned (a
      misaligned one makes every access an error).
    - ``counts[k]``, ``strides[k]``, k = 0 innermost: the affine pattern in TLN
      words. The transfer visits ``base + (sum_k i_k * strides[k]) * word_bytes``
      for every ``0 <= i_k < counts[k]``, level 0 fastest; it moves
      ``prod(counts)`` words. A count of 0 makes an empty transfer, done at once.
      Strided and tiled access are both patterns; unused outer levels have count 1.
    - ``runtime_base``: before issuing, wait for one word on ``si`` and add it,
      in TLN words, to ``base`` (a KV-cache position, say). When both
      directions wait, the read takes the first word.
    - ``last_every`` (reads): 0 sets ``vo.last`` on the transfer's final
      vector only; k (1 to 4) also on the vector holding each word at which
      levels 0..k-1 all finish, so a stream carries the group boundaries the
      tiles expect (one ``last`` per weight tile, say).
    - ``bf16`` (reads): each memory word holds ``word_bytes / 2`` bf16 values,
      delivered as that many fp32 lanes (the value in the top 16 bits, exact):
      the low half of the word first, as one word of fp32 data, then the high
      half. Weights stream at bf16 bandwidth into fp32 units. Writes ignore it.
    - ``after``, ``lag`` (reads; writes ignore them): read-after-write gate on
      another AGCU's write in the same kernel. ``after`` = 0: none; ``after``
      = k + 1: the words of the read's top-level iteration ``i`` (``i_3`` of
      the pattern, level ``LEVELS - 1``) are requested only once AGCU k's
      write has completed its top-level iterations ``0 .. i - lag`` (every
      word of them acknowledged); none are needed when ``i - lag < 0``, and a
      done write opens the gate for every iteration. So with ``lag`` 0 the
      read's iteration i sees what the write's iterations 0..i stored (a KV
      cache written and read per layer), with ``lag`` 1 what its iterations
      0..i-1 stored (a layer's input, the previous iteration's output), and an
      unlooped read (top count 1) with ``lag`` 0 waits for the whole of an
      unlooped write. The gate counts the write's completed iterations from
      the read's start, so both must start in the same cycle (one kernel
      start, as on the chip): a write started earlier could complete
      iterations the read does not count (it then waits longer, at worst
      for ``done``), and one started later leaves the previous transfer's
      ``done`` standing until it starts.

    **Data.** A vector holds ``4 * lanes`` bytes, a multiple or a divisor of a
    TLN word; lane 0 is the lowest-addressed bytes (little-endian). Words go
    to ``vo`` in pattern order, so a vector spanning several words takes them
    from consecutive pattern iterations. ``vo.last`` marks the transfer's final
    vector; when the word count is not a multiple of the words in a vector, that
    vector's missing lanes are zero. Writes take vectors from ``vi`` (whose
    ``last`` is ignored: the pattern sets the length) and drop a final vector's
    lanes beyond the pattern's last word.

    **Status** (``status.read``, ``status.write``, :func:`direction_status_layout`);
    counters are cleared when the direction starts and describe its latest transfer:

    - ``busy``: from start until the read's final vector is taken on ``vo`` /
      the write's final word is acknowledged.
    - ``done``: the latest transfer has finished (cleared at the next start).
    - ``error``: some response had ``error`` set (address outside the tier or
      misaligned). The access was not performed; a read delivers zeros in its
      place and the transfer still completes. ``error_word`` is the pattern
      index of the first such word.
    - ``words``: words moved without error.
    - ``cycles``: cycles busy.
    - ``tile_stalls``: cycles the tile side held the transfer up: a vector on
      ``vo`` not taken; a write wanting a vector on ``vi`` that is not offered;
      waiting for ``si``.
    - ``mem_stalls``: other busy cycles without progress, waiting on memory:
      a read with no vector to offer (a gated read's wait included); a write
      that cannot issue (TLN back-pressure, the read side's turn) or waits
      for acknowledgements.

    **TLN.** Reads keep at most ``params.agcu_outstanding`` words in flight or
    buffered: each read reserves a slot in the response buffer, so responses
    are always accepted, as the crossbar requires. Writes are issued one per
    word and need no reservation. One request register serves both
    directions, alternating when both have a request. An address that the
    pattern takes outside the TLN address range is sent as
    :func:`out_of_range_addr`, so the controller flags it and it never wraps.

    Parameters
    ----------
    params : MemParams
    lanes : int
        32-bit lanes of a vector on ``vo`` and ``vi``.
    tag_bits : int
        Tag width of the TLN port, at least 2; the crossbar's ``tag_bits``.
    clock_gate : bool
        Run the unit's registers on a gated clock (:mod:`hw.tile.clock_gate`) that ticks only after a
        cycle in which one of them can change: a ``start``, a direction busy, a request offered, a
        response arriving, read data buffered, a ``write_iteration`` pulse to end, a pulse from the peer
        that ``after`` names, or reset. The outputs and cycle counts are those of the ungated unit, and
        an idle AGCU's registers stay still (its next-state logic still runs at every edge of ``clk``:
        it reads ungated signals; docs/performance.md).

    Attributes
    ----------
    tln : Out(tln.master_signature(params, tag_bits=tag_bits))
    vo : Out(vector_stream(lanes))
    vi : In(vector_stream(lanes))
    si : In(scalar_stream())
    cfg : In(agcu_config_layout(params))
    status : Out(agcu_status_layout())
    write_iteration : Out(1)
        High for one cycle each time the write completes a top-level iteration: every word of it
        acknowledged. A transfer goes to one tier, which answers in request order, so the
        acknowledgement of an iteration's final word (marked in its tag) follows all earlier ones.
    peers : In(ArrayLayout(peer_layout(), PEERS))
        Record k: AGCU k's ``status.write.done`` and ``write_iteration``, for reads whose ``after``
        names it (:func:`connect_peers`).
    """

    def __init__(self, params, *, lanes, tag_bits=MIN_TAG_BITS, clock_gate=True):
        if not isinstance(params, MemParams):
            raise ValueError(f"params must be a MemParams, not {params!r}")
        _check_lanes(params, lanes)
        _check_tag_bits(tag_bits, MIN_TAG_BITS)
        check_clock_gate(clock_gate)
        self.params, self.lanes, self.tag_bits, self.clock_gate = params, lanes, tag_bits, clock_gate
        vector_bytes = 4 * lanes
        self.words_per_vector = max(1, vector_bytes // params.word_bytes)
        self.vectors_per_word = max(1, params.word_bytes // vector_bytes)
        super().__init__({
            "tln": Out(tln.master_signature(params, tag_bits=tag_bits)),
            "vo": Out(vector_stream(lanes)),
            "vi": In(vector_stream(lanes)),
            "si": In(scalar_stream()),
            "cfg": In(agcu_config_layout(params)),
            "status": Out(agcu_status_layout()),
            "write_iteration": Out(1),
            "peers": In(data.ArrayLayout(peer_layout(), PEERS)),
        })

    def elaborate(self, platform):
        m = Module()
        P = self.params
        wb = P.word_bytes
        low = (wb - 1).bit_length()
        rw, rv = self.words_per_vector, self.vectors_per_word
        vbits = 32 * self.lanes
        req, resp = self.tln.req, self.tln.resp
        st_r, st_w = self.status.read, self.status.write

        m.submodules.pat_r = pat_r = LoopNestCounter(stride_bits=stride_bits(P), addr_bits=wide_bits(P))
        m.submodules.pat_w = pat_w = LoopNestCounter(stride_bits=stride_bits(P), addr_bits=wide_bits(P))
        m.submodules.rbuf = rbuf = SyncFIFOBuffered(width=8 * wb + 2, depth=P.agcu_outstanding)

        # Per-direction state, latched at start.
        dirs = {}
        for name, pat in (("r", pat_r), ("w", pat_w)):
            d = dict(
                after=Signal(AFTER_BITS, name=f"{name}_after"), tier=Signal(name=f"{name}_tier"),
                low=Signal(low, name=f"{name}_low"),
                base=Signal(word_addr_bits(P), name=f"{name}_base"),
                counts=Signal(data.ArrayLayout(COUNT_BITS, LEVELS), name=f"{name}_counts"),
                last_every=Signal(LAST_EVERY_BITS, name=f"{name}_last_every"), bf16=Signal(name=f"{name}_bf16"),
                strides=Signal(data.ArrayLayout(signed(stride_bits(P)), LEVELS), name=f"{name}_strides"),
                wait=Signal(name=f"{name}_wait"), issue=Signal(name=f"{name}_issue"),
                responses=Signal(STATUS_BITS, name=f"{name}_responses"),
            )
            m.d.comb += [pat.counts.eq(d["counts"]), pat.strides.eq(d["strides"])]
            dirs[name] = d
        r, w = dirs["r"], dirs["w"]
        # The status ``busy`` bits are the directions' busy registers.
        r["busy"], w["busy"] = st_r.busy, st_w.busy

        # Runtime base: the read takes a waiting scalar first.
        si_r = Signal()
        si_w = Signal()
        m.d.comb += [
            self.si.ready.eq(r["wait"] | w["wait"]),
            si_r.eq(self.si.valid & r["wait"]),
            si_w.eq(self.si.valid & w["wait"] & ~r["wait"]),
        ]

        for name, pat, cfg, st, si_take in (("r", pat_r, self.cfg.read, st_r, si_r),
                                            ("w", pat_w, self.cfg.write, st_w, si_w)):
            d = dirs[name]
            start = d["start"] = Signal(name=f"{name}_start")
            empty = Signal(name=f"{name}_empty")
            m.d.comb += [start.eq(cfg.start & ~d["busy"]),
                         empty.eq(Cat(*(cfg.counts[k] == 0 for k in range(LEVELS))).any())]
            with m.If(start):
                m.d.sync += [
                    d["tier"].eq(cfg.tier), d["low"].eq(cfg.base[:low]), d["base"].eq(cfg.base[low:]),
                    d["counts"].eq(cfg.counts), d["strides"].eq(cfg.strides), d["responses"].eq(0),
                    d["last_every"].eq(cfg.last_every), d["bf16"].eq(cfg.bf16), d["after"].eq(cfg.after),
                    st.done.eq(empty), st.error.eq(0), st.error_word.eq(0), st.words.eq(0), st.cycles.eq(0),
                    st.tile_stalls.eq(0), st.mem_stalls.eq(0),
                ]
                with m.If(~empty):
                    m.d.sync += d["busy"].eq(1)
                    with m.If(cfg.runtime_base):
                        m.d.sync += d["wait"].eq(1)
                    with m.Else():
                        m.d.sync += d["issue"].eq(1)
                        m.d.comb += [pat.load.eq(1), pat.base.eq(cfg.base[low:])]
            with m.If(si_take):
                m.d.sync += [d["wait"].eq(0), d["issue"].eq(1)]
                m.d.comb += [pat.load.eq(1), pat.base.eq(d["base"] + self.si.payload.data)]
            with m.If(d["busy"]):
                m.d.sync += st.cycles.eq(st.cycles + 1)

        # One request register for both directions, so a request once offered
        # stays offered unchanged until the crossbar takes it.
        req_valid = Signal()
        can_load = Signal()
        m.d.comb += [req.valid.eq(req_valid), can_load.eq(~req_valid | req.ready)]
        with m.If(req.ready):
            m.d.sync += req_valid.eq(0)

        credits = Signal(range(P.agcu_outstanding + 1), init=P.agcu_outstanding)
        want_r = Signal()
        want_w = Signal()
        pick_r = Signal()
        pick_w = Signal()
        prefer_w = Signal()
        w_word = Signal(8 * wb)
        w_have = Signal()
        gate = Signal()
        # The peer ``after`` names; record 0 (no peer) is a done write, so the gate is open.
        peer = Signal(peer_layout())
        size = peer_layout().size
        # Iterations the read may begin: the peer's completed since the read's start, plus ``lag``, less the
        # read's own requested in full. Iteration i may begin when more than i - lag are complete.
        allowed = Signal(COUNT_BITS + 1)
        r_iteration_end = Signal()
        m.d.comb += [
            peer.eq(Cat(Const(1, size), self.peers).word_select(r["after"], size)),
            gate.eq(peer.done | (allowed != 0)),
            r_iteration_end.eq(pick_r & pat_r.ends[LEVELS - 2] & (allowed != 0)),
            want_r.eq(r["issue"] & (credits != 0) & gate),
            want_w.eq(w["issue"] & w_have),
            pick_w.eq(can_load & want_w & (~want_r | prefer_w)),
            pick_r.eq(can_load & want_r & ~pick_w),
        ]
        with m.If(can_load & want_r & want_w):
            m.d.sync += prefer_w.eq(pick_r)
        group_end = Signal()
        m.d.comb += group_end.eq(pat_r.final | Cat(Const(0, 1), pat_r.ends).bit_select(r["last_every"], 1))
        with m.If(pick_r):
            m.d.sync += [
                req_valid.eq(1),
                req.payload.tier.eq(r["tier"]), req.payload.write.eq(0),
                req.payload.addr.eq(tln_address(P, pat_r.addr, r["low"])), req.payload.data.eq(0),
                req.payload.tag.eq(Cat(group_end, pat_r.final)),
            ]
            m.d.comb += pat_r.step.eq(1)
            with m.If(pat_r.final):
                m.d.sync += r["issue"].eq(0)
        with m.If(pick_w):
            m.d.sync += [
                req_valid.eq(1),
                req.payload.tier.eq(w["tier"]), req.payload.write.eq(1),
                req.payload.addr.eq(tln_address(P, pat_w.addr, w["low"])), req.payload.data.eq(w_word),
                req.payload.tag.eq(Cat(pat_w.ends[LEVELS - 2], pat_w.final)),
            ]
            m.d.comb += pat_w.step.eq(1)
            with m.If(pat_w.final):
                m.d.sync += w["issue"].eq(0)

        # Responses: always accepted; read data has a reserved buffer slot.
        rd_resp = Signal()
        wr_resp = Signal()
        m.d.comb += [
            resp.ready.eq(1),
            rd_resp.eq(resp.valid & ~resp.payload.write),
            wr_resp.eq(resp.valid & resp.payload.write),
            rbuf.w_en.eq(rd_resp),
            rbuf.w_data.eq(Cat(resp.payload.data, resp.payload.tag[TAG_FINAL], resp.payload.tag[TAG_GROUP])),
        ]
        m.d.sync += credits.eq(credits - pick_r + rbuf.r_en)
        for d, st, got in ((r, st_r, rd_resp), (w, st_w, wr_resp)):
            with m.If(got):
                m.d.sync += d["responses"].eq(d["responses"] + 1)
                with m.If(resp.payload.error):
                    with m.If(~st.error):
                        m.d.sync += [st.error.eq(1), st.error_word.eq(d["responses"])]
                with m.Else():
                    m.d.sync += st.words.eq(st.words + 1)
        m.d.sync += self.write_iteration.eq(wr_resp & resp.payload.tag[TAG_GROUP])
        with m.If(wr_resp & resp.payload.tag[TAG_FINAL]):
            m.d.sync += [w["busy"].eq(0), st_w.done.eq(1)]
        with m.If(r["start"]):
            m.d.sync += allowed.eq(self.cfg.read.lag)
        with m.Else():
            m.d.sync += allowed.eq(allowed + peer.iteration - r_iteration_end)

        # Read data: words from the buffer head to vectors on ``vo``. With ``bf16`` each buffer word
        # is two words in turn, its halves with every 16-bit value widened to the top of a 32-bit lane
        # (bf16 to fp32 is exact); ``pop`` takes one of those, ``rbuf.r_en`` the buffer word.
        raw = rbuf.r_data[:8 * wb]
        half = Signal()
        second = Signal()
        pop = Signal()
        bf16 = r["bf16"]
        widen = lambda bits: Cat(*(Cat(Const(0, 16), bits[16 * i:16 * i + 16]) for i in range(len(bits) // 16)))
        head = Signal(8 * wb)
        m.d.comb += [
            second.eq(~bf16 | half),
            head.eq(Mux(bf16, widen(Mux(half, raw[4 * wb:], raw[:4 * wb])), raw)),
            rbuf.r_en.eq(pop & second),
        ]
        with m.If(pop & bf16):
            m.d.sync += half.eq(~half)
        head_final = rbuf.r_data[8 * wb] & second
        head_group = rbuf.r_data[8 * wb + 1] & second
        vo = self.vo
        take = Signal()
        vo_final = Signal()
        m.d.comb += take.eq(vo.valid & vo.ready)
        if rw > 1:
            # Gather the first rw-1 words of a vector; the head word completes it.
            gathered = [Signal(8 * wb, name=f"gathered{j}") for j in range(rw - 1)]
            fill = Signal(range(rw))
            complete = Signal()
            m.d.comb += [
                complete.eq((fill == rw - 1) | head_final),
                vo.valid.eq(rbuf.r_rdy & complete),
                vo_final.eq(head_final),
                vo.payload.last.eq(head_group),
                pop.eq(take | (rbuf.r_rdy & ~complete)),
            ]
            # A final vector short of words has zero lanes beyond them.
            parts = [Mux(j < fill, gathered[j], Mux(j == fill, head, 0)) for j in range(rw - 1)]
            parts.append(Mux(fill == rw - 1, head, 0))
            m.d.comb += vo.payload.data.eq(Cat(*parts))
            with m.If(take):
                m.d.sync += fill.eq(0)
            with m.Elif(rbuf.r_rdy & ~complete):
                m.d.sync += fill.eq(fill + 1)
                with m.Switch(fill):
                    for j in range(rw - 1):
                        with m.Case(j):
                            m.d.sync += gathered[j].eq(head)
        elif rv > 1:
            part = Signal(range(rv))
            m.d.comb += [
                vo.valid.eq(rbuf.r_rdy),
                vo.payload.data.eq(head.word_select(part, vbits)),
                vo_final.eq(head_final & (part == rv - 1)),
                vo.payload.last.eq(head_group & (part == rv - 1)),
                pop.eq(take & (part == rv - 1)),
            ]
            with m.If(take):
                m.d.sync += part.eq(Mux(part == rv - 1, 0, part + 1))
        else:
            m.d.comb += [
                vo.valid.eq(rbuf.r_rdy), vo.payload.data.eq(head), vo_final.eq(head_final),
                vo.payload.last.eq(head_group),
                pop.eq(take),
            ]
        with m.If(take & vo_final):
            m.d.sync += [r["busy"].eq(0), st_r.done.eq(1)]

        # Write data: vectors from ``vi`` to words.
        vi = self.vi
        vi_take = Signal()
        m.d.comb += vi_take.eq(vi.valid & vi.ready)
        if rv > 1:
            # Gather the first rv-1 vectors of a word; the offered vector completes it.
            gathered = [Signal(vbits, name=f"wgathered{j}") for j in range(rv - 1)]
            fill = Signal(range(rv))
            m.d.comb += [
                w_have.eq(vi.valid & (fill == rv - 1)),
                w_word.eq(Cat(*gathered, vi.payload.data)),
                vi.ready.eq(pick_w | (w["issue"] & (fill != rv - 1))),
            ]
            with m.If(pick_w):
                m.d.sync += fill.eq(0)
            with m.Elif(vi_take):
                m.d.sync += fill.eq(fill + 1)
                with m.Switch(fill):
                    for j in range(rv - 1):
                        with m.Case(j):
                            m.d.sync += gathered[j].eq(vi.payload.data)
        elif rw > 1:
            part = Signal(range(rw))
            m.d.comb += [
                w_have.eq(vi.valid),
                w_word.eq(vi.payload.data.as_value().word_select(part, 8 * wb)),
                # The pattern's final word releases the vector even if lanes remain.
                vi.ready.eq(pick_w & ((part == rw - 1) | pat_w.final)),
            ]
            with m.If(pick_w):
                m.d.sync += part.eq(Mux((part == rw - 1) | pat_w.final, 0, part + 1))
        else:
            m.d.comb += [w_have.eq(vi.valid), w_word.eq(vi.payload.data), vi.ready.eq(pick_w)]

        # Stall accounting.
        r_tile = Signal()
        w_tile = Signal()
        m.d.comb += [
            r_tile.eq((vo.valid & ~vo.ready) | (r["wait"] & ~si_r)),
            w_tile.eq((w["wait"] & ~si_w) | (w["issue"] & ~vi.valid)),
        ]
        with m.If(r["busy"] & r_tile):
            m.d.sync += st_r.tile_stalls.eq(st_r.tile_stalls + 1)
        with m.If(r["busy"] & ~r_tile & ~r["wait"] & ~vo.valid):
            m.d.sync += st_r.mem_stalls.eq(st_r.mem_stalls + 1)
        with m.If(w["busy"] & w_tile):
            m.d.sync += st_w.tile_stalls.eq(st_w.tile_stalls + 1)
        with m.If(w["busy"] & ~w_tile & ~si_w & ~vi_take & ~pick_w):
            m.d.sync += st_w.mem_stalls.eq(st_w.mem_stalls + 1)
        if not self.clock_gate:
            return m
        # Every register above changes only in a cycle with one of these; ``allowed`` also counts the
        # named peer's pulses while the read is idle, and ``write_iteration`` falls the cycle after it rose.
        # Some terms only keep that rule literal (docs/memory.md, "Clock-gate enables"): ``req_valid``,
        # ``resp.valid`` and ``rbuf.level`` imply a busy direction (a request precedes its response, and a
        # direction stays busy until its final response, a read until its final vector leaves the buffer);
        # without ``peer.iteration`` only an idle read's ``allowed`` would lag, which its next start overwrites
        # before anything reads it.
        en = (self.cfg.read.start | self.cfg.write.start | r["busy"] | w["busy"] | req_valid | resp.valid
              | (rbuf.level != 0) | self.write_iteration | peer.iteration)
        return gated_module(m, en, name="agcu")
