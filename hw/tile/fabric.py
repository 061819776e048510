"""The rows x cols mesh of switches, both networks, with the units' ports on top."""

from amaranth import Module, Value
from amaranth.hdl import ClockDomain, ClockSignal, DomainRenamer, ResetSignal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.tile.clock_gate import clock_gate
from hw.tile.params import ArrayParams
from hw.tile.streams import scalar_stream, vector_stream
from hw.tile.switch import (DIRECTIONS, NETWORKS, OPPOSITE, STEP, UNIT_INPUTS, UNIT_OUTPUTS, Switch, any_of,
                            channels, switch_record_layout)


def fabric_config_layout(params):
    """One switch record per position, element ``r * cols + c`` for switch (r, c)."""
    return data.ArrayLayout(switch_record_layout(params), params.rows * params.cols)


def unit_port_name(row, col, port):
    """Top-level name of a unit position's port on the fabric, e.g. ``u1_2_vi0``."""
    return f"u{row}_{col}_{port}"


def _join(m, source, sink):
    """Connect stream ``source`` to ``sink``; their payloads may differ in layout, not in width
    (the switches carry flat payloads, the unit ports structured ones)."""
    m.d.comb += [sink.payload.eq(Value.cast(source.payload)), sink.valid.eq(source.valid),
                 source.ready.eq(sink.ready)]


class Fabric(wiring.Component):
    """Vector and scalar meshes of :class:`~hw.tile.switch.Switch`.

    Switch (r, c) output ``e<k>`` feeds switch (r, c+1) input ``w<k>``, and
    likewise north (row - 1), south (row + 1) and west. Outputs at the array
    edge have no neighbour: their ``ready`` is held low, so a configuration
    that selects one blocks instead of losing words (the router never does).

    Parameters
    ----------
    params : ArrayParams
    gated_networks : tuple of str
        Networks whose switches all run on one gated clock (:mod:`hw.tile.clock_gate`), which ticks only
        after a cycle in which one of them held a word, a unit offered one to that network, or reset: no
        switch register changes otherwise, so the network behaves as ungated. The scalar network carries
        words in few of a decode's kernel cycles, and one gate for all its switches costs one clock domain
        (a gate per switch cost more in dispatch than it saved, docs/performance.md).

    Attributes
    ----------
    u{r}_{c}_vo0, u{r}_{c}_so0 : In(stream)
        The unit at (r, c)'s outputs, into the fabric.
    u{r}_{c}_vi0..vi2, u{r}_{c}_si0..si1 : Out(stream)
        The unit at (r, c)'s inputs, out of the fabric.
    cfg : In(fabric_config_layout(params))
        Every switch's record, ``cfg[r * cols + c].vector`` / ``.scalar``.
    vector_stall_cycles, scalar_stall_cycles : Out(ArrayLayout(32, rows * cols))
        Each switch's ``stall_cycles``, in the same order as ``cfg``.
    """

    def __init__(self, params, *, gated_networks=("scalar",)):
        if not isinstance(params, ArrayParams):
            raise ValueError(f"params must be an ArrayParams, not {type(params).__name__}")
        if isinstance(gated_networks, str):
            raise TypeError(f"gated_networks must be a tuple of network names, not the string {gated_networks!r}")
        gated_networks = tuple(gated_networks)
        if any(net not in NETWORKS for net in gated_networks):
            raise ValueError(f"gated_networks must name networks of {NETWORKS}, not {gated_networks!r}")
        self.params = params
        self.gated_networks = gated_networks
        streams = {"vector": vector_stream(params.lanes), "scalar": scalar_stream()}
        members = {}
        for r in range(params.rows):
            for c in range(params.cols):
                for net in NETWORKS:
                    for port in UNIT_OUTPUTS[net]:
                        members[unit_port_name(r, c, port)] = In(streams[net])
                    for port in UNIT_INPUTS[net]:
                        members[unit_port_name(r, c, port)] = Out(streams[net])
        members["cfg"] = In(fabric_config_layout(params))
        for net in NETWORKS:
            members[f"{net}_stall_cycles"] = Out(data.ArrayLayout(32, params.rows * params.cols))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        for net in NETWORKS:
            # One network's switches and links; a gated network's, in a module whose registers run on its clock.
            n = Module() if net in self.gated_networks else m
            switches = {}
            for r in range(p.rows):
                for c in range(p.cols):
                    sw = switches[r, c] = Switch(p, network=net)
                    n.submodules[f"{net[0]}sw_{r}_{c}"] = sw
                    index = r * p.cols + c
                    n.d.comb += [
                        sw.cfg.eq(self.cfg[index][net]),
                        getattr(self, f"{net}_stall_cycles")[index].eq(sw.stall_cycles),
                    ]
                    for port in UNIT_OUTPUTS[net]:
                        _join(n, getattr(self, unit_port_name(r, c, port)), getattr(sw, f"i_{port}"))
                    for port in UNIT_INPUTS[net]:
                        _join(n, getattr(sw, f"o_{port}"), getattr(self, unit_port_name(r, c, port)))
            for (r, c), sw in switches.items():
                for d in DIRECTIONS:
                    dr, dc = STEP[d]
                    neighbour = switches.get((r + dr, c + dc))
                    for k in range(channels(p, net)):
                        out, inp = getattr(sw, f"o_{d}{k}"), getattr(sw, f"i_{d}{k}")
                        if neighbour is None:
                            n.d.comb += [out.ready.eq(0), inp.valid.eq(0)]
                        else:
                            wiring.connect(n, out, getattr(neighbour, f"i_{OPPOSITE[d]}{k}"))
            if net not in self.gated_networks:
                continue
            domain = f"{net}_net"
            m.domains += ClockDomain(domain, local=True)
            m.submodules[net] = DomainRenamer(domain)(n)
            offered = [getattr(self, unit_port_name(r, c, port)).valid
                       for r in range(p.rows) for c in range(p.cols) for port in UNIT_OUTPUTS[net]]
            en = any_of([sw.holding for sw in switches.values()] + offered + [ResetSignal()])
            m.d.comb += [ClockSignal(domain).eq(clock_gate(m, en, name=f"{domain}_gclk")),
                         ResetSignal(domain).eq(ResetSignal())]
        return m
