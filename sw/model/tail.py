"""Fast PCU tail functions: :mod:`sw.golden.tail`'s results bit for bit, in 64-bit numpy integers.

The golden model computes on Python integers in object arrays, so no
product can overflow. Here every step is the same integer operation on
``int64`` arrays: all but three products fit in 63 bits by the widths of
their operands (24-bit significands, 33-bit fixed-point values, 12-bit
seeds; see :mod:`facts.tail`). Those that do not are fixed-point products
shifted right by 32, computed exactly from 32-bit halves (:func:`_mulhi32`),
and the reciprocal's Newton residual ``2**64 - d y``, small because ``y`` is
already close to ``1 / d``: it is taken modulo ``2**64`` and checked against
a float64 estimate. Every value a later product depends on is checked
against the bound that keeps that product within 63 bits; where a check
fails (no input is known to) the golden function computes the whole call.

Where the compiled kernels are built (:func:`sw.model.fp32.kernels`), each function runs in C instead: the
one-value forms below (``_exp1`` and the others) on 128-bit integers.
"""

import numpy as np

from facts.fp import CANON_NAN32, INF32
from facts.tail import EXP_HUGE_N, EXP_LOG2E, EXP_POLY, EXP_TABLE, EXP_X_HUGE, RECIP_SEED, RSQRT_SEED, SEED_FRAC
from sw.golden import tail as golden
from sw.model import fp32

_FRAC = 0x007F_FFFF
_LO32 = np.int64(0xFFFF_FFFF)
_EXP_TABLE = np.array(EXP_TABLE, np.int64)
_RECIP_SEED = np.array(RECIP_SEED, np.int64)
_RSQRT_SEED = np.array(RSQRT_SEED, np.int64)


def _shr(x, k):
    """``x >> k`` (floor) for shifts ``k`` >= 0 of any size; x within 63 bits."""
    return x >> np.minimum(k, 63)


def _mulhi32(a, b):
    """``(a * b) >> 32`` exactly, for int64 ``a``, ``b`` in 0 .. 2**35 (the product may need 70 bits)."""
    a1, a0 = a >> 32, a & _LO32
    b1, b0 = b >> 32, b & _LO32
    low = ((a0.astype(np.uint64) * b0.astype(np.uint64)) >> np.uint64(32)).astype(np.int64)
    return a * b1 + a1 * b0 + low


def _fields(x32):
    x = fp32.daz(np.asarray(x32, dtype=np.uint32)).reshape(-1).astype(np.int64)
    return x >> 31, (x >> 23) & 0xFF, x & _FRAC


def _exp_core(sign, e, frac):
    sig = np.where(e == 0, 0, frac | (1 << 23))
    t = _shr(sig * EXP_LOG2E, np.maximum(156 - e, 0))     # sig < 2**24, log2(e) 2**38: under 2**63
    t = np.where(sign == 1, -t, t)
    huge = e >= EXP_X_HUGE
    n = np.where(huge, np.where(sign == 1, -EXP_HUGE_N, EXP_HUGE_N), t >> 32)
    f = np.where(huge, 0, t & _LO32)
    r = f & ((1 << 25) - 1)
    c1, c2, c3 = EXP_POLY
    p = (c3 * r) >> 32
    p = ((c2 + p) * r) >> 32
    p = ((c1 + p) * r) >> 32
    table = _EXP_TABLE[f >> 25]
    return table + ((table * p) >> 32), n


def _recip_core(d):
    """:func:`sw.golden.tail._recip_core`, and whether each residual was in range (d in 2**32 .. 2**34)."""
    y = np.where(d >> 33 == 1, 1 << (SEED_FRAC - 1),
                 np.where((d & _LO32) == 0, 1 << SEED_FRAC, _RECIP_SEED[(d >> 25) & 0x7F]))
    e0 = (1 << 45) - d * y
    y = (y * e0) >> 24
    # 2**64 - d y modulo 2**64 is the residual itself when it is below 2**53 in magnitude.
    residual = (np.uint64(0) - d.astype(np.uint64) * y.astype(np.uint64)).view(np.int64)
    ok = (y >= 0) & (np.abs(2.0 ** 64 - d.astype(np.float64) * y.astype(np.float64)) < 2.0 ** 52)
    delta = residual >> 24
    return y + ((y * delta) >> 40), ok


