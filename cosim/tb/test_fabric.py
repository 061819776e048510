"""cocotb testbench of the switch fabric alone.

The router routes a set of nets (multicast to two and three sinks, routes
that cross, a net that stays on one switch); numbered vectors and scalars go
into the sources with random idle cycles and the sinks apply random
back-pressure. Every unit input port of the array is watched, so a word on
a port no net drives fails the test too. Timing is compared with
``sw.model.fabric``. The array size comes from ``OPENRDU_FABRIC`` (a key of
``units_fabric.PARAMS``).
"""

import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly, Timer

from cosim import components
from cosim.components import Scoreboard, StreamDriver, StreamMonitor, pauses, run, start_clock_and_reset
from cosim.tb.units_fabric import PARAMS
from hw.tile.fabric import unit_port_name
from hw.tile.switch import UNIT_INPUTS, UNIT_OUTPUTS
from sw.model.fabric import FabricModel
from sw.tile.route import Net, route

P = PARAMS[os.environ["OPENRDU_FABRIC"]]
SEED = int(os.environ.get("OPENRDU_SEED", "1"))
WORDS = int(os.environ.get("OPENRDU_FABRIC_WORDS", "120"))


def nets_for(p):
    """Nets that multicast, cross each other, and use both networks, for a 2x4 or 3x3 array."""
    r1, c1 = p.rows - 1, p.cols - 1
    return [
        Net("bcast", "vector", (0, 0, "vo0"), [(r1, c1, "vi0"), (0, c1, "vi1"), (r1, 0, "vi2")]),
        Net("back", "vector", (r1, c1, "vo0"), [(0, 0, "vi0")]),
        Net("fork", "vector", (0, c1, "vo0"), [(r1, 1, "vi1"), (0, 1, "vi0")]),
        Net("local", "vector", (1, 1, "vo0"), [(1, 1, "vi0")]),
        Net("down", "vector", (0, 1, "vo0"), [(r1, 2, "vi2")]),
        Net("sfan", "scalar", (r1, 0, "so0"), [(0, c1, "si0"), (r1, 2, "si1")]),
        Net("sback", "scalar", (0, c1, "so0"), [(r1, 0, "si0")]),
        Net("sself", "scalar", (0, 1, "so0"), [(0, 1, "si1"), (r1, c1, "si0")]),
    ]


def payloads(net_id, network, n):
    """Numbered words: net id, item number and lane in every word; ``last`` on every eighth item."""
    out = []
    for k in range(n):
        last = int(k % 8 == 7)
        if network == "vector":
            value = sum(((net_id << 24) | (k << 8) | j) << (32 * j) for j in range(P.lanes))
            out.append(value | (last << (32 * P.lanes)))
        else:
            out.append((net_id << 24) | k | (last << 32))
    return out


def port(dut, rc_port):
    name = unit_port_name(*rc_port)
    return tuple(getattr(dut, f"{name}__{s}") for s in ("valid", "ready", "payload"))


def all_unit_inputs(p):
    return [(r, c, q) for r in range(p.rows) for c in range(p.cols) for net in ("vector", "scalar")
            for q in UNIT_INPUTS[net]]


def _idle_ports():
    return ([f"{unit_port_name(r, c, q)}__valid" for r in range(P.rows) for c in range(P.cols)
             for net in ("vector", "scalar") for q in UNIT_OUTPUTS[net]]
            + [f"{unit_port_name(*sink)}__ready" for sink in all_unit_inputs(P)])


async def reset(dut, config):
    dut.cfg.value = config
    await start_clock_and_reset(dut, zero=_idle_ports())


class Exchange:
    """Drive several sources and watch every unit input of the array, each against its expected words.

    A sink no net drives expects nothing, so a word offered there fails at once, as
    does any word beyond a sink's expected ones in the ``drain`` cycles after the
    last. Cycles are counted from the first cycle driven; ``offers`` and
    ``arrivals`` record the cycle of every handshake.
    """

    def __init__(self, dut, sources, expected, *, idle, backpressure, seed):
        self.dut = dut
        self.drivers = {src: StreamDriver(dut, unit_port_name(*src), words, pauses=pauses(idle, (seed, k)))
                        for k, (src, words) in enumerate(sources.items())}
        self.monitors = {sink: StreamMonitor(dut, unit_port_name(*sink),
                                             Scoreboard(expected.get(sink, []), name=f"sink {sink}"),
                                             pauses=pauses(backpressure, (seed, 1000 + k)))
                         for k, sink in enumerate(all_unit_inputs(P))}

    async def run(self, *, stall_limit=500, drain=20):
        loop = await run(self.dut, [*self.drivers.values(), *self.monitors.values()], settle=drain,
                         stall_limit=stall_limit)
        self.cycles = loop.cycle
        self.sent = {src: d.sent for src, d in self.drivers.items()}
        self.offers = {src: d.cycles for src, d in self.drivers.items()}
        self.received = {sink: m.items for sink, m in self.monitors.items()}
        self.arrivals = {sink: m.cycles for sink, m in self.monitors.items()}


