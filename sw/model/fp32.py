"""Fast fp32 arithmetic for the models: :mod:`sw.golden.arith`'s results bit for bit, at native numpy speed.

The golden functions hold every rule of docs/numerics.md in each call. Here
the common case runs as one IEEE float32 operation, and only the elements
where IEEE and the policy can differ are fixed up:

- subnormal inputs (denormals-are-zero): zeroed, keeping the sign, before the operation;
- an IEEE product that is subnormal or exactly 2**-126: the policy rounds
  as if the exponent range were unbounded, which may give 2**-126 instead of
  a flush or the reverse, so those elements are recomputed by
  :func:`sw.golden.arith.fp32_mul` (rare);
- a subnormal IEEE sum is exact (both operands are multiples of 2**-149), so
  the policy's flush is its sign alone;
- NaN results become the canonical ``0x7FC00000``.

Any other normal IEEE result needs no fix: rounding above 2**-126 does not
depend on the exponent range, and an exact result below 2**-126 can only
round to 2**-126 itself.

:func:`accumulate` runs the systolic accumulation ``acc = acc + x[j]`` along
an axis in float32, in the same order, and falls back to the golden step
by step where a subnormal (to be flushed) appears.

The GEMV, the lane and group sums and the element-wise operations run in C where ``fastfp.c`` is built
(:mod:`sw.model.cext`): the same rules, exactly, in one pass (:func:`kernels`); the numpy forms here are the
fallback (no compiler, ``OPENRDU_NO_CEXT=1``), and tests hold the two to the same bits.
"""

import contextlib
import contextvars
import sys
from pathlib import Path
from subprocess import SubprocessError

import numpy as np

from facts import tail as tf
from facts.fp import INF32
from sw.golden import arith as g
from sw.model import cext

# The golden model's field masks and canonical NaN, so both read the same bits.
_SIGN, _EXP, _FRAC, _NAN = g._SIGN32, g._EXP32, g._FRAC32, g.CANON_NAN32
_ABS = ~_SIGN
_INF = np.uint32(INF32)
_MIN_NORMAL = np.uint32(0x00800000)
_ONE = np.uint32(1)

# Set inside quiet(): numpy's floating-point errors are ignored already, so the operations skip their own
# np.errstate (a context manager costs about as much as a small numpy call, and a unit runs dozens).
_QUIET = contextvars.ContextVar("sw_model_fp32_quiet", default=False)
_NOTHING = contextlib.nullcontext()


def _ignore():
    """``np.errstate(all="ignore")``, or nothing inside :func:`quiet`."""
    return _NOTHING if _QUIET.get() else np.errstate(all="ignore")


def quiet():
    """Run a block with numpy's floating-point errors ignored once for every operation here (overflow to
    infinity and invalid operations are the policy's business, not warnings). With the compiled kernels loaded
    a replay makes few numpy float operations, each of which ignores them itself (:func:`_ignore`): nothing to
    set up then."""
    return _NOTHING if _C else _quiet()


@contextlib.contextmanager
def _quiet():
    with np.errstate(all="ignore"):
        token = _QUIET.set(True)
        try:
            yield
        finally:
            _QUIET.reset(token)


# The compiled kernels (fastfp.c): the module, False where it is not available, None before the first use.
_C = None
_SOURCE = Path(__file__).with_name("fastfp.c")


def kernels():
    """The compiled fp32 kernels (``fastfp.c``, built and imported on first use), or None: ``OPENRDU_NO_CEXT`` set
    when first asked in this process, or no compiler or headers (said once on stderr)."""
    global _C
    if _C is None:
        if cext.disabled():
            _C = False
        else:
            try:
                module = cext.extension("fastfp", _SOURCE)
                # The tail functions' tables and constants, from their one source.
                module.set_tables(tf.EXP_TABLE, tf.RECIP_SEED, tf.RSQRT_SEED, tf.EXP_LOG2E, *tf.EXP_POLY,
                                  tf.EXP_X_HUGE, tf.EXP_HUGE_N, tf.SEED_FRAC)
                _C = module
            except (OSError, ImportError, ValueError, SubprocessError) as err:
                print(f"openrdu: the compiled fp32 kernels are not available ({err}); using numpy", file=sys.stderr)
                _C = False
    return _C or None


