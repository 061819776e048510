"""Configuration loader: bitstream words in, active unit configurations out."""

from amaranth import Module, Signal, Cat, Shape
from amaranth.hdl import ShapeCastable
from amaranth.lib import stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.wiring import In, Out

from facts.bitstream import HEADER_WORDS, MAGIC, MAX_UNIT_ID, MAX_VERSION, MAX_WIDTH, Status
from hw.tile.clock_gate import check_clock_gate, gated_module


# The loader's outputs besides the configurations; the array passes them on as config_<name>.
STATUS_PORTS = {
    "status": Out(Status),
    "load_cycles": Out(32),
    "loads_ok": Out(32),
    "loads_refused": Out(32),
    "busy": Out(1),
}


def _width(shape):
    return Shape.cast(shape).width


class ConfigLoader(wiring.Component):
    """Shift bitstream segments into shadow registers and commit them together.

    One word is taken every cycle (``words.ready`` is always high). Each
    segment's payload shifts into its unit's shadow register; when the CRC
    word matches and every check passed, the shadows of the units in this
    bitstream are copied to their active configurations at the end of the
    cycle that takes the CRC word. Units the bitstream does not name keep
    their configuration. Any error leaves every active configuration as it
    was, sets ``status``, and then discards words up to the announced total,
    or, when the error is in the header (the total is not known or not
    usable), drops words until the next magic word. See docs/config.md.

    Parameters
    ----------
    targets : dict
        Unit id (0-65535) -> configuration width in bits (at least 1), or a
        shape-castable layout, which the unit's active port then has.
    version : int
        Bitstream version accepted, 0-65535.
    timeout : int
        Idle cycles in the middle of a bitstream after which it is refused
        as ``TRUNCATED``.
    clock_gate : bool
        Run the loader's registers on a gated clock (:mod:`hw.tile.clock_gate`)
        that ticks only after a cycle with a word offered, a bitstream in
        progress (``busy``) or reset: every register changes only then, so
        the outputs and cycle counts are those of the ungated loader, and
        an idle loader costs the co-simulation nothing per cycle.

    Attributes
    ----------
    words : In(stream.Signature(32))
        Bitstream words.
    cfg_<id> : Out(width or layout)
        Active configuration of unit ``id``; see :meth:`active`.
    status : Out(Status)
    load_cycles : Out(32)
        Cycles of the last load, from its first word to its commit or refusal.
    loads_ok, loads_refused : Out(32)
        Bitstreams committed and refused since reset.
    busy : Out(1)
        A bitstream is being taken or discarded.
    """

    def __init__(self, targets, *, version, timeout=1024, clock_gate=True):
        if not isinstance(targets, dict) or not targets:
            raise ValueError(f"targets must be a non-empty dict of unit id -> width, not {targets!r}")
        self._shapes = {}
        for unit_id, shape in targets.items():
            if not isinstance(unit_id, int) or isinstance(unit_id, bool) or not 0 <= unit_id <= MAX_UNIT_ID:
                raise ValueError(f"unit id must be an integer in [0, {MAX_UNIT_ID}], not {unit_id!r}")
            if isinstance(shape, bool) or not isinstance(shape, (int, ShapeCastable, Shape)):
                raise ValueError(f"unit {unit_id}: width must be an integer or a layout, not {shape!r}")
            width = shape if isinstance(shape, int) else _width(shape)
            if not 1 <= width <= MAX_WIDTH:
                raise ValueError(f"unit {unit_id}: width must be in [1, {MAX_WIDTH}] bits, not {width}")
            self._shapes[unit_id] = shape
        if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= MAX_VERSION:
            raise ValueError(f"version must be an integer in [0, {MAX_VERSION}], not {version!r}")
        if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 1 << 20:
            raise ValueError(f"timeout must be an integer in [1, {1 << 20}] cycles, not {timeout!r}")
        check_clock_gate(clock_gate)
        self.clock_gate = clock_gate
        self.targets = {u: (s if isinstance(s, int) else _width(s)) for u, s in self._shapes.items()}
        self.version = version
        self.timeout = timeout
        self.max_total = HEADER_WORDS + sum(1 + self.n_words(u) for u in self.targets) + 1
        ports = {
            "words": In(stream.Signature(32)),
            **{f"cfg_{u}": Out(s) for u, s in self._shapes.items()},
            **STATUS_PORTS,
        }
        super().__init__(ports)

    def n_words(self, unit_id):
        """Payload words of unit ``unit_id``'s segment."""
        return (self.targets[unit_id] + 31) // 32

    def active(self, unit_id):
        """The active configuration port of unit ``unit_id``."""
        if unit_id not in self.targets:
            raise ValueError(f"the loader has no unit {unit_id}; units: {sorted(self.targets)}")
        return getattr(self, f"cfg_{unit_id}")

    def elaborate(self, platform):
        m = Module()
        ids = list(self.targets)
        m.submodules.crc = crc = catalog.CRC32_ISO_HDLC(32).create()

        word = self.words.payload
        take = self.words.valid
        m.d.comb += [self.words.ready.eq(1), crc.data.eq(word)]

        pos = Signal(range(self.max_total + 1))
        total = Signal.like(pos)
        segs_left = Signal(range(len(ids) + 1))
        remaining = Signal(16)
        sel = Signal(range(len(ids)))
        last_mask = Signal(32)
        seen = Signal(len(ids))
        hunting = Signal()
        elapsed = Signal(32)
        idle = Signal(range(self.timeout + 1))
        timed_out = Signal()
        shadows = [Signal(32 * self.n_words(u), name=f"shadow_{u}") for u in ids]

        with m.If(take):
            m.d.sync += [pos.eq(pos + 1), idle.eq(0)]
        with m.Elif(self.busy):
            m.d.sync += idle.eq(idle + 1)
        with m.If(self.busy):
            m.d.sync += elapsed.eq(elapsed + 1)
        m.d.comb += timed_out.eq(~take & (idle == self.timeout - 1))

        hdr_id, hdr_len = word[16:], word[:16]
        known = Signal()
        index = Signal.like(sel)
        want_len = Signal(16)
        want_mask = Signal(32)
        with m.Switch(hdr_id):
            for k, u in enumerate(ids):
                with m.Case(u):
                    rest = self.targets[u] % 32
                    m.d.comb += [known.eq(1), index.eq(k), want_len.eq(self.n_words(u)),
                                 want_mask.eq((1 << rest) - 1 if rest else 0xFFFF_FFFF)]

        def refuse(reason, *, cycles=None):
            m.d.sync += [self.status.eq(reason), self.loads_refused.eq(self.loads_refused + 1),
                         self.load_cycles.eq(elapsed + 1 if cycles is None else cycles)]

        def refuse_in_header(reason):
            refuse(reason)
            # Without a usable total the end of this bitstream is unknown.
            m.d.sync += hunting.eq(1)
            m.next = "IDLE"

        def refuse_in_body(reason):
            refuse(reason)
            with m.If(pos == total - 1):
                m.next = "IDLE"
            with m.Else():
                m.next = "DISCARD"

        def truncate():
            refuse(Status.TRUNCATED)
            m.next = "IDLE"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(take & (word == MAGIC)):
                    m.d.comb += [crc.start.eq(1), crc.valid.eq(1)]
                    m.d.sync += [pos.eq(1), seen.eq(0), elapsed.eq(1), hunting.eq(0),
                                 self.status.eq(Status.LOADING)]
                    m.next = "HEADER"
                # Zero words between bitstreams are padding: a program in
                # memory fills whole memory words of four configuration words.
                with m.Elif(take & ~hunting & (word != 0)):
                    refuse(Status.BAD_MAGIC, cycles=1)
                    m.d.sync += hunting.eq(1)

            with m.State("HEADER"):
                with m.If(take):
                    m.d.comb += crc.valid.eq(1)
                    with m.Switch(pos):
                        with m.Case(1):
                            with m.If(word != self.version):
                                refuse_in_header(Status.BAD_VERSION)
                        with m.Case(2):
                            m.d.sync += segs_left.eq(word)
                            with m.If((word == 0) | (word > len(ids))):
                                refuse_in_header(Status.BAD_LENGTH)
                        with m.Case(3):
                            with m.If((word < HEADER_WORDS + 1 + 2 * segs_left) | (word > self.max_total)):
                                refuse_in_header(Status.BAD_LENGTH)
                            with m.Else():
                                m.d.sync += total.eq(word)
                                m.next = "SEGMENT"
                with m.Elif(timed_out):
                    truncate()

            with m.State("SEGMENT"):
                with m.If(take):
                    m.d.comb += crc.valid.eq(1)
                    with m.If(~known | seen.bit_select(index, 1)):
                        refuse_in_body(Status.BAD_UNIT)
                    with m.Elif((hdr_len != want_len) | (pos + hdr_len + 2 > total)):
                        refuse_in_body(Status.BAD_LENGTH)
                    with m.Else():
                        m.d.sync += [sel.eq(index), remaining.eq(hdr_len), last_mask.eq(want_mask),
                                     segs_left.eq(segs_left - 1), seen.bit_select(index, 1).eq(1)]
                        m.next = "PAYLOAD"
                with m.Elif(timed_out):
                    truncate()

            with m.State("PAYLOAD"):
                with m.If(take):
                    m.d.comb += crc.valid.eq(1)
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.Switch(sel):
                        for k, shadow in enumerate(shadows):
                            with m.Case(k):
                                m.d.sync += shadow.eq(Cat(shadow[32:], word))
                    with m.If(remaining == 1):
                        with m.If((word & ~last_mask) != 0):
                            refuse_in_body(Status.BAD_LENGTH)
                        with m.Elif(segs_left == 0):
                            m.next = "CHECK"
                        with m.Else():
                            m.next = "SEGMENT"
                with m.Elif(timed_out):
                    truncate()

            with m.State("CHECK"):
                with m.If(take):
                    with m.If(pos != total - 1):
                        refuse_in_body(Status.BAD_LENGTH)
                    with m.Elif(word != crc.crc):
                        refuse_in_body(Status.BAD_CHECKSUM)
                    with m.Else():
                        for k, (u, shadow) in enumerate(zip(ids, shadows)):
                            with m.If(seen[k]):
                                m.d.sync += self.active(u).eq(shadow[:self.targets[u]])
                        m.d.sync += [self.status.eq(Status.OK), self.loads_ok.eq(self.loads_ok + 1),
                                     self.load_cycles.eq(elapsed + 1)]
                        m.next = "IDLE"
                with m.Elif(timed_out):
                    truncate()

            with m.State("DISCARD"):
                with m.If((take & (pos == total - 1)) | timed_out):
                    m.next = "IDLE"

        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        if not self.clock_gate:
            return m
        return gated_module(m, take | self.busy, name="loader")