def _rsqrt_core(e, frac):
    odd = 1 - (e & 1)
    dd = (frac | (1 << 23)) << odd
    y = np.where((odd == 0) & (frac == 0), 1 << SEED_FRAC, _RSQRT_SEED[(odd << 6) | (frac >> 17)])
    h = 3 * (1 << 47) - dd * (y * y)
    y = (y * h) >> 28
    ok = (y >= 0) & (y < 2 ** 34)
    y = np.where(ok, y, 0)
    residual = (1 << 55) - dd * _mulhi32(y, y)
    ok &= np.abs(residual) < 2 ** 44
    return y + ((y * (residual >> 15)) >> 41), ok


# The powers of two the leading bit of a product is counted against (_finish).
_LEADS = np.array([1 << 54, 1 << 55, 1 << 56, 1 << 57], np.uint64)


def _finish(a, s, exp, sign):
    p = a * s
    # The golden model's lead: 53, or the largest k in 54 .. 57 with p >> k != 0, in one search: how many of
    # those powers p reaches, a negative p (every shift nonzero) reading as 2**63 or more.
    lead = 53 + np.searchsorted(_LEADS, np.asarray(p, np.int64).view(np.uint64), side="right").astype(np.int64)
    sig = p >> (lead - 23)
    guard = (p >> (lead - 24)) & 1
    sticky = np.where((p & ((np.int64(1) << (lead - 24)) - 1)) != 0, 1, 0)
    rounded = sig + (guard & (sticky | (sig & 1)))
    carry = rounded >> 24
    e = lead + exp + carry
    bits = np.where(e >= 255, INF32, np.where(e <= 0, 0, (np.maximum(e, 0) << 23) | (rounded & _FRAC)))
    return bits | (sign << 31)


def _result(x32, z, special, value, ok, slow):
    """The bit patterns, shaped as ``x32``; the golden function ``slow`` where a range check failed."""
    x32 = np.asarray(x32, dtype=np.uint32)
    if not (ok | special).all():
        return slow(x32)
    return np.where(special, value, z).astype(np.uint32).reshape(x32.shape)


def _is_nan(e, frac):
    return (e == 255) & (frac != 0)


def _logistic(sign, e, frac):
    m, n = _exp_core(np.ones_like(sign), e, frac)
    r, ok = _recip_core((1 << 32) + _shr(m, -n))
    ok &= (r >= 0) & (r < 2 ** 35)
    r = np.where(ok, r, 0)
    w = _mulhi32(m, r)
    return np.where(sign == 1, w, r), np.where(sign == 1, n, 0), ok


# Inputs of at most this many values take the scalar forms below: a numpy call costs about as much as a few
# dozen integer operations on Python ints, and each vector form makes some forty calls.
_SCALAR_MAX = 32


def _scalar(x32, one):
    """``one`` (a function of one input's bits, an int) on every value of ``x32``, shaped as ``x32`` (uint32)."""
    x32 = np.asarray(x32, dtype=np.uint32)
    return np.array([one(v) for v in x32.reshape(-1).tolist()], dtype=np.uint32).reshape(x32.shape)


def _fields1(x):
    """(sign, exponent field, fraction) of fp32 bits ``x`` (an int) after denormals-are-zero."""
    if not x & 0x7F800000:
        x &= 0x8000_0000
    return x >> 31, (x >> 23) & 0xFF, x & _FRAC


