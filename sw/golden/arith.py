"""Bit-exact golden model of the OpenRDU arithmetic units.

Every function takes raw bit patterns and returns raw bit patterns, following
``docs/numerics.md``: round to nearest even, denormals-are-zero on inputs,
flush-to-zero on results, one canonical NaN, IEEE 754 infinities and signed
zeros.

Bit patterns are ``np.uint32`` (fp32, int32) or ``np.uint16`` (bf16). Inputs
may be numpy arrays, array-likes or Python ints; they must be integer typed
(passing floats is almost always a mistake, so it raises ``TypeError``) and lie
in the range of the format (``ValueError`` otherwise). Inputs broadcast against
each other like numpy operands and the result has the broadcast shape; a scalar
input gives a 0-d array.

The arithmetic is done with numpy's IEEE float32/float64 operations, which are
correctly rounded to nearest even; each function says why the policy's
"round with an unbounded exponent, then flush" gives the same bits.
"""

import numpy as np

from facts import fp

__all__ = [
    "CANON_NAN32",
    "CANON_NAN16",
    "f32_bits",
    "bits_f32",
    "daz32",
    "ftz32",
    "canon_nan32",
    "bf16_mul",
    "fp32_mul",
    "fp32_add",
    "fma",
    "fp32_to_bf16",
    "bf16_to_fp32",
    "fp32_max",
    "fp32_min",
    "fp32_cmp",
    "int_to_fp32",
    "fp32_to_int",
]

CANON_NAN32 = np.uint32(fp.CANON_NAN32)
CANON_NAN16 = np.uint16(fp.CANON_NAN16)

_SIGN32 = np.uint32(0x80000000)
_EXP32 = np.uint32(0x7F800000)
_FRAC32 = np.uint32(0x007FFFFF)
_SIGN16 = np.uint16(0x8000)
_EXP16 = np.uint16(0x7F80)
_FRAC16 = np.uint16(0x007F)
_MIN_NORMAL = 2.0**-126


def _as_bits(x, dtype, signed_ok=False):
    """Convert ``x`` to an array of bit patterns of ``dtype``.

    Parameters
    ----------
    x : array_like of int
        Bit patterns.
    dtype : {np.uint16, np.uint32}
        Target pattern type.
    signed_ok : bool
        Also accept negative values down to ``-2**(bits-1)``, read as two's
        complement.

    Returns
    -------
    numpy.ndarray
        ``x`` as ``dtype``.
    """
    arr = np.asarray(x)
    if arr.dtype == dtype:
        return arr
    if arr.dtype.kind not in "iu":
        raise TypeError(f"expected integer bit patterns, got dtype {arr.dtype}")
    bits = np.dtype(dtype).itemsize * 8
    lo = -(1 << (bits - 1)) if signed_ok else 0
    if arr.size and (int(arr.min()) < lo or int(arr.max()) >= 1 << bits):
        raise ValueError(f"bit patterns out of range for {bits}-bit values")
    # astype wraps modulo 2**bits, which is two's complement for negatives.
    return arr.astype(dtype)


def f32_bits(x):
    """Bit patterns of float32 values.

    Parameters
    ----------
    x : array_like of float
        Values; anything that is not float32 is first converted to float32
        (which rounds float64 inputs).

    Returns
    -------
    numpy.ndarray of uint32
    """
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def bits_f32(x32):
    """float32 values of fp32 bit patterns (payloads and subnormals kept).

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of float32
    """
    return _as_bits(x32, np.uint32).view(np.float32)


def daz32(x32):
    """Denormals-are-zero: subnormal fp32 patterns become zero of their sign.

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
    """
    x = _as_bits(x32, np.uint32)
    return np.where((x & _EXP32) == 0, x & _SIGN32, x)


def ftz32(x32):
    """Flush-to-zero: subnormal fp32 results become zero of their sign.

    The bit operation is the same as :func:`daz32`; the name records that it
    is applied to a result that was already rounded.

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
    """
    return daz32(x32)


def canon_nan32(x32):
    """Replace every fp32 NaN pattern by the canonical ``0x7FC00000``.

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
    """
    x = _as_bits(x32, np.uint32)
    return np.where(_isnan32(x), CANON_NAN32, x)


def _isnan32(x):
    return ((x & _EXP32) == _EXP32) & ((x & _FRAC32) != 0)


def _daz16(x):
    return np.where((x & _EXP16) == 0, x & _SIGN16, x)


def _isnan16(x):
    return ((x & _EXP16) == _EXP16) & ((x & _FRAC16) != 0)


def _widen(x16):
    """bf16 patterns to fp32 patterns of the same value (zero low half)."""
    return x16.astype(np.uint32) << np.uint32(16)


