"""PCU tail functions on fp32: exp, recip, rsqrt, sigmoid, silu, and the shared tail.

Each function works in fixed point on the input's significand: an exp core
(x log2(e) by one integer product, 2**f from a table and a cubic), a
reciprocal core (seed table and two Newton steps) and an rsqrt core, then
one multiply-and-round stage that packs every result with RNE. The constant
tables come from ``facts/tail.py``; this file mirrors the integer steps of
the golden model ``sw/golden/tail.py`` bit for bit. :func:`tail_datapath`
builds any set of the functions with one exp core and one reciprocal core
shared between exp, recip, sigmoid and silu. Algorithms, accuracy and
latencies are in ``docs/numerics.md``.
"""

import functools

from amaranth import Module, Signal, Shape, Cat, Const, Mux, Array, signed
from amaranth.lib import data, enum, wiring, stream
from amaranth.lib.wiring import In, Out

from facts.tail import EXP_HUGE_N, EXP_LOG2E, EXP_POLY, EXP_TABLE, EXP_X_HUGE, RECIP_SEED, RSQRT_SEED, SEED_FRAC
from .convert import fp32_to_bf16_datapath, bf16_to_fp32_datapath
from .fp import unpack32, round_pack, CANON_NAN32, INF32
from .pipeline import Pipeline, unary_unit

__all__ = [
    "TailOp", "TailOperands", "tail_latency", "tail_datapath", "Tail",
    "exp_datapath", "recip_datapath", "rsqrt_datapath", "sigmoid_datapath", "silu_datapath",
    "Exp", "Recip", "Rsqrt", "Sigmoid", "Silu",
    "EXP_LATENCY", "RECIP_LATENCY", "RSQRT_LATENCY", "SIGMOID_LATENCY", "SILU_LATENCY",
]


class TailOp(enum.Enum, shape=3):
    NONE = 0
    EXP = 1
    RECIP = 2
    RSQRT = 3
    SIGMOID = 4
    SILU = 5
    BF16 = 6  # round to the nearest bf16 value (kept as fp32 bits)


_FUNCTIONS = (TailOp.EXP, TailOp.RECIP, TailOp.RSQRT, TailOp.SIGMOID, TailOp.SILU)
_LOGISTIC = (TailOp.SIGMOID, TailOp.SILU)


class _Schedule:
    """Operands tagged with the register level they are valid at.

    Each stage delays its operands to the latest of their levels, so the
    composed datapaths stay aligned without hand-counted delay chains.
    Python integers and ``Const`` values are constants, valid at every level.
    """

    def __init__(self, m, reg, prefix, *, carry=None, carried=()):
        self.m, self._reg, self.prefix = m, reg, prefix
        self._carry = reg if carry is None else carry
        self._carried = {id(v) for v in carried}
        self._delayed = {}

    def at(self, operand, level):
        if isinstance(operand, (int, Const)):
            return operand
        value, start = operand
        if start > level:
            raise ValueError(f"operand valid at level {start} is needed at level {level}")
        for k in range(start, level):
            key = (id(value), k + 1)
            if key not in self._delayed:
                carried = id(value) in self._carried
                delayed = (self._carry if carried else self._reg)(value, name=f"{self.prefix}_d{k + 1}")
                if carried:
                    self._carried.add(id(delayed))
                self._delayed[key] = (delayed, value)
            value = self._delayed[key][0]
        return value

    def level(self, *operands):
        return max((o[1] for o in operands if not isinstance(o, (int, Const))), default=0)

    def comb(self, fn, *operands):
        """``fn`` of the aligned operands, without a register."""
        t = self.level(*operands)
        return fn(*(self.at(o, t) for o in operands)), t

    def stage(self, name, fn, *operands, shape=None, carry=False):
        """``fn`` of the aligned operands, registered (one level; by the carry register where ``carry``)."""
        value, t = self.comb(fn, *operands)
        if shape is not None:
            sized = Signal(shape, name=f"{self.prefix}_{name}_w")
            self.m.d.comb += sized.eq(value)
            value = sized
        return (self._carry if carry else self._reg)(value, name=f"{self.prefix}_{name}"), t + 1

    def select(self, op, cases):
        """The operand of ``cases`` (a dict keyed by TailOp) that ``op`` names; the last is the default."""
        items = list(cases.items())
        if op is None or len(items) == 1:
            return items[0][1] if len(items) == 1 else None

        def pick(op, *values):
            result = values[-1]
            for (code, _), value in zip(items[-2::-1], values[-2::-1]):
                result = Mux(op == code, value, result)
            return result
        return self.comb(pick, op, *(v for _, v in items))


