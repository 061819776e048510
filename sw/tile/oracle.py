"""An independent reference of what tile-array kernels compute, for checking the fast models.

Nothing here reads :mod:`sw.golden.arith`, :mod:`sw.model` or the hardware:
fp32 arithmetic is float64 arithmetic rounded by :func:`round_bits` (an
``frexp``/``rint`` rounding written for this module, following the policy of
docs/numerics.md), and the PCU, PMU and array semantics are those of
docs/pcu.md, docs/pmu.md and docs/array.md, written from the documents.

Why float64 is exact enough: a product of two fp32 values has at most 48
significant bits and an exponent within float64's range, so ``a * b`` is
exact; a sum is rounded once to 53 bits, and rounding to 53 then to 24 bits
equals rounding once to 24 (double rounding is innocuous for + - * when
53 >= 2 * 24 + 2, Figueroa 1995). Rounding here is "as if the exponent were
unbounded", then flush below 2**-126 and infinity from 2**128.

The tail functions exp, recip, rsqrt, sigmoid and silu have no exact
reference: :func:`tail` takes their bits from the golden tail model
(``sw.golden.tail``) and :func:`tail_violations` holds every such result to
its defining formula in float64 within the documented 0.52 ulp, and to the
special-value rules. ``bf16`` (RNE to 8 bits) is computed here.

:class:`Census` counts what the arithmetic saw (operand classes, rounding
ties, overflows, flushes), the special-value part of the coverage.
"""

from collections import Counter

import numpy as np

from sw.golden import tail as golden_tail

NAN_BITS = 0x7FC00000
MIN_NORMAL = 2.0 ** -126
TAIL_ULPS = 0.52


CROSS_CLASSES = ("nan", "inf", "subnormal", "zero", "huge", "tiny")


class Census:
    """What the arithmetic saw: operand classes and rounding events (``counts``), and which operand
    classes reached which part of the datapath (``cross``, keyed ``(where, class)``)."""

    def __init__(self):
        self.counts = Counter()
        self.cross = Counter()

    def reached(self, where, *xs):
        """Count the classes of :data:`CROSS_CLASSES` among ``xs`` at ``where`` (an op, a tail function...)."""
        for x in xs:
            x = np.asarray(x, np.uint32)
            e, f = (x >> 23) & 0xFF, x & 0x7FFFFF
            for name, hit in (("nan", (e == 0xFF) & (f != 0)), ("inf", (e == 0xFF) & (f == 0)),
                              ("subnormal", (e == 0) & (f != 0)), ("zero", (e == 0) & (f == 0)),
                              ("huge", (e >= 247) & (e < 0xFF)), ("tiny", (e > 0) & (e <= 12))):
                self.cross[(where, name)] += int(np.count_nonzero(hit))

    def operands(self, *xs):
        for x in xs:
            x = np.asarray(x, np.uint32)
            e, f, s = (x >> 23) & 0xFF, x & 0x7FFFFF, x >> 31
            self.counts["nan"] += int(np.count_nonzero((e == 0xFF) & (f != 0)))
            self.counts["+inf"] += int(np.count_nonzero((e == 0xFF) & (f == 0) & (s == 0)))
            self.counts["-inf"] += int(np.count_nonzero((e == 0xFF) & (f == 0) & (s == 1)))
            self.counts["subnormal"] += int(np.count_nonzero((e == 0) & (f != 0)))
            self.counts["+0"] += int(np.count_nonzero((x == 0)))
            self.counts["-0"] += int(np.count_nonzero((x == 0x80000000)))
            self.counts["normal"] += int(np.count_nonzero((e != 0) & (e != 0xFF)))


def value(x):
    """float64 values of fp32 patterns, subnormals read as zero of their sign (NaN payloads dropped)."""
    x = np.asarray(x, dtype=np.uint32)
    with np.errstate(invalid="ignore"):
        v = x.view(np.float32).astype(np.float64)
    sub = ((x & 0x7F800000) == 0) & ((x & 0x7FFFFF) != 0)
    return np.where(sub, np.copysign(0.0, v), v)


