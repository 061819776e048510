# amaranth: UnusedElaboratable=no
"""AXI register slices (hw/mem/axi_slice.py): order, rate, registered outputs, argument checks.

The slices on a whole AXI4 and AXI4-Lite bus under idle cycles and
back-pressure are the ``host-sliced`` co-simulation unit's (cosim/tb/units_host.py).
"""

import random

import pytest
from amaranth.sim import Simulator

from hw.mem.axi_slice import AxiSlice, SkidBuffer
from hw.mem.csr import axil_slave_members
from hw.mem.host import axi4_slave_members


def run_skid(valid_p, ready_p, beats=300, seed=1):
    """Beats through a SkidBuffer with random idle cycles and back-pressure; (beats out, cycles, latencies)."""
    dut = SkidBuffer(width=16)
    sent, got, cycles, latencies, sent_at = list(range(1, beats + 1)), [], [0], [], {}

    async def bench(ctx):
        rng = random.Random(seed)
        k = 0
        while len(got) < len(sent) and cycles[0] < 20 * beats:
            valid = k < len(sent) and rng.random() < valid_p
            ready = rng.random() < ready_p
            before = (ctx.get(dut.o.valid), ctx.get(dut.o.payload), ctx.get(dut.i.ready))
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, sent[k] if valid else 0xFFFF)
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-9)
            # No output follows an input within the cycle.
            assert (ctx.get(dut.o.valid), ctx.get(dut.o.payload), ctx.get(dut.i.ready)) == before
            if ctx.get(dut.o.valid) and ready:
                got.append(ctx.get(dut.o.payload))
                latencies.append(cycles[0] - sent_at[got[-1]])
            if valid and ctx.get(dut.i.ready):
                sent_at[sent[k]] = cycles[0]
                k += 1
            await ctx.tick()
            cycles[0] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == sent, f"beats out of order or lost: {got[:10]}..."
    return got, cycles[0], latencies


@pytest.mark.parametrize("valid_p, ready_p", [(0.7, 0.5), (0.3, 0.9), (1.0, 0.2), (0.5, 1.0)])
def test_skid_buffer_keeps_every_beat_in_order(valid_p, ready_p):
    run_skid(valid_p, ready_p)


def test_skid_buffer_full_rate_and_one_cycle_latency():
    _, cycles, latencies = run_skid(1.0, 1.0, beats=100)
    assert cycles == 101, "one beat a cycle after the first cycle's latency"
    assert set(latencies) == {1}


def test_axi_slice_groups_channels():
    axi = AxiSlice(members=axi4_slave_members(id_bits=4, addr_bits=25, data_bytes=16), prefix="s_axi")
    assert axi.channels == {"aw": ("awid", "awaddr", "awlen", "awsize", "awburst"),
                            "ar": ("arid", "araddr", "arlen", "arsize", "arburst"),
                            "w": ("wdata", "wstrb", "wlast"), "b": ("bid", "bresp"),
                            "r": ("rid", "rdata", "rresp", "rlast")}
    assert "m_axi_awaddr" in axi.master_members and hasattr(axi, "m_axi_rready")
    lite = AxiSlice(members=axil_slave_members(addr_bits=12), prefix="s_axil", master_prefix="down")
    assert lite.channels["r"] == ("rdata", "rresp") and hasattr(lite, "down_awvalid")


def test_argument_checks():
    members = axil_slave_members(addr_bits=12)
    with pytest.raises(ValueError, match="width"):
        SkidBuffer(width=0)
    with pytest.raises(ValueError, match="non-empty dict"):
        AxiSlice(members={}, prefix="s_axil")
    with pytest.raises(ValueError, match="does not start with"):
        AxiSlice(members=members, prefix="s_axi")
    with pytest.raises(ValueError, match="master_prefix"):
        AxiSlice(members=members, prefix="s_axil", master_prefix="s_axil")
    without_ready = {k: v for k, v in members.items() if k != "s_axil_bready"}
    with pytest.raises(ValueError, match="channel 'b'"):
        AxiSlice(members=without_ready, prefix="s_axil")


def test_chip_checks_host_slices():
    from hw.chip import Chip
    from sw.target import CHIP

    with pytest.raises(ValueError, match="host_slices"):
        Chip(CHIP.array, CHIP.memory, host_slices=1)