def _rom(table, width, index):
    return Array(Const(v, width) for v in table)[index]


def _exp_core(s, sign, x):
    """e**x as ``(m, n)``: m 2**(n - 32), m in [2^32, 2^33]; see ``sw.golden.tail._exp_core``.

    ``sign`` replaces the sign of ``x`` (sigmoid and silu take e**-|x|).
    """
    p = s.stage("exp_p", lambda x: Mux(x[23:31] == 0, 0, Cat(x[:23], Const(1, 1))) * EXP_LOG2E, x)

    def reduce(p, x, sign):
        e = x[23:31]
        shift = Signal(8, name=f"{s.prefix}_exp_shift")
        t = Signal(signed(42), name=f"{s.prefix}_exp_t")
        s.m.d.comb += [shift.eq(156 - e), t.eq(Mux(sign, -(p >> shift), p >> shift))]
        huge = e >= EXP_X_HUGE
        return Cat(Mux(huge, 0, t[:32]), Mux(huge, Mux(sign, -EXP_HUGE_N, EXP_HUGE_N), t[32:].as_signed())[:10])
    nf = s.stage("exp_nf", reduce, p, x, sign)
    f = (nf[0][:32], nf[1])
    n = (nf[0][32:].as_signed(), nf[1])
    r = s.comb(lambda f: f[:25], f)
    c1, c2, c3 = EXP_POLY
    table = s.stage("exp_table", lambda f: _rom(EXP_TABLE, 33, f[25:]), f)
    poly = s.stage("exp_a", lambda r: (c3 * r) >> 32, r)
    poly = s.stage("exp_b", lambda p, r: ((c2 + p) * r) >> 32, poly, r)
    poly = s.stage("exp_c", lambda p, r: ((c1 + p) * r) >> 32, poly, r)
    m = s.stage("exp_m", lambda t, p: t + ((t * p) >> 32), table, poly, shape=34)
    return m, n


def _recip_core(s, d):
    """1/d with 32 fraction bits for d in [1, 2] with 32; see ``sw.golden.tail._recip_core``."""
    def seed(d):
        return Mux(d[33], 1 << (SEED_FRAC - 1), Mux(d[:32] == 0, 1 << SEED_FRAC, _rom(RECIP_SEED, 13, d[25:32])))
    y = s.stage("recip_y0", seed, d, shape=13)
    e0 = s.stage("recip_e0", lambda d, y: (1 << 45) - d * y, d, y, shape=46)
    y = s.stage("recip_y1", lambda y, e0: (y * e0) >> 24, y, e0, shape=34)
    delta = s.stage("recip_delta", lambda d, y: ((1 << 64) - d * y) >> 24, d, y, shape=signed(32))
    return s.stage("recip_y2", lambda y, dl: y + ((y * dl) >> 40), y, delta, shape=34)


def _rsqrt_core(s, x):
    """1/sqrt(D) with 32 fraction bits; see ``sw.golden.tail._rsqrt_core``."""
    dd = s.comb(lambda x: Cat(x[:23], Const(1, 1)) << ~x[23], x)

    def seed(x):
        return Mux(x[23] & (x[:23] == 0), 1 << SEED_FRAC, _rom(RSQRT_SEED, 13, Cat(x[17:23], ~x[23])))
    y = s.stage("rsqrt_y0", seed, x, shape=13)
    sq = s.stage("rsqrt_sq", lambda y: y * y, y)
    h = s.stage("rsqrt_h", lambda dd, sq: 3 * (1 << 47) - dd * sq, dd, sq, shape=50)
    y = s.stage("rsqrt_y1", lambda y, h: (y * h) >> 28, y, h, shape=34)
    sq = s.stage("rsqrt_sq1", lambda y: (y * y) >> 32, y, shape=35)
    delta = s.stage("rsqrt_delta", lambda dd, sq: ((1 << 55) - dd * sq) >> 15, dd, sq, shape=signed(32))
    return s.stage("rsqrt_y2", lambda y, dl: y + ((y * dl) >> 41), y, delta, shape=34)


