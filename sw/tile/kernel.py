"""The kernel API: place units on the tile array, connect their ports, build a loadable program.

A :class:`Kernel` collects unit configurations at array positions, host
inputs and outputs at the I/O rows, and connections between ports.
:meth:`Kernel.build` validates every unit, routes every connection over the
fabric's mesh (unit grid plus the two I/O rows, see docs/array.md) and packs
one bitstream for every used unit and every switch::

    k = Kernel(SMALL)
    x = k.host_input("x", col=0)
    buf = k.pmu((0, 1), PmuConfig(...))
    mac = k.pcu((0, 0), PcuConfig(...))
    k.connect(x.out, buf.vi0)
    k.connect(buf.vo0, [mac.vi0, other.vi1])     # multicast
    y = k.host_output("y", col=3)
    k.connect(mac.vo0, y.inp)
    program = k.build()
"""

import pickle
from dataclasses import dataclass, field

from amaranth.hdl import Shape

from hw.tile.array import (CONFIG_VERSION, IO_INPUTS, IO_OUTPUTS, build_ops, config_targets, io_mesh_row,
                           io_port_name, mesh_params, switch_id, unit_id)
from hw.tile.params import ArrayParams
from hw.tile.pcu import ALL_TAIL_OPS, POST_OPS, TailOp
from hw.tile.switch import NETWORKS, UNIT_INPUTS, UNIT_OUTPUTS
from sw import bitstream
from sw.errors import OpenRDUError
from sw.tile.pcu import PcuConfig
from sw.tile.pmu import PmuConfig
from sw.tile.route import Net, Routing, RoutingError, route

NETWORK_OF = {port: net for net in NETWORKS for port in UNIT_INPUTS[net] + UNIT_OUTPUTS[net]}



# Packing a record through its Amaranth layout costs milliseconds and a compile packs the same unit
# configurations and (mostly empty) switch records many times: packed values by (configuration, params).
_PACKED = {}


def _packed(config, params):
    # Pickled, not the dataclass itself: equal-comparing floats (0.0 and -0.0) pack to different bits.
    key = (pickle.dumps(config), params)
    value = _PACKED.get(key)
    if value is None:
        if len(_PACKED) >= 65536:
            _PACKED.clear()
        value = _PACKED[key] = config.pack(params)
    return value

class KernelError(OpenRDUError, ValueError):
    """A kernel the array cannot run: a bad position, port, connection or unit configuration."""


@dataclass(frozen=True)
class Endpoint:
    """One port of a kernel node (a unit or a host I/O position), e.g. ``Endpoint("mac", "vi0")``."""

    node: str
    port: str

    @property
    def network(self):
        return NETWORK_OF[self.port]

    @property
    def is_output(self):
        return self.port in UNIT_OUTPUTS[self.network]

    def __str__(self):
        return f"{self.node}.{self.port}"


@dataclass(frozen=True)
class Unit:
    """A placed PCU or PMU: ``kind`` ``"pcu"`` or ``"pmu"``, array position ``pos`` (row, col)."""

    name: str
    kind: str
    pos: tuple[int, int]
    config: PcuConfig | PmuConfig

    def __getattr__(self, port):
        if port in NETWORK_OF:
            return Endpoint(self.name, port)
        # Read the fields from __dict__: an instance made without __init__ (copy, the program-file
        # reader) has none yet while it is filled, and reading self.kind would recurse into this method.
        fields = self.__dict__
        raise AttributeError(f"{fields.get('kind', 'unit').upper()} {fields.get('name')!r} has no port {port!r}; "
                             f"ports: {', '.join(NETWORK_OF)}")


@dataclass(frozen=True)
class MemoryPort:
    """A kernel's named stream to or from memory, through the AGCU at an I/O position.

    Attributes
    ----------
    name : str
    direction : str
        ``"in"`` (host to chip) or ``"out"`` (chip to host).
    network : str
    side : str
        ``"t"`` (top I/O row) or ``"b"`` (bottom).
    col : int
    port : str
        The I/O position's local port: ``vo0``/``so0`` for an input, ``vi0``/``si0`` for an output.
    top : str
        The array's top-level stream, e.g. ``io_t0_vo0``.
    """

    name: str
    direction: str
    network: str
    side: str
    col: int
    port: str
    top: str

    @property
    def out(self):
        """The host input's stream, to connect to unit inputs."""
        if self.direction != "in":
            raise AttributeError(f"host output {self.name!r} has no .out; connect a unit output to its .inp")
        return Endpoint(self.name, self.port)

    @property
    def inp(self):
        """The host output's sink, to connect a unit output to."""
        if self.direction != "out":
            raise AttributeError(f"host input {self.name!r} has no .inp; connect its .out to unit inputs")
        return Endpoint(self.name, self.port)


