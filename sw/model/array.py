"""Fast model of a whole kernel on the tile array: the RTL's outputs bit for bit, and a cycle estimate.

Function: the units run in dataflow order, each through its own model
(:mod:`sw.model.pcu`, :mod:`sw.model.pmu`) on the complete streams its
connections deliver; the fabric moves words unchanged, and a multicast gives
every sink the same stream.

Timing, with every host input offered from cycle 0 at full rate and every
host output always ready: a stream is described by the cycles its first and
last words are offered at the producing port. A word crosses a connection
in ``sw.model.fabric.latency(hops)`` cycles. A unit whose model takes ``C``
cycles for ``n`` inputs arriving one per cycle starts when its latest input
starts (``S``), and cannot end before its latest input ends (``L``) plus its
drain ``C - n``, so its last output leaves at ``max(S + C, L + 1 + C - n) -
1``; its first output leaves ``C - max(n, outputs)`` cycles after ``S`` (the
pipeline latency of a PCU, plus its first group for a per-group scalar; a
PMU's first write pass and read latency). The
kernel's estimate is the latest host output, bounded below by the
busiest unit's own ``C``. Fabric back-pressure between units (a multicast
held by its slowest sink, a full FIFO) is not modelled.
"""

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from sw.model.fabric import latency
from sw.model.pcu import PcuModel
from sw.model.pmu import PmuModel
from sw.tile.kernel import Endpoint, Program

# Cycles between the last output word offered at a host port and the end of the run as a testbench counts
# it (the cycle of that handshake is included).
_END_CYCLES = 1


class Stream(NamedTuple):
    """Words on one port and the cycles its first and last words are offered there."""

    data: np.ndarray
    last: np.ndarray
    first: int
    end: int


@dataclass
class ArrayRun:
    """Result of :meth:`ArrayModel.run`.

    Attributes
    ----------
    outputs : dict
        Host output name -> (data, last): ``data`` (n, lanes) uint32 for a
        vector output, (n,) uint32 for a scalar one; ``last`` (n,) bool.
    cycles : int
        Estimated cycles from the first host input offered to the last host
        output taken, both included, without external stalls.
    unit_cycles : dict
        Unit name -> its own model's cycle count.
    unit_end : dict
        Unit name -> estimated cycle of its last output.
    output_end : dict
        Host output name -> estimated cycle of its last word.
    """

    outputs: dict
    cycles: int
    unit_cycles: dict = field(default_factory=dict)
    unit_end: dict = field(default_factory=dict)
    output_end: dict = field(default_factory=dict)


