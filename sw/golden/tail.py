"""Bit-exact golden model of the PCU tail functions: exp, recip, rsqrt, sigmoid, silu.

The tail works in fixed point on the input's significand, with the same
constant tables as ``hw/arith/tail.py`` (both import them from ``facts.tail``).
Every step below is an integer operation that the RTL performs with the
same widths, so model and RTL agree bit for bit; intermediate values are
Python integers in object arrays, so wide products cannot overflow. The
algorithms, their measured accuracy and the latencies are in
``docs/numerics.md``.

Inputs and outputs are fp32 bit patterns (``np.uint32``), with the same
input rules as ``sw.golden.arith``.
"""

import numpy as np

from facts.fp import CANON_NAN32, INF32
from facts.tail import EXP_HUGE_N, EXP_LOG2E, EXP_POLY, EXP_TABLE, EXP_X_HUGE, RECIP_SEED, RSQRT_SEED, SEED_FRAC
from . import arith as g

__all__ = [
    "EXP_LOG2E", "EXP_TABLE", "EXP_POLY", "RECIP_SEED", "RSQRT_SEED",
    "exp", "recip", "rsqrt", "sigmoid", "silu", "bf16", "apply", "OPS",
]

_FRAC = 0x007F_FFFF


def _lut(table, index):
    return np.asarray(table, dtype=object)[np.asarray(index).astype(np.int64)]


def _fields(x32):
    """(bits, sign, exponent field, fraction) as object arrays, after denormals-are-zero."""
    x = g.daz32(x32).reshape(-1).astype(object)
    return x, x >> 31, (x >> 23) & 0xFF, x & _FRAC


def _exp_core(sign, e, frac):
    """e**x as m 2**(n - 32), m in [2^32, 2^33]: the fixed-point core shared with sigmoid and silu."""
    sig = np.where(e == 0, 0, frac | (1 << 23))
    t = (sig * EXP_LOG2E) >> np.maximum(156 - e, 0)
    t = np.where(sign == 1, -t, t)
    huge = e >= EXP_X_HUGE
    n = np.where(huge, np.where(sign == 1, -EXP_HUGE_N, EXP_HUGE_N), t >> 32)
    f = np.where(huge, 0, t & 0xFFFF_FFFF)
    r = f & ((1 << 25) - 1)
    c1, c2, c3 = EXP_POLY
    p = (c3 * r) >> 32
    p = ((c2 + p) * r) >> 32
    p = ((c1 + p) * r) >> 32
    table = _lut(EXP_TABLE, f >> 25)
    return table + ((table * p) >> 32), n


def _recip_core(d):
    """1/d for d in [1, 2] with 32 fraction bits; the result has 32 fraction bits."""
    y = np.where(d >> 33 == 1, 1 << (SEED_FRAC - 1),
                 np.where((d & 0xFFFF_FFFF) == 0, 1 << SEED_FRAC, _lut(RECIP_SEED, (d >> 25) & 0x7F)))
    e0 = (1 << 45) - d * y
    y = (y * e0) >> 24
    delta = ((1 << 64) - d * y) >> 24
    return y + ((y * delta) >> 40)


def _rsqrt_core(e, frac):
    """1/sqrt(D) with 32 fraction bits, for D = 1.frac (times 2 when e is even)."""
    odd = 1 - (e & 1)
    dd = (frac | (1 << 23)) << odd
    y = np.where((odd == 0) & (frac == 0), 1 << SEED_FRAC, _lut(RSQRT_SEED, (odd << 6) | (frac >> 17)))
    h = 3 * (1 << 47) - dd * (y * y)
    y = (y * h) >> 28
    delta = ((1 << 55) - dd * ((y * y) >> 32)) >> 15
    return y + ((y * delta) >> 41)


def _finish(a, s, exp, sign):
    """Round ``a s 2**exp`` to fp32 (RNE, flush-to-zero, overflow to inf).

    ``a`` has 24 bits with the top one set, ``s`` its leading one at bit 29 to
    33; ``exp`` is the biased exponent of the product's leading bit, less that
    bit's index.
    """
    p = a * s
    lead = np.full(np.shape(p), 53, dtype=object)
    for k in (54, 55, 56, 57):
        lead = np.where(p >> k != 0, k, lead)
    sig = p >> (lead - 23)
    guard = (p >> (lead - 24)) & 1
    sticky = np.where((p & ((1 << (lead - 24)) - 1)) != 0, 1, 0)
    rounded = sig + (guard & (sticky | (sig & 1)))
    carry = rounded >> 24
    e = lead + exp + carry
    bits = np.where(e >= 255, INF32, np.where(e <= 0, 0, (np.maximum(e, 0) << 23) | (rounded & _FRAC)))
    return bits | (sign << 31)


def _result(x32, z, special, value):
    z = np.where(special, value, z)
    return np.asarray(z).astype(np.uint32).reshape(np.shape(g.daz32(x32)))


def _is_nan(e, frac):
    return (e == 255) & (frac != 0)