def bf16_mul(a16, b16):
    """bf16 x bf16 -> fp32 product (unit ``Bf16Mul``).

    Parameters
    ----------
    a16, b16 : array_like of int
        bf16 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
        fp32 bit patterns of the product.

    Notes
    -----
    Two 8-bit significands give at most a 16-bit significand and exponents in
    [-252, 255], so the float64 product is exact and never rounds. Hence
    "round with an unbounded exponent" is the identity: magnitudes below
    2**-126 flush to a zero with the XOR sign (which float64 already holds),
    magnitudes of at least 2**128 become infinity (the float32 cast does
    that, since every such value lies beyond the largest finite float32 plus
    half an ulp), and everything else casts to float32 exactly.
    """
    a = _widen(_daz16(_as_bits(a16, np.uint16))).view(np.float32)
    b = _widen(_daz16(_as_bits(b16, np.uint16))).view(np.float32)
    with np.errstate(all="ignore"):
        p = a.astype(np.float64) * b.astype(np.float64)
        p = np.where(np.abs(p) < _MIN_NORMAL, np.copysign(0.0, p), p)
        r = f32_bits(p.astype(np.float32))
    return canon_nan32(r)


def fp32_mul(a32, b32):
    """fp32 x fp32 -> fp32 product, round to nearest even (unit ``Fp32Mul``).

    Parameters
    ----------
    a32, b32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
        fp32 bit patterns of the rounded product.

    Notes
    -----
    Two 24-bit significands give at most 48 significant bits and the
    exponent stays within [-252, 255], so the float64 product is exact. A
    float32 multiply would round tiny products with gradual underflow
    (fewer significand bits below 2**-126), which is not the policy's
    "round as if unbounded". So products below 2**-64 are first scaled by
    2**128 (exact in float64), which puts every nonzero one at 2**-124 or
    more, where the float32 cast rounds with the full 24 bits; scaling the
    rounded value back is exact in float64, and a magnitude below 2**-126
    then flushes. Larger products cast directly: they are normal, and the
    cast overflows to infinity exactly when RNE passes the largest finite
    value. Products of zero take the XOR sign, which float64 gives.
    """
    with np.errstate(all="ignore"):
        a = daz32(a32).view(np.float32).astype(np.float64)
        b = daz32(b32).view(np.float32).astype(np.float64)
        p = a * b
        scale = np.where(np.abs(p) < 2.0**-64, 2.0**128, 1.0)
        q = (p * scale).astype(np.float32).astype(np.float64) / scale
        q = np.where(np.abs(q) < _MIN_NORMAL, np.copysign(0.0, p), q)
        r = f32_bits(q.astype(np.float32))
    return canon_nan32(r)


def fp32_add(a32, b32, sub=False):
    """fp32 + fp32 -> fp32 (unit ``Fp32Add``), or a - b where ``sub`` is set.

    Parameters
    ----------
    a32, b32 : array_like of int
        fp32 bit patterns.
    sub : bool or array_like of bool
        Where true, negate ``b`` before adding.

    Returns
    -------
    numpy.ndarray of uint32
        fp32 bit patterns of the rounded sum.

    Notes
    -----
    After denormals-are-zero both operands are multiples of 2**-149, so an
    exact sum below 2**-126 in magnitude is a multiple of 2**-149 with fewer
    than 24 significant bits: it is exactly representable as a float32
    subnormal and IEEE addition returns it unrounded. Rounding only happens
    to sums at or above 2**-126, where IEEE's bounded exponent does not
    matter. So IEEE RNE followed by flushing subnormal results gives the
    policy's "round as if unbounded, then flush". IEEE also gives the signed
    zero rules (x + -x = +0, -0 + -0 = -0) and overflow to infinity.
    """
    a = daz32(a32)
    b = daz32(b32)
    neg = np.asarray(sub, dtype=bool)
    # Negating after DAZ is the same as before: DAZ keeps the sign.
    b = np.where(neg, b ^ _SIGN32, b)
    with np.errstate(all="ignore"):
        s = f32_bits(a.view(np.float32) + b.view(np.float32))
    return canon_nan32(ftz32(s))


def fma(a16, b16, c32):
    """bf16 a x bf16 b + fp32 c -> fp32 (unit ``Fma``).

    Defined as ``fp32_add(bf16_mul(a16, b16), c32)``: the exact product is
    rounded once with c while it is in the normal range; a product below
    2**-126 is flushed to zero and one of at least 2**128 is infinity before
    the add.

    Parameters
    ----------
    a16, b16 : array_like of int
        bf16 bit patterns.
    c32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
    """
    return fp32_add(bf16_mul(a16, b16), c32)