def _binary(op, a, b):
    """``a op b`` (0 add, 1 sub, 2 mul, 3 max, 4 min: the golden operation, canonical NaN) in C, or None where the
    kernels are not available or the shapes are not a 2-D broadcast of contiguous operands."""
    c = _C if _C is not None else kernels()
    if not c:
        return None
    a, b = np.asarray(a, np.uint32), np.asarray(b, np.uint32)
    shape = a.shape if a.shape == b.shape else np.broadcast_shapes(a.shape, b.shape)
    if len(shape) == 1:
        rows, lanes = 1, shape[0]
    elif len(shape) == 2:
        rows, lanes = shape
    else:
        return None
    strides = []
    for x in (a, b):
        if x.ndim and not x.flags.c_contiguous:
            return None
        r, l = (1,) * (2 - x.ndim) + x.shape
        strides += [l if r > 1 else 0, 1 if l > 1 else 0]
    out = np.empty(shape, np.uint32)
    c.binary(op, a.reshape(-1), b.reshape(-1), out, rows, lanes, *strides)
    return out


def _subnormal(x):
    """Nonzero patterns with a zero exponent field (bool array)."""
    if x.ndim == 0:
        return ((x & _EXP) == 0) & ((x & _ABS) != 0)
    # |x| - 1 wraps around for zero, so one unsigned compare finds 1 <= |x| <= 0x007FFFFF.
    return (x & _ABS) - _ONE < _FRAC


def _low(t, bound):
    """Whether some magnitude ``t`` (patterns without the sign) lies in 1 .. ``bound``: one reduction, no mask."""
    # t - 1 wraps around for zero, so the least of them is below ``bound`` exactly then.
    return t.size and np.minimum.reduce(t.reshape(-1) - _ONE, axis=None) < bound


def _high(t):
    """Whether some magnitude ``t`` is a NaN's."""
    return t.size and np.maximum.reduce(t, axis=None) > _INF


def daz(x):
    """:func:`sw.golden.arith.daz32` of a uint32 array; the array itself when nothing changes."""
    return _daz_least(x)[0]


_DAZ = daz


def _daz_least(x):
    """(:func:`daz` of ``x``, the least nonzero magnitude pattern of the result less one, or None where not known).

    The second is ``2**32 - 1`` when every value is a zero; None for a scalar, an empty array or one whose
    subnormals were just flushed (the caller then checks its results instead, :func:`dot`).
    """
    x = np.asarray(x, dtype=np.uint32)
    if not x.ndim:
        v = int(x)
        return (np.asarray(v & 0x80000000, np.uint32) if v & 0x7F800000 == 0 and v & 0x7FFFFFFF else x), None
    if not x.size:
        return x, None
    # |x| - 1 wraps around for zero, so the least of them is below _FRAC exactly when some x is subnormal.
    t = x & _ABS
    least = int(np.minimum.reduce(np.subtract(t, _ONE, out=t), axis=None))
    if least >= _FRAC:
        return x, least
    return np.where(_subnormal(x), x & _SIGN, x), None


def _canon(r):
    nan = (r & _ABS) > _INF
    return np.where(nan, _NAN, r) if nan.any() else r


def _operands(a, b, clean=None):
    """``a`` and ``b`` after :func:`daz`; one array given as both is checked once (a square). ``clean``: a pair of
    bools, true for an operand known to hold no subnormal (an earlier result of these operations), not checked."""
    if clean is None:
        clean = (False, False)
    if b is a:
        a = np.asarray(a, np.uint32) if clean[0] else daz(a)
        return a, a
    return (np.asarray(a, np.uint32) if clean[0] else daz(a)), (np.asarray(b, np.uint32) if clean[1] else daz(b))


def mul(a, b, *, canonical=True, clean=None):
    """:func:`sw.golden.arith.fp32_mul` of uint32 arrays (broadcast).

    With ``canonical`` false NaN results keep IEEE's payload: for a caller
    that only adds them up and canonicalises the sums (:func:`accumulate`).
    ``clean``: see :func:`_operands`.
    """
    # The kernels apply denormals-are-zero themselves; a replaced daz (tests prove a model without it is caught)
    # takes the numpy form.
    if canonical and daz is _DAZ:
        r = _binary(2, a, b)
        if r is not None:
            return r
    a, b = _operands(a, b, clean)
    with _ignore():
        r = (a.view(np.float32) * b.view(np.float32)).view(np.uint32)
    t = r & _ABS
    if _low(t, _MIN_NORMAL):
        sub = _subnormal(r) | (t == _MIN_NORMAL)
        a, b = np.broadcast_arrays(a, b)
        r = np.array(r, dtype=np.uint32)
        r[sub] = g.fp32_mul(a[sub], b[sub])
        return _canon(r) if canonical else r
    return np.where(t > _INF, _NAN, r) if canonical and _high(t) else r