def _finish(s, a, mant, exp, sign):
    """fp32 of ``a mant 2**exp`` rounded to nearest even (``sw.golden.tail._finish``), before its register."""
    p = s.stage("product", lambda a, mant: a * mant, a, mant, shape=58)

    def pack(p, exp, sign):
        lead = Signal(range(53, 58), name=f"{s.prefix}_lead")
        s.m.d.comb += lead.eq(53)
        for k in (54, 55, 56, 57):
            with s.m.If(p[k:].any()):
                s.m.d.comb += lead.eq(k)
        sig, guard, sticky = (Signal(24, name=f"{s.prefix}_sig"), Signal(name=f"{s.prefix}_guard"),
                              Signal(name=f"{s.prefix}_sticky"))
        with s.m.Switch(lead):
            for k in range(53, 58):
                with s.m.Case(k):
                    s.m.d.comb += [sig.eq(p[k - 23:k + 1]), guard.eq(p[k - 24]), sticky.eq(p[:k - 24].any())]
        return round_pack(s.m, sign=sign, exp=exp + lead, sig=sig, guard=guard, sticky=sticky,
                          name=f"{s.prefix}_round")
    return s.comb(pack, p, exp, sign)


def _special(x, code):
    """(flag, value) of the results ``code`` defines outside its arithmetic path."""
    u = unpack32(x)
    nan = Const(CANON_NAN32, 32)
    signed_inf, signed_zero = Cat(Const(INF32, 31), u.sign), Cat(Const(0, 31), u.sign)
    if code == TailOp.RECIP:
        return (u.is_zero | u.is_nan | u.is_inf,
                Mux(u.is_nan, nan, Mux(u.is_zero, signed_inf, signed_zero)))
    if code == TailOp.RSQRT:
        return (u.is_zero | u.is_nan | u.is_inf | u.sign,
                Mux(u.is_zero, signed_inf, Mux(u.is_inf & ~u.sign, 0, nan)))
    if code == TailOp.SILU:
        return u.is_nan | u.is_zero, Mux(u.is_zero, signed_zero, nan)
    return u.is_nan, nan


