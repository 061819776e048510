"""Fast model of a PCU: the RTL's results bit for bit, and a cycle estimate.

Stages, tail and reduction are element-wise across firings, so the model
evaluates every firing at once with the golden arithmetic (its fast form,
:mod:`sw.model.fp32`); the group folds and the systolic accumulation keep
the hardware's order of additions, vectorised across groups and lanes.
"""

from dataclasses import dataclass

import numpy as np

from facts.latency import POST_OPS, TAIL_OPS, pipeline_latency, post_latency
from sw.golden import arith as g
from sw.golden import tail as t
from sw.model import fp32
from sw.tile.pcu import REGISTERS, f32

_TAIL = {
    "none": lambda x: x, "exp": t.exp, "recip": t.recip, "rsqrt": t.rsqrt, "sigmoid": t.sigmoid, "silu": t.silu,
    "bf16": lambda x: g.bf16_to_fp32(g.fp32_to_bf16(x)),
}
_OPS = {
    "pass": lambda a, b, c: a,
    "add": lambda a, b, c: fp32.add(a, b),
    "sub": lambda a, b, c: fp32.add(a, b, sub=True),
    "mul": lambda a, b, c: fp32.mul(a, b),
    "fma": lambda a, b, c: fp32.add(fp32.mul(a, b), c),
    "max": lambda a, b, c: g.fp32_max(a, b),
    "min": lambda a, b, c: g.fp32_min(a, b),
}
_ELEMENTWISE = {"pass", "add", "sub", "mul", "fma"}
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
    """The PCU's pairwise cross-lane reduction of ``x`` (n, lanes)."""
    combine = fp32.add if op == "sum" else g.fp32_max
    while x.shape[1] > 1:
        x = combine(x[:, 0::2], x[:, 1::2])
    return x[:, 0]


def scalar_post(config, x):
    """so0's ``func(x * scale + bias)``."""
    return _TAIL[config.so_func](fp32.add(fp32.mul(x, f32(config.so_scale)), f32(config.so_bias)))


def _grouped(values, group, groups, fill):
    """``values`` (n, ...) as (groups, longest group, ...), each group led by ``fill`` up to the longest."""
    sizes = np.bincount(group, minlength=groups)
    m = int(sizes.max())
    if (sizes == m).all():
        return values.reshape((groups, m) + values.shape[1:])
    starts = np.searchsorted(group, np.arange(groups))
    j = np.arange(m)[None, :] - (m - sizes)[:, None]
    keep = (j >= 0).reshape((groups, m) + (1,) * (values.ndim - 1))
    return np.where(keep, values[np.maximum(starts[:, None] + j, 0)], np.uint32(fill))


def _group_ids(last):
    ends = np.flatnonzero(last)
    ids = np.zeros(len(last), dtype=np.int64)
    ids[ends[:-1] + 1] = 1
    return np.cumsum(ids), len(ends)