def add(a, b, sub=False):
    """:func:`sw.golden.arith.fp32_add` of uint32 arrays (broadcast); ``sub`` (a bool) subtracts."""
    if daz is _DAZ and (sub is True or sub is False):
        r = _binary(1 if sub else 0, a, b)
        if r is not None:
            return r
    a, b = _operands(a, b)
    with _ignore():
        af, bf = a.view(np.float32), b.view(np.float32)
        r = (af - bf if sub else af + bf).view(np.uint32)
    t = r & _ABS
    if _low(t, _FRAC):
        r = np.where(_subnormal(r), r & _SIGN, r)
    return np.where(t > _INF, _NAN, r) if _high(t) else r


def _value(bits):
    """The float32 number of pattern ``bits`` (a Python int)."""
    return np.uint32(bits).view(np.float32)


def _daz1(x):
    return x & 0x80000000 if not x & 0x7F800000 else x


def mul1(a, b):
    """:func:`mul` of two patterns given as Python ints, as a Python int: the same rules, without arrays."""
    a, b = _daz1(a), _daz1(b)
    with _ignore():
        r = int((_value(a) * _value(b)).view(np.uint32))
    t = r & 0x7FFFFFFF
    if 0 < t <= 0x00800000:
        return int(g.fp32_mul(np.array([a], np.uint32), np.array([b], np.uint32))[0])
    return int(_NAN) if t > INF32 else r


def add1(a, b):
    """:func:`add` of two patterns given as Python ints, as a Python int."""
    a, b = _daz1(a), _daz1(b)
    with _ignore():
        r = int((_value(a) + _value(b)).view(np.uint32))
    t = r & 0x7FFFFFFF
    if 0 < t < 0x00800000:
        return r & 0x80000000
    return int(_NAN) if t > INF32 else r


def accumulate(x, axis, *, start=0, normal=False):
    """Every partial sum ``acc_j = x_j + acc_{j-1}`` along ``axis`` (uint32 patterns), ``acc_{-1} = start``.

    ``start`` is +0 (an accumulator after reset) by default; -0 (``0x80000000``),
    the identity of IEEE addition, makes ``acc_0 = x_0``. Equals
    :func:`sw.golden.arith.fp32_add` applied step by step; returns an array
    of ``x``'s shape. ``normal`` says that ``x`` holds no subnormal (results
    of :func:`mul`), so denormals-are-zero is skipped.
    """
    x = np.moveaxis(x if normal else daz(x), axis, 0)
    if not len(x):
        return np.moveaxis(x.copy(), 0, axis)
    start = np.broadcast_to(np.uint32(start), x.shape[1:])
    acc = x.copy()
    acc[0] = add(x[0], start)
    with _ignore():
        np.add.accumulate(acc.view(np.float32), axis=0, out=acc.view(np.float32))
    if _subnormal(acc).any():
        # A partial sum the policy flushes changes every later one: step as the golden model does.
        for j in range(1, len(x)):
            acc[j] = g.fp32_add(x[j], acc[j - 1])
    return np.moveaxis(_canon(acc), 0, axis)


# Magnitudes from 2**-103 (bits 0x0C000000) up have an ulp of at least 2**-126; _COARSE_LEAST: the least
# magnitude less one (as _daz_least gives it) of values that are all zeros or that large.
_COARSE = np.uint32(0x0C000000)
_COARSE_LEAST = 0x0C000000 - 1


