# amaranth: UnusedElaboratable=no
"""The TLN crossbar's request arbiters (hw/mem/crossbar.py) against a reference round robin.

Each cycle every requester's ``valid`` and ``tier`` and each controller's ``ready`` are drawn at random; the
crossbar must grant, on each tier, the requester a round-robin arbiter grants (the first wanting one after the
last granted, in index order, wrapping), present that requester's request on the controller port and raise
``ready`` toward exactly the requesters whose request a controller took. The traffic through the whole memory
system is the co-simulation units' (``agcu``, ``host``, ``chip``).
"""

import random

import pytest
from amaranth.sim import Simulator

from hw.mem import params
from hw.mem.crossbar import TlnCrossbar

TAG_BITS = 3


def reference_grant(wants, last):
    """The requester granted among ``wants`` (bools) after ``last`` was granted; 0 when none wants."""
    n = len(wants)
    for offset in range(1, n + 1):
        i = (last + offset) % n
        if wants[i]:
            return i
    return 0


def run_arbiters(masters, *, cycles, seed, want_p):
    """Drive random requests into a crossbar; return the (cycle, tier, granted) triples it took."""
    dut = TlnCrossbar(params.SMALL, masters=masters, tag_bits=TAG_BITS)
    ms = [getattr(dut, f"m{i}") for i in range(masters)]
    ports = (dut.hbm, dut.ddr)
    taken = []

    async def bench(ctx):
        rng = random.Random(seed)
        last = [masters - 1, masters - 1]
        for cycle in range(cycles):
            valid = [rng.random() < want_p for _ in range(masters)]
            tier = [rng.randrange(2) for _ in range(masters)]
            ready = [rng.random() < 0.7 for _ in range(2)]
            for i, m in enumerate(ms):
                ctx.set(m.req.valid, valid[i])
                ctx.set(m.req.payload.tier, tier[i])
                ctx.set(m.req.payload.addr, (cycle * 64 + i) & 0xFFFF)
                ctx.set(m.req.payload.tag, (i + cycle) % (1 << TAG_BITS))
            for t, port in enumerate(ports):
                ctx.set(port.req.ready, ready[t])
            await ctx.delay(1e-9)
            expect_ready = [False] * masters
            for t, port in enumerate(ports):
                wants = [valid[i] and tier[i] == t for i in range(masters)]
                g = reference_grant(wants, last[t])
                assert ctx.get(port.req.valid) == any(wants), (cycle, t)
                if any(wants):
                    tag = ctx.get(port.req.payload.tag)
                    assert (tag >> TAG_BITS, tag & ((1 << TAG_BITS) - 1)) == (g, (g + cycle) % (1 << TAG_BITS)), \
                        (cycle, t, wants, last[t])
                    assert ctx.get(port.req.payload.addr) == (cycle * 64 + g) & 0xFFFF
                    assert ctx.get(port.req.payload.tier) == t
                    if ready[t]:
                        expect_ready[g] = True
                        last[t] = g
                        taken.append((cycle, t, g))
            assert [bool(ctx.get(m.req.ready)) for m in ms] == expect_ready, (cycle, valid, tier, ready)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return taken


@pytest.mark.parametrize("masters", [1, 2, 3, 5, 12, 13])
@pytest.mark.parametrize("want_p", [0.2, 0.6, 1.0])
def test_arbiters_grant_as_a_round_robin(masters, want_p):
    taken = run_arbiters(masters, cycles=400, seed=masters * 10 + int(want_p * 10), want_p=want_p)
    assert len(taken) > 400 * want_p * 0.4
    if masters > 1 and want_p == 1.0:
        # Everyone always asking: each tier's grants step through the requesters that ask it.
        assert len({g for _, _, g in taken}) == masters


def test_both_tiers_take_in_one_cycle():
    taken = run_arbiters(4, cycles=300, seed=7, want_p=0.9)
    per_cycle = {}
    for cycle, t, g in taken:
        per_cycle.setdefault(cycle, set()).add((t, g))
    assert any(len(grants) == 2 for grants in per_cycle.values())