def _tail(m, reg, op, x, ops, name, carry=None):
    """The shared tail; returns ``(result, latency)``. ``op`` is None when ``ops`` holds one function.

    Fields of ``x`` are sliced from one delayed copy of ``x`` wherever a stage
    needs them, which keeps the number of pipeline registers small. ``carry``
    (default ``reg``) makes the registers that carry ``x`` and ``op`` to the
    output, and the output's.
    """
    ops = [code for code in TailOp if code in set(ops) and code != TailOp.NONE]
    if not ops:
        return x, 0
    s = _Schedule(m, reg, name, carry=carry, carried=[v for v in (op, x) if v is not None])
    op = None if op is None else (op, 0)
    x = (x, 0)
    funcs = [code for code in ops if code in _FUNCTIONS]
    mant, exp, out_sign, a = {}, {}, {}, {}
    positive = Const(0, 1)

    if {TailOp.EXP, *_LOGISTIC} & set(funcs):
        # sigmoid and silu take e**-|x|.
        exp_sign = s.select(op, {c: s.comb(lambda x: x[31], x) if c == TailOp.EXP else Const(1, 1)
                                 for c in (TailOp.EXP, *_LOGISTIC) if c in funcs})
        mx, nx = _exp_core(s, exp_sign, x)
        if TailOp.EXP in funcs:
            mant[TailOp.EXP], exp[TailOp.EXP], out_sign[TailOp.EXP] = mx, s.comb(lambda n: 72 + n, nx), positive
    d = {}
    if TailOp.RECIP in funcs:
        d[TailOp.RECIP] = s.comb(lambda x: Cat(Const(0, 9), x[:23], Const(1, 2)), x)
    if set(_LOGISTIC) & set(funcs):
        d[TailOp.SIGMOID] = s.stage("d", lambda mx, nx: (1 << 32) + (mx >> (-nx)[:9]), mx, nx, shape=34)
    if d:
        r = _recip_core(s, s.select(op, d) if len(d) > 1 else next(iter(d.values())))
        if TailOp.RECIP in funcs:
            mant[TailOp.RECIP] = r
            out_sign[TailOp.RECIP] = s.comb(lambda x: x[31], x)
            exp[TailOp.RECIP] = s.comb(lambda x: 72 + 127 - x[23:31], x)
    if TailOp.RSQRT in funcs:
        mant[TailOp.RSQRT], out_sign[TailOp.RSQRT] = _rsqrt_core(s, x), positive
        exp[TailOp.RSQRT] = s.comb(lambda x: 72 - ((x[23:31] - 127 - ~x[23]) >> 1), x)
    if set(_LOGISTIC) & set(funcs):
        w = s.stage("w", lambda mx, r: (mx * r) >> 32, mx, r, shape=34)
        logistic = s.comb(lambda x, w, r: Mux(x[31], w, r), x, w, r)
        ns = s.comb(lambda x, nx: Mux(x[31], nx, 0), x, nx)
        for code in _LOGISTIC:
            if code in funcs:
                mant[code] = logistic
        if TailOp.SIGMOID in funcs:
            exp[TailOp.SIGMOID], out_sign[TailOp.SIGMOID] = s.comb(lambda ns: 72 + ns, ns), positive
        if TailOp.SILU in funcs:
            exp[TailOp.SILU] = s.comb(lambda x, ns: x[23:31] - 55 + ns, x, ns)
            out_sign[TailOp.SILU] = s.comb(lambda x: x[31], x)
            a[TailOp.SILU] = s.comb(lambda x: Cat(x[:23], Const(1, 1)), x)

    results = {}
    if funcs:
        one = Const(1 << 23, 24)
        a_sel = s.select(op, {code: a.get(code, one) for code in funcs})
        packed = _finish(s, a_sel, s.select(op, mant), s.select(op, exp),
                         s.select(op, {code: out_sign[code] for code in funcs}))

        def special(x, p, *op):
            flags = {code: _special(x, code) for code in funcs}
            if not op:
                flag, value = flags[funcs[0]]
                return Mux(flag, value, p)
            return _pick(op[0], p, {code: Mux(f, v, p) for code, (f, v) in flags.items()})
        result = s.comb(special, x, packed, *([] if op is None else [op]))
        for code in funcs:
            results[code] = result
    if TailOp.BF16 in ops:
        results[TailOp.BF16] = (bf16_to_fp32_datapath(m, s._reg, fp32_to_bf16_datapath(m, s._reg, x[0])), 2)
    level = s.level(*results.values())
    if op is None:
        out = s.stage("out", lambda v: v, next(iter(results.values())), carry=True)
    else:
        out = s.stage("out", lambda op, x, *values: _pick(op, x, dict(zip(results, values))),
                      op, x, *results.values(), carry=True)
    assert out[1] == level + 1
    return out


def _pick(op, default, values):
    result = default
    for code, value in values.items():
        result = Mux(op == code, value, result)
    return result


def _scratch_reg(value, *, name=None):
    return Signal(Shape.cast(value.shape()), name=name)


@functools.lru_cache(maxsize=None)
def _latency(ops):
    m = Module()
    m._MustUse__silence = True  # built only to count its register levels
    return _tail(m, _scratch_reg, Signal(TailOp), Signal(32), ops, "tail")[1]


def tail_latency(ops):
    """Register levels of :func:`tail_datapath` built with the functions ``ops`` (0 when empty)."""
    return _latency(frozenset(TailOp(op) for op in ops))