def dot(a, b):
    """``accumulate(mul(a, b, canonical=False), 1, normal=True)[:, -1]``, canonical: every group's ordered sum.

    ``a`` and ``b`` (uint32 patterns) broadcast to (groups, m, ...); the sum runs along axis 1 from +0,
    ``acc = p_j + acc``, and the result has shape (groups, ...). When every product is zero or at least
    2**-103 in magnitude, every operand and partial sum is a multiple of 2**-126, so no partial sum can be
    subnormal and IEEE float32 addition in the same order is the policy's: numpy's reduction over the
    outer axis of a C-ordered (m, n) array adds whole rows, one after the other, so each element's sum
    keeps that order. Otherwise (tiny products, or rows of one element, which numpy would sum pairwise)
    the step-by-step path runs.
    """
    c = _C if _C is not None else kernels()
    if c and np.ndim(a) == np.ndim(b) == 4 and a.shape[3] == 1 and b.shape[2] == 1 and a.shape[:2] == b.shape[:2] \
            and b.shape[3] <= 64:
        # The systolic GEMV, (groups, m, rows, 1) x (groups, m, 1, lanes): in C.
        groups, m, rows, _ = a.shape
        lanes = b.shape[3]
        out = np.empty((groups, rows, lanes), np.uint32)
        c.gemv(np.ascontiguousarray(a, np.uint32).reshape(-1), np.ascontiguousarray(b, np.uint32).reshape(-1), out,
               groups, m, rows, lanes, m * rows, rows)
        return out
    (a, least_a), (b, least_b) = _daz_least(a), _daz_least(b)
    if a.ndim == b.ndim == 4 and a.shape[2:] == (1, 1) and b.shape[:3] == a.shape[:2] + (1,) and \
            a.shape[0] * b.shape[3] >= 2 and a.shape[1]:
        return _dot_rows(a, b, _coarse_products(least_a, least_b))
    shape = np.broadcast_shapes(a.shape, b.shape)
    a, b = (x.reshape((1,) * (len(shape) - x.ndim) + x.shape) for x in (a, b))
    k = int(np.prod(shape[2:], dtype=np.int64))
    if len(shape) < 3 or shape[1] == 0 or shape[0] * k < 2:
        return _ordered(a, b, shape)
    # The products laid out (m, groups x k) in C order at once, so every step of the sum adds one contiguous
    # row to the accumulators.
    with _ignore():
        p = np.multiply(np.swapaxes(a, 0, 1).view(np.float32), np.swapaxes(b, 0, 1).view(np.float32), order="C")
    t = p.view(np.uint32).reshape(-1) & _ABS
    if np.minimum.reduce(np.subtract(t, _ONE, out=t)) < _COARSE - _ONE:
        return _ordered(a, b, shape)
    with _ignore():
        s = np.add.reduce(p.reshape(shape[1], shape[0] * k), axis=0, initial=np.float32(0))
    return _canon(s.view(np.uint32).reshape(shape[:1] + shape[2:]))


def _coarse_products(least_a, least_b):
    """Whether every product of operands whose least nonzero magnitudes less one are ``least_a``, ``least_b``
    (:func:`_daz_least`) is a zero or at least 2**-103 in magnitude (False: not known).

    Nonzero operands of exponent fields ``e_a`` and ``e_b`` or more have a product of at least
    ``2**(e_a + e_b - 254)``, a power of two that rounding keeps, so ``e_a + e_b >= 151`` is enough; a product
    with a zero is a zero (or a NaN, with an infinity, as any product with an infinity or NaN: both pass).
    """
    if least_a is None or least_b is None:
        return False
    if least_a == 0xFFFFFFFF or least_b == 0xFFFFFFFF:
        return True
    return ((least_a + 1) >> 23) + ((least_b + 1) >> 23) >= 151


def _dot_rows(a, b, coarse):
    """:func:`dot` of ``a`` (groups, m, 1, 1) and ``b`` (groups, m, 1, lanes), after :func:`daz`: the systolic
    GEMV with one drained row.

    The products are multiplied in ``b``'s order, ``a`` repeated across the lanes so that numpy runs one long
    loop, then each (group, step)'s lanes moved as one block to the (m, groups x lanes) layout :func:`dot`
    sums. ``coarse``: the operands already show that no product is tiny (:func:`_coarse_products`); otherwise
    the products are checked as :func:`dot` checks them.
    """
    lanes = b.shape[3]
    with _ignore():
        p = np.multiply(np.repeat(a.reshape(-1), lanes).view(np.float32), b.reshape(-1).view(np.float32))
    return _row_sums(p, a, b, coarse)


