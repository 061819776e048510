"""The router (sw/tile/route.py), its packed records, and the fabric's fast model."""

import re

import numpy as np
import pytest
from amaranth.lib import data

from hw.tile.params import SMALL, ArrayParams
from hw.tile.switch import switch_config_layout, switch_inputs, switch_outputs, switch_record_layout
from sw.model.fabric import FabricModel, delivery_cycles, latency
from sw.tile.route import Net, RoutingError, check_records, route

ROW = ArrayParams(rows=1, cols=5, lanes=4, stages=2, pmu_bank_words=64)


def test_saturated_link_names_net_sink_and_links():
    # channels + 1 nets from the three western units to the east cross the link (0, 2) -> (0, 3).
    nets = [Net(f"n{k}", "vector", (0, k, "vo0"), [(0, 3 + k % 2, f"vi{k}")]) for k in range(ROW.vector_channels + 1)]
    with pytest.raises(RoutingError) as err:
        route(ROW, nets)
    message = str(err.value)
    head = r"^net 'n\d': cannot reach sink \(0, [34], 'vi\d'\) from source \(0, \d, 'vo0'\)"
    assert re.search(head, message), message
    assert "no free vector channel on any path" in message, message
    assert "saturated links: (0, 2)->(0, 3) (used by n" in message, message


def test_saturated_scalar_link_in_one_row():
    sinks = [(0, 3, "si0"), (0, 3, "si1"), (0, 4, "si0")]
    nets = [Net(f"s{k}", "scalar", (0, k, "so0"), [sinks[k]]) for k in range(ROW.scalar_channels + 1)]
    assert route(ROW, nets[:-1]).usage["scalar"][(0, 2), (0, 3)] == ROW.scalar_channels
    with pytest.raises(RoutingError, match=r"no free scalar channel on any path; saturated links: \(0, 2\)->\(0, 3\)"):
        route(ROW, nets)


def test_two_nets_fit_exactly_and_use_both_channels():
    nets = [Net(f"n{k}", "vector", (0, k, "vo0"), [(0, 3, f"vi{k}")]) for k in range(ROW.vector_channels)]
    r = route(ROW, nets)
    assert r.usage["vector"][(0, 1), (0, 2)] == 2
    assert {ch for u, v, ch in r.routes["n0"].links + r.routes["n1"].links if (u, v) == ((0, 1), (0, 2))} == {0, 1}
    assert r.stats()["vector"]["saturated_links"] >= 1


@pytest.mark.parametrize("net, match", [
    (Net("a", "vector", (0, 0, "vo0"), [(0, 1, "vi3")]), r"sink port 'vi3' does not exist on the vector network"),
    (Net("a", "vector", (0, 0, "so0"), [(0, 1, "vi0")]), r"source port 'so0' does not exist on the vector"),
    (Net("a", "scalar", (0, 0, "so0"), [(0, 1, "si2")]), r"sink port 'si2' does not exist on the scalar"),
    (Net("a", "scalar", (0, 0, "so0"), [(0, 1, "vi0")]), r"sink port 'vi0' does not exist on the scalar"),
    (Net("a", "vector", (2, 0, "vo0"), [(0, 1, "vi0")]), r"source \(2, 0, 'vo0'\) is outside the 2x4 array"),
    (Net("a", "vector", (0, 0, "vo0"), [(0, 4, "vi0")]), r"sink \(0, 4, 'vi0'\) is outside the 2x4 array"),
    (Net("a", "vector", (0, 0, "vo0"), [(-1, 0, "vi0")]), r"outside the 2x4 array"),
    (Net("a", "vector", (0, 0, "vo0"), []), r"net 'a' has no sinks"),
    (Net("a", "control", (0, 0, "vo0"), [(0, 1, "vi0")]), r"network must be one of vector, scalar"),
    (Net("a", "vector", (0, 0, "vo0"), [(0, 1, "vi0"), (0, 1, "vi0")]), r"lists sink \(0, 1, 'vi0'\) twice"),
])
def test_bad_nets_are_refused(net, match):
    with pytest.raises(RoutingError, match=match):
        route(SMALL, [net])


