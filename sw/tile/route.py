"""Place and route for the vector and scalar networks.

A :class:`Net` is one unit output port and one or more unit input ports.
:func:`route` builds a tree per net over the switch mesh, one channel per
link hop, and returns a :class:`Routing`: each switch's selected input per
output, each net's paths, channel usage, and the packed configuration
records (through the same layouts the hardware uses).
"""

from collections import deque
from dataclasses import dataclass, field

from amaranth.lib import data

from hw.tile.fabric import fabric_config_layout
from hw.tile.params import ArrayParams
from hw.tile.switch import (DIRECTIONS, NETWORKS, OPPOSITE, STEP, UNIT_INPUTS, UNIT_OUTPUTS, channels,
                            switch_inputs, switch_outputs, switch_record_layout)
from sw.errors import OpenRDUError



# (params, repr of a switch record) -> its packed value.
_PACKED = {}

class RoutingError(OpenRDUError, ValueError):
    """A net set the router refuses or cannot fit."""


@dataclass
class Net:
    """One source port and its sink ports on one network.

    Parameters
    ----------
    name : str
    network : str
        ``"vector"`` or ``"scalar"``.
    source : (row, col, port)
        A unit output: ``vo0`` (vector) or ``so0`` (scalar).
    sinks : list of (row, col, port)
        Unit inputs: ``vi0``-``vi2`` (vector) or ``si0``, ``si1`` (scalar).
    """

    name: str
    network: str
    source: tuple[int, int, str]
    sinks: list[tuple[int, int, str]]


@dataclass
class NetRoute:
    """Where one net runs.

    Attributes
    ----------
    net : Net
    links : list of ((row, col), (row, col), channel)
        The tree's switch-to-switch hops, in the order they were added.
    paths : dict
        Sink -> the switches from the source's switch to the sink's, both included.
    """

    net: Net
    links: list[tuple[tuple[int, int], tuple[int, int], int]] = field(default_factory=list)
    paths: dict[tuple[int, int, str], list[tuple[int, int]]] = field(default_factory=dict)

    def hops(self, sink):
        """Switch-to-switch links between the source and ``sink``."""
        return len(self.paths[tuple(sink)]) - 1

    @property
    def max_hops(self):
        return max(len(p) - 1 for p in self.paths.values())


@dataclass
class Routing:
    """Result of :func:`route`.

    Attributes
    ----------
    params : ArrayParams
    selects : dict
        ``selects[(row, col)][network][output] = input``, port names as in
        :func:`hw.tile.switch.switch_outputs` / :func:`~hw.tile.switch.switch_inputs`;
        outputs not listed select nothing.
    routes : dict
        Net name -> :class:`NetRoute`.
    usage : dict
        ``usage[network][(from_switch, to_switch)]`` = channels used on that directed link.
    """

    params: ArrayParams
    selects: dict[tuple[int, int], dict[str, dict[str, str]]]
    routes: dict[str, NetRoute]
    usage: dict[str, dict[tuple[tuple[int, int], tuple[int, int]], int]]

    def _params(self, params):
        if params is not None and params != self.params:
            raise ValueError(f"this routing was made for {self.params}, not {params}")
        return self.params

    def records(self, params=None):
        """Per switch, the record as a dict of field values, for ``layout.const``."""
        p = self._params(params)
        out = {}
        for r in range(p.rows):
            for c in range(p.cols):
                record = {}
                for net in NETWORKS:
                    inputs = switch_inputs(p, net)
                    chosen = self.selects.get((r, c), {}).get(net, {})
                    record[net] = {o: (1 + inputs.index(chosen[o]) if o in chosen else 0)
                                   for o in switch_outputs(p, net)}
                out[r, c] = record
        return out

    def pack(self, params=None):
        """Each switch's record as the integer the hardware sees, keyed by (row, col)."""
        p = self._params(params)
        layout = switch_record_layout(p)
        records = self.records(p)
        _check_fields(p, records)
        out = {}
        for rc, rec in records.items():
            # Most switches of a kernel are idle or alike: pack each distinct record once per process.
            key = (p, repr(rec))
            if key not in _PACKED:
                if len(_PACKED) >= 65536:
                    _PACKED.clear()
                _PACKED[key] = layout.const(rec).as_value().value
            out[rc] = _PACKED[key]
        return out

    def fabric_config(self, params=None):
        """The value of :class:`hw.tile.fabric.Fabric`'s ``cfg`` port."""
        p = self._params(params)
        records = self.records(p)
        rows = [records[r, c] for r in range(p.rows) for c in range(p.cols)]
        self.pack(p)
        return fabric_config_layout(p).const(rows).as_value().value

    def stats(self):
        """Channel usage per network: links, channel-hops used, capacity and the busiest link."""
        p = self.params
        result = {}
        for net in NETWORKS:
            k = channels(p, net)
            links = len(_links(p))
            used = self.usage[net]
            result[net] = {
                "links": links,
                "channel_hops": sum(used.values()),
                "capacity": links * k,
                "max_link_use": max(used.values(), default=0),
                "saturated_links": sum(1 for n in used.values() if n == k),
            }
        return result