def _exp_core1(sign, e, frac):
    """:func:`sw.golden.tail._exp_core` of one value, on Python ints as the golden model computes."""
    sig = 0 if e == 0 else frac | (1 << 23)
    t = (sig * EXP_LOG2E) >> max(156 - e, 0)
    if sign == 1:
        t = -t
    if e >= EXP_X_HUGE:
        n, f = (-EXP_HUGE_N if sign == 1 else EXP_HUGE_N), 0
    else:
        n, f = t >> 32, t & 0xFFFF_FFFF
    r = f & ((1 << 25) - 1)
    c1, c2, c3 = EXP_POLY
    p = (c3 * r) >> 32
    p = ((c2 + p) * r) >> 32
    p = ((c1 + p) * r) >> 32
    table = EXP_TABLE[f >> 25]
    return table + ((table * p) >> 32), n


def _recip_core1(d):
    """:func:`sw.golden.tail._recip_core` of one value."""
    y = 1 << (SEED_FRAC - 1) if d >> 33 == 1 else 1 << SEED_FRAC if d & 0xFFFF_FFFF == 0 else \
        RECIP_SEED[(d >> 25) & 0x7F]
    e0 = (1 << 45) - d * y
    y = (y * e0) >> 24
    delta = ((1 << 64) - d * y) >> 24
    return y + ((y * delta) >> 40)


def _rsqrt_core1(e, frac):
    """:func:`sw.golden.tail._rsqrt_core` of one value."""
    odd = 1 - (e & 1)
    dd = (frac | (1 << 23)) << odd
    y = 1 << SEED_FRAC if odd == 0 and frac == 0 else RSQRT_SEED[(odd << 6) | (frac >> 17)]
    h = 3 * (1 << 47) - dd * (y * y)
    y = (y * h) >> 28
    delta = ((1 << 55) - dd * ((y * y) >> 32)) >> 15
    return y + ((y * delta) >> 41)


def _finish1(a, s, exp, sign):
    """:func:`sw.golden.tail._finish` of one value."""
    p = a * s
    # The golden lead: 53, or the largest k in 54 .. 57 with p >> k != 0 (every k for a negative p): for p >= 0,
    # p >> k != 0 exactly when k < p.bit_length().
    bits = p.bit_length()
    lead = 57 if p < 0 or bits > 58 else bits - 1 if bits > 54 else 53
    sig = p >> (lead - 23)
    guard = (p >> (lead - 24)) & 1
    sticky = 1 if p & ((1 << (lead - 24)) - 1) else 0
    rounded = sig + (guard & (sticky | (sig & 1)))
    e = lead + exp + (rounded >> 24)
    bits = INF32 if e >= 255 else 0 if e <= 0 else (e << 23) | (rounded & _FRAC)
    return bits | (sign << 31)


def _logistic1(sign, e, frac):
    """:func:`sw.golden.tail._logistic` of one value."""
    m, n = _exp_core1(1, e, frac)
    r = _recip_core1((1 << 32) + (m >> -n))
    return ((m * r) >> 32, n) if sign == 1 else (r, 0)


def _exp1(x):
    sign, e, frac = _fields1(x)
    if e == 255 and frac:
        return CANON_NAN32
    m, n = _exp_core1(sign, e, frac)
    return _finish1(1 << 23, m, 72 + n, 0)


def _recip1(x):
    sign, e, frac = _fields1(x)
    if e == 255 and frac:
        return CANON_NAN32
    if e == 0:
        return (sign << 31) | INF32
    if e == 255:
        return sign << 31
    return _finish1(1 << 23, _recip_core1((frac | (1 << 23)) << 9), 72 + 127 - e, sign)


def _rsqrt1(x):
    sign, e, frac = _fields1(x)
    if e == 0:
        return (sign << 31) | INF32
    if e == 255 or sign == 1:
        return 0 if sign == 0 and frac == 0 else CANON_NAN32
    odd = 1 - (e & 1)
    return _finish1(1 << 23, _rsqrt_core1(e, frac), 72 - ((e - 127 - odd) >> 1), 0)


def _sigmoid1(x):
    sign, e, frac = _fields1(x)
    if e == 255 and frac:
        return CANON_NAN32
    s, ns = _logistic1(sign, e, frac)
    return _finish1(1 << 23, s, 72 + ns, 0)


