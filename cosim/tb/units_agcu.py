"""Simulation unit ``agcu``: two AGCUs, the copy engine and a spare TLN port on both memory tiers."""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cosim.harness import SimUnit
from cosim.store import STORE_SOURCES
from hw.mem import params as mem_params
from hw.mem import tln
from hw.mem.agcu import Agcu, agcu_config_layout, agcu_status_layout, connect_peers
from hw.mem.controller import MemController, stats_layout
from hw.mem.copy import CopyEngine, copy_config_layout, copy_status_layout
from hw.mem.crossbar import TlnCrossbar
from hw.mem.params import MemParams
from hw.tile.streams import scalar_stream, vector_stream

TAG_BITS = 4
# One AGCU whose vector spans two TLN words, one whose word holds two vectors.
LANES = (8, 2)


class MemoryTestTop(wiring.Component):
    """AGCUs, a copy engine and a spare requester on a TLN crossbar in front of HBM and DDR controllers.

    Crossbar ports: ``m0..`` the AGCUs, then the copy engine, then ``spare``,
    which the testbench drives with its own traffic.

    Parameters
    ----------
    params : MemParams
    lanes : tuple of int
        Vector lanes of each AGCU; one AGCU per entry.
    tag_bits : int

    Attributes
    ----------
    a<i>_cfg, a<i>_status, a<i>_vo, a<i>_vi, a<i>_si, a<i>_write_iteration : AGCU i's ports (see :class:`Agcu`)
    copy_cfg, copy_status : the copy engine's
    spare : In(tln.master_signature)
        A requester port for the testbench.
    hbm_stats, ddr_stats : Out(stats_layout)
        The controllers' counters.
    """

    def __init__(self, params=mem_params.SMALL, *, lanes=LANES, tag_bits=TAG_BITS):
        if not isinstance(params, MemParams):
            raise ValueError(f"params must be a MemParams, not {params!r}")
        if not lanes:
            raise ValueError(f"lanes must name at least one AGCU, not {lanes!r}")
        self.params, self.lanes, self.tag_bits = params, tuple(lanes), tag_bits
        ports = {}
        for i, n in enumerate(self.lanes):
            ports.update({
                f"a{i}_cfg": In(agcu_config_layout(params)),
                f"a{i}_status": Out(agcu_status_layout()),
                f"a{i}_vo": Out(vector_stream(n)),
                f"a{i}_vi": In(vector_stream(n)),
                f"a{i}_si": In(scalar_stream()),
                f"a{i}_write_iteration": Out(1),
            })
        ports.update({
            "copy_cfg": In(copy_config_layout(params)),
            "copy_status": Out(copy_status_layout()),
            "spare": In(tln.master_signature(params, tag_bits=tag_bits)),
            "hbm_stats": Out(stats_layout(params.addr_bits)),
            "ddr_stats": Out(stats_layout(params.addr_bits)),
        })
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        P = self.params
        n = len(self.lanes)
        m.submodules.xbar = xbar = TlnCrossbar(P, masters=n + 2, tag_bits=self.tag_bits)
        for i, lanes in enumerate(self.lanes):
            agcu = Agcu(P, lanes=lanes, tag_bits=self.tag_bits)
            m.submodules[f"agcu{i}"] = agcu
            wiring.connect(m, agcu.tln, getattr(xbar, f"m{i}"))
            wiring.connect(m, agcu.vo, wiring.flipped(getattr(self, f"a{i}_vo")))
            wiring.connect(m, wiring.flipped(getattr(self, f"a{i}_vi")), agcu.vi)
            wiring.connect(m, wiring.flipped(getattr(self, f"a{i}_si")), agcu.si)
            m.d.comb += [agcu.cfg.eq(getattr(self, f"a{i}_cfg")),
                         getattr(self, f"a{i}_status").eq(agcu.status),
                         getattr(self, f"a{i}_write_iteration").eq(agcu.write_iteration)]
        agcus = [m.submodules[f"agcu{i}"] for i in range(n)]
        connect_peers(m, agcus)
        m.submodules.copy = copy = CopyEngine(P, tag_bits=self.tag_bits)
        wiring.connect(m, copy.tln, getattr(xbar, f"m{n}"))
        m.d.comb += [copy.cfg.eq(self.copy_cfg), self.copy_status.eq(copy.status)]
        wiring.connect(m, wiring.flipped(self.spare), getattr(xbar, f"m{n + 1}"))
        for index, name in ((mem_params.HBM, "hbm"), (mem_params.DDR, "ddr")):
            ctl = MemController(P.tiers[index], tier_index=index, word_bytes=P.word_bytes, addr_bits=P.addr_bits,
                                tag_bits=xbar.wide_tag_bits)
            m.submodules[name] = ctl
            port = getattr(xbar, name)
            wiring.connect(m, port.req, ctl.req)
            wiring.connect(m, ctl.resp, port.resp)
            m.d.comb += getattr(self, f"{name}_stats").eq(ctl.stats)
        return m


UNITS = {
    "agcu": SimUnit(name="agcu", design=lambda: MemoryTestTop(mem_params.SMALL), testbench="cosim.tb.test_agcu",
                    env={"OPENRDU_MEM_PARAMS": "SMALL"}, sources=STORE_SOURCES),
}