def test_sink_driven_by_two_nets_is_refused():
    nets = [Net("a", "vector", (0, 0, "vo0"), [(1, 1, "vi0")]), Net("b", "vector", (0, 1, "vo0"), [(1, 1, "vi0")])]
    with pytest.raises(RoutingError, match=r"sink \(1, 1, 'vi0'\) is driven by two nets: 'a' and 'b'"):
        route(SMALL, nets)


def test_source_in_two_nets_and_duplicate_names_are_refused():
    with pytest.raises(RoutingError, match="drives both net 'a' and net 'b'"):
        route(SMALL, [Net("a", "vector", (0, 0, "vo0"), [(1, 1, "vi0")]),
                      Net("b", "vector", (0, 0, "vo0"), [(1, 2, "vi0")])])
    with pytest.raises(RoutingError, match="two nets are named 'a'"):
        route(SMALL, [Net("a", "vector", (0, 0, "vo0"), [(1, 1, "vi0")]),
                      Net("a", "vector", (0, 1, "vo0"), [(1, 2, "vi0")])])


def test_multicast_tree_is_shared():
    # Three sinks along one row: one chain of three links, not 1 + 2 + 3.
    net = Net("m", "vector", (0, 0, "vo0"), [(0, 3, "vi0"), (0, 1, "vi1"), (0, 2, "vi2"), (0, 3, "vi1")])
    r = route(ROW, [net])
    tree = r.routes["m"]
    assert len(tree.links) == 3, tree.links
    assert sum(r.usage["vector"].values()) == 3
    assert {tree.hops(s) for s in net.sinks} == {1, 2, 3}
    # The switch at (0, 1) forwards east and delivers locally from the same input.
    sel = r.selects[0, 1]["vector"]
    assert sel["vi1"] == sel["e0"] == "w0"
    assert r.selects[0, 3]["vector"]["vi0"] == r.selects[0, 3]["vector"]["vi1"]


def test_multicast_tree_in_two_dimensions_shares_its_trunk():
    net = Net("m", "scalar", (0, 0, "so0"), [(1, 3, "si0"), (0, 3, "si1"), (1, 2, "si1")])
    r = route(SMALL, [net])
    links = r.routes["m"].links
    assert len(links) == len({(u, v) for u, v, _ in links}), "a link carries the same net twice"
    assert len(links) <= 5, links


def _random_nets(rng, p, count):
    ports = {"vector": ("vo0", ("vi0", "vi1", "vi2")), "scalar": ("so0", ("si0", "si1"))}
    cells = [(r, c) for r in range(p.rows) for c in range(p.cols)]
    used_src, used_sink, nets = set(), set(), []
    for k in range(count):
        network = "vector" if k % 2 == 0 else "scalar"
        src_port, sink_ports = ports[network]
        free_src = [rc for rc in cells if (rc, network) not in used_src]
        rc = free_src[rng.integers(len(free_src))]
        used_src.add((rc, network))
        free_sinks = [(r, c, q) for r, c in cells for q in sink_ports if (r, c, q) not in used_sink]
        picks = rng.choice(len(free_sinks), size=int(rng.integers(1, 4)), replace=False)
        sinks = [free_sinks[i] for i in picks]
        used_sink.update(sinks)
        nets.append(Net(f"r{k}", network, (*rc, src_port), sinks))
    return nets


def _walk(p, routing, net, sink):
    """Follow the switch selections back from a sink to a unit output; returns (source, switches passed)."""
    r, c, port = sink
    selected = routing.selects[r, c][net.network][port]
    count = 1
    while selected not in ("vo0", "so0"):
        d, ch = selected[0], selected[1:]
        step = {"n": (-1, 0), "e": (0, 1), "s": (1, 0), "w": (0, -1)}[d]
        r, c = r + step[0], c + step[1]
        back = {"n": "s", "e": "w", "s": "n", "w": "e"}[d]
        selected = routing.selects[r, c][net.network][f"{back}{ch}"]
        count += 1
    return (r, c, selected), count