def _silu1(x):
    sign, e, frac = _fields1(x)
    if e == 0:
        return sign << 31
    if e == 255 and frac:
        return CANON_NAN32
    s, ns = _logistic1(sign, e, frac)
    return _finish1(frac | (1 << 23), s, e - 55 + ns, sign)


def _compiled(op, x32):
    """Tail function ``op`` (0 exp, 1 recip, 2 rsqrt, 3 sigmoid, 4 silu) of ``x32`` in C (``fastfp.c``, the one-value
    forms below on 128-bit integers), shaped as ``x32``; None without the compiled kernels."""
    c = fp32._C if fp32._C is not None else fp32.kernels()
    if not c:
        return None
    x = np.asarray(x32, dtype=np.uint32)
    out = np.empty(x.shape, np.uint32)
    # (ascontiguousarray makes a 0-d array 1-d: the flat copy goes in, the result keeps x32's shape.)
    c.tail(op, np.ascontiguousarray(x.reshape(-1)), out, x.size)
    return out


def exp(x32):
    """:func:`sw.golden.tail.exp`."""
    out = _compiled(0, x32)
    if out is not None:
        return out
    if np.size(x32) <= _SCALAR_MAX:
        return _scalar(x32, _exp1)
    sign, e, frac = _fields(x32)
    m, n = _exp_core(sign, e, frac)
    z = _finish(1 << 23, m, 72 + n, 0)
    return _result(x32, z, _is_nan(e, frac), CANON_NAN32, True, golden.exp)


def recip(x32):
    """:func:`sw.golden.tail.recip`."""
    out = _compiled(1, x32)
    if out is not None:
        return out
    if np.size(x32) <= _SCALAR_MAX:
        return _scalar(x32, _recip1)
    sign, e, frac = _fields(x32)
    r, ok = _recip_core((frac | (1 << 23)) << 9)
    z = _finish(1 << 23, np.where(ok, r, 0), 72 + 127 - e, sign)
    special = (e == 0) | (e == 255)
    value = np.where(_is_nan(e, frac), CANON_NAN32, np.where(e == 0, (sign << 31) | INF32, sign << 31))
    return _result(x32, z, special, value, ok, golden.recip)


def rsqrt(x32):
    """:func:`sw.golden.tail.rsqrt`."""
    out = _compiled(2, x32)
    if out is not None:
        return out
    if np.size(x32) <= _SCALAR_MAX:
        return _scalar(x32, _rsqrt1)
    sign, e, frac = _fields(x32)
    odd = 1 - (e & 1)
    k = (e - 127 - odd) >> 1
    r, ok = _rsqrt_core(e, frac)
    z = _finish(1 << 23, r, 72 - k, 0)
    special = (e == 0) | (e == 255) | (sign == 1)
    value = np.where(e == 0, (sign << 31) | INF32, np.where((sign == 0) & (frac == 0), 0, CANON_NAN32))
    return _result(x32, z, special, value, ok, golden.rsqrt)


def sigmoid(x32):
    """:func:`sw.golden.tail.sigmoid`."""
    out = _compiled(3, x32)
    if out is not None:
        return out
    if np.size(x32) <= _SCALAR_MAX:
        return _scalar(x32, _sigmoid1)
    sign, e, frac = _fields(x32)
    s, ns, ok = _logistic(sign, e, frac)
    z = _finish(1 << 23, s, 72 + ns, 0)
    return _result(x32, z, _is_nan(e, frac), CANON_NAN32, ok, golden.sigmoid)


def silu(x32):
    """:func:`sw.golden.tail.silu`."""
    out = _compiled(4, x32)
    if out is not None:
        return out
    if np.size(x32) <= _SCALAR_MAX:
        return _scalar(x32, _silu1)
    sign, e, frac = _fields(x32)
    s, ns, ok = _logistic(sign, e, frac)
    z = _finish(frac | (1 << 23), s, e - 55 + ns, sign)
    special = _is_nan(e, frac) | (e == 0)
    return _result(x32, z, special, np.where(e == 0, sign << 31, CANON_NAN32), ok, golden.silu)
