"""Simulation units of the memory tiers: one controller per tier, small parameters."""

from cosim.harness import SimUnit
from cosim.store import STORE_SOURCES
from hw.mem import params
from hw.mem.controller import MemController

CONTROLLER_TAG_BITS = 4


def _controller(tier_index):
    P = params.SMALL
    return MemController(P.tiers[tier_index], tier_index=tier_index, word_bytes=P.word_bytes,
                         addr_bits=P.addr_bits, tag_bits=CONTROLLER_TAG_BITS)


UNITS = {
    name: SimUnit(name=name, design=lambda index=index: _controller(index), testbench="cosim.tb.test_memctl",
                  env={"OPENRDU_MEM_PARAMS": "SMALL", "OPENRDU_MEM_TIER": name}, sources=STORE_SOURCES)
    for name, index in (("hbm", params.HBM), ("ddr", params.DDR))
}
