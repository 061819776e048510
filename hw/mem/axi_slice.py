"""AXI register slices: a skid buffer on every channel of a flat AXI4 or AXI4-Lite bus.

A full register slice cuts every combinational path through a bus: each
output (ready to the source, valid and payload to the sink) comes from a
register, and the inputs only feed next-state logic. It costs one cycle of
latency per channel and no throughput (a second register, the skid, holds
the beat that arrives in the cycle the sink stalls).

At a design's top level this keeps logic behind the slice from reading a
top-level input. Verilator evaluates all logic that reads an input in its
input-combinational region at every evaluation (both clock edges), so a
crossbar arbiter or a register read mux fed straight from the ports is
evaluated far more often than it needs to be.
"""

from amaranth import Module, Mux, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.mem.host import forward

# AXI channel of a member, by the start of its name after the prefix; AW and AR before W and R.
_CHANNELS = ("aw", "ar", "w", "b", "r")


class SkidBuffer(wiring.Component):
    """A full register slice on one valid/ready stream.

    ``o.valid``, ``o.payload`` and ``i.ready`` are registers (``i.ready`` is
    the inverse of the skid register's valid bit); ``i.valid``,
    ``i.payload`` and ``o.ready`` only feed next-state logic. A beat takes
    one cycle from ``i`` to ``o``, and a beat a cycle passes when the sink
    does not stall.

    Parameters
    ----------
    width : int
        Payload bits, at least 1.

    Attributes
    ----------
    i : In(stream.Signature(width))
        From the source.
    o : Out(stream.Signature(width))
        To the sink.
    """

    def __init__(self, *, width):
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        self.width = width
        super().__init__({"i": In(stream.Signature(width)), "o": Out(stream.Signature(width))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        skid_valid = Signal()
        skid = Signal(self.width)
        m.d.comb += i.ready.eq(~skid_valid)
        # The output register takes a new beat when it is empty or its beat leaves this cycle.
        with m.If(~o.valid | o.ready):
            m.d.sync += [o.valid.eq(skid_valid | i.valid), o.payload.eq(Mux(skid_valid, skid, i.payload)),
                         skid_valid.eq(0)]
        with m.Elif(i.valid & ~skid_valid):
            m.d.sync += [skid_valid.eq(1), skid.eq(i.payload)]
        return m


def _channel(suffix):
    for channel in _CHANNELS:
        if suffix.startswith(channel):
            return channel
    raise ValueError(f"{suffix!r} is not an AXI channel's signal (aw*, w*, b*, ar*, r*)")


class AxiSlice(wiring.Component):
    """A :class:`SkidBuffer` on every channel of a flat AXI4 or AXI4-Lite slave bus.

    The slice has the bus twice: as a slave under the members' own names
    (``s_axi_awaddr``, ...), for the outside, and as a master under
    ``master_prefix`` (``m_axi_awaddr``, ...), for the slave behind it.
    Every channel gains one cycle of latency and keeps its full rate; AXI's
    rules (ordering within a channel, no dependence of valid on ready)
    are kept, since each channel is only delayed.

    Parameters
    ----------
    members : dict
        Flat slave members, name to ``In``/``Out`` seen from the slave, as
        :func:`hw.mem.host.axi4_slave_members` or
        :func:`hw.mem.csr.axil_slave_members` make them. Each name is
        ``<prefix>_<channel><signal>``; each channel present needs its
        ``valid`` and ``ready``.
    prefix : str
        The members' prefix, without the underscore (``"s_axi"``).
    master_prefix : str, optional
        Prefix of the master-side ports; by default ``prefix`` with its
        leading ``s`` replaced by ``m`` (``"m_axi"``), or ``"m_" + prefix``.

    Attributes
    ----------
    members, master_members : dict
        The slave-side and the master-side members (each seen from the slave
        port it is or faces, so :func:`hw.mem.host.forward` connects both).
    channels : dict
        Channel name (``"aw"``, ``"w"``, ``"b"``, ``"ar"``, ``"r"``) to the
        suffixes of its payload signals, in payload bit order.
    <members> and <master_members> : the ports
    """

    def __init__(self, *, members, prefix, master_prefix=None):
        if not isinstance(prefix, str) or not prefix.isidentifier():
            raise ValueError(f"prefix must be an identifier, not {prefix!r}")
        if master_prefix is None:
            master_prefix = "m" + prefix[1:] if prefix.startswith("s_") else f"m_{prefix}"
        if not isinstance(master_prefix, str) or not master_prefix.isidentifier() or master_prefix == prefix:
            raise ValueError(f"master_prefix must be an identifier other than {prefix!r}, not {master_prefix!r}")
        if not isinstance(members, dict) or not members:
            raise ValueError(f"members must be a non-empty dict of flat AXI members, not {members!r}")
        self.prefix, self.master_prefix = prefix, master_prefix
        self.members = dict(members)
        flows, payloads = {}, {}
        for name, member in self.members.items():
            if not name.startswith(f"{prefix}_"):
                raise ValueError(f"member {name!r} does not start with {prefix + '_'!r}")
            if not isinstance(member, wiring.Member) or not member.is_port:
                raise ValueError(f"member {name!r} must be a port (In or Out of a shape), not {member!r}")
            suffix = name[len(prefix) + 1:]
            channel = _channel(suffix)
            signal = suffix[len(channel):]
            if signal in ("valid", "ready"):
                if Shape.cast(member.shape).width != 1:
                    raise ValueError(f"{name!r} must be one bit wide")
                flows.setdefault(channel, {})[signal] = member.flow
            else:
                payloads.setdefault(channel, []).append((suffix, member.flow))
        self.channels = {}
        for channel in _CHANNELS:
            if channel not in flows and channel not in payloads:
                continue
            got = flows.get(channel, {})
            if set(got) != {"valid", "ready"} or got["valid"] == got["ready"]:
                raise ValueError(f"channel {channel!r} needs a valid and a ready of opposite directions")
            for suffix, flow in payloads.get(channel, []):
                if flow != got["valid"]:
                    raise ValueError(f"{prefix}_{suffix} must flow with {prefix}_{channel}valid")
            self.channels[channel] = tuple(suffix for suffix, _ in payloads.get(channel, []))
        self.master_members = {f"{master_prefix}_{name[len(prefix) + 1:]}": member
                               for name, member in self.members.items()}
        ports = dict(self.members)
        ports.update({name: member.flip() for name, member in self.master_members.items()})
        super().__init__(ports)

    def _port(self, prefix, suffix):
        return getattr(self, f"{prefix}_{suffix}")

    def elaborate(self, platform):
        m = Module()
        for channel, suffixes in self.channels.items():
            # Requests (valid into the slave) run outside to inside; responses inside to outside.
            inward = self.members[f"{self.prefix}_{channel}valid"].flow == In
            src, dst = (self.prefix, self.master_prefix) if inward else (self.master_prefix, self.prefix)
            fields = [self._port(src, s) for s in suffixes]
            width = max(1, sum(len(f) for f in fields))
            m.submodules[channel] = skid = SkidBuffer(width=width)
            m.d.comb += [skid.i.valid.eq(self._port(src, f"{channel}valid")),
                         self._port(src, f"{channel}ready").eq(skid.i.ready),
                         self._port(dst, f"{channel}valid").eq(skid.o.valid),
                         skid.o.ready.eq(self._port(dst, f"{channel}ready"))]
            lo = 0
            for suffix, field in zip(suffixes, fields):
                m.d.comb += [skid.i.payload[lo:lo + len(field)].eq(field),
                             self._port(dst, suffix).eq(skid.o.payload[lo:lo + len(field)])]
                lo += len(field)
        return m

    def insert(self, m, *, outer, inner):
        """Wire the slice between ``outer``'s flat ports and ``inner``'s, both named as :attr:`members`.

        In place of ``forward(m, outer, inner, members)``; the slice must be
        a submodule of ``m``.
        """
        forward(m, outer, self, self.members)
        for name, member in self.members.items():
            port = getattr(self, f"{self.master_prefix}_{name[len(self.prefix) + 1:]}")
            if member.flow == In:
                m.d.comb += getattr(inner, name).eq(port)
            else:
                m.d.comb += port.eq(getattr(inner, name))


def connect_host_buses(m, outer, *, axi, axil, axi_members, axil_members, slices):
    """Wire ``outer``'s AXI4 slave bus (``axi_members``, ``s_axi_*``) to ``axi`` and its AXI4-Lite one
    (``axil_members``, ``s_axil_*``) to ``axil``: with ``slices`` through an :class:`AxiSlice` each (submodules
    ``axi_slice`` and ``axil_slice``), otherwise directly (:func:`~hw.mem.host.forward`)."""
    if slices:
        m.submodules.axi_slice = axi_slice = AxiSlice(members=axi_members, prefix="s_axi")
        m.submodules.axil_slice = axil_slice = AxiSlice(members=axil_members, prefix="s_axil")
        axi_slice.insert(m, outer=outer, inner=axi)
        axil_slice.insert(m, outer=outer, inner=axil)
    else:
        forward(m, outer, axi, axi_members)
        forward(m, outer, axil, axil_members)