def _links(p):
    return [((r, c), (r + STEP[d][0], c + STEP[d][1]), d)
            for r in range(p.rows) for c in range(p.cols) for d in DIRECTIONS
            if 0 <= r + STEP[d][0] < p.rows and 0 <= c + STEP[d][1] < p.cols]


def _inside(p, rc):
    return 0 <= rc[0] < p.rows and 0 <= rc[1] < p.cols


def _port(p, net, what, value, allowed):
    try:
        row, col, port = value
    except (TypeError, ValueError):
        raise RoutingError(f"net {net.name!r}: {what} must be (row, col, port), not {value!r}") from None
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (row, col)):
        raise RoutingError(f"net {net.name!r}: {what} {value!r} needs integer row and column")
    if not _inside(p, (row, col)):
        raise RoutingError(f"net {net.name!r}: {what} {value!r} is outside the {p.rows}x{p.cols} array")
    if port not in allowed:
        raise RoutingError(f"net {net.name!r}: {what} port {port!r} does not exist on the {net.network} network; "
                           f"{what} ports there are {', '.join(allowed)}")
    return (row, col, port)


def _validate(p, nets):
    names, drivers, sources = set(), {}, {}
    checked = []
    for net in nets:
        if not isinstance(net, Net):
            raise RoutingError(f"nets must be Net instances, not {type(net).__name__}")
        if not isinstance(net.name, str) or not net.name:
            raise RoutingError(f"a net's name must be a non-empty string, not {net.name!r}")
        if net.name in names:
            raise RoutingError(f"two nets are named {net.name!r}")
        names.add(net.name)
        if net.network not in NETWORKS:
            raise RoutingError(f"net {net.name!r}: network must be one of {', '.join(NETWORKS)}, "
                               f"not {net.network!r}")
        source = _port(p, net, "source", net.source, UNIT_OUTPUTS[net.network])
        if source in sources:
            raise RoutingError(f"source {source} drives both net {sources[source]!r} and net {net.name!r}; "
                               f"give one net several sinks instead")
        sources[source] = net.name
        if not net.sinks:
            raise RoutingError(f"net {net.name!r} has no sinks")
        sinks = []
        for s in net.sinks:
            sink = _port(p, net, "sink", s, UNIT_INPUTS[net.network])
            if sink in drivers:
                other = drivers[sink]
                raise RoutingError(f"sink {sink} is driven by two nets: {other!r} and {net.name!r}"
                                   if other != net.name else f"net {net.name!r} lists sink {sink} twice")
            drivers[sink] = net.name
            sinks.append(sink)
        checked.append(Net(net.name, net.network, source, sinks))
    return checked


def _distance(a, b):
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


def route(params, nets):
    """Route every net, or raise :class:`RoutingError`.

    Nets are routed longest first (farthest sink from the source), ties by
    name. For each net the sinks are taken nearest first; each is joined to
    the net's tree by a breadth-first search from every switch already in the
    tree, over links that still have a free channel in that direction, and
    each new hop takes the lowest free channel. Sinks on a switch already in
    the tree share its branch, so a multicast tree never carries a word
    twice over one link.
    """
    if not isinstance(params, ArrayParams):
        raise RoutingError(f"params must be an ArrayParams, not {type(params).__name__}")
    p = params
    nets = _validate(p, nets)
    order = sorted(nets, key=lambda n: (-max(_distance(n.source, s) for s in n.sinks), -len(n.sinks), n.name))
    owners = {net: {} for net in NETWORKS}
    selects = {}
    routes = {}
    for net in order:
        routes[net.name] = _route_net(p, net, owners[net.network], selects)
    usage = {net: {} for net in NETWORKS}
    for net in NETWORKS:
        for (u, v, _k) in owners[net]:
            usage[net][u, v] = usage[net].get((u, v), 0) + 1
    return Routing(p, selects, {n.name: routes[n.name] for n in nets}, usage)