def check_delivery(routing, exchange, streams):
    model = FabricModel(routing)
    expected = model.deliver(streams)
    for sink, words in expected.items():
        got = exchange.received[sink]
        assert len(got) == len(words), f"sink {sink}: {len(got)} words, expected {len(words)}"
        bad = [k for k, (g, w) in enumerate(zip(got, words)) if g != int(w)]
        assert not bad, (f"sink {sink}: {len(bad)} words differ, first at {bad[0]}: "
                         f"got {got[bad[0]]:#x}, expected {int(words[bad[0]]):#x}")


def setup():
    nets = nets_for(P)
    routing = route(P, nets)
    streams = {net.name: payloads(i + 1, net.network, WORDS) for i, net in enumerate(nets)}
    sources = {next(n.source for n in nets if n.name == name): words for name, words in streams.items()}
    expected = FabricModel(routing).deliver(streams)
    return nets, routing, streams, sources, expected


@cocotb.test()
async def routed_streams_with_stalls(dut):
    """Every sink gets exactly its source's sequence under 30% idle and 30% back-pressure."""
    nets, routing, streams, sources, expected = setup()
    await reset(dut, routing.fabric_config())
    ex = Exchange(dut, sources, expected, idle=0.3, backpressure=0.3, seed=SEED)
    await ex.run()
    check_delivery(routing, ex, streams)
    stats = routing.stats()
    dut._log.info(f"{len(nets)} nets, {sum(len(w) for w in expected.values())} words delivered in {ex.cycles} "
                  f"cycles with stalls; channel-hops used: vector {stats['vector']['channel_hops']}, "
                  f"scalar {stats['scalar']['channel_hops']}")


@cocotb.test()
async def full_rate_timing_matches_model(dut):
    """Without stalls, each sink's delivery cycles agree with the fast model within 10%."""
    nets, routing, streams, sources, expected = setup()
    model = FabricModel(routing)
    await reset(dut, routing.fabric_config())
    ex = Exchange(dut, sources, expected, idle=0.0, backpressure=0.0, seed=SEED)
    await ex.run()
    check_delivery(routing, ex, streams)
    worst = 0.0
    lines = []
    for net in nets:
        first = ex.offers[net.source][0]
        for sink, want in model.delivery_cycles(net.name, WORDS).items():
            got = ex.arrivals[sink][-1] - first + 1
            error = abs(got - want) / want
            worst = max(worst, error)
            lines.append(f"{net.name}->{sink}: {routing.routes[net.name].hops(sink)} hops, "
                         f"RTL {got}, model {want} cycles")
            assert error <= 0.10, f"net {net.name!r} sink {sink}: RTL {got} cycles, model {want} ({error:.1%} off)"
    dut._log.info("full rate, " + "; ".join(lines))
    dut._log.info(f"model vs RTL at full rate: worst disagreement {worst:.2%}")


@cocotb.test()
async def word_arrivals_match_model(dut):
    """With an idle source and ready sinks, the model predicts every word's arrival cycle."""
    nets, routing, streams, sources, expected = setup()
    model = FabricModel(routing)
    await reset(dut, routing.fabric_config())
    ex = Exchange(dut, sources, expected, idle=0.5, backpressure=0.0, seed=SEED + 1)
    await ex.run()
    check_delivery(routing, ex, streams)
    words = exact = 0
    for net in nets:
        for sink in routing.routes[net.name].paths:
            want = model.arrival_cycles(net.name, sink, ex.offers[net.source])
            got = np.array(ex.arrivals[sink])
            words += len(got)
            exact += int(np.sum(got == want))
    dut._log.info(f"per-word arrival cycles: {exact} of {words} exactly as the model predicts")
    assert exact == words, f"{words - exact} of {words} words arrived at another cycle than the model predicts"