@dataclass(frozen=True)
class Connection:
    """One source port and its sink ports; ``name`` is the routed net's name."""

    name: str
    network: str
    source: Endpoint
    sinks: tuple[Endpoint, ...]


@dataclass
class Program:
    """A built kernel: everything needed to load it, drive it and model it.

    Attributes
    ----------
    params : ArrayParams
    words : list of int
        The bitstream for the array's ``config`` port.
    units : dict
        Unit name -> :class:`Unit`, in placement order.
    connections : list of Connection
    routing : sw.tile.route.Routing
        In mesh coordinates: unit (r, c) at mesh (r + 1, c), I/O rows at mesh rows 0 and rows + 1.
    host_inputs, host_outputs : dict
        Name -> :class:`MemoryPort` (its ``top`` is the array port it uses).
    tail_ops, post_ops : dict
        PCU position -> TailOp functions the array was built with.
    iterations : int
        Passes of an outer loop (a looped kernel, :mod:`sw.compiler.loop`): its PMU pass counts and AGCU
        patterns already hold them, so the RTL needs nothing more; the fast model runs the loop's body, the
        program with each PMU's passes divided by it, once per pass.
    """

    params: ArrayParams
    words: list[int]
    units: dict[str, Unit]
    connections: list[Connection]
    routing: Routing
    host_inputs: dict[str, MemoryPort]
    host_outputs: dict[str, MemoryPort]
    tail_ops: dict[tuple[int, int], tuple[TailOp, ...]]
    post_ops: dict[tuple[int, int], tuple[TailOp, ...]]
    endpoints: dict[str, tuple[int, int]] = field(default_factory=dict)
    iterations: int = 1

    def mesh_position(self, endpoint):
        """(mesh_row, col, port) of an endpoint of this program."""
        return self.endpoints[endpoint.node] + (endpoint.port,)

    def summary(self):
        """Units used, host ports, routes with their hop counts, and channel use."""
        p = self.params
        lines = [f"kernel on a {p.rows}x{p.cols} array: {len(self.units)} units, "
                 f"{len(self.connections)} connections, {len(self.words)} bitstream words"]
        for u in self.units.values():
            lines.append(f"  {u.kind.upper()} {u.name!r} at {u.pos} (unit id {unit_id(p, *u.pos)})")
        for h in list(self.host_inputs.values()) + list(self.host_outputs.values()):
            lines.append(f"  host {h.direction:<3} {h.name!r} {h.network} on {h.top}")
        for c in self.connections:
            route = self.routing.routes[c.name]
            hops = ", ".join(f"{s}: {route.hops(self.mesh_position(s))} hops" for s in c.sinks)
            lines.append(f"  {c.name} ({c.network}): {hops}")
        for net, s in self.routing.stats().items():
            lines.append(f"  {net} channels: {s['channel_hops']} of {s['capacity']} channel-hops, busiest link "
                         f"{s['max_link_use']} of {p.vector_channels if net == 'vector' else p.scalar_channels}")
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


