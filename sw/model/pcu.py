"""Fast model of a PCU: the RTL's results bit for bit, and a cycle estimate.

Stages, tail and reduction are element-wise across firings, so the model
evaluates every firing at once with the golden arithmetic (its fast form,
:mod:`sw.model.fp32`); the group folds and the systolic accumulation keep
the hardware's order of additions, vectorised across groups and lanes.
"""

import sys
from dataclasses import dataclass
from operator import itemgetter

import numpy as np

from facts.latency import POST_OPS, TAIL_OPS, pipeline_latency, post_latency
from sw.golden import arith as g
from sw.model import fp32, tail
from sw.tile.pcu import REGISTERS, f32

# The tail functions looked up when called, so that a test's replacement of one (see PcuModel._kernels) reaches the
# numpy form too.
_TAIL = {
    "none": lambda x: x, "exp": lambda x: tail.exp(x), "recip": lambda x: tail.recip(x),
    "rsqrt": lambda x: tail.rsqrt(x), "sigmoid": lambda x: tail.sigmoid(x), "silu": lambda x: tail.silu(x),
    "bf16": lambda x: g.bf16_to_fp32(g.fp32_to_bf16(x)),
}
# Each op takes its operands and ``clean``: per operand, whether it is known to hold no subnormal (the result of an
# earlier stage, a zero, a normal constant), so that the fp32 operations skip their denormals-are-zero check.
# Additions call fp32.add as (a, b, sub) only, the form tests/test_random_kernels.py replaces.
_OPS = {
    "pass": lambda a, b, c, clean: a,
    "add": lambda a, b, c, clean: fp32.add(a, b),
    "sub": lambda a, b, c, clean: fp32.add(a, b, sub=True),
    "mul": lambda a, b, c, clean: fp32.mul(a, b, clean=clean[:2]),
    "fma": lambda a, b, c, clean: fp32.add(fp32.mul(a, b, clean=clean[:2]), c),
    "max": lambda a, b, c, clean: fp32.maxmin(a, b, clean=clean[:2]),
    "min": lambda a, b, c, clean: fp32.maxmin(a, b, want_max=False, clean=clean[:2]),
}
_ELEMENTWISE = {"pass", "add", "sub", "mul", "fma"}
# The compiled run (fastfp.c ``pcu``): stage ops, tail functions (bf16 has none there: such units run here) and so
# modes by number.
_OP_CODE = {"pass": 0, "add": 1, "sub": 2, "mul": 3, "fma": 4, "max": 5, "min": 6}
_TAIL_CODE = {"none": -1, "exp": 0, "recip": 1, "rsqrt": 2, "sigmoid": 3, "silu": 4}
_SO_CODE = {"none": 0, "every": 1, "group": 2}
# Cycles between an input word entering the unit's FIFO and its firing, and
# between the end of the pipeline and a result on vo0 / so0.
_FIFO_CYCLES = 2
_VO_CYCLES = 1


@dataclass
class PcuResult:
    vo: np.ndarray          # (n, lanes) uint32
    vo_last: np.ndarray     # (n,) bool
    so: np.ndarray          # (m,) uint32
    so_last: np.ndarray     # (m,) bool
    firings: int
    cycles: int             # estimate, no external stalls


def reduce_lanes(op, x):
    """The PCU's pairwise cross-lane reduction of ``x`` (n, lanes).

    With two lanes or more the result holds no subnormal (fp32 sums and maxima).
    """
    if op == "sum":
        return fp32.lane_sums(x)
    if x.shape[1] > 1:
        # The tree of fp32_max is the largest of the row (fp32.largest), in one reduction.
        return fp32.largest(x)
    return x[:, 0]


def _bits(value):
    # Not cached: a cache keyed by the float would take -0.0 for 0.0 (equal, same hash).
    return np.uint32(f32(value))


def scalar_post(config, x, clean=False):
    """so0's ``func(x * scale + bias)``; ``clean``: ``x`` holds no subnormal."""
    scale, bias = _bits(config.so_scale), _bits(config.so_bias)
    if scale == _ONE and bias in (0, _NEG_ZERO):
        return _TAIL[config.so_func](_identity_post(x, bias, clean))
    if np.size(x) == 1:
        # One scalar (a group fold of one group): the same arithmetic on Python ints, without numpy's per-call cost.
        y = fp32.add1(fp32.mul1(int(np.asarray(x).reshape(-1)[0]), int(scale)), int(bias))
        return _TAIL[config.so_func](np.full(np.shape(x), y, np.uint32))
    return _TAIL[config.so_func](fp32.add(fp32.mul(x, scale, clean=(clean, False)), bias))