async def check_unrouted_input_backs_up(dut, network):
    """Words into an input no output selects wait in its FIFO (none lost), then flow once routed."""
    out, (inp, late) = UNIT_OUTPUTS[network][0], UNIT_INPUTS[network][:2]
    free = (0, 0, out)
    other = Net("other", network, (P.rows - 1, P.cols - 1, out), [(0, P.cols - 1, inp)])
    await reset(dut, route(P, [other]).fabric_config())
    words = payloads(9, network, 10)
    valid, ready, payload = port(dut, free)
    sinks = {s: port(dut, s) for s in all_unit_inputs(P)}
    for s in sinks.values():
        s[1].value = 1
    accepted = 0
    for _ in range(40):
        await FallingEdge(dut.clk)
        valid.value = 1
        payload.value = words[accepted]
        await ReadOnly()
        for s, (v, _, _) in sinks.items():
            assert not v.value, f"a word reached {s} although no output selects {free}"
        if ready.value:
            accepted += 1
    assert accepted == P.switch_fifo_depth, (f"an unrouted input took {accepted} words, "
                                             f"expected its FIFO depth {P.switch_fifo_depth}")
    stall = (int(getattr(dut, f"{network}_stall_cycles").value) >> 0) & 0xFFFF_FFFF
    assert stall >= 40 - P.switch_fifo_depth - 1, f"switch (0, 0) counted {stall} stall cycles while backed up"

    await FallingEdge(dut.clk)
    valid.value = 0
    for s in sinks.values():
        s[1].value = 0
    dut.cfg.value = route(P, [other, Net("late", network, free, [(0, 0, late)])]).fabric_config()
    ex = Exchange(dut, {free: words[accepted:]}, {(0, 0, late): words}, idle=0.2, backpressure=0.2, seed=SEED)
    await ex.run()
    got = ex.received[(0, 0, late)]
    assert got == words, f"after routing, the sink got {[hex(w) for w in got]}, expected all ten words in order"

    # A reset with the network idle (a gated network's clock stopped) clears the counter all the same.
    await components.reset(dut, zero=_idle_ports())
    await ReadOnly()
    stall = int(getattr(dut, f"{network}_stall_cycles").value) & 0xFFFF_FFFF
    assert stall == 0, f"switch (0, 0) still counts {stall} stall cycles after a reset"


@cocotb.test()
async def unrouted_input_backs_up(dut):
    """The vector network: see :func:`check_unrouted_input_backs_up`."""
    await check_unrouted_input_backs_up(dut, "vector")


@cocotb.test()
async def unrouted_scalar_input_backs_up(dut):
    """The same on the scalar network, whose switches run on a gated clock: the held words keep it ticking,
    the stall counter counts every cycle they wait, and a route made while they wait delivers them."""
    await check_unrouted_input_backs_up(dut, "scalar")


@cocotb.test()
async def no_combinational_path(dut):
    """No unit input responds in the same cycle to a source's valid, nor a source's ready to a sink's ready."""
    build_log = Path.cwd().parent / "build.log"
    assert build_log.exists(), f"no Verilator build log at {build_log}"
    warnings = [line for line in build_log.read_text().splitlines() if "UNOPTFLAT" in line or "COMBDLY" in line]
    assert not warnings, "Verilator reports combinational loops:\n" + "\n".join(warnings[:5])

    nets, routing, streams, sources, expected = setup()
    await reset(dut, routing.fabric_config())
    sinks = {s: port(dut, s) for s in all_unit_inputs(P)}
    srcs = {s: port(dut, s) for s in sources}
    for src, (valid, _, payload) in srcs.items():
        valid.value = 1
        payload.value = sources[src][0]
    await Timer(1, unit="ns")
    assert not any(v.value for v, _, _ in sinks.values()), "a sink saw valid in the cycle its source offered"
    # Fill every route with sinks not ready, then flip all sink readies within one cycle.
    for _ in range(3 * (P.rows + P.cols)):
        await FallingEdge(dut.clk)
    for (_, ready, _) in sinks.values():
        ready.value = 0
    await Timer(1, unit="ns")
    before = {s: int(r.value) for s, (_, r, _) in srcs.items()}
    for (_, ready, _) in sinks.values():
        ready.value = 1
    await Timer(1, unit="ns")
    after = {s: int(r.value) for s, (_, r, _) in srcs.items()}
    assert before == after, f"source ready changed with sink ready in one cycle: {before} -> {after}"
    assert not any(before.values()), f"sources still ready after the routes filled: {before}"