@pytest.mark.parametrize("seed", range(20))
def test_random_routable_sets(seed):
    rng = np.random.default_rng(seed)
    p = ArrayParams(rows=int(rng.integers(2, 5)), cols=int(rng.integers(2, 6)), lanes=4, stages=2,
                    pmu_bank_words=64)
    nets = _random_nets(rng, p, int(rng.integers(2, 9)))
    routing = route(p, nets)
    for net in nets:
        for sink in net.sinks:
            source, switches = _walk(p, routing, net, tuple(sink))
            assert source == net.source, f"{net.name}: sink {sink} traces back to {source}"
            assert switches == routing.routes[net.name].hops(sink) + 1
    for network, links in routing.usage.items():
        assert all(n <= (p.vector_channels if network == "vector" else p.scalar_channels) for n in links.values())
    packed = routing.pack(p)
    assert set(packed) == {(r, c) for r in range(p.rows) for c in range(p.cols)}
    routing.fabric_config(p)


def test_pack_matches_the_layout_fields():
    net = Net("x", "vector", (0, 0, "vo0"), [(0, 1, "vi2")])
    r = route(SMALL, [net])
    packed = r.pack(SMALL)
    layout = switch_record_layout(SMALL)
    rec = data.Const(layout, packed[0, 0])
    inputs = switch_inputs(SMALL, "vector")
    assert rec["vector"]["e0"] == 1 + inputs.index("vo0")
    assert all(rec["vector"][o] == 0 for o in switch_outputs(SMALL, "vector") if o != "e0")
    assert data.Const(layout, packed[0, 1])["vector"]["vi2"] == 1 + inputs.index("w0")
    assert packed[1, 3] == 0
    assert switch_config_layout(SMALL, "vector").size == 11 * 4


def test_check_records_refuses_edge_outputs():
    layout = switch_record_layout(SMALL)
    inputs = switch_inputs(SMALL, "vector")
    record = {"vector": {"n0": 1 + inputs.index("vo0")}, "scalar": {}}
    with pytest.raises(RoutingError, match=r"switch \(0, 2\) vector output 'n0' is at the array edge"):
        check_records(SMALL, {(0, 2): layout.const(record).as_value().value})
    record = {"vector": {"s0": 1 + inputs.index("vo0")}, "scalar": {}}
    check_records(SMALL, {(0, 2): layout.const(record).as_value().value})
    with pytest.raises(RoutingError, match="outside the 2x4 array"):
        check_records(SMALL, {(2, 0): 0})


def test_routing_params_mismatch_is_refused():
    r = route(SMALL, [Net("x", "vector", (0, 0, "vo0"), [(0, 1, "vi2")])])
    with pytest.raises(ValueError, match="made for"):
        r.pack(ROW)


def test_fast_model_delivers_and_times():
    nets = [Net("m", "vector", (0, 0, "vo0"), [(1, 3, "vi0"), (0, 0, "vi1")])]
    model = FabricModel(route(SMALL, nets))
    words = np.arange(12, dtype=np.uint32).reshape(3, 4)
    out = model.deliver({"m": words})
    assert set(out) == {(1, 3, "vi0"), (0, 0, "vi1")}
    assert all(np.array_equal(v, words) for v in out.values())
    assert model.latency("m", (1, 3, "vi0")) == latency(4) == 5
    assert model.latency("m", (0, 0, "vi1")) == 1
    assert model.delivery_cycles("m", 10) == {(1, 3, "vi0"): 15, (0, 0, "vi1"): 11}
    assert delivery_cycles(10, 4) == 15
    assert list(model.arrival_cycles("m", (0, 0, "vi1"), [0, 0, 5, 6])) == [1, 2, 6, 7]
    with pytest.raises(ValueError, match="no routed net named 'q'"):
        model.latency("q", (0, 0, "vi1"))