_ONE, _NEG_ZERO = np.uint32(0x3F800000), np.uint32(0x80000000)
_NO_GROUPS = np.zeros(0, np.int64)


def replay_step(run, where, vo_key, so_key):
    """A replay step (``step(values)``, streams by (node, port)) of a PCU whose ``run(values)`` gives ``(vo, so)``:
    a ``ValueError`` of it is named by ``where``; ``vo`` and ``so`` are kept under ``vo_key`` / ``so_key`` (None:
    not kept)."""
    def step(values):
        try:
            vo, so = run(values)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if vo_key:
            values[vo_key] = vo
        if so_key:
            values[so_key] = so
    return step


def _identity_post(x, bias, clean=False):
    """``fp32.add(fp32.mul(x, 1.0), bias)`` for a bias of +0 or -0, without the arithmetic: ``x * 1`` is ``x``
    after denormals-are-zero (NaN made canonical), adding -0 changes nothing and adding +0 only turns -0 into
    +0 (tests/test_model_speedups.py holds the two forms to the same bits)."""
    y = np.asarray(x, dtype=np.uint32) if clean else fp32.daz(np.asarray(x, dtype=np.uint32))
    nan = (y & ~_NEG_ZERO) > fp32._INF
    if bias == 0:
        return np.where(nan, fp32._NAN, np.where(y == _NEG_ZERO, np.uint32(0), y)).astype(np.uint32)
    return np.where(nan, fp32._NAN, y).astype(np.uint32) if nan.any() else y


def _group_layout(group, groups):
    """How :func:`_grouped` lays out values of these groups: (longest group, None) when all are as long, else
    (longest group, source index (groups, longest), keep (groups, longest) bool)."""
    sizes = np.bincount(group, minlength=groups)
    m = int(sizes.max())
    if (sizes == m).all():
        return m, None, None
    starts = np.searchsorted(group, np.arange(groups))
    j = np.arange(m)[None, :] - (m - sizes)[:, None]
    return m, np.maximum(starts[:, None] + j, 0), j >= 0


def _grouped(values, layout, groups, fill):
    """``values`` (n, ...) as (groups, longest group, ...), each group led by ``fill`` up to the longest."""
    m, index, keep = layout
    if index is None:
        return values.reshape((groups, m) + values.shape[1:])
    keep = keep.reshape(keep.shape + (1,) * (values.ndim - 1))
    return np.where(keep, values[index], np.uint32(fill))


def _group_ids(last):
    ends = np.flatnonzero(last)
    ids = np.zeros(len(last), dtype=np.int64)
    ids[ends[:-1] + 1] = 1
    return np.cumsum(ids), len(ends)


class _Plan:
    """What a run decides from its stream lengths and ``last`` flags alone (see :meth:`PcuModel.plan`)."""

    __slots__ = ("n", "last", "group", "groups", "layout", "starts", "sizes", "cycles", "vo_last", "so_last",
                 "zero", "wait", "rows", "compiled")