def tail_datapath(m, reg, op, x, *, ops, name, carry=None):
    """Apply the tail function ``op`` to fp32 ``x``; ``tail_latency(ops)`` register levels.

    Parameters
    ----------
    m : Module
    reg : callable
        ``reg(value, name=...)`` returns a pipeline register of ``value``.
    op : Value of shape TailOp
        The function, one per operation.
    x : Value, 32 bits
        The operand.
    ops : iterable of TailOp
        The functions built. One exp core and one reciprocal core serve exp,
        recip, sigmoid and silu. An ``op`` outside ``ops``, and NONE, pass
        ``x`` through unchanged.
    name : str
        Prefix of the signals.
    carry : callable, optional
        Like ``reg``, for the registers that carry ``x`` and ``op`` unchanged
        and the output's; ``reg`` by default. With ``op`` NONE only these
        matter, so the rest may run on a clock stopped for such records.

    Returns
    -------
    Value, 32 bits
        The result, bit-exact with ``sw.golden.tail.apply``.
    """
    ops = frozenset(TailOp(o) for o in ops)
    return _tail(m, reg, op, x, ops, name, carry)[0]


def _single(code, name):
    def datapath(m, reg, x):
        return _tail(m, reg, None, x, (code,), name)[0]
    datapath.__name__ = f"{name}_datapath"
    datapath.__doc__ = (f"{code.name.lower()}(x) on fp32; ``{name.upper()}_LATENCY`` register levels. "
                        f"See ``sw.golden.tail.{name}``.")
    return datapath


exp_datapath = _single(TailOp.EXP, "exp")
recip_datapath = _single(TailOp.RECIP, "recip")
rsqrt_datapath = _single(TailOp.RSQRT, "rsqrt")
sigmoid_datapath = _single(TailOp.SIGMOID, "sigmoid")
silu_datapath = _single(TailOp.SILU, "silu")

EXP_LATENCY = tail_latency((TailOp.EXP,))
RECIP_LATENCY = tail_latency((TailOp.RECIP,))
RSQRT_LATENCY = tail_latency((TailOp.RSQRT,))
SIGMOID_LATENCY = tail_latency((TailOp.SIGMOID,))
SILU_LATENCY = tail_latency((TailOp.SILU,))


def _tail_unit(name, datapath, latency, doc):
    return unary_unit(name, datapath, 32, 32, latency, doc, module=__name__)


_UNIT_DOC = """\
Pipelined {} on fp32, one operation per cycle.

``i`` carries fp32 bit patterns, ``o`` the results ``LATENCY`` cycles later.
"""

Exp = _tail_unit("Exp", exp_datapath, EXP_LATENCY, _UNIT_DOC.format("e**x"))
Recip = _tail_unit("Recip", recip_datapath, RECIP_LATENCY, _UNIT_DOC.format("1/x"))
Rsqrt = _tail_unit("Rsqrt", rsqrt_datapath, RSQRT_LATENCY, _UNIT_DOC.format("1/sqrt(x)"))
Sigmoid = _tail_unit("Sigmoid", sigmoid_datapath, SIGMOID_LATENCY,
                     _UNIT_DOC.format("logistic sigmoid 1 / (1 + e**-x)"))
Silu = _tail_unit("Silu", silu_datapath, SILU_LATENCY, _UNIT_DOC.format("x * sigmoid(x)"))

TailOperands = data.StructLayout({"x": 32, "op": TailOp})


class Tail(wiring.Component):
    """Pipelined shared tail: ``op`` applied to ``x``, one operation per cycle.

    Parameters
    ----------
    ops : iterable of TailOp
        The functions built (all of them by default); see :func:`tail_datapath`.

    ``i`` carries :data:`TailOperands`, ``o`` the fp32 results ``LATENCY``
    cycles later (the class attribute is the latency with every function).
    """

    ALL_OPS = tuple(code for code in TailOp if code != TailOp.NONE)
    LATENCY = tail_latency(ALL_OPS)

    def __init__(self, *, ops=ALL_OPS):
        self.ops = tuple(ops)
        self.LATENCY = tail_latency(self.ops)
        super().__init__({"i": In(stream.Signature(TailOperands)), "o": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.i, self.o, latency=self.LATENCY)
        m.d.comb += self.o.payload.eq(tail_datapath(m, pipe.reg, self.i.payload.op, self.i.payload.x,
                                                    ops=self.ops, name="tail"))
        return m