def _row_sums(p, a, b, coarse):
    """The ordered sums of :func:`_dot_rows` from its products ``p`` (float32, ``b``'s order): checked as
    :func:`dot` checks them unless ``coarse``, then each (group, step)'s lanes moved as one block to the
    (m, groups x lanes) layout and reduced; a tiny product sends ``a``, ``b`` to the step-by-step path."""
    groups, m, _, lanes = b.shape
    if not coarse:
        t = p.view(np.uint32).reshape(-1) & _ABS
        if np.minimum.reduce(np.subtract(t, _ONE, out=t)) < _COARSE - _ONE:
            return _ordered(a, b, np.broadcast_shapes(a.shape, b.shape))
    rows = p.view(np.dtype((np.void, 4 * lanes))).reshape(groups, m).T.copy()
    with _ignore():
        s = np.add.reduce(rows.view(np.float32).reshape(m, groups * lanes), axis=0, initial=np.float32(0))
    return _canon(s.view(np.uint32).reshape(groups, 1, lanes))


def dot_shared(a, b):
    """:func:`dot` of ``a`` (m,) repeated for every group and ``b`` (groups, m, lanes): the systolic GEMV with one
    drained row whose activation is the same in every group; returns (groups, 1, lanes).

    As :func:`_dot_rows`, but the activation is checked once and repeated across the lanes of one group
    only (m x lanes words, not groups x m x lanes), and the products are multiplied group by group against it.
    """
    groups, m, lanes = b.shape
    c = _C if _C is not None else kernels()
    if c and lanes <= 64:
        out = np.empty((groups, 1, lanes), np.uint32)
        c.gemv(np.ascontiguousarray(a, np.uint32), np.ascontiguousarray(b, np.uint32).reshape(-1), out, groups, m, 1,
               lanes, 0, 1)
        return out
    (a, least_a), (b, least_b) = _daz_least(a), _daz_least(b)
    if not m or groups * lanes < 2:
        # Rows of one element, which numpy would sum pairwise: the general form.
        return dot(np.broadcast_to(a.reshape(1, m, 1, 1), (groups, m, 1, 1)), b.reshape(groups, m, 1, lanes))
    with _ignore():
        p = np.multiply(np.repeat(a, lanes).view(np.float32), b.reshape(groups, m * lanes).view(np.float32))
    return _row_sums(p, np.broadcast_to(a.reshape(1, m, 1, 1), (groups, m, 1, 1)), b.reshape(groups, m, 1, lanes),
                     _coarse_products(least_a, least_b))


def _ordered(a, b, shape):
    """:func:`dot` step by step."""
    if not shape[1]:
        return np.zeros(shape[:1] + shape[2:], np.uint32)
    return accumulate(mul(a, b, canonical=False), 1, normal=True)[:, -1]


def _coarse(x):
    """Whether every pattern of ``x`` (after :func:`daz`) is a zero or at least 2**-103 in magnitude: then every
    sum of them in any order is a multiple of 2**-126, never subnormal, and IEEE float32 addition is the policy's
    up to NaN payloads."""
    t = x.reshape(-1) & _ABS
    return not t.size or np.minimum.reduce(np.subtract(t, _ONE, out=t)) >= _COARSE - _ONE


def ordered_sums(x, start=0, *, clean=False):
    """``accumulate(x, 1, start=start)[:, -1]``: each row's sum of ``x`` (groups, m) in order, as one reduction.

    When the values are coarse (see :func:`_coarse`) and there are at least two rows, the rows are laid out
    (m, groups) in C order and reduced over the outer axis, which adds whole rows one after the other; a
    single row is one accumulation, which numpy runs in order too. ``clean``: ``x`` is known to hold no
    subnormal (results of these operations), so denormals-are-zero is skipped.
    """
    c = _C if _C is not None else kernels()
    if c and np.ndim(x) == 2 and x.shape[1]:
        out = np.empty(x.shape[0], np.uint32)
        c.ordered_sums(np.ascontiguousarray(x, np.uint32), out, x.shape[0], x.shape[1], int(start))
        return out
    # ``start`` is an operand of the first addition: denormals-are-zero applies to it too.
    start = int(start)
    if not start & 0x7F800000:
        start &= 0x80000000
    x, least = (np.asarray(x, np.uint32), None) if clean else _daz_least(x)
    # Denormals-are-zero's least magnitude, where it has one, tells whether the values are coarse.
    if x.ndim != 2 or not x.shape[0] or not x.shape[1] or \
            not (least >= _COARSE_LEAST if least is not None else _coarse(x)):
        return accumulate(x, 1, start=start, normal=True)[:, -1]
    if x.shape[0] == 1:
        # One group: numpy would sum a row pairwise, but an accumulation runs in order (from ``start``).
        row = np.empty(x.shape[1] + 1, np.uint32)
        row[0] = start
        row[1:] = x[0]
        with _ignore():
            s = np.add.accumulate(row.view(np.float32))[-1:]
        return _canon(s.view(np.uint32))
    rows = np.ascontiguousarray(x.T).view(np.float32)
    with _ignore():
        s = np.add.reduce(rows, axis=0, initial=np.uint32(start).view(np.float32))
    return _canon(s.view(np.uint32))