class ArrayModel:
    """Execute a :class:`~sw.tile.kernel.Program` on numpy data.

    Parameters
    ----------
    program : Program
    """

    def __init__(self, program):
        if not isinstance(program, Program):
            raise ValueError(f"program must be a Program from Kernel.build(), not {type(program).__name__}")
        self.program = program
        self.params = program.params
        self._driver = {sink: c for c in program.connections for sink in c.sinks}
        self.order = self._order()
        # Unit name -> its validated model, and endpoint -> fabric latency: built once per program.
        self._models = {}
        self._wires = None

    def _order(self):
        """Units in dataflow order; a cycle of units is refused."""
        prog = self.program
        deps = {name: set() for name in prog.units}
        for c in prog.connections:
            if c.source.node in prog.units:
                for s in c.sinks:
                    if s.node in prog.units and s.node != c.source.node:
                        deps[s.node].add(c.source.node)
        order, done = [], set()
        while len(order) < len(deps):
            ready = [n for n in deps if n not in done and deps[n] <= done]
            if not ready:
                loop = sorted(n for n in deps if n not in done)
                raise ValueError(f"the model runs units in dataflow order; these units feed each other in a "
                                 f"cycle: {', '.join(loop)}")
            for n in ready:
                order.append(n)
                done.add(n)
        return order

    def _host_stream(self, name, value):
        host = self.program.host_inputs[name]
        lanes = self.params.lanes
        if isinstance(value, tuple):
            data, last = value
        else:
            data, last = value, None
        data = np.asarray(data)
        if host.network == "vector":
            data = data.astype(np.uint32).reshape(-1, lanes)
        else:
            data = data.astype(np.uint32).reshape(-1)
        last = np.zeros(len(data), bool) if last is None else np.asarray(last, dtype=bool).reshape(-1)
        if len(last) != len(data):
            raise ValueError(f"host input {name!r}: {len(data)} words but {len(last)} last flags")
        if not len(data):
            raise ValueError(f"host input {name!r} has no data")
        return Stream(data, last, 0, len(data) - 1)

    def _wiring(self):
        """What feeds each port, keyed by (node, port): the source and the fabric's latency, found once.

        Returns (units, outputs): per unit in dataflow order ``(name, unit, [(port, source, latency)])``;
        per host output ``(name, source, latency)``.
        """
        prog = self.program

        def feed(endpoint):
            c = self._driver[endpoint]
            hops = prog.routing.routes[c.name].hops(prog.mesh_position(endpoint))
            return (c.source.node, c.source.port), latency(hops)

        units = [(name, prog.units[name], [(e.port,) + feed(e) for e in self._driver if e.node == name])
                 for name in self.order]
        outputs = [(name,) + feed(Endpoint(name, host.port)) for name, host in prog.host_outputs.items()]
        return units, outputs

    def run(self, inputs, *, arrivals=None):
        """Run the program.

        Parameters
        ----------
        inputs : dict
            Host input name -> ``(data, last)``, or just ``data`` (no
            ``last`` flags); vector data (n, lanes) or flat, uint32 words.
        arrivals : dict, optional
            Host input name -> ``(first, end)``: the cycles its first and
            last words are offered (an AGCU stream from memory, say). By
            default every input is offered one word a cycle from cycle 0.

        Returns
        -------
        ArrayRun
        """
        prog = self.program
        missing = sorted(set(prog.host_inputs) - set(inputs))
        extra = sorted(set(inputs) - set(prog.host_inputs))
        if missing or extra:
            raise ValueError(f"host inputs: missing {missing}, unknown {extra}; the program's are "
                             f"{sorted(prog.host_inputs)}")
        streams = {}
        for name, value in inputs.items():
            stream = self._host_stream(name, value)
            if arrivals and name in arrivals:
                first, end = arrivals[name]
                stream = Stream(stream.data, stream.last, int(first), max(int(end), int(first)))
            streams[(name, prog.host_inputs[name].port)] = stream
        if self._wires is None:
            self._wires = self._wiring()
        units, outputs = self._wires
        result = ArrayRun({}, 0)
        for name, unit, feeds in units:
            ins = {}
            for port, source, delay in feeds:
                data, last, first, end = streams[source]
                ins[port] = Stream(data, last, first + delay, end + delay)
            if unit.kind == "pcu":
                outs, cycles, n_in = self._run_pcu(unit, ins)
            else:
                outs, cycles, n_in = self._run_pmu(unit, ins)
            start = max(s.first for s in ins.values())
            stop = max(s.end for s in ins.values())
            end = max(start + cycles, stop + 1 + cycles - n_in) - 1
            result.unit_cycles[name], result.unit_end[name] = cycles, end
            for port, (data, last, wait) in outs.items():
                first = min(start + cycles - max(n_in, len(last)) + wait, end)
                streams[(name, port)] = Stream(data, last, first, end)
        for name, source, delay in outputs:
            data, last, _, end = streams[source]
            result.outputs[name] = (data, last)
            result.output_end[name] = end + delay
        path = max(result.output_end.values(), default=0) + _END_CYCLES
        result.cycles = max([path] + list(result.unit_cycles.values()))
        return result

    def _run_pcu(self, unit, ins):
        cfg = unit.config
        model = self._models.get(unit.name)
        if model is None:
            model = self._models[unit.name] = PcuModel(self.params, cfg, tail_ops=self.program.tail_ops[unit.pos],
                                                       post_ops=self.program.post_ops[unit.pos])
        vi = {k: (ins[f"vi{k}"].data, ins[f"vi{k}"].last) for k in cfg.inputs}
        si = {k: ins[f"si{k}"].data for k, mode in enumerate((cfg.s0, cfg.s1)) if mode != "none"}
        try:
            r = model.run(vi, si)
        except ValueError as e:
            raise ValueError(f"unit {unit.name!r} (PCU at {unit.pos}): {e}") from None
        outs = {}
        if cfg.vo:
            outs["vo0"] = (r.vo, r.vo_last, 0)
        if cfg.so != "none":
            # A group's scalar leaves after the group's last firing.
            group_end = np.flatnonzero(vi[cfg.group_src][1])
            outs["so0"] = (r.so, r.so_last, int(group_end[0]) if cfg.so == "group" and len(group_end) else 0)
        return outs, r.cycles, r.firings

    def _run_pmu(self, unit, ins):
        cfg = unit.config
        model = self._models.get(unit.name)
        if model is None:
            model = self._models[unit.name] = PmuModel(self.params, cfg)
        # Each kernel starts with the PMU's banks at zero, as a fresh model has them.
        model.banks = np.zeros_like(model.banks)
        si0 = ins["si0"].data if "si0" in ins else ()
        si1 = ins["si1"].data if "si1" in ins else ()
        r = model.run(ins["vi0"].data, si0, si1)
        if r.errors:
            raise ValueError(f"unit {unit.name!r} (PMU at {unit.pos}): {r.errors} accesses out of range")
        return {"vo0": (r.vo0, r.last, 0)}, r.cycles, len(ins["vi0"].data)