def exp(x32):
    """e**x (PCU tail ``exp``).

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
        Overflow gives +inf, results below 2^-126 flush to +0,
        ``exp(-inf) = +0``, ``exp(+inf) = +inf``, NaN gives canonical NaN.

    Notes
    -----
    t = x log2(e) in fixed point (32 fraction bits), n = floor(t), f = t - n;
    2**f = 2**(j/128) (1 + p(r)) from a table and a cubic; then one rounding.
    """
    x, sign, e, frac = _fields(x32)
    m, n = _exp_core(sign, e, frac)
    z = _finish(1 << 23, m, 72 + n, 0)
    return _result(x32, z, _is_nan(e, frac), CANON_NAN32)


def recip(x32):
    """1 / x (PCU tail ``recip``).

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
        ``recip(+-0) = +-inf`` (subnormals are zeros), ``recip(+-inf) = +-0``,
        results below 2^-126 flush to signed zero, NaN gives canonical NaN.

    Notes
    -----
    With x = +-d 2**(e - 127), d in [1, 2): a seed on the top 7 fraction bits
    (1.0 exactly for d = 1), two fixed-point Newton steps to 32 fraction bits,
    then one rounding with exponent 127 - e.
    """
    x, sign, e, frac = _fields(x32)
    r = _recip_core((frac | (1 << 23)) << 9)
    z = _finish(1 << 23, r, 72 + 127 - e, sign)
    special = (e == 0) | (e == 255)
    value = np.where(_is_nan(e, frac), CANON_NAN32, np.where(e == 0, (sign << 31) | INF32, sign << 31))
    return _result(x32, z, special, value)


def rsqrt(x32):
    """1 / sqrt(x) (PCU tail ``rsqrt``).

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
        ``rsqrt(+0) = +inf``, ``rsqrt(-0) = -inf``, ``rsqrt(+inf) = +0``;
        negative nonzero inputs (-inf included) and NaN give canonical NaN.

    Notes
    -----
    With x = D 2**(2k), D in [1, 4): a seed on the exponent parity and the top
    6 fraction bits (1.0 for D = 1), two fixed-point Newton steps
    ``y (3 - D y^2) / 2``, then one rounding with exponent -k.
    """
    x, sign, e, frac = _fields(x32)
    odd = 1 - (e & 1)
    k = (e - 127 - odd) >> 1
    z = _finish(1 << 23, _rsqrt_core(e, frac), 72 - k, 0)
    special = (e == 0) | (e == 255) | (sign == 1)
    value = np.where(e == 0, (sign << 31) | INF32, np.where((sign == 0) & (frac == 0), 0, CANON_NAN32))
    return _result(x32, z, special, value)


def _logistic(sign, e, frac):
    """sigmoid(x) as s 2**(ns - 32): s = r for x >= 0, u r for x < 0, where u = e**-|x|, r = 1 / (1 + u)."""
    m, n = _exp_core(np.ones_like(sign), e, frac)
    r = _recip_core((1 << 32) + (m >> -n))
    w = (m * r) >> 32
    return np.where(sign == 1, w, r), np.where(sign == 1, n, 0)


def sigmoid(x32):
    """1 / (1 + e**-x) (PCU tail ``sigmoid``).

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
        ``sigmoid(-inf) = +0``, ``sigmoid(+inf) = 1``, NaN gives canonical NaN;
        results below 2^-126 flush to +0.

    Notes
    -----
    u = e**-|x| in (0, 1] from the exp core, d = 1 + u in fixed point,
    r = 1/d from the reciprocal core; sigmoid is r for x >= 0 and u r for x < 0.
    """
    x, sign, e, frac = _fields(x32)
    s, ns = _logistic(sign, e, frac)
    z = _finish(1 << 23, s, 72 + ns, 0)
    return _result(x32, z, _is_nan(e, frac), CANON_NAN32)


def silu(x32):
    """x * sigmoid(x) (PCU tail ``silu``).

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
        ``silu(-inf) = -0`` (the limit), ``silu(+inf) = +inf``, NaN gives
        canonical NaN; results below 2^-126 flush to signed zero.

    Notes
    -----
    The significand of x times the fixed-point sigmoid of :func:`sigmoid`,
    rounded once; e**-|x| keeps its own exponent, so results stay accurate
    down to the normal limit (x ~ -93).
    """
    x, sign, e, frac = _fields(x32)
    s, ns = _logistic(sign, e, frac)
    z = _finish(frac | (1 << 23), s, e - 55 + ns, sign)
    special = _is_nan(e, frac) | (e == 0)
    return _result(x32, z, special, np.where(e == 0, sign << 31, CANON_NAN32))


def bf16(x32):
    """x rounded to the nearest bf16 value, kept as fp32 bits (PCU tail ``bf16``)."""
    return g.bf16_to_fp32(g.fp32_to_bf16(x32))


OPS = {"none": lambda x32: g._as_bits(x32, np.uint32), "exp": exp, "recip": recip, "rsqrt": rsqrt,
       "sigmoid": sigmoid, "silu": silu, "bf16": bf16}


def apply(op_name, x32):
    """The tail function ``op_name`` (a key of ``OPS``, lower-case TailOp name) of ``x32``.

    ``"none"`` passes the bit patterns through unchanged.
    """
    return OPS[op_name](x32)
