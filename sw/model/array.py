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
PMU's first write pass and read latency; and a PMU's first output no sooner
than its first write pass's last vector arrives, its input taken to arrive
evenly from first to last word). A systolic operand on vi2 is taken
by the drain steps, so it bounds the start by its first word less the first
group's firings and the end by its last word plus the pipeline. The
kernel's estimate is the latest host output, bounded below by the
busiest unit's own ``C``. Fabric back-pressure between units (a multicast
held by its slowest sink, a full FIFO) is not modelled; :meth:`ArrayModel.consumers`
tells the chip model when each host input's sinks are ready, for its AGCU credits.
"""

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from sw.model import fp32
from sw.model.fabric import latency
from sw.model.kept import kept
from sw.model.pcu import PcuModel, replay_step
from sw.model.pmu import READ_LATENCY, PmuModel, gather_by, source_index
from sw.tile.kernel import Endpoint, Program

# Cycles between the last output word offered at a host port and the end of the run as a testbench counts
# it (the cycle of that handshake is included).
_END_CYCLES = 1


# (model class, parameters, configuration, tail functions) -> the unit's model, shared by every ArrayModel in the
# process: a PcuModel is stateless but for its plans, and ArrayModel uses a PmuModel only through gather, which
# leaves its banks alone, so programs with the same unit configuration (a model's context buckets) share its plans.
_UNITS = {}


# Configuration (by id, with the configuration to tell a reused id) -> its repr: a program's fingerprint
# (sw.model.chip._fingerprint) takes each unit's, and the unit's model is found by it.
_CONFIG_REPRS = {}


def config_repr(config):
    """``repr(config)`` of an immutable object (a unit configuration, the array's parameters, a tuple of tail
    functions), kept per object."""
    return kept(_CONFIG_REPRS, config, repr)


def _unit_model(kind, params, config, **ops):
    # repr, not the configuration itself: configurations that differ only in a constant's sign of zero
    # compare equal (-0.0 == 0.0) but compute differently.
    key = (kind, params, config_repr(config), tuple(ops.items()))
    model = _UNITS.get(key)
    if model is None:
        if len(_UNITS) >= 4096:
            _UNITS.clear()
        model = _UNITS[key] = kind(params, config, **ops)
    return model


def _gather_step(key, data, source, lanes):
    """A replay step storing :func:`gather_by` of stream ``data`` by map ``source`` under ``key``, the map's kind
    (slice, ``take`` index, repeated index or padded index) taken once."""
    if isinstance(source, slice):
        def step(values):
            values[key] = np.asarray(values[data], dtype=np.uint32).reshape(-1)[source].reshape(-1, lanes)
    elif isinstance(source, tuple) and source[0] == "take":
        index = source[1]

        def step(values):
            values[key] = np.asarray(values[data], dtype=np.uint32).reshape(-1).take(index)
    else:
        def step(values):
            values[key] = gather_by(source, np.asarray(values[data], dtype=np.uint32), lanes)
    return step


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
        # Per plan (by id, with the plan to tell a reused id): what each of its steps reads and writes, and the
        # units a gated replay runs (_gated_order).
        self._plan_deps = {}
        self._orders = {}
        # Per plan (by id, with the plan and the kernels): compiled_steps.
        self._compiled_steps = {}

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
        return self.run_planned(inputs, arrivals=arrivals)[0]

    def run_planned(self, inputs, *, arrivals=None):
        """:meth:`run`, and the plan that :meth:`replay` runs again on other data of the same shapes.

        A plan holds what the stream lengths, ``last`` flags and arrival cycles decide alone: the timing,
        every unit's checks and groups, each PMU's passes. Returns ``(ArrayRun, plan)``.
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
        steps, shape = [], []
        # (node, port) -> (source stream, flat index map, index of its step) of each PMU output that is a fixed
        # map of its write vectors: what a PCU fed by it may assume of its data whatever the values (see
        # _shared_activation), and the step _truncate may replace.
        maps = {}
        # Stream -> per read of it by a unit, the vectors that unit uses: all (None), or the first m (a GEMV
        # that takes its shared activation from the first group, see _shared_activation).
        uses = {}
        for name, unit, feeds in units:
            ins = {port: streams[source] for port, source, _ in feeds}
            sources = {port: source for port, source, _ in feeds}
            if unit.kind == "pcu":
                outs, cycles, n_in, step, needed = self._run_pcu(unit, ins, sources, maps, uses)
                filled = None
            else:
                outs, cycles, n_in, step, filled = self._run_pmu(unit, ins, sources, maps)
                needed = {}
                for port, source, _ in feeds:
                    uses.setdefault(source, []).append(None)
                if (name, "vo0") in maps:
                    maps[(name, "vo0")] += (len(steps),)
            steps.append(step)
            # needed: port -> (steps before its first word is taken, steps up to its last) where not (0, n_in).
            shape.append((name, tuple((port, source, delay, len(ins[port].data)) for port, source, delay in feeds),
                          cycles, n_in, needed, filled,
                          tuple((port, len(last), wait) for port, (_, last, wait) in outs.items())))
            for port, (data, last, wait) in outs.items():
                streams[(name, port)] = Stream(data, last, 0, 0)
        lasts = {}
        for name, source, delay in outputs:
            data, last, _, _ = streams[source]
            result.outputs[name] = (data, np.array(last, bool))
            lasts[name] = (source, np.array(last, bool))
            uses.setdefault(source, []).append(None)
        self._truncate(steps, maps, uses)
        shape = (tuple(shape), tuple(outputs))
        timing = self.timing(shape, {name: streams[(name, host.port)][2:] for name, host in prog.host_inputs.items()})
        result.cycles, result.unit_cycles, result.unit_end, result.output_end, _ = timing
        result.unit_cycles, result.unit_end, result.output_end = (dict(result.unit_cycles), dict(result.unit_end),
                                                                  dict(result.output_end))
        plan = (tuple((name, prog.host_inputs[name].port) for name in prog.host_inputs), tuple(steps), lasts,
                shape, timing)
        return result, plan

    def timing(self, shape, arrivals):
        """The cycle estimate of a run of ``shape`` (a plan's fourth item) whose host inputs arrive at ``arrivals``
        (name -> (first, end) cycles at the host port).

        Returns ``(cycles, unit_cycles, unit_end, output_end, streams)``: as :class:`ArrayRun`'s, and
        ``streams``: (node, port) -> (first, end) cycles each stream is offered at its source port.
        """
        units, outputs = shape
        prog = self.program
        streams = {(name, prog.host_inputs[name].port): (int(f), max(int(e), int(f)))
                   for name, (f, e) in arrivals.items()}
        unit_cycles, unit_end, output_end = {}, {}, {}
        for name, feeds, cycles, n_in, needed, filled, outs in units:
            start = end = None
            for port, source, delay, _ in feeds:
                first, last = streams[source]
                take_first, take_last = needed.get(port, (0, n_in))
                s, e = first + delay - take_first, last + delay + 1 + cycles - take_last
                start = s if start is None or s > start else start
                end = e if end is None or e > end else end
            end = max(start + cycles, end) - 1
            unit_cycles[name], unit_end[name] = cycles, end
            filled_at = start
            if filled is not None:
                # A PMU reads only once its first write pass has its last vector, of an input taken to arrive
                # evenly from its first word to its last.
                port, vector, after = filled
                for p, source, delay, words in feeds:
                    if p == port:
                        first, last = streams[source]
                        filled_at = first + delay + (last - first) * vector // max(words - 1, 1) + after
            for port, n_out, wait in outs:
                streams[(name, port)] = (min(max(start + cycles - max(n_in, n_out) + wait, filled_at), end), end)
        for name, source, delay in outputs:
            output_end[name] = streams[source][1] + delay
        path = max(output_end.values(), default=0) + _END_CYCLES
        return max([path] + list(unit_cycles.values())), unit_cycles, unit_end, output_end, streams

    def activity(self, plan):
        """Each unit's active span in ``plan``'s timing and its work: name -> (start, end, busy).

        ``start``: the cycle its inputs let it begin (its latest input's first word, as :meth:`timing`
        takes it); ``end``: its last output's cycle; ``busy``: the cycles its RTL counts as busy
        (``busy_cycles``): a PCU's firings (one per input vector) plus, in systolic mode, its drained
        rows; a PMU's vectors written plus vectors read, which counts a cycle that does both twice (the
        RTL once), so it is an upper bound there.
        """
        units, _ = plan[3]
        _, _, unit_end, _, streams = plan[4]
        out = {}
        for name, feeds, _, n_in, needed, _, outs in units:
            start = max((streams[source][0] + delay - needed.get(port, (0, n_in))[0]
                         for port, source, delay, _ in feeds), default=0)
            unit = self.program.units[name]
            if unit.kind == "pcu":
                busy = n_in + (max((n for _, n, _ in outs), default=0) if unit.config.systolic else 0)
            else:
                busy = n_in + sum(n for _, n, _ in outs)
            out[name] = (max(start, 0), unit_end[name], busy)
        return out

    def retimed(self, plan, arrivals):
        """``plan`` (from :meth:`run_planned`) with the timing of host inputs arriving at ``arrivals``."""
        return plan[:4] + (self.timing(plan[3], arrivals),)

    def consumers(self, plan):
        """When the units fed by each host input are ready for its words, from everything else they take.

        Returns host input name -> ``[(delay, words, t0, t1)]``, one per sink of its stream: the fabric's
        ``delay`` to that sink, the ``words`` it takes from it, and the cycles the sink could take the first
        and the last of them at the earliest, from its other inputs' first words and a step a cycle (None
        when it has no other input); in between, evenly. From ``plan``'s timing. Only the start is
        bounded so: the other inputs' ends follow from this stream's own pace through the tier.
        """
        units, _ = plan[3]
        streams = plan[4][4]
        host = {(name, port.port): name for name, port in self.program.host_inputs.items()}
        found = {name: [] for name in self.program.host_inputs}
        for name, feeds, cycles, n_in, needed, _, outs in units:
            for port, source, delay, words in feeds:
                if source not in host:
                    continue
                p_first, p_last = needed.get(port, (0, n_in))
                t0 = max((streams[q_source][0] + q_delay - needed.get(q, (0, n_in))[0] + p_first
                          for q, q_source, q_delay, _ in feeds if q != port), default=None)
                found[host[source]].append((delay, words, t0, None if t0 is None else t0 + p_last - p_first - 1))
        return found

    def replay(self, plan, data, *, after=None):
        """The :class:`ArrayRun` of ``plan`` (from :meth:`run_planned`) on host input ``data`` (name -> uint32 array).

        ``data`` must have the shapes of the run that made the plan; what follows from the shapes (timing,
        ``last`` flags, checks) is the plan's, what follows from the values is computed here.

        ``after``: ``(values, done, changed)`` of an earlier :meth:`replay_outputs` on this plan, after which
        only the host inputs named in ``changed`` have new data: the units it ran whose inputs did not change
        keep their results (every unit is a function of its inputs), the others run.
        """
        ports, steps, lasts, _, (cycles, unit_cycles, unit_end, output_end, _) = plan
        values = {(name, port): data[name] for name, port in ports}
        order = range(len(steps))
        if after is not None:
            first, done, changed = after
            order = self.rerun_order(plan, done, changed)
            values = {**first, **values}
        with fp32.quiet():
            for i in order:
                steps[i](values)
        outputs = {name: (values[source], last.copy()) for name, (source, last) in lasts.items()}
        return ArrayRun(outputs, cycles, dict(unit_cycles), dict(unit_end), dict(output_end))

    def compiled_steps(self, plan, c, halves=frozenset()):
        """``plan``'s steps (:meth:`run_planned`) with each PCU that runs on the compiled kernels ``c`` as
        :meth:`PcuModel.compiled_step` makes it (its plan's arguments bound once) and each fixed PMU map as one
        gather, kept per plan; the others as they are. The same values as ``plan``'s own steps, for replays that
        checked :func:`sw.model.pcu.compiled_kernels` first (those steps do not).

        ``halves``: host inputs (by (name, port)) of :meth:`half_weights` that the replay gives as the 16-bit bf16
        values of their read, not widened: their GEMVs widen them."""
        key = (id(plan), halves)
        known = self._compiled_steps.get(key)
        if known is None or known[0] is not plan or known[1] is not c:
            if len(self._compiled_steps) >= 1024:
                self._compiled_steps.clear()
            steps = []
            for step in plan[1]:
                unit = getattr(step, "unit", None)
                fast = None
                if unit is not None and unit[0] == "pcu":
                    half = unit[4] and dict(unit[4]).get(1) in halves
                    fast = unit[1].compiled_step(c, *unit[2:], half=half)
                    if half and fast is None:
                        raise ValueError("a GEMV's weights given as bf16 halves that it cannot take")
                elif unit is not None:
                    fast = _gather_step(*unit[1:], self.params.lanes)
                steps.append(fast or step)
            known = self._compiled_steps[key] = (plan, c, tuple(steps))
        return known[2]

    def half_weights(self, plan):
        """The host inputs (by (name, port)) whose one reader in ``plan`` is the weights (vi1) of a GEMV that the
        compiled kernels run (:meth:`PcuModel.compiled_gemv`): a replay may give those as a bf16 read's 16-bit
        values, which the GEMV widens itself (``compiled_steps(halves=...)``)."""
        readers = {}
        for ins, _ in self._deps(plan):
            for source in ins:
                readers[source] = readers.get(source, 0) + 1
        for source, _ in plan[2].values():
            readers[source] = readers.get(source, 0) + 1
        found = set()
        for step in plan[1]:
            unit = getattr(step, "unit", None)
            if unit is None or unit[0] != "pcu" or not unit[1].compiled_gemv(unit[2]):
                continue
            weights = dict(unit[4]).get(1)
            if weights in plan[0] and readers.get(weights) == 1:
                found.add(weights)
        return frozenset(found)

    def rerun_order(self, plan, done, changed):
        """The steps of ``plan`` (indices, in order) that :meth:`replay` runs after :meth:`replay_outputs` ran steps
        ``done`` and host inputs ``changed`` (names) got new data: those not run, and those whose inputs changed
        since, transitively. Kept per plan."""
        ports = plan[0]

        def rerun():
            dirty = {(name, port) for name, port in ports if name in changed}
            order = []
            for i, (ins, outs) in enumerate(self._deps(plan)):
                if i not in done or any(k in dirty for k in ins):
                    order.append(i)
                    dirty.update(outs)
            return order
        return self._gated_order(plan, ("after", frozenset(done), frozenset(changed)), rerun)

    def needed_order(self, plan, names):
        """``(done, order)``: the steps of ``plan`` that host outputs ``names`` need, as a frozenset and in order
        (:meth:`replay_outputs`). Kept per plan."""
        steps, lasts = plan[1], plan[2]

        def needed():
            need = {lasts[name][0] for name in names}
            done = set()
            deps = self._deps(plan)
            for i in reversed(range(len(steps))):
                ins, outs = deps[i]
                if any(k in need for k in outs):
                    done.add(i)
                    need.update(ins)
            return frozenset(done), sorted(done)
        return self._gated_order(plan, ("outputs", tuple(names)), needed)

    def replay_outputs(self, plan, data, names):
        """Run only the units host outputs ``names`` need, as :meth:`replay` would; returns ``(values, done)``:
        every stream computed, by (node, port), and the indices of the units run (for ``replay(after=...)``)."""
        ports, steps = plan[:2]
        done, order = self.needed_order(plan, names)
        values = {(name, port): data[name] for name, port in ports}
        with fp32.quiet():
            for i in order:
                steps[i](values)
        return values, done

    def _gated_order(self, plan, key, make):
        """``make()``, kept per ``plan`` and ``key``: which units a gated replay runs follows from the plan alone."""
        return kept(self._orders, plan, lambda _: make(), key=(id(plan), key), limit=1024)

    def _deps(self, plan):
        """Per unit (step) of ``plan``, the streams it takes and the streams it gives, by (node, port)."""
        return kept(self._plan_deps, plan, lambda plan: tuple(
            (tuple(source for _, source, _, _ in feeds), tuple((name, port) for port, _, _ in outs))
            for name, feeds, _, _, _, _, outs in plan[3][0]), limit=1024)

    def _truncate(self, steps, maps, uses):
        """Replace the replay step of each fixed-map PMU whose every reader takes only its first m vectors (GEMVs
        with a shared activation) by a gather of those vectors alone: the broadcast to every group is not built."""
        lanes = self.params.lanes
        for key, (data, index, at) in maps.items():
            wanted = uses.get(key, [None])
            if None in wanted:
                continue
            index = index[:max(wanted) * lanes].reshape(-1, lanes)
            source = ("take", index.astype(np.intp)) if index.min() >= 0 else (index + 1).astype(np.intp)

            def step(values, key=key, data=data, source=source):
                values[key] = gather_by(source, np.asarray(values[data], dtype=np.uint32), lanes)
            step.unit = ("gather", key, data, source)
            steps[at] = step

    def _shared_activation(self, cfg, plan, source, maps):
        """Whether a systolic PCU's drained activation is the same in every group whatever the data: its vi0 is
        a PMU's fixed map whose lane-0 words repeat from group to group (a GEMV's activation broadcast to every
        output tile), so :meth:`PcuModel.apply` may take the first group's for all (``shared``)."""
        known = maps.get(source)
        if not (cfg.systolic and cfg.systolic_rows == 1 and known is not None and plan.groups and
                plan.layout[1] is None):
            return False
        index = known[1]
        if index.size != plan.n * self.params.lanes:
            return False
        column = index.reshape(plan.groups, plan.n // plan.groups, self.params.lanes)[:, :, 0]
        return bool((column == column[:1]).all())

    def _run_pcu(self, unit, ins, sources, maps=None, uses=None):
        cfg = unit.config
        model = self._models.get(unit.name)
        if model is None:
            model = self._models[unit.name] = _unit_model(PcuModel, self.params, cfg,
                                                          tail_ops=tuple(self.program.tail_ops[unit.pos]),
                                                          post_ops=tuple(self.program.post_ops[unit.pos]))
        vi = {k: ins[f"vi{k}"].data for k in cfg.inputs}
        si = {k: ins[f"si{k}"].data for k, mode in enumerate((cfg.s0, cfg.s1)) if mode != "none"}
        where = f"unit {unit.name!r} (PCU at {unit.pos})"
        try:
            plan = model.plan_for({k: ins[f"vi{k}"].last for k in cfg.inputs}, {k: len(v) for k, v in si.items()})
            shared = self._shared_activation(cfg, plan, sources.get("vi0"), maps or {})
            vo, so = model.apply(plan, vi, si, shared=shared)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if uses is not None:
            for port, source in sources.items():
                uses.setdefault(source, []).append(plan.n // plan.groups if shared and port == "vi0" else None)
        outs = {}
        if cfg.vo:
            outs["vo0"] = (vo, plan.vo_last, 0)
        if cfg.so != "none":
            outs["so0"] = (so, plan.so_last, plan.wait)
        vi_src = tuple((k, sources[f"vi{k}"]) for k in cfg.inputs)
        si_src = tuple((k, sources[f"si{k}"]) for k in si)
        vo_key, so_key = (unit.name, "vo0") if cfg.vo else None, (unit.name, "so0") if cfg.so != "none" else None

        step = replay_step(lambda values: model.apply(plan, {k: values[s] for k, s in vi_src},
                                                      {k: values[s] for k, s in si_src}, shared=shared),
                           where, vo_key, so_key)
        # What compiled_steps needs to make this step's compiled form.
        step.unit = ("pcu", model, plan, shared, vi_src, si_src, vo_key, so_key, where)
        # A systolic operand is taken by the drain steps: its first word with the first group's first drained
        # row, its last with the last step of the run.
        needed = {}
        if cfg.systolic_operand and plan.groups:
            needed["vi2"] = (int(np.flatnonzero(plan.last)[0]) + 1, plan.n + len(plan.vo_last))
        return outs, plan.cycles, plan.n, step, needed

    def _run_pmu(self, unit, ins, sources, maps=None):
        cfg = unit.config
        model = self._models.get(unit.name)
        if model is None:
            model = self._models[unit.name] = _unit_model(PmuModel, self.params, cfg)
        where = f"unit {unit.name!r} (PMU at {unit.pos})"
        # Each kernel starts with the PMU's banks at zero: the run is a gather from its write vectors.
        feeds = tuple(sources.get(port) for port in ("vi0", "si0", "si1"))

        def run(values):
            vi0, si0, si1 = (() if s is None else values[s] for s in feeds)
            vo0, last, errors, cycles = model.gather(vi0, si0, si1)
            if errors:
                raise ValueError(f"{where}: {errors} accesses out of range")
            return vo0, last, cycles

        values = {feeds[k]: ins[port].data for k, port in enumerate(("vi0", "si0", "si1")) if port in ins}
        vo0, last, cycles = run(values)
        key = (unit.name, "vo0")

        def step(values):
            values[key] = run(values)[0]
        if feeds[0] is not None and not (cfg.write.runtime_base or cfg.read.runtime_base):
            # Without runtime bases the run is the same map every time (a replay has this run's shapes).
            lanes, data = self.params.lanes, feeds[0]
            written, si0, si1 = (() if s is None else values[s] for s in feeds)
            source = model.source(np.asarray(written).reshape(-1, lanes).shape[0], si0, si1)

            def step(values):
                values[key] = gather_by(source, np.asarray(values[data], dtype=np.uint32), lanes)
            step.unit = ("gather", key, data, source)
            if maps is not None:
                maps[key] = (data, source_index(source, np.size(vo0)))
        n_in = len(ins["vi0"].data)
        # Its first read pass loads in the cycle of the first write pass's last write, its data a cycle after
        # that pass issues (sw/model/pmu.py).
        filled = ("vi0", min(cfg.write.count, n_in) - 1, 1 + READ_LATENCY)
        return {"vo0": (vo0, last, 0)}, cycles, n_in, step, filled
