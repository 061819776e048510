"""The tile array: a checkerboard of PCUs and PMUs on one switch fabric, loaded from a bitstream.

See docs/array.md. The fabric's mesh has two more rows than the unit grid:
mesh row 0 and mesh row ``rows + 1`` are I/O rows whose switches' local
ports are top-level streams (stand-ins for the AGCUs of a later issue), and
unit (r, c) sits at mesh row r + 1.
"""

import dataclasses

from amaranth import Mux, Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from facts.bitstream import VERSION as CONFIG_VERSION
from hw.tile.config import STATUS_PORTS, ConfigLoader
from hw.tile.fabric import Fabric, unit_port_name
from hw.tile.params import ArrayParams
from hw.tile.pcu import ALL_TAIL_OPS, POST_OPS, Pcu, TailOp, pcu_config_layout
from hw.tile.pmu import Pmu, pmu_config_layout
from hw.tile.streams import scalar_stream, vector_stream
from hw.tile.switch import NETWORKS, UNIT_INPUTS, UNIT_OUTPUTS, switch_record_layout

IO_SIDES = ("t", "b")
# Local ports of an I/O position that reach the top level; its other inputs are never ready.
IO_INPUTS = UNIT_OUTPUTS                                  # host -> fabric
IO_OUTPUTS = {"vector": ("vi0",), "scalar": ("si0",)}    # fabric -> host


def mesh_params(params):
    """Parameters of the fabric's mesh: the unit grid plus a top and a bottom I/O row."""
    return dataclasses.replace(params, rows=params.rows + 2)


def io_mesh_row(params, side):
    """Mesh row of I/O side ``"t"`` (0) or ``"b"`` (rows + 1)."""
    if side not in IO_SIDES:
        raise ValueError(f"I/O side must be 't' (top) or 'b' (bottom), not {side!r}")
    return 0 if side == "t" else params.rows + 1


def io_port_name(side, col, port):
    """Top-level name of an I/O position's port, e.g. ``io_t0_vo0``."""
    return f"io_{side}{col}_{port}"


def unit_id(params, row, col):
    """Configuration id of unit (row, col)."""
    return row * params.cols + col


def switch_id(params, mesh_row, col):
    """Configuration id of the switch at mesh position (mesh_row, col)."""
    return params.rows * params.cols + mesh_row * params.cols + col


def config_targets(params):
    """Every configuration target of the array: unit id or switch id -> record layout."""
    targets = {}
    for r, c, kind in params.units():
        targets[unit_id(params, r, c)] = (pcu_config_layout if kind == "pcu" else pmu_config_layout)(params)
    for mr in range(params.rows + 2):
        for c in range(params.cols):
            targets[switch_id(params, mr, c)] = switch_record_layout(params)
    return targets


def build_ops(params, ops, name="ops"):
    """Tail functions per PCU, ``{(row, col): tuple of TailOp}``, from a tuple for all or a dict.

    Raises ``ValueError`` naming ``name`` for a position that is not a PCU of
    the array, a value that is not a TailOp function, or a repeated function.
    """
    pcus = [(r, c) for r, c, kind in params.units() if kind == "pcu"]
    if isinstance(ops, dict):
        for rc in ops:
            if rc not in pcus:
                raise ValueError(f"{name}: {rc!r} is not a PCU position of the {params.rows}x{params.cols} "
                                 f"array; PCUs: {pcus}")
        per_unit = {rc: ops.get(rc, ()) for rc in pcus}
    else:
        per_unit = {rc: ops for rc in pcus}
    for rc, unit_ops in per_unit.items():
        if not isinstance(unit_ops, (tuple, list)) or \
                any(not isinstance(op, TailOp) or op == TailOp.NONE for op in unit_ops):
            raise ValueError(f"{name} for PCU {rc} must be a tuple of TailOp functions other than NONE, "
                             f"not {unit_ops!r}")
        if len(set(unit_ops)) != len(unit_ops):
            raise ValueError(f"{name} for PCU {rc} lists a function twice: {unit_ops!r}")
    return {rc: tuple(unit_ops) for rc, unit_ops in per_unit.items()}


