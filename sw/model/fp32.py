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
"""

import numpy as np

from facts.fp import INF32
from sw.golden import arith as g

# The golden model's field masks and canonical NaN, so both read the same bits.
_SIGN, _EXP, _FRAC, _NAN = g._SIGN32, g._EXP32, g._FRAC32, g.CANON_NAN32
_ABS = ~_SIGN
_INF = np.uint32(INF32)
_MIN_NORMAL = np.uint32(0x00800000)
_ONE = np.uint32(1)


def _subnormal(x):
    """Nonzero patterns with a zero exponent field (bool array)."""
    if x.ndim == 0:
        return ((x & _EXP) == 0) & ((x & _ABS) != 0)
    # |x| - 1 wraps around for zero, so one unsigned compare finds 1 <= |x| <= 0x007FFFFF.
    return (x & _ABS) - _ONE < _FRAC


def daz(x):
    """:func:`sw.golden.arith.daz32` of a uint32 array; the array itself when nothing changes."""
    x = np.asarray(x, dtype=np.uint32)
    sub = _subnormal(x)
    return np.where(sub, x & _SIGN, x) if sub.any() else x


def _canon(r):
    nan = (r & _ABS) > _INF
    return np.where(nan, _NAN, r) if nan.any() else r


def mul(a, b, *, canonical=True):
    """:func:`sw.golden.arith.fp32_mul` of uint32 arrays (broadcast).

    With ``canonical`` false NaN results keep IEEE's payload: for a caller
    that only adds them up and canonicalises the sums (:func:`accumulate`).
    """
    a, b = daz(a), daz(b)
    with np.errstate(all="ignore"):
        r = (a.view(np.float32) * b.view(np.float32)).view(np.uint32)
    sub = _subnormal(r) | ((r & _ABS) == _MIN_NORMAL)
    if sub.any():
        a, b = np.broadcast_arrays(a, b)
        r = r.copy()
        r[sub] = g.fp32_mul(a[sub], b[sub])
    return _canon(r) if canonical else r


def add(a, b, sub=False):
    """:func:`sw.golden.arith.fp32_add` of uint32 arrays (broadcast); ``sub`` (a bool) subtracts."""
    a, b = daz(a), daz(b)
    with np.errstate(all="ignore"):
        af, bf = a.view(np.float32), b.view(np.float32)
        r = (af - bf if sub else af + bf).view(np.uint32)
    small = _subnormal(r)
    if small.any():
        r = np.where(small, r & _SIGN, r)
    return _canon(r)


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
    with np.errstate(all="ignore"):
        np.add.accumulate(acc.view(np.float32), axis=0, out=acc.view(np.float32))
    if _subnormal(acc).any():
        # A partial sum the policy flushes changes every later one: step as the golden model does.
        for j in range(1, len(x)):
            acc[j] = g.fp32_add(x[j], acc[j - 1])
    return np.moveaxis(_canon(acc), 0, axis)