class PcuModel:
    """Execute a :class:`PcuConfig` on numpy data.

    Parameters
    ----------
    params : ArrayParams
    config : PcuConfig
    tail_ops, post_ops : tuple of TailOp or str
        The tail functions the modelled PCU was built with (``TailOp`` members or lower-case names).

    A run is :meth:`plan` (everything that follows from the stream lengths and ``last`` flags: checks, groups,
    cycles) then :meth:`apply` (the data); a caller that sees the same shapes again keeps the plan.
    """

    def __init__(self, params, config, *, tail_ops=TAIL_OPS, post_ops=POST_OPS):
        names = lambda ops: tuple(op if isinstance(op, str) else op.name.lower() for op in ops)
        config.validate(params, tail_ops=names(tail_ops), post_ops=names(post_ops))
        self.params, self.config = params, config
        self.tail_ops, self.post_ops = tuple(tail_ops), tuple(post_ops)
        self.latency = pipeline_latency(params.stages, params.lanes, names(tail_ops)) + _FIFO_CYCLES
        self.post_latency = post_latency(names(post_ops))
        # Operands by index into [r0, r1, r2, r3, s0, s1, const, zero]; the const slot is the stage's own.
        slot = {name: k for k, name in enumerate(REGISTERS + ("s0", "s1", "const", "zero"))}
        # Which slots hold no subnormal at the start of a run (see _stages): registers that take no input (zeros;
        # in systolic mode r0 is the drained sums, results, and r1 the operand if any), unused scalar inputs
        # (zeros) and the zero; then each stage's result but a "pass" of an operand that may hold one.
        if config.systolic:
            clean = [True, not config.systolic_operand, True, True, True, True, None, True]
        else:
            clean = [k not in config.inputs for k in range(3)] + [True, config.s0 == "none", config.s1 == "none",
                                                                  None, True]
        program = []
        for st in config.stages:
            # (A "pass" of an input keeps the input's state; every other op's result is an fp32 result.)
            const = int(np.uint32(st.const))
            clean[6] = const & 0x7F800000 != 0 or const & 0x7FFFFFFF == 0
            a, b, c, dst = slot[st.a], slot[st.b], slot[st.c], REGISTERS.index(st.dst)
            program.append((_OPS[st.op], st.op in _ELEMENTWISE, a, b, c, dst, np.uint32(st.const),
                            (clean[a], clean[b], clean[c])))
            clean[dst] = clean[a] if st.op == "pass" else True
        self._program = tuple(program)
        self._out = REGISTERS.index(config.out_src)
        self._tail = _TAIL[config.tail]
        self._plans = {}
        # The same run for fastfp.c's ``pcu``: (op, a, b, c, dst, const) rows; None where it does not take this
        # configuration (a bf16 tail, lanes not a power of two).
        lanes = params.lanes
        self._compiled = None
        if config.tail in _TAIL_CODE and config.so_func in _TAIL_CODE and 1 <= lanes <= 64 and \
                not lanes & (lanes - 1):
            code = np.array([(_OP_CODE[st.op], slot[st.a], slot[st.b], slot[st.c], REGISTERS.index(st.dst),
                              int(np.uint32(st.const))) for st in config.stages], np.int64).reshape(-1, 6)
            self._compiled = (code, len(code), _TAIL_CODE[config.tail], _SO_CODE[config.so],
                              0 if config.reduce == "sum" else 1, int(_bits(config.so_scale)),
                              int(_bits(config.so_bias)), _TAIL_CODE[config.so_func])

    def _stages(self, regs, s0, s1):
        shape = regs[0].shape
        regs = list(regs) + [s0, s1, None, np.uint32(0)]
        for op, elementwise, a, b, c, dst, const, clean in self._program:
            regs[6] = const
            if elementwise:
                # numpy broadcasts the operands itself; only a result narrower than the registers is widened.
                r = np.asarray(op(regs[a], regs[b], regs[c], clean), dtype=np.uint32)
                if r.shape != shape:
                    r = np.ascontiguousarray(np.broadcast_to(r, shape))
            else:
                r = np.asarray(op(*(np.broadcast_to(regs[x], shape) for x in (a, b, c)), clean), dtype=np.uint32)
            regs[dst] = r
        return self._tail(regs[self._out])

    def plan(self, lasts, si_sizes=None):
        """Check a run's shapes and work out what follows from them alone.

        Parameters
        ----------
        lasts : dict
            Input index -> ``last`` flags (n,) of each consumed vector input.
        si_sizes : dict, optional
            Input index -> number of scalars given on si0 / si1.

        Raises ValueError as :meth:`run` does for inputs of the wrong shape.
        """
        cfg = self.config
        si_sizes = si_sizes or {}
        missing = [k for k in cfg.inputs if k not in lasts]
        if missing:
            raise ValueError(f"no data for consumed vector input(s) {missing}")
        # A systolic operand (vi2) is one vector per drained row, not per firing: checked below.
        lengths = {k: len(lasts[k]) for k in cfg.inputs if not (cfg.systolic_operand and k == 2)}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"consumed inputs have different lengths: {lengths}")
        n = lengths[cfg.inputs[0]]
        last = np.array(lasts[cfg.group_src], dtype=bool)
        if n and not last[-1]:
            raise ValueError(f"the last vector of input {cfg.group_src} (group_src) has no `last` flag: "
                             "the final group would never end")
        plan = _Plan()
        plan.n, plan.last, plan.compiled = n, last, None
        plan.group, plan.groups = _group_ids(last)
        groups, lanes = plan.groups, self.params.lanes
        plan.layout = _group_layout(plan.group, groups) if groups else None
        # The run ends with its slowest output: vo0's register or the scalar post unit.
        tail_end = max(_VO_CYCLES if cfg.vo else 0, self.post_latency if cfg.so != "none" else 0)
        if cfg.systolic:
            return self._plan_systolic(plan, lasts, tail_end)
        for k, mode in enumerate((cfg.s0, cfg.s1)):
            given = si_sizes.get(k, 0)
            if mode == "per_firing" and given != n:
                raise ValueError(f"si{k} is per_firing: {n} scalars needed, {given} given")
            if mode == "per_group" and given != groups:
                raise ValueError(f"si{k} is per_group: {groups} scalars needed, {given} given")
        plan.zero = np.zeros((n, lanes), dtype=np.uint32)
        plan.zero.flags.writeable = False
        if groups:
            plan.starts = np.searchsorted(plan.group, np.arange(groups))
            plan.sizes = np.bincount(plan.group, minlength=groups)
        plan.vo_last = last if cfg.vo else np.zeros(0, bool)
        plan.so_last = np.zeros(0, bool) if cfg.so == "none" else last if cfg.so == "every" else np.ones(groups, bool)
        plan.cycles = n + self.latency + tail_end
        # A group's scalar leaves after the group's last firing.
        ends = np.flatnonzero(last)
        plan.wait = int(ends[0]) if cfg.so == "group" and len(ends) else 0
        return plan

    def _plan_systolic(self, plan, lasts, tail_end):
        """The systolic part of :meth:`plan`: the drained rows are what the stages, vo0 and so0 see."""
        cfg, n, groups, rows = self.config, plan.n, plan.groups, self.config.systolic_rows
        drained = groups * rows
        if cfg.systolic_operand and len(lasts[2]) != drained:
            raise ValueError(f"vi2 is a systolic operand, one vector per drained row: {groups} groups x {rows} "
                             f"rows = {drained} needed, {len(lasts[2])} given")
        # The drained rows' `last` flags: the operand's, else each tile's last row. Kept also without vo0,
        # because they time the operand's drain steps.
        row_last = np.array(lasts[2], bool) if cfg.systolic_operand else np.tile(np.arange(rows) == rows - 1, groups)
        if cfg.so == "group" and drained and not row_last[-1]:
            raise ValueError("the last vector of input 2 (the systolic operand) has no `last` flag: the final "
                             "group of drained rows would never reach so0")
        plan.vo_last = row_last
        plan.so_last = np.zeros(0, bool) if cfg.so == "none" else row_last if cfg.so == "every" else \
            np.ones(int(row_last.sum()), bool)
        plan.cycles = n + drained + self.latency + tail_end
        plan.wait = 0
        if cfg.so == "group":
            r = plan.rows = _Plan()
            r.group, r.groups = _group_ids(row_last)
            if r.groups:
                r.layout = _group_layout(r.group, r.groups)
                r.starts = np.searchsorted(r.group, np.arange(r.groups))
                r.sizes = np.bincount(r.group, minlength=r.groups)
        if cfg.so != "none" and drained:
            # Drained row i (tile t = i // rows) enters the pipeline after the firings of tiles 0..t and the
            # i drain steps before it. The first scalar comes from row 0 (every) or the first row with `last`
            # (group); wait places it there given how ArrayModel times a port (C - max(n, outputs) after start).
            first = int(np.flatnonzero(row_last)[0]) if cfg.so == "group" else 0
            fired = int(np.flatnonzero(plan.last)[first // rows]) + 1
            plan.wait = fired + first - (n + drained - max(n, len(plan.so_last)))
        return plan

    def plan_for(self, lasts, si_sizes=None):
        """:meth:`plan`, kept per shapes: runs with the same ``last`` flags and scalar counts share one."""
        key = (tuple((k, np.asarray(v, bool).tobytes()) for k, v in sorted(lasts.items())),
               tuple(sorted((si_sizes or {}).items())))
        plan = self._plans.get(key)
        if plan is None:
            plan = self.plan(lasts, si_sizes)
            if len(self._plans) >= 256:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def apply(self, plan, vi, si=None, *, shared=False):
        """(vo (n, lanes), so (m,)) of a run with ``plan``: ``vi`` maps input index -> data, ``si`` -> scalars.

        ``shared`` (systolic, one drained row, groups of one length): the caller knows that every group's
        activation (vi0's lane 0) is the first group's, whatever the data (``ArrayModel``: a PMU's fixed map
        that repeats); the GEMV then multiplies by that one row (:func:`fp32.dot_shared`).
        """
        c = self._kernels()
        if c:
            return self._apply_compiled(c, plan, vi, si, shared)
        cfg, n, lanes = self.config, plan.n, self.params.lanes
        if cfg.systolic:
            out = self._systolic(plan, vi, shared)
            return out if cfg.vo else out[:0], self._scalar_out(plan.rows if cfg.so == "group" else None, out)
        zero = plan.zero
        regs = [np.asarray(vi[k], dtype=np.uint32).reshape(n, lanes) if k in cfg.inputs else zero
                for k in range(3)] + [zero]
        scal = []
        for k, mode in enumerate((cfg.s0, cfg.s1)):
            if mode == "none":
                scal.append(np.uint32(0))
                continue
            values = np.asarray(si[k], dtype=np.uint32)
            scal.append(values[:, None] if mode == "per_firing" else values[plan.group][:, None])
        out = self._stages(regs, scal[0], scal[1])
        vo = out if cfg.vo else np.zeros((0, lanes), np.uint32)
        return vo, self._scalar_out(plan, out)

    def _kernels(self):
        """The compiled kernels where this unit runs on them: built, the configuration taken, and the modules' own
        arithmetic in place (a test that replaces any function the compiled run stands for, ``fp32.daz``,
        ``fp32.add``, ``fp32.mul``, a tail function, :func:`reduce_lanes`, ..., to prove a mistake is caught gets the
        numpy form)."""
        # Each module's functions fetched at once from its namespace (one C call a module: this runs for every unit
        # run).
        if self._compiled is None or _FP32_NOW(_FP32_NS) != _FP32_FNS or _TAIL_NOW(_TAIL_NS) != _TAIL_FNS or \
                _PCU_NOW(_PCU_NS) != _PCU_FNS:
            return None
        return fp32._C if fp32._C is not None else fp32.kernels()

    def _apply_compiled(self, c, plan, vi, si, shared):
        """:meth:`apply` on the compiled kernels (fastfp.c): a systolic unit's GEMV (``gemv``, its activation read in
        place from vi0), then the stages, the tail and so0 in one call (``pcu``)."""
        cfg, lanes = self.config, self.params.lanes
        code, stages, tail_code, so_mode, reduce, scale, bias, post = self._compiled
        run = plan.compiled
        if run is None:
            run = plan.compiled = self._compiled_plan(plan, so_mode)
        starts, sizes, groups_out, rows_n = run
        if cfg.systolic:
            rows, groups, n = cfg.systolic_rows, plan.groups, plan.n
            drained = np.empty((rows_n, lanes), np.uint32)
            if groups and plan.layout[1] is None and rows <= lanes:
                # Groups of one length m: group g's activation for step j, row r is vi0's word (g m + j) lanes + r,
                # or with ``shared`` the first group's, j lanes + r (vi0 may hold only those vectors).
                m = n // groups
                c.gemv(np.ascontiguousarray(vi[0], np.uint32), np.ascontiguousarray(vi[1], np.uint32), drained,
                       groups, m, rows, lanes, 0 if shared and rows == 1 else m * lanes, lanes)
            elif groups:
                a = np.asarray(vi[0], dtype=np.uint32).reshape(n, lanes)[:, :rows]
                b = np.asarray(vi[1], dtype=np.uint32).reshape(n, lanes)
                # Shorter groups are led by +0 (a +0 product): adding it to the reset accumulator's +0 changes nothing.
                drained = fp32.dot(_grouped(a, plan.layout, groups, 0)[..., None],
                                   _grouped(b, plan.layout, groups, 0)[..., None, :]).reshape(rows_n, lanes)
            regs = (drained, np.ascontiguousarray(vi[2], np.uint32) if cfg.systolic_operand else None, None)
            scal = (None, None)
        else:
            inputs = cfg.inputs
            regs = (np.ascontiguousarray(vi[0], np.uint32) if 0 in inputs else None,
                    np.ascontiguousarray(vi[1], np.uint32) if 1 in inputs else None,
                    np.ascontiguousarray(vi[2], np.uint32) if 2 in inputs else None)
            scal = (None, None)
            if cfg.s0 != "none" or cfg.s1 != "none":
                scal = tuple(None if mode == "none" else np.ascontiguousarray(si[k], np.uint32) if mode == "per_firing"
                             else np.ascontiguousarray(np.asarray(si[k], np.uint32)[plan.group])
                             for k, mode in enumerate((cfg.s0, cfg.s1)))
        vo = np.empty((rows_n, lanes), np.uint32)
        so = np.empty(0 if so_mode == 0 else rows_n if so_mode == 1 else groups_out, np.uint32)
        c.pcu(code, stages, rows_n, lanes, regs[0], regs[1], regs[2], scal[0], scal[1], self._out, tail_code, vo,
              so_mode, reduce, starts, sizes, groups_out, scale, bias, post, so)
        return (vo if cfg.vo else vo[:0]), so

    def compiled_gemv(self, plan):
        """Whether :meth:`compiled_step` runs this unit's GEMV on ``gemv`` for runs of ``plan`` (a systolic unit on
        the compiled kernels, groups of one length): its weights (vi1) may then come as bf16 halves."""
        return self._compiled is not None and self.config.systolic and bool(plan.groups) and \
            plan.layout[1] is None and self.config.systolic_rows <= self.params.lanes

    def compiled_step(self, c, plan, shared, vi_src, si_src, vo_key, so_key, where, half=False):
        """A replay step of this unit (:class:`~sw.model.array.ArrayModel`'s: ``step(values)``, streams by (node,
        port)) that makes :meth:`_apply_compiled`'s calls on the compiled kernels ``c`` with everything that
        follows from ``plan`` bound once; None where this unit does not run there (see :meth:`_kernels`; the
        caller checks :func:`compiled_kernels` before each replay) or only its numpy form takes the shapes (a
        systolic run with groups of different lengths). ``vi_src`` / ``si_src``: (input index, stream key) of
        its inputs; ``vo_key`` / ``so_key``: where its outputs go (None: not kept); ``where`` names the unit in
        errors. ``half``: the weights (vi1) come as the bf16 values of an AGCU's bf16 read, 16-bit words that the
        GEMV widens as the read would (only where :meth:`compiled_gemv`).

        The step's ``sequence`` says what it computes for :meth:`sw.model.chip.ChipModel._flat`'s compiled
        sequence: ``(gemv, pcu)``, ``gemv`` None or ``(a key, weights key, groups, m, rows, lanes, activation
        stride, half)`` (its sums are the PCU's first input, ``"drained"``), ``pcu`` ``(the unit's compiled
        configuration, its plan's (starts, sizes, groups, rows), the output register, the three input keys (None:
        none), the two scalars (None, or (key, the firings' groups to spread a per-group input over, or None)), vo
        key, so key)``."""
        if self._compiled is None or (half and not self.compiled_gemv(plan)):
            return None
        cfg, lanes = self.config, self.params.lanes
        code, stages, tail_code, so_mode, reduce, scale, bias, post = self._compiled
        run = plan.compiled
        if run is None:
            run = plan.compiled = self._compiled_plan(plan, so_mode)
        starts, sizes, groups_out, rows_n = run_args = run
        out_reg, so_n, pcu = self._out, (0 if so_mode == 0 else rows_n if so_mode == 1 else groups_out), c.pcu
        empty, contiguous, u32 = np.empty, np.ascontiguousarray, np.uint32
        vi = dict(vi_src)
        if cfg.systolic:
            rows, groups, n = cfg.systolic_rows, plan.groups, plan.n
            if not self.compiled_gemv(plan):
                return None
            m = n // groups
            stride = 0 if shared and rows == 1 else m * lanes
            gemv, k0, k1, k2 = c.gemv, vi[0], vi[1], vi.get(2) if cfg.systolic_operand else None
            weights = (lambda values: values[k1]) if half else (lambda values: contiguous(values[k1], u32))
            half = int(half)

            def run(values):
                drained = empty((rows_n, lanes), u32)
                gemv(contiguous(values[k0], u32), weights(values), drained, groups, m, rows, lanes, stride, lanes,
                     half)
                vo, so = empty((rows_n, lanes), u32), empty(so_n, u32)
                pcu(code, stages, rows_n, lanes, drained, None if k2 is None else contiguous(values[k2], u32),
                    None, None, None, out_reg, tail_code, vo, so_mode, reduce, starts, sizes, groups_out, scale,
                    bias, post, so)
                return vo, so
            step = replay_step(run, where, vo_key, so_key)
            step.sequence = ((k0, k1, groups, m, rows, lanes, stride, half),
                             (self._compiled, run_args, out_reg, ("drained", k2, None), (None, None), vo_key, so_key))
            return step
        k0, k1, k2 = (vi.get(k) if k in cfg.inputs else None for k in range(3))
        si = dict(si_src)
        group = plan.group

        def scalar(mode, key):
            # The scalars a mode gives the stages: one per firing (a per-group input spread over its firings).
            if mode == "none":
                return lambda values: None
            if mode == "per_firing":
                return lambda values: contiguous(values[key], u32)
            return lambda values: contiguous(np.asarray(values[key], u32)[group])
        s0, s1 = (scalar(mode, si.get(k)) for k, mode in enumerate((cfg.s0, cfg.s1)))

        def run(values):
            vo, so = empty((rows_n, lanes), u32), empty(so_n, u32)
            pcu(code, stages, rows_n, lanes, None if k0 is None else contiguous(values[k0], u32),
                None if k1 is None else contiguous(values[k1], u32),
                None if k2 is None else contiguous(values[k2], u32), s0(values), s1(values), out_reg, tail_code,
                vo, so_mode, reduce, starts, sizes, groups_out, scale, bias, post, so)
            return vo, so
        step = replay_step(run, where, vo_key, so_key)
        step.sequence = (None, (self._compiled, run_args, out_reg, (k0, k1, k2),
                                tuple(None if mode == "none" else (si.get(k), None if mode == "per_firing" else group)
                                      for k, mode in enumerate((cfg.s0, cfg.s1))), vo_key, so_key))
        return step

    def _compiled_plan(self, plan, so_mode):
        """What :meth:`_apply_compiled` takes from ``plan``: the so0 groups' starts and sizes (int64), their count,
        and the rows the stages see (the firings, or a systolic unit's drained rows)."""
        cfg = self.config
        rows_n = plan.groups * cfg.systolic_rows if cfg.systolic else plan.n
        groups = (plan.rows if cfg.systolic else plan) if so_mode == 2 else None
        if groups is not None and groups.groups:
            return (np.ascontiguousarray(groups.starts, np.int64), np.ascontiguousarray(groups.sizes, np.int64),
                    groups.groups, rows_n)
        return _NO_GROUPS, _NO_GROUPS, 0, rows_n

    def _scalar_out(self, groups, out):
        """so0 from the results ``out`` (n, lanes); ``groups`` has the groups' ids and layout for ``so = group``."""
        cfg = self.config
        if cfg.so == "none":
            return np.zeros(0, np.uint32)
        reduced = reduce_lanes(cfg.reduce, out)
        # The lane reduction's results are fp32 sums or maxima (two lanes or more), and so are the fold's.
        clean = out.shape[1] > 1
        if cfg.so == "group":
            reduced = self._fold(reduced, groups.group, groups.groups, groups, clean)
        return np.asarray(scalar_post(cfg, reduced, clean), np.uint32)

    def run(self, vi, si=None):
        """Run the configuration.

        Parameters
        ----------
        vi : dict
            Input index -> (data (n, lanes) uint32, last (n,) bool) for each
            consumed vector input.
        si : dict, optional
            Input index -> scalars (uint32): one per firing (``per_firing``)
            or one per group (``per_group``).
        """
        si = si or {}
        sizes = {k: len(np.asarray(si.get(k, []))) for k, mode in enumerate((self.config.s0, self.config.s1))
                 if mode != "none"}
        plan = self.plan({k: vi[k][1] for k in vi}, sizes)
        vo, so = self.apply(plan, {k: vi[k][0] for k in vi}, si)
        vo_last = np.array(plan.vo_last, bool) if self.config.vo else np.zeros(0, bool)
        return PcuResult(vo, vo_last, so, plan.so_last.copy(), plan.n, plan.cycles)

    def _fold(self, reduced, group, groups, plan=None, clean=False):
        """Fold each group's reductions in arrival order, as the end stage does; ``plan`` has the groups' layout."""
        if not groups:
            return reduced[:0].copy()
        if self.config.reduce == "sum":
            # Groups led by -0, the identity of addition, so each folds from its first reduction on.
            layout = plan.layout if plan else _group_layout(group, groups)
            return fp32.ordered_sums(_grouped(reduced, layout, groups, 0x80000000), start=0x80000000, clean=clean)
        # Folding with fp32_max gives the canonical NaN when the group holds a NaN, else its largest value
        # after denormals-are-zero (-0 < +0); a group of one is its reduction untouched.
        if plan:
            starts, sizes = plan.starts, plan.sizes
        else:
            starts, sizes = np.searchsorted(group, np.arange(groups)), np.bincount(group, minlength=groups)
        value = fp32.largest(np.asarray(reduced, np.uint32), starts, clean=clean)
        return np.where(sizes == 1, reduced[starts], value).astype(np.uint32)

    def _systolic(self, plan, vi, shared=False):
        rows, lanes, n, groups = self.config.systolic_rows, self.params.lanes, plan.n, plan.groups
        b = np.asarray(vi[1], dtype=np.uint32).reshape(n, lanes)
        if shared and groups and rows == 1 and plan.layout[1] is None:
            # Only the first group's activation is read: vi0 may hold just those vectors (ArrayModel._truncate).
            m = n // groups
            tiles = fp32.dot_shared(np.asarray(vi[0], dtype=np.uint32).reshape(-1, lanes)[:m, 0],
                                    b.reshape(groups, m, lanes))
        elif groups:
            # Only the drained rows' accumulators reach an output.
            a = np.asarray(vi[0], dtype=np.uint32).reshape(n, lanes)[:, :rows]
            # Shorter groups are led by +0 (a +0 product): adding it to the reset accumulator's +0 changes nothing.
            tiles = fp32.dot(_grouped(a, plan.layout, groups, 0)[..., None],
                             _grouped(b, plan.layout, groups, 0)[..., None, :])
        else:
            tiles = np.zeros((groups, rows, lanes), dtype=np.uint32)
        drained = tiles.reshape(groups * rows, lanes)
        if not self._program and self._out == 0:
            # No stage: vo0 is the drained sums (r0) through the tail.
            return self._tail(drained)
        zero = np.zeros_like(drained)
        operand = np.asarray(vi[2], dtype=np.uint32).reshape(groups * rows, lanes) if self.config.systolic_operand \
            else zero
        return self._stages([drained, operand, zero, zero], np.uint32(0), np.uint32(0))


def compiled_kernels():
    """The compiled kernels where every unit with a compiled configuration runs on them (:meth:`PcuModel._kernels`
    without the unit's own part), else None: what a replay of :meth:`PcuModel.compiled_step`'s steps checks first."""
    if _FP32_NOW(_FP32_NS) != _FP32_FNS or _TAIL_NOW(_TAIL_NS) != _TAIL_FNS or _PCU_NOW(_PCU_NS) != _PCU_FNS:
        return None
    return fp32._C if fp32._C is not None else fp32.kernels()


# The functions the compiled run stands for, as imported (see PcuModel._kernels): the numpy form's arithmetic.
_REPLACED_NAMES = (
    (fp32, ("daz", "add", "mul", "maxmin", "lane_sums", "largest", "ordered_sums", "dot", "dot_shared", "add1",
            "mul1")),
    (tail, ("exp", "recip", "rsqrt", "sigmoid", "silu")),
    (sys.modules[__name__], ("reduce_lanes", "scalar_post")),
)
_REPLACED = tuple((module, name, getattr(module, name)) for module, names in _REPLACED_NAMES for name in names)
# Per module: its namespace, a getter of those names and the functions (function equality is identity).
(_FP32_NS, _FP32_NOW, _FP32_FNS), (_TAIL_NS, _TAIL_NOW, _TAIL_FNS), (_PCU_NS, _PCU_NOW, _PCU_FNS) = (
    (vars(module), itemgetter(*names), itemgetter(*names)(vars(module))) for module, names in _REPLACED_NAMES)
