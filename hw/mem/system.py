"""The memory system: AGCUs, copy engine and host port on the TLN, in front of the HBM and DDR controllers."""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.mem import params as mem_module
from hw.mem.agcu import Agcu, agcu_config_layout, agcu_status_layout, connect_peers
from hw.mem.controller import MemController, stats_layout
from hw.mem.copy import CopyEngine, copy_config_layout, copy_status_layout
from hw.mem.crossbar import TlnCrossbar
from hw.mem.host import HostPort, axi4_slave_members, forward, host_stats_layout
from hw.mem.params import MemParams
from hw.tile.streams import scalar_stream, vector_stream

TAG_BITS = 2
HOST_ID_BITS = 4


class MemorySystem(wiring.Component):
    """Everything off the tile array: one AGCU per entry of ``lanes``, the copy engine, the host port, the TLN
    crossbar and both controllers. A top connects the AGCU streams to the tiles and the
    configuration and status records to its registers; this component only wires.

    Parameters
    ----------
    params : MemParams
    lanes : tuple of int
        Vector lanes of each AGCU (a program loader is an AGCU of one lane).

    Attributes
    ----------
    a<k>_vo, a<k>_vi, a<k>_si, a<k>_cfg, a<k>_status : AGCU k's ports (:class:`hw.mem.agcu.Agcu`)
    copy_cfg, copy_status : the copy engine's (:class:`hw.mem.copy.CopyEngine`)
    s_axi_* : the host port's AXI4 slave (:class:`hw.mem.host.HostPort`)
    hbm_stats, ddr_stats, host_stats : counters
    """

    def __init__(self, params, *, lanes):
        if not isinstance(params, MemParams):
            raise ValueError(f"params must be a MemParams, not {params!r}")
        lanes = tuple(lanes)
        if not lanes:
            raise ValueError("the memory system needs at least one AGCU")
        self.params, self.lanes = params, lanes
        self.axi_members = axi4_slave_members(id_bits=HOST_ID_BITS, addr_bits=params.addr_bits + 1,
                                              data_bytes=params.word_bytes)
        ports = dict(self.axi_members)
        for k, n in enumerate(lanes):
            ports.update({
                f"a{k}_vo": Out(vector_stream(n)), f"a{k}_vi": In(vector_stream(n)), f"a{k}_si": In(scalar_stream()),
                f"a{k}_cfg": In(agcu_config_layout(params)), f"a{k}_status": Out(agcu_status_layout()),
            })
        ports.update({
            "copy_cfg": In(copy_config_layout(params)), "copy_status": Out(copy_status_layout()),
            "hbm_stats": Out(stats_layout(params.addr_bits)), "ddr_stats": Out(stats_layout(params.addr_bits)),
            "host_stats": Out(host_stats_layout()),
        })
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        P = self.params
        masters = []
        for k, n in enumerate(self.lanes):
            agcu = m.submodules[f"agcu{k}"] = Agcu(P, lanes=n, tag_bits=TAG_BITS)
            wiring.connect(m, agcu.vo, wiring.flipped(getattr(self, f"a{k}_vo")))
            wiring.connect(m, wiring.flipped(getattr(self, f"a{k}_vi")), agcu.vi)
            wiring.connect(m, wiring.flipped(getattr(self, f"a{k}_si")), agcu.si)
            m.d.comb += [agcu.cfg.eq(getattr(self, f"a{k}_cfg")), getattr(self, f"a{k}_status").eq(agcu.status)]
            masters.append(agcu)
        # A read may wait for another AGCU's write (``after``, ``lag``): each sees every write's done and
        # its pulse per completed top-level iteration.
        connect_peers(m, masters)
        copy = m.submodules.copy = CopyEngine(P, tag_bits=TAG_BITS)
        m.d.comb += [copy.cfg.eq(self.copy_cfg), self.copy_status.eq(copy.status)]
        host = m.submodules.host = HostPort(P, id_bits=HOST_ID_BITS, tag_bits=TAG_BITS)
        forward(m, self, host, self.axi_members)
        m.d.comb += self.host_stats.eq(host.stats)
        masters += [copy, host]

        xbar = m.submodules.xbar = TlnCrossbar(P, masters=len(masters), tag_bits=TAG_BITS)
        for i, master in enumerate(masters):
            wiring.connect(m, master.tln, getattr(xbar, f"m{i}"))
        for index, name in mem_module.TIER_NAMES.items():
            ctrl = m.submodules[name] = MemController(P.tiers[index], tier_index=index, word_bytes=P.word_bytes,
                                                      addr_bits=P.addr_bits, tag_bits=xbar.wide_tag_bits)
            port = getattr(xbar, name)
            wiring.connect(m, port.req, ctrl.req)
            wiring.connect(m, ctrl.resp, port.resp)
            m.d.comb += getattr(self, f"{name}_stats").eq(ctrl.stats)
        return m