def fp32_to_bf16(x32):
    """fp32 -> bf16, round to nearest even (unit ``Fp32ToBf16``).

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint16

    Notes
    -----
    Adding ``0x7FFF`` plus the kept LSB to the pattern and dropping the low
    half rounds the magnitude to nearest even; a carry out of the fraction
    moves to the next binade, and past the largest finite value it lands on
    the infinity pattern. Rounding never shrinks a magnitude, so a normal
    input never needs flushing; subnormal inputs become zero first.
    """
    x = daz32(x32)
    nan = _isnan32(x)
    x = np.where(nan, np.uint32(0), x)
    lsb = (x >> np.uint32(16)) & np.uint32(1)
    r = ((x + np.uint32(0x7FFF) + lsb) >> np.uint32(16)).astype(np.uint16)
    return np.where(nan, CANON_NAN16, r)


def bf16_to_fp32(x16):
    """bf16 -> fp32, exact widening (unit ``Bf16ToFp32``).

    Parameters
    ----------
    x16 : array_like of int
        bf16 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
        Subnormal inputs give zero of their sign and NaN gives ``0x7FC00000``.
    """
    x = _daz16(_as_bits(x16, np.uint16))
    return np.where(_isnan16(x), CANON_NAN32, _widen(x))


def _order_key(x):
    """int64 keys whose order is the fp32 total order with -0 < +0 (no NaN)."""
    mag = (x & ~_SIGN32).astype(np.int64)
    return np.where((x & _SIGN32) != 0, -mag - 1, mag)


def _minmax(a32, b32, want_max):
    a = daz32(a32)
    b = daz32(b32)
    ka = _order_key(a)
    kb = _order_key(b)
    pick_a = ka >= kb if want_max else ka <= kb
    r = np.where(pick_a, a, b)
    return np.where(_isnan32(a) | _isnan32(b), CANON_NAN32, r)


def fp32_max(a32, b32):
    """Larger of two fp32 values (unit ``Fp32Cmp``, ``max``).

    Parameters
    ----------
    a32, b32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
        Canonical NaN if either input is NaN; otherwise the larger operand
        after denormals-are-zero, with -0 < +0.
    """
    return _minmax(a32, b32, want_max=True)


def fp32_min(a32, b32):
    """Smaller of two fp32 values (unit ``Fp32Cmp``, ``min``).

    Parameters
    ----------
    a32, b32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
        Canonical NaN if either input is NaN; otherwise the smaller operand
        after denormals-are-zero, with -0 < +0.
    """
    return _minmax(a32, b32, want_max=False)


def fp32_cmp(a32, b32):
    """IEEE comparison flags of two fp32 values (unit ``Fp32Cmp``).

    Parameters
    ----------
    a32, b32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    dict of str to numpy.ndarray of bool
        ``"lt"``, ``"equal"``, ``"gt"`` (a < b, a == b, a > b) and
        ``"unordered"``. Inputs pass denormals-are-zero first, so subnormals
        equal zero, and -0 == +0. With a NaN operand only ``unordered`` is set.
    """
    a = daz32(a32).view(np.float32)
    b = daz32(b32).view(np.float32)
    with np.errstate(all="ignore"):
        flags = {
            "lt": a < b,
            "equal": a == b,
            "gt": a > b,
            "unordered": np.isnan(a) | np.isnan(b),
        }
    # Comparisons of 0-d arrays give numpy scalars; keep the array contract.
    return {k: np.asarray(v) for k, v in flags.items()}


def int_to_fp32(i32bits):
    """int32 -> fp32, round to nearest even (unit ``IntToFp32``).

    Parameters
    ----------
    i32bits : array_like of int
        Either int32 two's-complement patterns as unsigned values in
        [0, 2**32) or signed values in [-2**31, 2**31); both are accepted.

    Returns
    -------
    numpy.ndarray of uint32

    Notes
    -----
    int32 to float64 is exact, so the float64 -> float32 cast is the single
    RNE rounding. Nonzero results are at least 1, so nothing flushes, and 0
    gives +0.
    """
    i = _as_bits(i32bits, np.uint32, signed_ok=True).view(np.int32)
    return f32_bits(i.astype(np.float64).astype(np.float32))


def fp32_to_int(x32):
    """fp32 -> int32, rounding toward zero (unit ``Fp32ToInt``).

    Parameters
    ----------
    x32 : array_like of int
        fp32 bit patterns.

    Returns
    -------
    numpy.ndarray of uint32
        int32 two's-complement patterns. Values beyond the int32 range and
        infinities saturate to ``0x7FFFFFFF`` / ``0x80000000``; NaN gives 0.
    """
    x = daz32(x32).view(np.float32)
    nan = np.isnan(x)
    v = np.trunc(np.where(nan, np.float32(0), x).astype(np.float64))
    v = np.clip(v, -(2.0**31), 2.0**31 - 1)
    return np.asarray(v.astype(np.int64).astype(np.uint32))