class PcuModel:
    """Execute a :class:`PcuConfig` on numpy data.

    Parameters
    ----------
    params : ArrayParams
    config : PcuConfig
    tail_ops, post_ops : tuple of TailOp or str
        The tail functions the modelled PCU was built with (``TailOp`` members or lower-case names).
    """

    def __init__(self, params, config, *, tail_ops=TAIL_OPS, post_ops=POST_OPS):
        names = lambda ops: tuple(op if isinstance(op, str) else op.name.lower() for op in ops)
        config.validate(params, tail_ops=names(tail_ops), post_ops=names(post_ops))
        self.params, self.config = params, config
        self.tail_ops, self.post_ops = tuple(tail_ops), tuple(post_ops)
        self.latency = pipeline_latency(params.stages, params.lanes, names(tail_ops)) + _FIFO_CYCLES
        self.post_latency = post_latency(names(post_ops))

    def _stages(self, regs, s0, s1):
        shape = regs[0].shape
        for st in self.config.stages:
            pick = {"r0": regs[0], "r1": regs[1], "r2": regs[2], "r3": regs[3], "s0": s0, "s1": s1,
                    "const": np.uint32(st.const), "zero": np.uint32(0)}
            if st.op in _ELEMENTWISE:
                # numpy broadcasts the operands itself; only a result narrower than the registers is widened.
                r = np.asarray(_OPS[st.op](pick[st.a], pick[st.b], pick[st.c]), dtype=np.uint32)
                if r.shape != shape:
                    r = np.ascontiguousarray(np.broadcast_to(r, shape))
            else:
                a, b, c = (np.broadcast_to(pick[x], shape) for x in (st.a, st.b, st.c))
                r = np.asarray(_OPS[st.op](a, b, c), dtype=np.uint32)
            regs[REGISTERS.index(st.dst)] = r
        return _TAIL[self.config.tail](regs[REGISTERS.index(self.config.out_src)])

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
        cfg, p = self.config, self.params
        si = si or {}
        missing = [k for k in cfg.inputs if k not in vi]
        if missing:
            raise ValueError(f"no data for consumed vector input(s) {missing}")
        lengths = {k: len(vi[k][1]) for k in cfg.inputs}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"consumed inputs have different lengths: {lengths}")
        n = lengths[cfg.inputs[0]]
        last = np.asarray(vi[cfg.group_src][1], dtype=bool)
        if n and not last[-1]:
            raise ValueError(f"the last vector of input {cfg.group_src} (group_src) has no `last` flag: "
                             "the final group would never end")
        group, groups = _group_ids(last)
        if cfg.systolic:
            return self._run_systolic(vi, n, last, group, groups)

        lanes = p.lanes
        zero = np.zeros((n, lanes), dtype=np.uint32)
        regs = [np.asarray(vi[k][0], dtype=np.uint32).reshape(n, lanes) if k in cfg.inputs else zero
                for k in range(3)] + [zero]
        scal = []
        for k, mode in enumerate((cfg.s0, cfg.s1)):
            values = np.asarray(si.get(k, []), dtype=np.uint32)
            if mode == "per_firing":
                if len(values) != n:
                    raise ValueError(f"si{k} is per_firing: {n} scalars needed, {len(values)} given")
                scal.append(values[:, None])
            elif mode == "per_group":
                if len(values) != groups:
                    raise ValueError(f"si{k} is per_group: {groups} scalars needed, {len(values)} given")
                scal.append(values[group][:, None])
            else:
                scal.append(np.uint32(0))
        out = self._stages(regs, scal[0], scal[1])

        vo = out if cfg.vo else np.zeros((0, lanes), np.uint32)
        vo_last = last if cfg.vo else np.zeros(0, bool)
        so = np.zeros(0, np.uint32)
        so_last = np.zeros(0, bool)
        if cfg.so != "none":
            reduced = reduce_lanes(cfg.reduce, out)
            if cfg.so == "every":
                so, so_last = scalar_post(cfg, reduced), last
            else:
                so, so_last = scalar_post(cfg, self._fold(reduced, group, groups)), np.ones(groups, bool)
        latency = self.latency
        # The run ends with its slowest output: vo0's register or the scalar post unit.
        tail_end = max(_VO_CYCLES if cfg.vo else 0, self.post_latency if cfg.so != "none" else 0)
        cycles = n + latency + tail_end
        return PcuResult(vo, np.asarray(vo_last, bool), np.asarray(so, np.uint32), so_last, n, cycles)

    def _fold(self, reduced, group, groups):
        """Fold each group's reductions in arrival order, as the end stage does."""
        if self.config.reduce == "sum":
            # Groups led by -0, the identity of addition, so each folds from its first reduction on.
            return fp32.accumulate(_grouped(reduced, group, groups, 0x80000000), 1, start=0x80000000)[:, -1] \
                if groups else reduced[:0].copy()
        if not groups:
            return reduced[:0].copy()
        # Folding with fp32_max gives the canonical NaN when the group holds a NaN, else its largest value
        # after denormals-are-zero (-0 < +0); a group of one is its reduction untouched.
        starts = np.searchsorted(group, np.arange(groups))
        sizes = np.bincount(group, minlength=groups)
        flushed = fp32.daz(reduced)
        best = np.maximum.reduceat(g._order_key(flushed), starts)
        value = np.where(best >= 0, best, (-best - 1) | np.int64(g._SIGN32)).astype(np.uint32)
        value = np.where(np.logical_or.reduceat(g._isnan32(flushed), starts), g.CANON_NAN32, value)
        return np.where(sizes == 1, reduced[starts], value).astype(np.uint32)

    def _run_systolic(self, vi, n, last, group, groups):
        cfg, p = self.config, self.params
        rows, lanes = cfg.systolic_rows, p.lanes
        # Only the drained rows' accumulators reach an output.
        a = np.asarray(vi[0][0], dtype=np.uint32).reshape(n, lanes)[:, :rows]
        b = np.asarray(vi[1][0], dtype=np.uint32).reshape(n, lanes)
        tiles = np.zeros((groups, rows, lanes), dtype=np.uint32)
        if groups:
            # Shorter groups are led by +0 (a +0 product): adding it to the reset accumulator's +0 changes nothing.
            tiles = fp32.dot(_grouped(a, group, groups, 0)[..., None], _grouped(b, group, groups, 0)[..., None, :])
        drained = tiles.reshape(groups * rows, lanes)
        zero = np.zeros_like(drained)
        vo = self._stages([drained, zero, zero, zero], np.uint32(0), np.uint32(0))
        vo_last = np.tile(np.arange(rows) == rows - 1, groups)
        cycles = n + groups * rows + self.latency + _VO_CYCLES
        return PcuResult(vo, vo_last, np.zeros(0, np.uint32), np.zeros(0, bool), n, cycles)