class TileArray(wiring.Component):
    """``rows x cols`` PCUs and PMUs (checkerboard), their switch fabric, I/O rows and a config loader.

    Parameters
    ----------
    params : ArrayParams
    pcu_tail_ops, pcu_post_ops : tuple of TailOp, or dict
        The tail and so0 functions the PCUs are built with (see
        :class:`hw.tile.pcu.Pcu`): one tuple for every PCU, or a dict from a
        PCU's (row, col) to its tuple, unlisted PCUs getting none. Each
        function costs a lane-wide datapath, so a small build gives each
        function only to the PCUs that need it.

    Attributes
    ----------
    config : In(stream.Signature(32))
        Bitstream words; never back-pressured.
    config_status : Out(Status)
    config_load_cycles, config_loads_ok, config_loads_refused : Out(32)
    config_busy : Out(1)
    restart : In(1)
        A kernel's start: for that cycle every unit sees an all-zero record, as while a program loads.
    io_{t,b}{c}_vo0, io_{t,b}{c}_so0 : In(stream)
        Host to chip: the I/O position's output into the fabric.
    io_{t,b}{c}_vi0, io_{t,b}{c}_si0 : Out(stream)
        Chip to host: the I/O position's input out of the fabric.
    busy_cycles, stall_cycles : Out(ArrayLayout(32, rows * cols))
        Each unit's counters, element ``r * cols + c``.
    """

    def __init__(self, params, *, pcu_tail_ops=ALL_TAIL_OPS, pcu_post_ops=POST_OPS):
        if not isinstance(params, ArrayParams):
            raise ValueError(f"params must be an ArrayParams, not {type(params).__name__}")
        if params.rows + 2 > 16:
            raise ValueError(f"the mesh has rows + 2 rows, at most 16: rows must be at most 14, not {params.rows}")
        if params.stages > params.lanes:
            raise ValueError(f"the PCU needs stages <= lanes, got {params.stages} stages and {params.lanes} lanes")
        self.pcu_tail_ops = build_ops(params, pcu_tail_ops, "pcu_tail_ops")
        self.pcu_post_ops = build_ops(params, pcu_post_ops, "pcu_post_ops")
        self.params = params
        streams = {"vector": vector_stream(params.lanes), "scalar": scalar_stream()}
        members = {"config": In(stream.Signature(32)), "restart": In(1),
                   **{f"config_{n}": p for n, p in STATUS_PORTS.items()}}
        for side in IO_SIDES:
            for c in range(params.cols):
                for net in NETWORKS:
                    for port in IO_INPUTS[net]:
                        members[io_port_name(side, c, port)] = In(streams[net])
                    for port in IO_OUTPUTS[net]:
                        members[io_port_name(side, c, port)] = Out(streams[net])
        counters = data.ArrayLayout(32, params.rows * params.cols)
        members["busy_cycles"] = Out(counters)
        members["stall_cycles"] = Out(counters)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        m.submodules.loader = loader = ConfigLoader(config_targets(p), version=CONFIG_VERSION)
        m.submodules.fabric = fabric = Fabric(mesh_params(p))
        wiring.connect(m, wiring.flipped(self.config), loader.words)
        m.d.comb += [getattr(self, f"config_{n}").eq(getattr(loader, n)) for n in STATUS_PORTS]
        for mr in range(p.rows + 2):
            for c in range(p.cols):
                m.d.comb += fabric.cfg[mr * p.cols + c].eq(loader.active(switch_id(p, mr, c)))

        for r, c, kind in p.units():
            if kind == "pcu":
                unit = Pcu(p, tail_ops=self.pcu_tail_ops[r, c], post_ops=self.pcu_post_ops[r, c])
            else:
                unit = Pmu(p)
            m.submodules[f"{kind}_{r}_{c}"] = unit
            index = unit_id(p, r, c)
            # While a program loads, and in a kernel's start cycle, every unit sees an all-zero (idle)
            # record, which clears its pass, buffer and group state: a kernel starts from a clean unit
            # also when its program is already resident (a Program Load skipped, the same kernel again).
            m.d.comb += [
                unit.cfg.eq(Mux(loader.busy | self.restart, 0, loader.active(index))),
                self.busy_cycles[index].eq(unit.busy_cycles),
                self.stall_cycles[index].eq(unit.stall_cycles),
            ]
            for net in NETWORKS:
                for port in UNIT_OUTPUTS[net]:
                    wiring.connect(m, getattr(unit, port), getattr(fabric, unit_port_name(r + 1, c, port)))
                for port in UNIT_INPUTS[net]:
                    wiring.connect(m, getattr(fabric, unit_port_name(r + 1, c, port)), getattr(unit, port))

        for side in IO_SIDES:
            mr = io_mesh_row(p, side)
            for c in range(p.cols):
                for net in NETWORKS:
                    for port in IO_INPUTS[net]:
                        wiring.connect(m, wiring.flipped(getattr(self, io_port_name(side, c, port))),
                                       getattr(fabric, unit_port_name(mr, c, port)))
                    for port in UNIT_INPUTS[net]:
                        inner = getattr(fabric, unit_port_name(mr, c, port))
                        if port in IO_OUTPUTS[net]:
                            wiring.connect(m, inner, wiring.flipped(getattr(self, io_port_name(side, c, port))))
                        else:
                            # Never ready: a route to an I/O input that is not exposed blocks, as at an edge.
                            m.d.comb += inner.ready.eq(0)
        return m