def round_bits(v, census=None, *, p=24):
    """fp32 patterns of float64 ``v`` rounded to ``p`` significant bits by the policy.

    RNE as if the exponent were unbounded, then magnitudes below 2**-126 become
    zero of ``v``'s sign and magnitudes of 2**128 or more infinity; NaN gives the
    canonical NaN. With ``p`` = 8 the result is a bf16 value (in fp32 bits).
    """
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(all="ignore"):
        m, e = np.frexp(v)
        scaled = m * 2.0 ** p
        q = np.rint(scaled)
        r = np.ldexp(q, e - p)
        finite = np.isfinite(v) & (v != 0)
        flush = finite & (np.abs(r) < MIN_NORMAL)
        over = finite & (np.abs(r) >= 2.0 ** 128)
        r = np.where(flush, np.copysign(0.0, v), np.where(over, np.copysign(np.inf, v), r))
        if census is not None:
            census.counts["tie"] += int(np.count_nonzero(finite & (np.abs(scaled - np.floor(scaled)) == 0.5)))
            census.counts["overflow"] += int(np.count_nonzero(over))
            census.counts["flush"] += int(np.count_nonzero(flush))
        bits = r.astype(np.float32).view(np.uint32)
    return np.where(np.isnan(r), np.uint32(NAN_BITS), bits).astype(np.uint32)


def mul(a, b, census=None):
    """fp32 a * b (exact in float64, then one rounding)."""
    if census is not None:
        census.operands(a, b)
    with np.errstate(all="ignore"):
        return round_bits(value(a) * value(b), census)


def add(a, b, census=None, *, sub=False):
    """fp32 a + b, or a - b."""
    if census is not None:
        census.operands(a, b)
    with np.errstate(all="ignore"):
        return round_bits(value(a) - value(b) if sub else value(a) + value(b), census)


def extreme(a, b, *, largest, census=None):
    """max / min: canonical NaN if either is NaN, else the operand (subnormals as zeros) with -0 < +0."""
    if census is not None:
        census.operands(a, b)
    a, b = np.broadcast_arrays(np.asarray(a, np.uint32), np.asarray(b, np.uint32))
    va, vb = value(a), value(b)
    da = np.where(va == 0, a & np.uint32(0x80000000), a)
    db = np.where(vb == 0, b & np.uint32(0x80000000), b)
    if largest:
        pick = (va > vb) | ((va == vb) & ~np.signbit(va))
    else:
        pick = (va < vb) | ((va == vb) & np.signbit(va))
    return np.where(np.isnan(va) | np.isnan(vb), np.uint32(NAN_BITS), np.where(pick, da, db)).astype(np.uint32)


OPS = {
    "pass": lambda a, b, c, k: a,
    "add": lambda a, b, c, k: add(a, b, k),
    "sub": lambda a, b, c, k: add(a, b, k, sub=True),
    "mul": lambda a, b, c, k: mul(a, b, k),
    "fma": lambda a, b, c, k: add(mul(a, b, k), c, k),
    "max": lambda a, b, c, k: extreme(a, b, largest=True, census=k),
    "min": lambda a, b, c, k: extreme(a, b, largest=False, census=k),
}