def _max_key(x):
    """int32 keys of uint32 patterns ``x`` (no NaN) in the fp32 total order with -0 < +0: a positive pattern is
    its own key, a negative one ``-magnitude - 1`` (the golden ``_order_key``'s order, in 32 bits); the same map
    turns a key back into its pattern."""
    i = x.view(np.int32)
    return i ^ ((i >> 31) & np.int32(0x7FFFFFFF))


def maxmin(a, b, want_max=True, *, clean=None):
    """:func:`sw.golden.arith.fp32_max` (``want_max``) or ``fp32_min`` of uint32 arrays (broadcast): the canonical
    NaN where either operand is a NaN, else the larger (smaller) after denormals-are-zero in the total order with
    -0 < +0, compared by :func:`_max_key` (one to one with the patterns, so a tie is the same pattern);
    ``clean``: see :func:`_operands`."""
    if daz is _DAZ:
        r = _binary(3 if want_max else 4, a, b)
        if r is not None:
            return r
    a, b = _operands(a, b, clean)
    ka, kb = _max_key(a), _max_key(b)
    r = np.where(ka >= kb if want_max else ka <= kb, a, b)
    ta, tb = a & _ABS, b & _ABS
    if _high(ta) or _high(tb):
        r = np.where((ta > _INF) | (tb > _INF), _NAN, r)
    return r


def largest(x, starts=None, *, clean=False):
    """The golden ``fp32_max`` folded over each row of ``x`` (n, k), k >= 2 (``starts`` None), or over each run of
    ``x`` (n,) from ``starts`` to the next (an ``np.maximum.reduceat``): uint32 patterns.

    ``fp32_max`` gives the canonical NaN when either operand is a NaN, else the larger after denormals-are-zero
    by the total order with -0 < +0, whose keys are one to one with the patterns; so any order of folding
    gives the canonical NaN for a row holding a NaN, else its largest key's pattern. ``clean``: as in
    :func:`ordered_sums`.
    """
    y = np.asarray(x, np.uint32) if clean else daz(x)
    key = _max_key(y)
    best = np.maximum.reduce(key, axis=1) if starts is None else np.maximum.reduceat(key, starts)
    out = _max_key(best).view(np.uint32)
    if _high(y & _ABS):
        nan = (y & _ABS) > _INF
        nan = nan.any(axis=1) if starts is None else np.logical_or.reduceat(nan, starts)
        out = np.where(nan, _NAN, out)
    return out


def lane_sums(x):
    """The PCU's pairwise cross-lane sum of ``x`` (n, lanes): :func:`add` of lane pairs, level by level.

    With coarse values the levels run as plain float32 additions and only the result is made canonical.
    """
    lanes = x.shape[1]
    c = _C if _C is not None else kernels()
    if c and 2 <= lanes <= 64 and not lanes & (lanes - 1):
        out = np.empty(x.shape[0], np.uint32)
        c.lane_sums(np.ascontiguousarray(x, np.uint32), out, x.shape[0], lanes)
        return out
    if x.shape[1] > 1 and x.size:
        y, least = _daz_least(x)
        if least >= _COARSE_LEAST if least is not None else _coarse(y):
            f = y.view(np.float32)
            with _ignore():
                while f.shape[1] > 1:
                    f = f[:, 0::2] + f[:, 1::2]
            return _canon(f[:, 0].view(np.uint32))
    while x.shape[1] > 1:
        x = add(x[:, 0::2], x[:, 1::2])
    return x[:, 0]