class Kernel:
    """Builder of a :class:`Program` for one array.

    Parameters
    ----------
    params : ArrayParams
    tail_ops, post_ops : tuple of TailOp, or dict
        The PCU tail and so0 functions of the array the program will run on,
        in the form :class:`hw.tile.array.TileArray` takes; configurations
        using a function their PCU lacks are refused.
    """

    def __init__(self, params, *, tail_ops=ALL_TAIL_OPS, post_ops=POST_OPS):
        if not isinstance(params, ArrayParams):
            raise KernelError(f"params must be an ArrayParams, not {type(params).__name__}")
        self.params = params
        self.tail_ops = build_ops(params, tail_ops, "tail_ops")
        self.post_ops = build_ops(params, post_ops, "post_ops")
        self._units = {}
        self._hosts = {}
        self._connections = []
        self._positions = {}

    @property
    def units(self):
        """The units placed so far: name -> :class:`Unit`."""
        return dict(self._units)

    def has_node(self, name):
        """Whether a unit or host port of this kernel is called ``name``."""
        return name in self._units or name in self._hosts

    def _new_name(self, name, default):
        name = default if name is None else name
        if not isinstance(name, str) or not name:
            raise KernelError(f"a kernel node's name must be a non-empty string, not {name!r}")
        if name in self._units or name in self._hosts:
            raise KernelError(f"two kernel nodes are named {name!r}")
        return name

    def _place(self, pos, kind, config, name):
        p = self.params
        try:
            r, c = pos
        except (TypeError, ValueError):
            raise KernelError(f"a {kind.upper()} position must be (row, col), not {pos!r}") from None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (r, c)) or \
                not (0 <= r < p.rows and 0 <= c < p.cols):
            raise KernelError(f"position {pos!r} is outside the {p.rows}x{p.cols} array")
        actual = "pcu" if p.is_pcu(r, c) else "pmu"
        if actual != kind:
            raise KernelError(f"position {(r, c)} is a {actual.upper()}, not a {kind.upper()} "
                              f"(unit (r, c) is a PCU when r + c is even)")
        if (r, c) in self._positions:
            raise KernelError(f"position {(r, c)} is already used by {self._positions[r, c]!r}")
        expected = PcuConfig if kind == "pcu" else PmuConfig
        if not isinstance(config, expected):
            raise KernelError(f"the {kind.upper()} at {(r, c)} needs a {expected.__name__}, not "
                              f"{type(config).__name__}")
        name = self._new_name(name, f"{kind}_{r}_{c}")
        unit = Unit(name, kind, (r, c), config)
        self._units[name] = unit
        self._positions[r, c] = name
        return unit

    def pcu(self, pos, config, *, name=None):
        """Place a PCU configuration at ``pos`` (row, col); returns its :class:`Unit`."""
        return self._place(pos, "pcu", config, name)

    def pmu(self, pos, config, *, name=None):
        """Place a PMU configuration at ``pos`` (row, col); returns its :class:`Unit`."""
        return self._place(pos, "pmu", config, name)

    def _host(self, name, col, network, side, direction):
        p = self.params
        if network not in NETWORKS:
            raise KernelError(f"host {direction}put {name!r}: network must be one of {', '.join(NETWORKS)}, "
                              f"not {network!r}")
        if side not in ("t", "b"):
            raise KernelError(f"host {direction}put {name!r}: side must be 't' (top) or 'b' (bottom), not {side!r}")
        if not isinstance(col, int) or isinstance(col, bool) or not 0 <= col < p.cols:
            raise KernelError(f"host {direction}put {name!r}: I/O column {col!r} is outside the array's "
                              f"0 to {p.cols - 1}")
        port = (IO_INPUTS if direction == "in" else IO_OUTPUTS)[network][0]
        top = io_port_name(side, col, port)
        for other in self._hosts.values():
            if other.top == top:
                raise KernelError(f"host {direction}put {name!r}: {top} is already used by {other.name!r}")
        name = self._new_name(name, None)
        host = MemoryPort(name, direction, network, side, col, port, top)
        self._hosts[name] = host
        return host

    def host_input(self, name, col, *, network="vector", side="t"):
        """A host-to-chip stream at I/O position (side, col); connect its ``.out``."""
        return self._host(name, col, network, side, "in")

    def host_output(self, name, col, *, network="vector", side="b"):
        """A chip-to-host stream at I/O position (side, col); connect a unit output to its ``.inp``."""
        return self._host(name, col, network, side, "out")

    def _check_endpoint(self, endpoint, what):
        if not isinstance(endpoint, Endpoint):
            raise KernelError(f"connect: {what} must be a port such as unit.vo0 or host.out, not {endpoint!r}")
        if endpoint.node not in self._units and endpoint.node not in self._hosts:
            raise KernelError(f"connect: {what} {endpoint} belongs to no node of this kernel")

    def connect(self, source, sinks, *, name=None):
        """Connect output port ``source`` to one input port or a list of them (a multicast)."""
        sinks = list(sinks) if isinstance(sinks, (list, tuple)) else [sinks]
        self._check_endpoint(source, "source")
        label = f"{source} -> {', '.join(str(s) for s in sinks)}"
        if not source.is_output:
            raise KernelError(f"connect {label}: the source {source} is an input port")
        if not sinks:
            raise KernelError(f"connect {source}: no sinks given")
        for sink in sinks:
            self._check_endpoint(sink, "sink")
            if sink.is_output:
                raise KernelError(f"connect {label}: the sink {sink} is an output port")
            if sink.network != source.network:
                raise KernelError(f"connect {label}: {source} is on the {source.network} network, "
                                  f"{sink} on the {sink.network} network")
        name = label if name is None else name
        if any(c.name == name for c in self._connections):
            raise KernelError(f"two connections are named {name!r}")
        self._connections.append(Connection(name, source.network, source, tuple(sinks)))

    def _endpoints(self):
        out = {name: (u.pos[0] + 1, u.pos[1]) for name, u in self._units.items()}
        out.update({name: (io_mesh_row(self.params, h.side), h.col) for name, h in self._hosts.items()})
        return out

    def _validate_units(self):
        p = self.params
        names = lambda ops: tuple(op.name.lower() for op in ops)
        for u in self._units.values():
            try:
                if u.kind == "pcu":
                    u.config.validate(p, tail_ops=names(self.tail_ops[u.pos]),
                                      post_ops=names(self.post_ops[u.pos]))
                else:
                    u.config.validate(p)
            except ValueError as e:
                raise KernelError(f"unit {u.name!r} ({u.kind.upper()} at {u.pos}): {e}") from None

    def _validate_wiring(self):
        driven = {s: c for c in self._connections for s in c.sinks}
        used = {c.source: c for c in self._connections}
        for u in self._units.values():
            cfg = u.config
            needs, makes = [], []
            if u.kind == "pcu":
                needs = [f"vi{k}" for k in cfg.inputs] + [f"si{k}" for k, mode in enumerate((cfg.s0, cfg.s1))
                                                          if mode != "none"]
                makes = (["vo0"] if cfg.vo else []) + (["so0"] if cfg.so != "none" else [])
            else:
                needs = ["vi0"] + (["si0"] if cfg.write.runtime_base else []) + \
                        (["si1"] if cfg.read.runtime_base else [])
                makes = ["vo0"]
            for e in driven:
                if e.node == u.name and e.port not in needs:
                    raise KernelError(f"connection {driven[e].name!r} drives {e.port} of unit {u.name!r} "
                                      f"({u.kind.upper()} at {u.pos}), which its configuration does not consume "
                                      f"(the connection would block)")
            for port in needs:
                if Endpoint(u.name, port) not in driven:
                    raise KernelError(f"unit {u.name!r} ({u.kind.upper()} at {u.pos}) consumes {port}, "
                                      f"but no connection drives it")
            for port in makes:
                if Endpoint(u.name, port) not in used:
                    raise KernelError(f"unit {u.name!r} ({u.kind.upper()} at {u.pos}) produces {port}, "
                                      f"but no connection takes it (the unit would block)")
        for h in self._hosts.values():
            if h.direction == "in" and Endpoint(h.name, h.port) not in used:
                raise KernelError(f"host input {h.name!r} is connected to nothing")
            if h.direction == "out" and Endpoint(h.name, h.port) not in driven:
                raise KernelError(f"host output {h.name!r} is driven by no connection")

    def build(self):
        """Validate, route and pack; returns a :class:`Program` or raises KernelError / RoutingError."""
        p = self.params
        if not self._units:
            raise KernelError("the kernel places no unit")
        self._validate_units()
        self._validate_wiring()
        endpoints = self._endpoints()
        at = lambda e: endpoints[e.node] + (e.port,)
        nets = [Net(c.name, c.network, at(c.source), [at(s) for s in c.sinks]) for c in self._connections]
        try:
            routing = route(mesh_params(p), nets)
        except RoutingError as e:
            raise RoutingError(f"kernel connection cannot be routed: {e}") from None

        targets = config_targets(p)
        width = lambda ident: Shape.cast(targets[ident]).width
        segments = {}
        for u in self._units.values():
            ident = unit_id(p, *u.pos)
            segments[ident] = (_packed(u.config, p), width(ident))
        for (mr, c), value in sorted(routing.pack().items()):
            ident = switch_id(p, mr, c)
            segments[ident] = (value, width(ident))
        words = bitstream.pack(segments, version=CONFIG_VERSION)
        return Program(p, words, dict(self._units), list(self._connections), routing,
                       {n: h for n, h in self._hosts.items() if h.direction == "in"},
                       {n: h for n, h in self._hosts.items() if h.direction == "out"},
                       dict(self.tail_ops), dict(self.post_ops), endpoints)
