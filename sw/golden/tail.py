"""Bit-exact golden model of the PCU tail functions: exp, recip, rsqrt, sigmoid, silu.

Each function composes the golden operations of ``sw.golden.arith``
(``fp32_add``, ``fp32_mul``, ``fp32_max``, ``fp32_min``, ``fp32_to_int``)
with integer work on bit patterns (field extraction, table look-up,
:func:`fp32_ldexp`), in exactly the order the datapaths in
``hw/arith/tail.py`` apply them, so RTL and model agree bit for bit by
construction. Algorithms and measured accuracy are in ``docs/numerics.md``.

Inputs and outputs are fp32 bit patterns (``np.uint32``), with the same
input rules as ``sw.golden.arith``.
"""

import numpy as np

from . import arith as g

__all__ = [
    "EXP_COEFFS",
    "RECIP_SEED",
    "RSQRT_SEED",
    "fp32_ldexp",
    "exp",
    "recip",
    "rsqrt",
    "sigmoid",
    "silu",
]

_SIGN = np.uint32(0x8000_0000)
_INF = np.uint32(0x7F80_0000)
_ONE = np.uint32(0x3F80_0000)
_HALF = np.uint32(0x3F00_0000)
_FRAC = np.uint32(0x007F_FFFF)

# exp: inputs are clamped to [-104, 104]. e^-104 < 2^-149 flushes and
# e^104 > 2^150 overflows, so exp itself could clamp tighter, but silu needs
# e^104 * 2^-64; the clamp turns +-inf into ordinary operands and keeps
# n = round(x / ln 2) within 8 bits.
EXP_X_LO = np.uint32(0xC2D0_0000)   # -104.0
EXP_X_HI = np.uint32(0x42D0_0000)   # 104.0
EXP_LOG2E = np.uint32(0x3FB8_AA3B)  # 1 / ln 2
# 1.5 * 2^23: adding it rounds |t| < 2^22 to an integer (RNE), and
# subtracting it again is exact.
EXP_ROUNDER = np.uint32(0x4B40_0000)
# ln 2 split so that n * LN2_HI is exact for |n| < 2^9 (LN2_HI has 15
# significant bits) and LN2_LO = ln 2 - LN2_HI carries the rest.
EXP_LN2_HI = np.uint32(0x3F31_7200)
EXP_LN2_LO = np.uint32(0x35BF_BE8E)
# e^r ~ 1 + r + r^2 (c2 + c3 r + c4 r^2 + c5 r^3 + c6 r^4) on |r| <= 0.35,
# a weighted minimax fit for relative error (2^-27.7 with these fp32 values).
EXP_COEFFS = np.array([0x3EFF_FFFE, 0x3E2A_AA45, 0x3D2A_AC8B, 0x3C09_1FE9, 0x3AB5_0D2F], dtype=np.uint32)

NEWTON_STEPS = 2


def _seed_table(values):
    return np.asarray(values, dtype=np.float64).astype(np.float32).view(np.uint32)


# Seeds minimise the worst relative error over each interval [a, b) of
# the reduced argument: 2 / (a + b) for 1/d, 2 / (sqrt(a) + sqrt(b)) for 1/sqrt(d).
_j = np.arange(128, dtype=np.float64)
RECIP_SEED = _seed_table(2.0 / ((1 + _j / 128) + (1 + (_j + 1) / 128)))
_p, _k = np.divmod(_j, 64)
RSQRT_SEED = _seed_table(2.0 / (np.sqrt(2.0**_p * (1 + _k / 64)) + np.sqrt(2.0**_p * (1 + (_k + 1) / 64))))
del _j, _p, _k


def _bits(x32):
    return g._as_bits(x32, np.uint32)