def _route_net(p, net, owners, selects):
    """Add one net's tree; ``owners[(u, v, channel)]`` names the net holding a link channel."""
    k = channels(p, net.network)
    src = net.source[:2]
    entry = {src: net.source[2]}
    parent = {src: None}
    result = NetRoute(net)

    def select(rc, output, input):
        selects.setdefault(rc, {}).setdefault(net.network, {})[output] = input

    def free_channel(u, v):
        return next((ch for ch in range(k) if (u, v, ch) not in owners), None)

    for sink in sorted(net.sinks, key=lambda s: _distance(src, s)):
        target = sink[:2]
        if target not in entry:
            path = _search(p, entry, target, free_channel)
            if path is None:
                raise RoutingError(_unreachable(p, net, sink, entry, free_channel, owners))
            for u, v, d in path:
                ch = free_channel(u, v)
                owners[u, v, ch] = net.name
                select(u, f"{d}{ch}", entry[u])
                entry[v] = f"{OPPOSITE[d]}{ch}"
                parent[v] = u
                result.links.append((u, v, ch))
        select(target, sink[2], entry[target])
        chain = [target]
        while parent[chain[-1]] is not None:
            chain.append(parent[chain[-1]])
        result.paths[sink] = chain[::-1]
    return result


def _neighbours(p, u):
    for d in DIRECTIONS:
        v = (u[0] + STEP[d][0], u[1] + STEP[d][1])
        if _inside(p, v):
            yield v, d


def _search(p, tree, target, free_channel):
    """Shortest list of (u, v, direction) hops from any tree switch to ``target``, or None."""
    came = {rc: None for rc in tree}
    queue = deque(tree)
    while queue:
        u = queue.popleft()
        if u == target:
            hops = []
            while came[u] is not None:
                prev, d = came[u]
                hops.append((prev, u, d))
                u = prev
            return hops[::-1]
        for v, d in _neighbours(p, u):
            if v not in came and free_channel(u, v) is not None:
                came[v] = (u, d)
                queue.append(v)
    return None


def _unreachable(p, net, sink, tree, free_channel, owners):
    """The message for a sink the search could not reach: the saturated links out of the reachable region."""
    reached = set(tree)
    queue = deque(tree)
    while queue:
        u = queue.popleft()
        for v, _ in _neighbours(p, u):
            if v not in reached and free_channel(u, v) is not None:
                reached.add(v)
                queue.append(v)
    full = []
    for u in sorted(reached):
        for v, _ in _neighbours(p, u):
            if v not in reached:
                users = sorted({owners[u, v, ch] for ch in range(channels(p, net.network))})
                full.append(f"{u}->{v} (used by {', '.join(users)})")
    return (f"net {net.name!r}: cannot reach sink {sink} from source {net.source}: no free {net.network} "
            f"channel on any path; saturated links: {'; '.join(full)}")


def check_records(params, records):
    """Refuse switch records the fabric cannot carry out.

    Parameters
    ----------
    records : dict
        (row, col) -> the switch's packed record (an int of
        :func:`~hw.tile.switch.switch_record_layout`).

    Raises :class:`RoutingError` naming the switch and output when an output
    at the array edge (no neighbour) selects an input, when a selector is
    past the last input, or when a position is outside the array.
    """
    layout = switch_record_layout(params)
    _check_fields(params, {rc: data.Const(layout, value) for rc, value in records.items()})


def _check_fields(params, records):
    """:func:`check_records` on records as field values ((row, col) -> net -> output -> selector)."""
    p = params
    for rc, record in records.items():
        if not _inside(p, rc):
            raise RoutingError(f"switch record for {rc} is outside the {p.rows}x{p.cols} array")
        for net in NETWORKS:
            inputs = switch_inputs(p, net)
            for output in switch_outputs(p, net):
                chosen = record[net][output]
                if chosen > len(inputs):
                    raise RoutingError(f"switch {rc} {net} output {output!r} selects input {chosen}, "
                                       f"past the last ({len(inputs)})")
                if chosen and output not in UNIT_INPUTS[net]:
                    v = (rc[0] + STEP[output[0]][0], rc[1] + STEP[output[0]][1])
                    if not _inside(p, v):
                        raise RoutingError(f"switch {rc} {net} output {output!r} is at the array edge "
                                           f"(no neighbour) but selects input {inputs[chosen - 1]!r}")
