"""The TLN crossbar: several requesters in front of the HBM and DDR controllers."""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.mem import tln


def _bit_mask(n, k):
    """The n-bit constant with bit i set where bit k of i is set: one output bit of a one-hot-to-binary encoder."""
    return Const(sum(1 << i for i in range(n) if (i >> k) & 1), n)


class TlnCrossbar(wiring.Component):
    """Route requests by their ``tier`` field and responses back by requester.

    Each controller port has a round-robin arbiter over the requesters that
    want it. On the way in, a request's tag is widened by the requester's
    index; on the way out that index picks the requester and is stripped.
    A requester that talks to both tiers receives their responses merged,
    alternating when both have one; responses from one tier keep their order.

    Requesters must accept responses for every read they have issued (the
    AGCUs and the copy engine reserve buffer space before issuing), since a
    response that waits holds up its controller. A response that waits stays
    offered unchanged until taken, as the stream contract requires.

    Parameters
    ----------
    params : MemParams
    masters : int
        Number of requesters.
    tag_bits : int
        Width of each requester's own tag.

    Attributes
    ----------
    m0, m1, ... : In(master_signature)
        Requester ports.
    hbm, ddr : Out(master_signature with the widened tag)
        Controller ports.
    """

    def __init__(self, params, *, masters, tag_bits):
        if not isinstance(masters, int) or masters < 1:
            raise ValueError(f"masters must be a positive integer, not {masters!r}")
        self.params, self.masters, self.tag_bits = params, masters, tag_bits
        self.index_bits = max(1, (masters - 1).bit_length())
        ports = {f"m{i}": In(tln.master_signature(params, tag_bits=tag_bits)) for i in range(masters)}
        wide = tln.master_signature(params, tag_bits=tag_bits + self.index_bits)
        ports.update({"hbm": Out(wide), "ddr": Out(wide)})
        super().__init__(ports)

    @property
    def wide_tag_bits(self):
        return self.tag_bits + self.index_bits

    def elaborate(self, platform):
        m = Module()
        n = self.masters
        ms = [getattr(self, f"m{i}") for i in range(n)]
        tiers = (self.hbm, self.ddr)
        accepted = []

        for t, port in enumerate(tiers):
            wants = [Signal(name=f"want{t}_{i}") for i in range(n)]
            for i in range(n):
                m.d.comb += wants[i].eq(ms[i].req.valid & (ms[i].req.payload.tier == t))
            # Round robin from the requester after the one granted most
            # recently: the lowest wanting requester above it, else the lowest
            # wanting one. ``above`` (registered) marks the requesters above
            # it, so the grant is a mask, a lowest-set-bit isolation and an
            # encoder: a few word operations in the co-simulation, where a
            # priority chain of n * n comparisons was the largest part of the
            # memory system's per-cycle logic (docs/performance.md).
            want = Cat(*wants)
            above = Signal(n, name=f"above{t}")
            hi = Signal(n, name=f"hi{t}")
            pick = Signal(n, name=f"pick{t}")
            onehot = Signal(n, name=f"onehot{t}")
            grant = Signal(range(n), name=f"grant{t}")
            m.d.comb += [
                hi.eq(want & above),
                pick.eq(Mux(hi.any(), hi, want)),
                onehot.eq(pick & (~pick + 1)),
                grant.eq(Cat(*((onehot & _bit_mask(n, k)).any() for k in range(len(grant))))),
            ]
            with m.Switch(grant):
                for i in range(n):
                    with m.Case(i):
                        m.d.comb += [
                            port.req.valid.eq(wants[i]),
                            port.req.payload.tier.eq(t),
                            port.req.payload.write.eq(ms[i].req.payload.write),
                            port.req.payload.addr.eq(ms[i].req.payload.addr),
                            port.req.payload.data.eq(ms[i].req.payload.data),
                            port.req.payload.tag.eq(Cat(ms[i].req.payload.tag, Const(i, self.index_bits))),
                        ]
            with m.If(port.req.valid & port.req.ready):
                # The requesters above the granted one: -(onehot << 1) cut to n bits.
                m.d.sync += above.eq(-Cat(Const(0, 1), onehot))
            accepted.append(onehot & port.req.ready.replicate(n))
        for i in range(n):
            m.d.comb += ms[i].req.ready.eq(accepted[0][i] | accepted[1][i])

        for i in range(n):
            from_tier = [Signal(name=f"resp{i}_from{t}") for t in range(2)]
            for t, port in enumerate(tiers):
                m.d.comb += from_tier[t].eq(port.resp.valid & (port.resp.payload.tag[self.tag_bits:] == i))
            prefer_ddr = Signal(name=f"prefer_ddr{i}")
            take_ddr = Signal(name=f"take_ddr{i}")
            # A response offered and not taken stays offered: the choice of
            # tier is held until it moves, so the stream stays stable.
            held = Signal(name=f"held{i}")
            held_ddr = Signal(name=f"held_ddr{i}")
            m.d.comb += take_ddr.eq(Mux(held, held_ddr, from_tier[1] & (prefer_ddr | ~from_tier[0])))
            m.d.sync += [held.eq(ms[i].resp.valid & ~ms[i].resp.ready), held_ddr.eq(take_ddr)]
            chosen = [~take_ddr & from_tier[0], take_ddr]
            for t, port in enumerate(tiers):
                with m.If(chosen[t]):
                    m.d.comb += [
                        ms[i].resp.valid.eq(1),
                        ms[i].resp.payload.data.eq(port.resp.payload.data),
                        ms[i].resp.payload.tag.eq(port.resp.payload.tag[:self.tag_bits]),
                        ms[i].resp.payload.write.eq(port.resp.payload.write),
                        ms[i].resp.payload.error.eq(port.resp.payload.error),
                        port.resp.ready.eq(ms[i].resp.ready),
                    ]
            with m.If(ms[i].resp.valid & ms[i].resp.ready & from_tier[0] & from_tier[1]):
                m.d.sync += prefer_ddr.eq(~take_ddr)
        return m