def _sigmoid64(x):
    with np.errstate(all="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


FORMULAS = {"exp": np.exp, "recip": lambda x: 1 / x, "rsqrt": lambda x: 1 / np.sqrt(x),
            "sigmoid": _sigmoid64, "silu": lambda x: np.where(x == -np.inf, -0.0, x * _sigmoid64(x))}


def tail(name, x):
    """Tail function ``name`` of fp32 patterns: bf16 and none computed here, the others golden bits."""
    x = np.asarray(x, dtype=np.uint32)
    if name == "none":
        return x
    if name == "bf16":
        return round_bits(value(x), p=8)
    return np.asarray(golden_tail.apply(name, x), dtype=np.uint32)


def tail_violations(name, x, y):
    """Inputs where ``y = name(x)`` breaks the function's formula (0.52 ulp) or its special-value rules.

    Returns
    -------
    list of (input bits, output bits, float64 reference)
    """
    if name not in FORMULAS:
        return []
    x, y = np.asarray(x, np.uint32).reshape(-1), np.asarray(y, np.uint32).reshape(-1)
    with np.errstate(all="ignore"):
        xv = value(x)
        ref = FORMULAS[name](xv)
        yv = y.view(np.float32).astype(np.float64)
        nan_ok = np.isnan(ref) & (y == NAN_BITS)
        mag = np.abs(ref)
        normal = np.isfinite(ref) & (mag >= MIN_NORMAL) & (mag < 2.0 ** 127)
        ulp = 2.0 ** (np.floor(np.log2(np.where(normal, mag, 1.0))) - 23)
        close = normal & (np.abs(yv - ref) <= TAIL_ULPS * ulp) & (np.sign(yv) == np.sign(ref))
        # Zero or infinite references (exp(-inf), recip(0), 1/x of a huge x) and results past the range:
        # equal in value and sign, with a flush or an overflow allowed within a tail ulp of the threshold.
        exact = ~np.isnan(ref) & ~normal & (yv == ref) & (np.signbit(yv) == np.signbit(ref))
        tiny = np.isfinite(ref) & (mag < MIN_NORMAL * (1 + 2.0 ** -22)) & \
            ((yv == 0) | (np.abs(yv) == MIN_NORMAL)) & ((np.signbit(yv) == np.signbit(ref)) | (ref == 0))
        huge = (mag >= 2.0 ** 127) & (np.isinf(yv) | (np.abs(yv - ref) <= TAIL_ULPS * 2.0 ** 104)) & \
            (np.sign(yv) == np.sign(ref))
        bad = ~(nan_ok | close | exact | tiny | huge)
    return [(int(a), int(b), float(r)) for a, b, r in zip(x[bad], y[bad], ref[bad])]


def reduce_lanes(op, x, census=None):
    """Pairwise cross-lane reduction of (n, lanes): lane 0 with 1, 2 with 3, ..., then the pairs."""
    while x.shape[1] > 1:
        a, b = x[:, 0::2], x[:, 1::2]
        x = add(a, b, census) if op == "sum" else extreme(a, b, largest=True, census=census)
    return x[:, 0]


def groups_of(last):
    """Group index of every firing and the number of groups, from the ``last`` flags."""
    last = np.asarray(last, dtype=bool)
    starts = np.concatenate([[0], np.flatnonzero(last)[:-1] + 1]) if last.any() else np.zeros(1, np.int64)
    group = np.zeros(len(last), np.int64)
    group[starts[1:]] = 1
    return np.cumsum(group), int(last.sum())


def f32(x):
    return int(np.array(x, dtype=np.float32).view(np.uint32))


def pcu(params, config, vi, si=None, census=None):
    """What a PCU configuration computes (docs/pcu.md).

    Parameters
    ----------
    params : ArrayParams
    config : PcuConfig
    vi : dict
        Input index -> (data (n, lanes) uint32, last (n,) bool); a systolic
        operand (vi2) has one vector per drained row instead. In systolic
        mode vo0 and so0 see the drained rows, with the operand's ``last``
        flags (else each tile's last row marked).
    si : dict, optional
        Input index -> uint32 scalars (one per firing or one per group).
    census : Census, optional

    Returns
    -------
    dict
        ``vo``, ``vo_last``, ``so``, ``so_last`` (numpy arrays) and the tail's
        ``violations`` (see :func:`tail_violations`).
    """
    cfg, lanes = config, params.lanes
    si = si or {}
    last = np.asarray(vi[cfg.group_src][1], dtype=bool)
    group, groups = groups_of(last)
    n = len(last)
    violations = []

    def stages(regs, s0, s1):
        for st in cfg.stages:
            pick = {"r0": regs[0], "r1": regs[1], "r2": regs[2], "r3": regs[3], "s0": s0, "s1": s1,
                    "const": np.full(regs[0].shape, st.const, np.uint32), "zero": np.zeros(regs[0].shape, np.uint32)}
            a, b, c = (np.broadcast_to(pick[s], regs[0].shape) for s in (st.a, st.b, st.c))
            if census is not None:
                census.reached(st.op, *((a,) if st.op == "pass" else (a, b, c) if st.op == "fma" else (a, b)))
            regs[int(st.dst[1])] = np.asarray(OPS[st.op](a, b, c, census), np.uint32).reshape(regs[0].shape)
        x = regs[int(cfg.out_src[1])]
        if census is not None and cfg.tail != "none":
            census.reached(f"tail:{cfg.tail}", x)
        y = tail(cfg.tail, x)
        violations.extend(tail_violations(cfg.tail, x, y))
        return y

    empty = np.zeros(0, np.uint32), np.zeros(0, bool)
    if cfg.systolic:
        rows = cfg.systolic_rows
        a = np.asarray(vi[0][0], np.uint32).reshape(n, lanes)
        b = np.asarray(vi[1][0], np.uint32).reshape(n, lanes)
        if census is not None:
            census.reached("systolic", a[:, :rows], b)
        drained = np.zeros((groups, rows, lanes), np.uint32)
        for k in range(groups):
            acc = np.zeros((rows, lanes), np.uint32)
            for j in np.flatnonzero(group == k):
                acc = add(mul(a[j, :rows, None], b[j, None, :], census), acc, census)
            drained[k] = acc
        zero = np.zeros((groups * rows, lanes), np.uint32)
        # A systolic operand: vi2's vectors, one per drained row in drain order, in r1.
        operand = np.asarray(vi[2][0], np.uint32).reshape(groups * rows, lanes) if cfg.systolic_operand else zero
        out = stages([drained.reshape(-1, lanes), operand, zero, zero], np.uint32(0), np.uint32(0))
        # The drained rows take the operand's last flags, else each tile's last row is marked; so0 reduces
        # the drained rows and folds them over these groups.
        last = np.asarray(vi[2][1], bool) if cfg.systolic_operand else np.tile(np.arange(rows) == rows - 1, groups)
        group, groups = groups_of(last)
    else:
        zero = np.zeros((n, lanes), np.uint32)
        regs = [np.asarray(vi[k][0], np.uint32).reshape(n, lanes) if k in cfg.inputs else zero for k in range(3)]
        scalars = []
        for k, mode in enumerate((cfg.s0, cfg.s1)):
            values = np.asarray(si.get(k, []), np.uint32)
            scalars.append(values[:, None] if mode == "per_firing" else values[group][:, None]
                           if mode == "per_group" else np.uint32(0))
        out = stages(regs + [zero], *scalars)
    result = {"vo": out if cfg.vo else np.zeros((0, lanes), np.uint32),
              "vo_last": last if cfg.vo else np.zeros(0, bool), "so": empty[0], "so_last": empty[1],
              "violations": violations}
    if cfg.so != "none":
        if census is not None:
            census.reached(f"reduce:{cfg.reduce}", out)
        reduced = reduce_lanes(cfg.reduce, out, census)
        if cfg.so == "group":
            folded = []
            for k in range(groups):
                values = reduced[group == k]
                acc = values[0]
                for v in values[1:]:
                    acc = add(v, acc, census) if cfg.reduce == "sum" else extreme(acc, v, largest=True,
                                                                                    census=census)
                folded.append(acc)
            reduced, so_last = np.array(folded, np.uint32).reshape(-1), np.ones(groups, bool)
        else:
            so_last = last
        x = add(mul(reduced, f32(cfg.so_scale), census), f32(cfg.so_bias), census)
        if census is not None and cfg.so_func != "none":
            census.reached(f"post:{cfg.so_func}", x)
        so = tail(cfg.so_func, x)
        violations.extend(tail_violations(cfg.so_func, x, so))
        result["so"], result["so_last"] = so, so_last
    return result


def pmu(params, config, vi0, si0=(), si1=()):
    """What a PMU configuration reads back (docs/pmu.md), as a flat memory of words.

    Fills of the write pattern (``lanes`` words per vector) alternate with
    ``reads_per_fill`` read passes of the same buffer; buffer ``p mod buffers``
    starts at ``(p mod buffers) * buffer_words``, and a pattern with a runtime
    base adds the next of ``si0`` (writes) or ``si1`` (reads) to each pass. ROW
    reads the ``lanes`` words at an address, COLUMN the words ``lanes`` apart
    from it, BROADCAST one word on every lane. Runs until the input, the bases
    or the pass counts run out; addresses must lie inside the PMU (the
    generator keeps them there).

    Returns
    -------
    (data (reads, lanes) uint32, last (reads,) bool)
    """
    cfg, lanes = config, params.lanes
    vi0 = np.asarray(vi0, np.uint32).reshape(-1, lanes)
    si0, si1 = np.asarray(si0, np.int64).reshape(-1), np.asarray(si1, np.int64).reshape(-1)
    memory = np.zeros(params.pmu_words + lanes * lanes, np.uint32)
    w, r, ends = cfg.write.addresses(), cfg.read.addresses(), cfg.read.ends()
    step = {"ROW": np.arange(lanes), "COLUMN": np.arange(lanes) * lanes, "BROADCAST": np.zeros(lanes, np.int64)}
    offsets = step[cfg.read_mode.name]
    out, last, reads = [], [], 0
    fills = len(vi0) // len(w)
    if cfg.write_passes:
        fills = min(fills, cfg.write_passes)
    if cfg.write.runtime_base:
        fills = min(fills, len(si0))
    for f in range(fills):
        base = (f % cfg.buffers) * cfg.buffer_words
        rows = vi0[f * len(w):(f + 1) * len(w)]
        for addr, row in zip(base + (si0[f] if cfg.write.runtime_base else 0) + w, rows):
            memory[addr:addr + lanes] = row
        for _ in range(cfg.reads_per_fill):
            if cfg.read_passes and reads >= cfg.read_passes or cfg.read.runtime_base and reads >= len(si1):
                break
            at = base + (si1[reads] if cfg.read.runtime_base else 0) + r
            out.append(memory[at[:, None] + offsets[None, :]])
            last.append(ends)
            reads += 1
    if not out:
        return np.zeros((0, lanes), np.uint32), np.zeros(0, bool)
    return np.concatenate(out), np.concatenate(last)


def array(program, inputs, census=None):
    """What a kernel computes: each unit's reference on the streams its connections deliver.

    Parameters
    ----------
    program : sw.tile.kernel.Program
    inputs : dict
        Host input name -> (data, last).

    Returns
    -------
    (outputs, violations)
        Host output name -> (data, last), as ``ArrayModel.run(...).outputs``; and the tail
        violations of every PCU.
    """
    p = program.params
    streams = {}
    for name, (data, last) in inputs.items():
        host = program.host_inputs[name]
        data = np.asarray(data, np.uint32)
        streams[(name, host.port)] = (data.reshape(-1, p.lanes) if host.network == "vector" else data.reshape(-1),
                                      np.asarray(last, bool))
    feeds = {(s.node, s.port): (c.source.node, c.source.port) for c in program.connections for s in c.sinks}
    pending = dict(program.units)
    violations = []
    while pending:
        ready = [n for n, u in pending.items()
                 if all(src in streams for (node, _), src in feeds.items() if node == n)]
        if not ready:
            raise ValueError(f"units feed each other in a cycle: {sorted(pending)}")
        for name in ready:
            unit = pending.pop(name)
            port = lambda q: streams[feeds[(name, q)]]
            cfg = unit.config
            if unit.kind == "pmu":
                bases = [port(q)[0] if pattern.runtime_base else () for q, pattern in (("si0", cfg.write),
                                                                                       ("si1", cfg.read))]
                streams[(name, "vo0")] = pmu(p, cfg, port("vi0")[0], *bases)
                continue
            vi = {k: port(f"vi{k}") for k in cfg.inputs}
            si = {k: port(f"si{k}")[0] for k, mode in enumerate((cfg.s0, cfg.s1)) if mode != "none"}
            r = pcu(p, cfg, vi, si, census)
            violations += r["violations"]
            if cfg.vo:
                streams[(name, "vo0")] = (r["vo"], r["vo_last"])
            if cfg.so != "none":
                streams[(name, "so0")] = (r["so"], r["so_last"])
    outputs = {name: streams[feeds[(name, host.port)]] for name, host in program.host_outputs.items()}
    return outputs, violations