def fp32_ldexp(x32, k):
    """Scale an fp32 value by 2**k through its exponent field.

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.
    k : array_like of int
        Signed power-of-two exponents.

    Returns
    -------
    numpy.ndarray of uint32
        ``x * 2**k``: exact while it stays normal, signed zero when the
        exponent falls to 0 or below (flush-to-zero) and signed infinity at
        255 or above. Zeros (and subnormals) stay signed zeros, infinities
        stay, NaN gives the canonical NaN.
    """
    x = g.daz32(x32)
    e = ((x >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int64)
    e2 = e + np.asarray(k, dtype=np.int64)
    sign = x & _SIGN
    scaled = (x & ~np.uint32(0x7F80_0000)) | (np.clip(e2, 0, 255).astype(np.uint32) << np.uint32(23))
    r = np.where(e2 <= 0, sign, np.where(e2 >= 255, sign | _INF, scaled))
    r = np.where((e == 0) | (e == 255), x, r)
    return g.canon_nan32(r)


def _mul(a, b):
    return g.fp32_mul(a, b)


def _add(a, b):
    return g.fp32_add(a, b)


def _sub(a, b):
    return g.fp32_add(a, b, sub=True)


def _exp(x, offset):
    """e**x * 2**offset, the offset applied exactly by the final exponent insertion."""
    xc = g.fp32_min(g.fp32_max(x, EXP_X_LO), EXP_X_HI)
    t = _mul(xc, EXP_LOG2E)
    nf = _sub(_add(t, EXP_ROUNDER), EXP_ROUNDER)
    n = g.fp32_to_int(nf).view(np.int32)
    r = _sub(_sub(xc, _mul(nf, EXP_LN2_HI)), _mul(nf, EXP_LN2_LO))
    q = EXP_COEFFS[-1]
    for c in EXP_COEFFS[-2::-1]:
        q = _add(_mul(q, r), c)
    p = _add(_add(_mul(_mul(r, r), q), r), _ONE)
    return fp32_ldexp(p, n.astype(np.int64) + offset)


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
    x = n ln2 + r with n = round(x / ln 2) and r = (x - n LN2_HI) - n LN2_LO
    (the first subtraction is exact by Sterbenz), e**r by the polynomial,
    then 2**n by adding n to the exponent field.
    """
    return _exp(_bits(x32), 0)


def _fields(x):
    return x >> np.uint32(31), ((x >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int64), x & _FRAC


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
    With x = +-d 2**(e - 127), d in [1, 2): a 128-entry seed on the top 7
    fraction bits (1.0 exactly when the fraction is zero, so powers of two
    are exact), two Newton-Raphson steps ``y += y (1 - d y)``, then the sign
    and 2**(127 - e) by exponent insertion.
    """
    x = g.daz32(x32)
    sign, e, frac = _fields(x)
    d = _ONE | frac
    y = np.where(frac == 0, _ONE, RECIP_SEED[frac >> np.uint32(16)])
    for _ in range(NEWTON_STEPS):
        y = _add(y, _mul(y, _sub(_ONE, _mul(d, y))))
    z = fp32_ldexp(y, 127 - e) | (sign << np.uint32(31))
    z = np.where(e == 0, (sign << np.uint32(31)) | _INF, z)
    z = np.where(e == 255, np.where(frac == 0, sign << np.uint32(31), g.CANON_NAN32), z)
    return z.astype(np.uint32)


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
    With x = d 2**(2k'), d in [1, 4) (d = m or 2m by the exponent's parity):
    a 128-entry seed on the parity and the top 6 fraction bits (1.0 for
    d = 1), two Newton-Raphson steps ``y += y (1/2 - (d/2) y^2)`` (the
    subtraction is exact by Sterbenz), then 2**-k' by exponent insertion.
    The result lies in [2^-64, 2^64), so it never overflows or flushes.
    """
    x = g.daz32(x32)
    sign, e, frac = _fields(x)
    odd = (1 - (e & 1)).astype(np.uint32)  # e - 127 is odd when e is even
    dh = ((np.uint32(126) + odd) << np.uint32(23)) | frac
    y = np.where((frac == 0) & (odd == 0), _ONE, RSQRT_SEED[(odd << np.uint32(6)) | (frac >> np.uint32(17))])
    for _ in range(NEWTON_STEPS):
        y = _add(y, _mul(y, _sub(_HALF, _mul(dh, _mul(y, y)))))
    z = fp32_ldexp(y, (odd.astype(np.int64) + 127 - e) >> 1)
    z = np.where(e == 0, (sign << np.uint32(31)) | _INF, z)
    z = np.where((e == 255) & (sign == 0) & (frac == 0), np.uint32(0), z)
    z = np.where(((e == 255) & (frac != 0)) | ((sign == 1) & (e != 0)), g.CANON_NAN32, z)
    return z.astype(np.uint32)


def sigmoid(x32):
    """1 / (1 + e**-x) (PCU tail ``sigmoid``), computed as ``recip(1 + exp(-x))``.

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
        ``sigmoid(-inf) = +0``, ``sigmoid(+inf) = 1``, NaN gives canonical NaN;
        results below 2^-126 flush to +0.
    """
    x = _bits(x32)
    return recip(_add(exp(x ^ _SIGN), _ONE))


# silu of a negative x works on sigmoid(x) * 2^64: sigmoid(x) flushes below
# x = -87.3, where x * sigmoid(x) is still normal down to about x = -93.
SILU_SCALE = 64
SILU_ONE_SCALED = np.uint32(0x1F80_0000)  # 2^-64


def silu(x32):
    """x * sigmoid(x) (PCU tail ``silu``).

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
        ``silu(-inf) = -0`` (the limit; the product would be NaN),
        ``silu(+inf) = +inf``, NaN gives canonical NaN; results below 2^-126
        flush to signed zero.

    Notes
    -----
    For x >= 0 (sign bit clear) this is ``fp32_mul(x, sigmoid(x))``. For a
    negative x every step runs scaled by 2^64 and exactly undone at the end:
    ``ldexp(x * recip(exp(-x) 2^-64 + 2^-64), -64)``, where ``exp``'s final
    exponent insertion applies the 2^-64. Scaling by powers of two commutes
    with each rounding while values stay normal, so this equals the unscaled
    composition wherever that does not flush. Below -104 (the exp clamp,
    -inf included) the result is -0: |x e^x| < 2^-140 there.
    """
    x = _bits(x32)
    neg = (x >> np.uint32(31)).astype(bool)
    k = np.where(neg, SILU_SCALE, 0)
    s = _add(_exp(x ^ _SIGN, -k), np.where(neg, SILU_ONE_SCALED, _ONE))
    z = fp32_ldexp(_mul(x, recip(s)), -k)
    below = (x > EXP_X_LO) & (x <= np.uint32(0xFF80_0000))
    return np.where(below, _SIGN, z).astype(np.uint32)
