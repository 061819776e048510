"""Tests of the golden arithmetic model against references outside it.

References: numpy's IEEE float32/float64 arithmetic and casts where inputs and
results are normal numbers, torch's float32 -> bfloat16 conversion, exact
rational arithmetic (``fractions.Fraction``) rounded by a small independent
RNE routine, and hand-computed directed cases from ``docs/numerics.md``.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sw.golden import arith as g

SETTINGS = settings(max_examples=400, deadline=None)
N_RANDOM = 1_000_000

SIGN = 0x80000000
NAN = 0x7FC00000
INF = 0x7F800000
NINF = 0xFF800000
PZERO = 0x00000000
NZERO = 0x80000000
ONE = 0x3F800000
MAXF = 0x7F7FFFFF
MINN = 0x00800000


def u32(x):
    return np.asarray(x, dtype=np.uint64).astype(np.uint32)


def u16(x):
    return np.asarray(x, dtype=np.uint64).astype(np.uint16)


def as_f32(bits):
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def as_bits(f):
    return np.asarray(f, dtype=np.float32).view(np.uint32)


def normal32(bits):
    e = (np.asarray(bits, dtype=np.uint32) >> 23) & 0xFF
    return (e != 0) & (e != 0xFF)


def subnormal32(bits):
    bits = np.asarray(bits, dtype=np.uint32)
    return ((bits >> 23) & 0xFF == 0) & (bits & 0x7FFFFF != 0)


def rand_u32(rng, n):
    return rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)


def rand_fp(rng, n, exp_lo, exp_hi, frac_bits=23):
    """Random floats with exponent fields in [exp_lo, exp_hi]."""
    sign = rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(8 + frac_bits)
    exp = rng.integers(exp_lo, exp_hi + 1, n, dtype=np.uint64) << np.uint64(frac_bits)
    frac = rng.integers(0, 1 << frac_bits, n, dtype=np.uint64)
    return (sign | exp | frac).astype(np.uint32 if frac_bits == 23 else np.uint16)


def near(rng, a, gap):
    """Normal fp32 values within ``gap`` binades of ``a``, often sharing its top fraction bits."""
    exp = ((a >> 23) & 0xFF).astype(np.int64) + rng.integers(-gap, gap + 1, a.size)
    exp = np.clip(exp, 1, 254).astype(np.uint32)
    keep = rng.integers(0, 24, a.size).astype(np.uint32)
    mask = (np.uint32(1) << keep) - np.uint32(1)
    frac = (a & np.uint32(0x7FFFFF) & ~mask) | (rand_u32(rng, a.size) & mask)
    sign = rng.integers(0, 2, a.size).astype(np.uint32) << np.uint32(31)
    return sign | (exp << np.uint32(23)) | frac


# Independent exact reference: decode bits to Fractions, round Fractions RNE.


def frac_of32(b):
    """Exact value of an fp32 pattern, subnormals read as zero (None for inf/NaN)."""
    b = int(b)
    sign = -1 if b >> 31 else 1
    e, f = (b >> 23) & 0xFF, b & 0x7FFFFF
    if e == 0xFF:
        return None
    if e == 0:
        return Fraction(0)
    return sign * Fraction((1 << 23) | f) * Fraction(2) ** (e - 150)


def frac_of16(b):
    return frac_of32(int(b) << 16)


def rne(v, p, neg_zero=False):
    """Round Fraction ``v`` to a float with ``p`` significand bits and fp32's
    exponent range, per the policy: RNE as if the exponent were unbounded,
    then flush below 2^-126 and saturate to inf at or above 2^128.
    Returns the bit pattern (32 bits for p=24, 16 bits for p=8)."""
    width = 9 + (p - 1)
    if v == 0:
        return (1 << (width - 1)) if neg_zero else 0
    sign = 1 if v < 0 else 0
    m = abs(v)
    e = m.numerator.bit_length() - m.denominator.bit_length()
    if Fraction(2) ** e > m:
        e -= 1
    s = m / Fraction(2) ** (e - (p - 1))  # in [2^(p-1), 2^p)
    q, r = divmod(s.numerator, s.denominator)
    if 2 * r > s.denominator or (2 * r == s.denominator and q & 1):
        q += 1
    if q == 1 << p:
        q >>= 1
        e += 1
    top = sign << (width - 1)
    if e < -126:
        return top
    if e > 127:
        return top | (0xFF << (p - 1))
    return top | ((e + 127) << (p - 1)) | (q - (1 << (p - 1)))


def is_nan32(b):
    b = int(b)
    return (b >> 23) & 0xFF == 0xFF and b & 0x7FFFFF


def is_nan16(b):
    return is_nan32(int(b) << 16)


def test_rne_reference_self_check():
    # Guard the test oracle itself with known float32 values.
    assert rne(Fraction(1), 24) == ONE
    assert rne(Fraction(-3, 2), 24) == 0xBFC00000
    assert rne(Fraction(1) + Fraction(1, 2**24), 24) == ONE
    assert rne(Fraction(1) + Fraction(3, 2**24), 24) == 0x3F800002
    assert rne(Fraction(2) ** 128, 24) == INF
    assert rne(Fraction(2) ** -127, 24, neg_zero=False) == PZERO
    assert rne(-Fraction(2) ** -127, 24) == NZERO
    assert rne(Fraction(2) ** -126 * (1 - Fraction(1, 2**25)), 24) == MINN
    assert rne(Fraction(1) + Fraction(1, 256), 8) == 0x3F80
    assert rne(Fraction(1) + Fraction(3, 256), 8) == 0x3F82
    for x in [1.0, -2.5, 3.1415927, 1e-30, 6.5e37]:
        assert rne(Fraction(x), 24) == int(as_bits(np.float32(x)))


# ---------------------------------------------------------------- API contract


def test_api_shapes_and_dtypes():
    for fn, args, dtype in [
        (g.bf16_mul, (0x3F80, 0x4000), np.uint32),
        (g.fp32_add, (ONE, ONE), np.uint32),
        (g.fma, (0x3F80, 0x4000, ONE), np.uint32),
        (g.fp32_to_bf16, (ONE,), np.uint16),
        (g.bf16_to_fp32, (0x3F80,), np.uint32),
        (g.fp32_max, (ONE, ONE), np.uint32),
        (g.fp32_min, (ONE, ONE), np.uint32),
        (g.int_to_fp32, (7,), np.uint32),
        (g.fp32_to_int, (ONE,), np.uint32),
        (g.daz32, (1,), np.uint32),
        (g.ftz32, (1,), np.uint32),
        (g.canon_nan32, (0x7F800001,), np.uint32),
    ]:
        r = fn(*args)
        assert isinstance(r, np.ndarray) and r.dtype == dtype and r.shape == ()
        r = fn(*[np.full((3, 2), a) for a in args])
        assert r.dtype == dtype and r.shape == (3, 2)
    flags = g.fp32_cmp(ONE, 0x40000000)
    assert set(flags) == {"lt", "equal", "gt", "unordered"}
    for v in flags.values():
        assert isinstance(v, np.ndarray) and v.dtype == bool and v.shape == ()
    flags = g.fp32_cmp(np.full(4, ONE, dtype=np.uint32), ONE)
    assert all(v.shape == (4,) for v in flags.values())


def test_api_broadcast_and_sub_array():
    a = u32([ONE, ONE, 0x40000000])
    r = g.fp32_add(a, ONE, sub=np.array([False, True, True]))
    assert r.tolist() == [0x40000000, PZERO, ONE]
    assert g.fp32_add(ONE, ONE, sub=True) == PZERO
    assert g.fp32_add(ONE, ONE, sub=np.bool_(False)) == 0x40000000


def test_api_rejects_floats_and_out_of_range():
    with pytest.raises(TypeError):
        g.fp32_add(np.float32(1.0), ONE)
    with pytest.raises(TypeError):
        g.bf16_to_fp32([1.0])
    with pytest.raises(ValueError):
        g.bf16_to_fp32(0x10000)
    with pytest.raises(ValueError):
        g.fp32_max(-1, 0)
    with pytest.raises(ValueError):
        g.int_to_fp32(1 << 32)
    with pytest.raises(ValueError):
        g.int_to_fp32(-(1 << 31) - 1)


def test_helpers():
    assert g.daz32(0x00000001) == PZERO
    assert g.daz32(0x807FFFFF) == NZERO
    assert g.daz32(MINN) == MINN
    assert g.daz32(0xFFFFFFFF) == 0xFFFFFFFF
    assert g.ftz32(0x80400000) == NZERO
    assert g.canon_nan32(0xFFFFFFFF) == NAN
    assert g.canon_nan32(0x7F800001) == NAN
    assert g.canon_nan32(INF) == INF
    assert g.canon_nan32(0x00000001) == 0x00000001
    x = np.array([1.5, -0.0, np.inf, 1e-40], dtype=np.float32)
    assert g.f32_bits(x).tolist() == [0x3FC00000, NZERO, INF, int(x[3:].view(np.uint32)[0])]
    assert np.array_equal(g.bits_f32(g.f32_bits(x)), x)
    assert g.f32_bits(np.float32(1.0)).shape == ()


# ------------------------------------------------------- numpy, vectorised (a, e)


def _add_stimulus(rng, n):
    a = np.concatenate([
        rand_u32(rng, n // 4),
        rand_fp(rng, n // 4, 1, 254),
        rand_fp(rng, n // 4, 1, 254),
        rand_fp(rng, n - 3 * (n // 4), 1, 8),
    ])
    b = np.concatenate([
        rand_u32(rng, n // 4),
        near(rng, a[n // 4: n // 2], 2),
        near(rng, a[n // 2: 3 * (n // 4)], 30),
        near(rng, a[3 * (n // 4):], 2),
    ])
    return a, b


@pytest.mark.parametrize("sub", [False, True, "mixed"])
def test_add_vs_numpy_normals(sub):
    rng = np.random.default_rng(1)
    a, b = _add_stimulus(rng, N_RANDOM)
    s = rng.integers(0, 2, a.size).astype(bool) if sub == "mixed" else sub
    got = g.fp32_add(a, b, sub=s)
    with np.errstate(all="ignore"):
        ref = as_bits(np.where(s, as_f32(a) - as_f32(b), as_f32(a) + as_f32(b)))
    ok = normal32(a) & normal32(b)
    assert ok.mean() > 0.9
    flushed = ok & subnormal32(ref)
    assert flushed.sum() > 100  # the tiny part must reach the underflow path
    plain = ok & ~flushed
    np.testing.assert_array_equal(got[plain], ref[plain])
    np.testing.assert_array_equal(got[flushed], ref[flushed] & np.uint32(SIGN))


def test_bf16_mul_vs_numpy():
    rng = np.random.default_rng(2)
    n = N_RANDOM
    a = np.concatenate([rng.integers(0, 1 << 16, n // 2).astype(np.uint16), rand_fp(rng, n // 2, 64, 190, 7)])
    b = np.concatenate([rng.integers(0, 1 << 16, n // 2).astype(np.uint16), rand_fp(rng, n // 2, 64, 190, 7)])
    got = g.bf16_mul(a, b)
    fa = (a.astype(np.uint32) << 16).view(np.float32)
    fb = (b.astype(np.uint32) << 16).view(np.float32)
    with np.errstate(all="ignore"):
        ref = as_bits(fa * fb)
    ok = normal32(a.astype(np.uint32) << 16) & normal32(b.astype(np.uint32) << 16)
    exact = ok & normal32(ref)
    # A normal product of two bf16 values fits float32 exactly.
    np.testing.assert_array_equal(as_f32(ref[exact]).astype(np.float64),
                                  fa[exact].astype(np.float64) * fb[exact].astype(np.float64))
    np.testing.assert_array_equal(got[exact], ref[exact])
    inf = ok & (ref & np.uint32(0x7FFFFFFF) == INF)
    np.testing.assert_array_equal(got[inf], ref[inf])
    tiny = ok & ((ref >> 23) & np.uint32(0xFF) == 0)
    assert tiny.sum() > 1000 and inf.sum() > 1000
    np.testing.assert_array_equal(got[tiny], ref[tiny] & np.uint32(SIGN))


def test_fma_vs_float64():
    rng = np.random.default_rng(3)
    n = N_RANDOM
    a = rand_fp(rng, n, 90, 164, 7)
    b = rand_fp(rng, n, 90, 164, 7)
    p = (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64) * \
        (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    p_bits = as_bits(p.astype(np.float32))
    c = np.concatenate([near(rng, p_bits[: n // 2], 1) ^ np.uint32(SIGN), near(rng, p_bits[n // 2:], 30)])
    got = g.fma(a, b, c)
    # p and c are both float32 values, and float64 has more than 2*24+2 bits, so
    # rounding the float64 sum to float32 is a single correct RNE rounding.
    ref = as_bits((p + as_f32(c).astype(np.float64)).astype(np.float32))
    ok = normal32(p_bits) & normal32(c) & (normal32(ref) | (ref & np.uint32(0x7FFFFFFF) == 0))
    assert ok.mean() > 0.9
    np.testing.assert_array_equal(got[ok], ref[ok])


def test_int_to_fp32_vs_numpy():
    rng = np.random.default_rng(4)
    i = np.concatenate([
        rand_u32(rng, N_RANDOM).view(np.int32),
        rng.integers(-(1 << 26), 1 << 26, 100_000).astype(np.int32),
        ((1 << rng.integers(0, 31, 100_000)) + rng.integers(-300, 300, 100_000)).astype(np.int32),
    ])
    ref = as_bits(i.astype(np.float32))
    np.testing.assert_array_equal(g.int_to_fp32(i.view(np.uint32)), ref)
    np.testing.assert_array_equal(g.int_to_fp32(i), ref)  # signed input accepted too


def test_fp32_to_int_vs_numpy():
    rng = np.random.default_rng(5)
    x = np.concatenate([rand_u32(rng, N_RANDOM), rand_fp(rng, N_RANDOM, 100, 158)])
    f = as_f32(x)
    with np.errstate(all="ignore"):
        in_range = normal32(x) & (np.abs(f.astype(np.float64)) < 2.0**31)
    ref = f[in_range].astype(np.int32).view(np.uint32)
    np.testing.assert_array_equal(g.fp32_to_int(x)[in_range], ref)


def test_cmp_max_min_vs_numpy():
    rng = np.random.default_rng(6)
    a = np.concatenate([rand_u32(rng, N_RANDOM), rand_fp(rng, 100_000, 120, 130)])
    b = np.concatenate([rand_u32(rng, N_RANDOM), rand_fp(rng, 100_000, 120, 130)])
    b[-50_000:] = a[-50_000:]  # equal pairs
    b[-100_000:-50_000] = a[-100_000:-50_000] ^ np.uint32(SIGN)
    fa, fb = as_f32(a), as_f32(b)
    finite_or_inf = lambda x: (x >> 23) & np.uint32(0xFF) != 0  # noqa: E731
    ok = finite_or_inf(a) & finite_or_inf(b) & ~np.isnan(fa) & ~np.isnan(fb)
    flags = g.fp32_cmp(a, b)
    for key, ref in [("lt", fa < fb), ("equal", fa == fb), ("gt", fa > fb)]:
        np.testing.assert_array_equal(flags[key][ok], ref[ok])
    assert not flags["unordered"][ok].any()
    np.testing.assert_array_equal(g.fp32_max(a, b)[ok], as_bits(np.maximum(fa, fb))[ok])
    np.testing.assert_array_equal(g.fp32_min(a, b)[ok], as_bits(np.minimum(fa, fb))[ok])
    nan = np.isnan(fa) | np.isnan(fb)
    assert nan.sum() > 1000
    assert flags["unordered"][nan].all()
    assert not (flags["lt"] | flags["equal"] | flags["gt"])[nan].any()
    assert (g.fp32_max(a, b)[nan] == NAN).all() and (g.fp32_min(a, b)[nan] == NAN).all()


# ----------------------------------------------------------------- torch (b)


def torch_bf16(x32):
    t = torch.from_numpy(np.ascontiguousarray(as_f32(x32))).to(torch.bfloat16)
    return t.view(torch.int16).numpy().view(np.uint16)


def test_fp32_to_bf16_vs_torch():
    rng = np.random.default_rng(7)
    # Every bf16 upper half with the rounding-critical low halves, plus random patterns.
    hi = np.arange(1 << 16, dtype=np.uint32) << np.uint32(16)
    lows = np.array([0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF], dtype=np.uint32)
    x = np.concatenate([(hi[:, None] | lows[None, :]).ravel(), rand_u32(rng, N_RANDOM)])
    got = g.fp32_to_bf16(x)
    ref = torch_bf16(x)
    e = (x >> 23) & np.uint32(0xFF)
    nan = (e == 0xFF) & (x & np.uint32(0x7FFFFF) != 0)
    ok = (e != 0) & ~nan  # normals and infinities
    np.testing.assert_array_equal(got[ok], ref[ok])
    assert (got[nan] == 0x7FC0).all()
    ref_nan = ((ref[nan] & 0x7F80) == 0x7F80) & ((ref[nan] & 0x7F) != 0)
    assert ref_nan.all()
    sub = (e == 0)
    np.testing.assert_array_equal(got[sub], ((x[sub] >> np.uint32(16)) & np.uint32(0x8000)).astype(np.uint16))


def test_bf16_to_fp32_exhaustive_vs_torch():
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    got = g.bf16_to_fp32(x)
    ref = as_bits(torch.from_numpy(x.view(np.int16)).view(torch.bfloat16).to(torch.float32).numpy())
    e = (x >> 7) & 0xFF
    nan = (e == 0xFF) & (x & 0x7F != 0)
    ok = (e != 0) & ~nan
    np.testing.assert_array_equal(got[ok], ref[ok])
    assert (got[nan] == NAN).all() and np.isnan(as_f32(ref[nan])).all()
    sub = e == 0
    np.testing.assert_array_equal(got[sub], ref[sub] & np.uint32(SIGN))
    assert nan.sum() == 2 * 127 and sub.sum() == 2 * 128


def test_roundtrip_all_bf16_through_fp32():
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    back = g.fp32_to_bf16(g.bf16_to_fp32(x))
    e = (x >> 7) & 0xFF
    nan = (e == 0xFF) & (x & 0x7F != 0)
    np.testing.assert_array_equal(back[e != 0][~nan[e != 0]], x[(e != 0) & ~nan])
    assert (back[nan] == 0x7FC0).all()


# --------------------------------------------------------- directed cases (c)


def check(fn, cases, *extra):
    """Run ``fn`` on one vector of all cases and compare to the expected column."""
    cols = list(zip(*cases))
    *args, want = cols
    got = fn(*[np.array(c, dtype=np.uint64).astype(np.uint32 if fn_is32(fn, i) else np.uint16)
               for i, c in enumerate(args)], *extra)
    got = np.asarray(got).tolist()
    bad = [(tuple(hex(v) for v in case[:-1]), hex(w), hex(r)) for case, w, r in zip(cases, want, got) if w != r]
    assert not bad, f"{fn.__name__}: (inputs, want, got): {bad}"


_ARG32 = {
    "bf16_mul": (False, False), "fma": (False, False, True), "fp32_to_bf16": (True,),
    "bf16_to_fp32": (False,),
}


def fn_is32(fn, i):
    return _ARG32.get(fn.__name__, (True, True, True))[i]


ADD_CASES = [
    # ties to even and sticky bits
    (ONE, 0x33800000, ONE),                  # 1 + 2^-24: tie, stays at even 1
    (0x3F800001, 0x33800000, 0x3F800002),    # odd + half ulp: up to even
    (ONE, 0x33800001, 0x3F800001),           # just above the tie
    (ONE, 0x337FFFFF, ONE),                  # just below the tie
    (ONE, 0x0D800000, ONE),                  # 1 + 2^-100: far below
    (ONE, 0x8D800000, ONE),                  # 1 - 2^-100: rounds back to 1
    (0x4B800000, ONE, 0x4B800000),           # 2^24 + 1: tie to even
    (0x4B800000, 0x40400000, 0x4B800002),    # 2^24 + 3: tie, up to even
    # carry out of rounding into the next binade
    (0x3F7FFFFF, 0x33000000, ONE),           # (1 - 2^-24) + 2^-25: tie, odd -> 1.0
    (0x3FFFFFFF, 0x34000000, 0x40000000),    # carry into exponent
    # overflow
    (MAXF, 0x73000000, INF),                 # max + half ulp: tie, odd -> inf
    (MAXF, 0x72FFFFFF, MAXF),                # just below half ulp
    (MAXF, MAXF, INF),
    (0xFF7FFFFF, 0xFF7FFFFF, NINF),
    (0x7F000000, 0x7F000000, INF),           # 2^127 + 2^127
    (0x7F000000, 0x7E800000, 0x7F400000),
    # catastrophic cancellation
    (0x3F800001, 0xBF800000, 0x34000000),    # -> 2^-23
    (ONE, 0xBF7FFFFF, 0x33800000),           # -> 2^-24
    (0x7F7FFFFF, 0xFF7FFFFE, 0x73800000),    # at the top of the range
    # underflow: exact subnormal differences are flushed to signed zero
    (0x00800001, 0x80800000, PZERO),
    (0x80800001, 0x00800000, NZERO),
    (0x01000000, 0x80800001, PZERO),         # 2^-125 - (2^-126 + 2^-149)
    (0x81000000, 0x00800001, NZERO),
    (0x01000000, 0x80800000, MINN),          # exactly the smallest normal: kept
    (MINN, MINN, 0x01000000),
    # subnormal inputs are read as zero
    (0x00400000, 0x00400000, PZERO),         # IEEE would give 0x00800000
    (0x80400000, 0x80400000, NZERO),
    (0x00400000, 0x80000000, PZERO),
    (0x80400000, 0x80000000, NZERO),
    (0x80000001, 0x00000001, PZERO),
    (MINN, 0x00400000, MINN),                # IEEE would give 0x00C00000
    (0x80800000, 0x807FFFFF, 0x80800000),
    (ONE, 0x00000001, ONE),
    # NaN in any operand -> canonical NaN
    (0x7F800001, ONE, NAN),
    (ONE, 0xFFFFFFFF, NAN),
    (0xFFC00000, 0x00000000, NAN),
    (0x7FC00000, INF, NAN),
    (NINF, 0x7FBFFFFF, NAN),
    (0x7FC00001, 0x7FC00001, NAN),
    # infinities
    (INF, NINF, NAN),
    (NINF, INF, NAN),
    (INF, ONE, INF),
    (NINF, MAXF, NINF),
    (INF, INF, INF),
    (NINF, NINF, NINF),
    (INF, 0x00000001, INF),
    # signed zeros
    (ONE, 0xBF800000, PZERO),
    (0xBF800000, ONE, PZERO),
    (NZERO, NZERO, NZERO),
    (PZERO, NZERO, PZERO),
    (NZERO, PZERO, PZERO),
    (PZERO, PZERO, PZERO),
    (0x80000000, 0x3F800000, ONE),
]

SUB_CASES = [
    (ONE, ONE, PZERO),                       # x - x = +0
    (0xBF800000, 0xBF800000, PZERO),
    (NZERO, PZERO, NZERO),                   # -0 - +0 = -0
    (NZERO, NZERO, PZERO),
    (PZERO, PZERO, PZERO),
    (PZERO, NZERO, PZERO),
    (INF, INF, NAN),                         # inf - inf
    (INF, NINF, INF),
    (ONE, 0x7FC00000, NAN),                  # sign of a negated NaN is irrelevant
    (ONE, 0xFFC00000, NAN),
    (0x3F800001, ONE, 0x34000000),
    (0x00800001, MINN, PZERO),
    (MINN, 0x00800001, NZERO),
    (MAXF, 0xF3000000, INF),                 # max - (-half ulp)
    (0x40000000, 0x33800000, 0x40000000),    # 2 - 2^-24: tie between 2 - 2^-23 (odd) and 2 (even)
    (0x40000000, 0x34000000, 0x3FFFFFFF),    # 2 - 2^-23: exact in [1, 2)
    (0x40000000, 0x33C00000, 0x3FFFFFFF),    # 2 - 1.5*2^-24: nearest is 2 - 2^-23
    (ONE, 0x33000000, ONE),                  # 1 - 2^-25: tie between 1-2^-24 (odd) and 1 (even)
    (ONE, 0x33000001, 0x3F7FFFFF),
]


def test_fp32_add_directed():
    check(g.fp32_add, ADD_CASES)
    check(g.fp32_add, [(b, a, r) for a, b, r in ADD_CASES])  # commuted


def test_fp32_sub_directed():
    check(g.fp32_add, SUB_CASES, True)


def test_directed_cases_agree_with_exact_reference():
    # The hand-written expectations are checked against the Fraction oracle too.
    for cases, sub in [(ADD_CASES, False), (SUB_CASES, True)]:
        for a, b, want in cases:
            fa, fb = frac_of32(a), frac_of32(b)
            if fa is None or fb is None:
                continue
            v = fa - fb if sub else fa + fb
            if v == 0:
                continue
            assert rne(v, 24) == want, (hex(a), hex(b))


MUL_CASES = [
    (0x3F80, 0x3F80, ONE),
    (0x3FFF, 0x3FFF, 0x407E0100),            # (255/128)^2 exactly
    (0x3F81, 0x3F81, 0x3F820200),            # (1 + 2^-7)^2 = 1 + 2^-6 + 2^-14
    (0xBF81, 0x3F81, 0xBF820200),
    (0x7F7F, 0x3F80, 0x7F7F0000),
    (0x7F7F, 0x3F00, 0x7EFF0000),
    # overflow: |p| >= 2^128 -> inf
    (0x7F00, 0x4000, INF),                   # exactly 2^128
    (0xFF00, 0x4000, NINF),
    (0x7F7F, 0x7F7F, INF),
    (0x7F7F, 0x3FFF, INF),                   # 2^127 * 1.99.. * 1.99.. > 2^128
    (0x7F00, 0x3FFF, 0x7F7F0000),            # 2^127 * (2 - 2^-7): largest finite product
    # underflow: |p| < 2^-126 -> signed zero
    (0x0080, 0x3F00, PZERO),                 # 2^-127
    (0x8080, 0x3F00, NZERO),
    (0x0080, 0xBF00, NZERO),
    (0x0080, 0x3F80, MINN),                  # exactly 2^-126: kept
    (0x2000, 0x2000, MINN),                  # 2^-63 * 2^-63
    (0x1FFF, 0x2000, PZERO),                 # just below 2^-126
    (0x1FFF, 0x2001, 0x00807F00),            # 2^-126 * (1 + 2^-8 - 2^-15): just above, exact
    (0x1F80, 0x2080, MINN),
    (0x0080, 0x0080, PZERO),                 # 2^-252, far below
    # subnormal inputs are zero
    (0x0040, 0x7F00, PZERO),                 # IEEE would give 1.0
    (0x8001, 0x3F80, NZERO),
    (0x807F, 0xBF80, PZERO),
    # zero times inf
    (0x0000, 0x7F80, NAN),
    (0x8000, 0xFF80, NAN),
    (0x0001, 0x7F80, NAN),                   # subnormal is zero, so NaN
    (0x7F80, 0xC000, NINF),
    (0x7F80, 0x7F80, INF),
    (0xFF80, 0xFF80, INF),
    (0x7F80, 0x0080, INF),                   # inf * tiny normal
    # NaN
    (0x7F81, 0x0000, NAN),
    (0xFFC0, 0x3F80, NAN),
    (0x3F80, 0xFFFF, NAN),
    (0x7FC0, 0x7F80, NAN),
    # signed zeros
    (0x8000, 0x40A0, NZERO),
    (0x8000, 0xBF80, PZERO),
    (0x0000, 0xBF80, NZERO),
    (0x0000, 0x0000, PZERO),
    (0x8000, 0x8000, PZERO),
]


def test_bf16_mul_directed():
    check(g.bf16_mul, MUL_CASES)
    check(g.bf16_mul, [(b, a, r) for a, b, r in MUL_CASES])


FMA_CASES = [
    (0x3F80, 0x3F80, 0xBF800000, PZERO),      # 1*1 - 1 = +0
    (0xBF80, 0x3F80, ONE, PZERO),
    (0x8000, 0x3F80, NZERO, NZERO),           # -0 + -0
    (0x0000, 0x3F80, NZERO, PZERO),
    (0x3F80, 0x3F80, 0x33800000, ONE),        # 1 + 2^-24: tie to even
    (0x3F80, 0x3F80, 0x33800001, 0x3F800001),
    (0x3F81, 0x3F81, 0xBF820200, PZERO),      # exact cancellation of the product
    (0x3F81, 0x3F81, 0xBF820000, 0x38800000),  # leaves 2^-14
    (0x3F81, 0x3F81, 0x33800000, 0x3F820200),  # tie, even stays
    (0x4000, 0x3F80, 0xC0000000, PZERO),
    (0x3FC0, 0x3FC0, 0xC0100000, PZERO),      # 1.5*1.5 - 2.25
    # a product that overflows is inf before the add
    (0x7F00, 0x4000, 0xFF7FFFFF, INF),        # exact result would be 2^104
    (0x7F00, 0x4000, NINF, NAN),              # inf - inf
    (0x7F7F, 0x3F80, 0x7F7FFFFF, INF),        # sum overflows
    # a product that underflows is zero before the add
    (0x0080, 0x3F00, MINN, MINN),             # exact result would be 1.5 * 2^-126
    (0x0080, 0x3F00, NZERO, PZERO),           # +0 + -0
    (0x8080, 0x3F00, NZERO, NZERO),
    # sum underflows
    (0x0080, 0x3F80, 0x80800001, NZERO),
    (0x0100, 0x3F80, 0x80800001, PZERO),
    # subnormal inputs
    (0x0040, 0x7F00, ONE, ONE),
    (0x3F80, 0x3F80, 0x00000001, ONE),
    (0x0000, 0x0000, 0x00400000, PZERO),
    # special values
    (0x0000, 0x7F80, ONE, NAN),               # 0 * inf
    (0x3F80, 0x3F80, 0x7F800001, NAN),
    (0x7FC0, 0x3F80, ONE, NAN),
    (0x7F80, 0x3F80, 0xFF800000, NAN),
    (0x7F80, 0x3F80, MAXF, INF),
    (0x3F80, 0x3F80, NINF, NINF),
]


def test_fma_directed():
    check(g.fma, FMA_CASES)
    check(g.fma, [(b, a, c, r) for a, b, c, r in FMA_CASES])


F2BF_CASES = [
    (0x3F808000, 0x3F80),                    # tie, even stays
    (0x3F818000, 0x3F82),                    # tie, odd rounds up
    (0x3F808001, 0x3F81),
    (0x3F807FFF, 0x3F80),
    (0xBF818000, 0xBF82),
    (0x3F7FFFFF, 0x3F80),                    # carry into the next binade
    (0x3FFF8000, 0x4000),
    (0x3FFF7FFF, 0x3FFF),
    # overflow
    (MAXF, 0x7F80),
    (0x7F7F8000, 0x7F80),                    # tie on the odd max bf16
    (0x7F7F7FFF, 0x7F7F),
    (0x7F7F0000, 0x7F7F),
    (0xFF7FFFFF, 0xFF80),
    (0x7F800000, 0x7F80),
    (0xFF800000, 0xFF80),
    # NaN: plain truncation of these would give inf or a payload
    (0x7F800001, 0x7FC0),
    (0x7F807FFF, 0x7FC0),
    (0xFFFFFFFF, 0x7FC0),
    (0x7FFFFFFF, 0x7FC0),
    (0xFFC00000, 0x7FC0),
    # subnormals read as zero (IEEE would round 0x007FFFFF up to 0x0080)
    (0x007FFFFF, 0x0000),
    (0x807FFFFF, 0x8000),
    (0x00000001, 0x0000),
    (0x00008000, 0x0000),
    # smallest normals
    (MINN, 0x0080),
    (0x00808000, 0x0080),
    (0x00818000, 0x0082),
    (0x00FFFFFF, 0x0100),
    (PZERO, 0x0000),
    (NZERO, 0x8000),
]


def test_fp32_to_bf16_directed():
    check(g.fp32_to_bf16, F2BF_CASES)


BF2F_CASES = [
    (0x3F80, ONE), (0xBF80, 0xBF800000), (0x7F7F, 0x7F7F0000), (0x0080, MINN),
    (0x0001, PZERO), (0x007F, PZERO), (0x807F, NZERO), (0x8000, NZERO), (0x0000, PZERO),
    (0x7F80, INF), (0xFF80, NINF), (0x7F81, NAN), (0xFFFF, NAN), (0x7FC0, NAN), (0xFFC0, NAN),
]


def test_bf16_to_fp32_directed():
    check(g.bf16_to_fp32, BF2F_CASES)


MAX_MIN_CASES = [
    # (a, b, max, min)
    (NZERO, PZERO, PZERO, NZERO),
    (ONE, 0x40000000, 0x40000000, ONE),
    (0xBF800000, 0xC0000000, 0xBF800000, 0xC0000000),
    (0xBF800000, ONE, ONE, 0xBF800000),
    (INF, MAXF, INF, MAXF),
    (NINF, 0xFF7FFFFF, 0xFF7FFFFF, NINF),
    (NINF, INF, INF, NINF),
    (ONE, ONE, ONE, ONE),
    (0x3F800001, ONE, 0x3F800001, ONE),
    # subnormals come out as zeros of their sign
    (0x00000001, NZERO, PZERO, NZERO),
    (0x00000001, PZERO, PZERO, PZERO),
    (0x80000001, PZERO, PZERO, NZERO),
    (0x80000001, 0x00000001, PZERO, NZERO),
    (0x00400000, MINN, MINN, PZERO),
    (0x00400000, 0x80800000, PZERO, 0x80800000),
    (0x80400000, 0x80800000, NZERO, 0x80800000),
    (0x807FFFFF, 0x807FFFFF, NZERO, NZERO),
    # NaN wins over everything
    (0x7FC00000, ONE, NAN, NAN),
    (0x7F800001, NINF, NAN, NAN),
    (0xFFFFFFFF, INF, NAN, NAN),
    (0xFFC00000, 0x7FC00001, NAN, NAN),
    (0x7FBFFFFF, PZERO, NAN, NAN),
]


def test_max_min_directed():
    check(g.fp32_max, [(a, b, mx) for a, b, mx, _ in MAX_MIN_CASES])
    check(g.fp32_max, [(b, a, mx) for a, b, mx, _ in MAX_MIN_CASES])
    check(g.fp32_min, [(a, b, mn) for a, b, _, mn in MAX_MIN_CASES])
    check(g.fp32_min, [(b, a, mn) for a, b, _, mn in MAX_MIN_CASES])


CMP_CASES = [
    # (a, b, "lt/eq/gt/unordered" as a 4-character mask)
    (PZERO, NZERO, "0100"),
    (NZERO, PZERO, "0100"),
    (0x00000001, PZERO, "0100"),             # subnormal == 0
    (0x00000001, 0x00000002, "0100"),        # two different subnormals are both zero
    (0x80000001, 0x00000001, "0100"),
    (MINN, 0x007FFFFF, "0010"),
    (0x807FFFFF, 0x80800000, "0010"),
    (ONE, 0x40000000, "1000"),
    (0x40000000, ONE, "0010"),
    (0xBF800000, NZERO, "1000"),
    (NINF, INF, "1000"),
    (INF, INF, "0100"),
    (NINF, NINF, "0100"),
    (MAXF, INF, "1000"),
    (0x7FC00000, 0x7FC00000, "0001"),
    (0x7FC00000, ONE, "0001"),
    (ONE, 0xFFFFFFFF, "0001"),
    (0x7F800001, INF, "0001"),
    (NINF, 0x7F800001, "0001"),
    (PZERO, 0xFFC00000, "0001"),
]


def test_cmp_directed():
    a, b, masks = zip(*CMP_CASES)
    flags = g.fp32_cmp(np.array(a, dtype=np.uint32), np.array(b, dtype=np.uint32))
    for i, mask in enumerate(masks):
        got = "".join(str(int(flags[k][i])) for k in ("lt", "equal", "gt", "unordered"))
        assert got == mask, (hex(a[i]), hex(b[i]))


I2F_CASES = [
    (0, PZERO), (1, ONE), (0xFFFFFFFF, 0xBF800000), (2, 0x40000000),
    (1 << 24, 0x4B800000),
    ((1 << 24) - 1, 0x4B7FFFFF),
    ((1 << 24) + 1, 0x4B800000),             # tie, to even
    ((1 << 24) + 2, 0x4B800001),
    ((1 << 24) + 3, 0x4B800002),             # tie, to even (up)
    ((-((1 << 24) + 1)) & 0xFFFFFFFF, 0xCB800000),
    ((-((1 << 24) + 3)) & 0xFFFFFFFF, 0xCB800002),
    (0x80000000, 0xCF000000),                # INT32_MIN = -2^31 exactly
    (0x80000001, 0xCF000000),
    (0x7FFFFFFF, 0x4F000000),                # INT32_MAX rounds up to 2^31
    (0x7FFFFF7F, 0x4EFFFFFF),                # 2^31 - 129: nearest is 2^31 - 128
    (0x7FFFFFC0, 0x4F000000),                # 2^31 - 64: tie, even is 2^31
    (0x7FFFFF40, 0x4EFFFFFE),                # 2^31 - 192: tie, even is 2^31 - 256
    (0x7FFFFFBF, 0x4EFFFFFF),
    (0x01000001, 0x4B800000),
]


def test_int_to_fp32_directed():
    check(g.int_to_fp32, I2F_CASES)
    # signed inputs are read the same way as their unsigned patterns
    signed = np.array([0, 1, -1, -(1 << 31), (1 << 31) - 1, (1 << 24) + 1, -((1 << 24) + 3)], dtype=np.int64)
    np.testing.assert_array_equal(g.int_to_fp32(signed), g.int_to_fp32(signed & 0xFFFFFFFF))
    assert g.int_to_fp32(-(1 << 31)) == 0xCF000000
    assert g.int_to_fp32(np.int32(-7)) == 0xC0E00000


F2I_CASES = [
    (ONE, 1), (0x3FC00000, 1), (0xBFC00000, 0xFFFFFFFF),   # 1.5, -1.5: toward zero
    (0x3F7FFFFF, 0), (0xBF7FFFFF, 0), (0x40200000, 2), (0xC0600000, 0xFFFFFFFD),
    (0x4B800001, 16777218),
    (0x4EFFFFFF, 0x7FFFFF80),                # 2^31 - 128
    (0xCEFFFFFF, 0x80000080),
    (0xCF000000, 0x80000000),                # -2^31 is in range
    # saturation
    (0x4F000000, 0x7FFFFFFF),                # 2^31
    (0xCF000001, 0x80000000),
    (MAXF, 0x7FFFFFFF), (0xFF7FFFFF, 0x80000000),
    (INF, 0x7FFFFFFF), (NINF, 0x80000000),
    # NaN -> 0
    (0x7FC00000, 0), (0xFFFFFFFF, 0), (0x7F800001, 0), (0xFFC00000, 0),
    # zeros and subnormals
    (PZERO, 0), (NZERO, 0), (0x00000001, 0), (0x807FFFFF, 0), (MINN, 0),
]


def test_fp32_to_int_directed():
    check(g.fp32_to_int, F2I_CASES)


# ------------------------------------------------------------ hypothesis (d)

SPECIAL32 = [PZERO, NZERO, 0x00000001, 0x807FFFFF, 0x00400000, MINN, 0x80800000, 0x00800001,
             MAXF, 0xFF7FFFFF, INF, NINF, NAN, 0xFFC00000, 0x7F800001, 0xFFFFFFFF,
             ONE, 0xBF800000, 0x3F7FFFFF, 0x3F800001, 0x4B800000, 0x4F000000, 0xCF000000]

bits32 = st.integers(0, 2**32 - 1)
normal_bits32 = st.builds(lambda s, e, f: (s << 31) | (e << 23) | f,
                          st.integers(0, 1), st.integers(1, 254), st.integers(0, 2**23 - 1))
tiny_bits32 = st.builds(lambda s, e, f: (s << 31) | (e << 23) | f,
                        st.integers(0, 1), st.integers(0, 4), st.integers(0, 2**23 - 1))
any32 = st.one_of(bits32, normal_bits32, tiny_bits32, st.sampled_from(SPECIAL32))
bits16 = st.integers(0, 2**16 - 1)
normal_bits16 = st.builds(lambda s, e, f: (s << 15) | (e << 7) | f,
                          st.integers(0, 1), st.integers(1, 254), st.integers(0, 127))
any16 = st.one_of(bits16, normal_bits16, st.sampled_from([0, 0x8000, 1, 0x8001, 0x0080, 0x7F7F, 0x7F80,
                                                          0xFF80, 0x7FC0, 0xFFFF, 0x3F80, 0xBF80]))


@st.composite
def close_pair(draw):
    """Two normals with nearby exponents and shared leading fraction bits."""
    a = draw(normal_bits32)
    e = min(254, max(1, ((a >> 23) & 0xFF) + draw(st.integers(-3, 3))))
    keep = draw(st.integers(0, 23))
    low = draw(st.integers(0, 2**23 - 1)) & ((1 << keep) - 1)
    f = (a & 0x7FFFFF) >> keep << keep | low
    b = (draw(st.integers(0, 1)) << 31) | (e << 23) | f
    return a, b


pair32 = st.one_of(st.tuples(any32, any32), close_pair())


@SETTINGS
@given(pair32, st.booleans())
def test_add_vs_exact_rational(ab, sub):
    a, b = ab
    got = int(g.fp32_add(a, b, sub=sub))
    if is_nan32(a) or is_nan32(b):
        assert got == NAN
        return
    fa, fb = frac_of32(a), frac_of32(b)
    if fb is not None and sub:
        fb = -fb
    if fa is None or fb is None:  # an infinity is involved
        ia = None if fa is not None else (-1 if a >> 31 else 1)
        ib = None if fb is not None else ((-1 if b >> 31 else 1) * (-1 if sub else 1))
        if ia is not None and ib is not None and ia != ib:
            assert got == NAN
        else:
            s = ia if ia is not None else ib
            assert got == (INF if s > 0 else NINF)
        return
    v = fa + fb
    if v == 0:
        # IEEE RNE: -0 only when both addends are -0 (after DAZ and negation).
        neg_a = bool(a >> 31)
        neg_b = bool(b >> 31) != sub
        assert got == (NZERO if (fa == 0 and fb == 0 and neg_a and neg_b) else PZERO)
    else:
        assert got == rne(v, 24)


@SETTINGS
@given(any16, any16)
def test_mul_vs_exact_rational(a, b):
    got = int(g.bf16_mul(a, b))
    fa, fb = frac_of16(a), frac_of16(b)
    neg = bool(a >> 15) != bool(b >> 15)
    if is_nan16(a) or is_nan16(b):
        assert got == NAN
    elif fa is None or fb is None:
        other = fb if fa is None else fa
        assert got == (NAN if other == 0 else (NINF if neg else INF))
    else:
        assert got == rne(fa * fb, 24, neg_zero=neg)


@st.composite
def fma_args(draw):
    a = draw(normal_bits16)
    b = draw(normal_bits16)
    p = frac_of16(a) * frac_of16(b)
    if draw(st.booleans()) and 2**-100 < abs(p) < 2**100:
        # c close to -p, to make the add cancel
        c = rne(-p, 24) ^ draw(st.integers(0, 255))
    else:
        c = draw(any32)
    return a, b, c


@SETTINGS
@given(fma_args())
def test_fma_vs_exact_rational(abc):
    a, b, c = abc
    got = int(g.fma(a, b, c))
    p = frac_of16(a) * frac_of16(b)
    if is_nan32(c):
        assert got == NAN
        return
    fc = frac_of32(c)
    neg = (a ^ b) >> 15 & 1
    if abs(p) >= 2**128:
        # The product is infinite before the add (docs/numerics.md): inf of the product's sign, unless c
        # is the opposite infinity.
        inf = NINF if neg else INF
        assert got == (NAN if fc is None and c != inf else inf)
        return
    if abs(p) < 2**-126:
        # The product flushes to a zero of its sign before the add: c itself after denormals-are-zero,
        # and a zero c adds to that signed zero by IEEE's rules.
        if fc is None:
            assert got == c
        elif fc == 0:
            assert got == (NZERO if neg and c >> 31 else PZERO)
        else:
            assert got == c
        return
    if fc is None:
        assert got == c
        return
    v = p + fc
    if v == 0:
        assert got == PZERO  # p is nonzero, so an exact zero is +0
    else:
        assert got == rne(v, 24)  # one rounding of the exact a*b + c


@SETTINGS
@given(any32)
def test_fp32_to_bf16_vs_exact_rational(x):
    got = int(g.fp32_to_bf16(x))
    v = frac_of32(x)
    if is_nan32(x):
        assert got == 0x7FC0
    elif v is None:
        assert got == x >> 16
    else:
        assert got == rne(v, 8, neg_zero=bool(x >> 31))


@SETTINGS
@given(st.one_of(st.integers(-(2**31), 2**31 - 1),
                 st.builds(lambda k, d, s: s * (2**k + d), st.integers(0, 30), st.integers(-200, 200),
                           st.sampled_from([1, -1])).filter(lambda i: -(2**31) <= i < 2**31)))
def test_int_to_fp32_vs_exact_rational(i):
    got = int(g.int_to_fp32(i))
    assert got == int(g.int_to_fp32(i & 0xFFFFFFFF))
    assert got == rne(Fraction(i), 24)


@SETTINGS
@given(st.one_of(any32, st.builds(lambda s, e, f: (s << 31) | (e << 23) | f,
                                  st.integers(0, 1), st.integers(120, 160), st.integers(0, 2**23 - 1))))
def test_fp32_to_int_vs_exact_rational(x):
    got = int(g.fp32_to_int(x))
    v = frac_of32(x)
    if is_nan32(x):
        want = 0
    elif v is None:
        want = -(2**31) if x >> 31 else 2**31 - 1
    else:
        want = min(max(math.trunc(v), -(2**31)), 2**31 - 1)
    assert got == want & 0xFFFFFFFF


@SETTINGS
@given(any32, any32)
def test_add_mul_max_min_commute(a, b):
    assert g.fp32_add(a, b) == g.fp32_add(b, a)
    assert g.fp32_max(a, b) == g.fp32_max(b, a)
    assert g.fp32_min(a, b) == g.fp32_min(b, a)
    fab, fba = g.fp32_cmp(a, b), g.fp32_cmp(b, a)
    assert fab["lt"] == fba["gt"] and fab["equal"] == fba["equal"] and fab["unordered"] == fba["unordered"]
    flags = [bool(fab[k]) for k in ("lt", "equal", "gt", "unordered")]
    assert sum(flags) == 1


@SETTINGS
@given(any16, any16)
def test_mul_commutes(a, b):
    assert g.bf16_mul(a, b) == g.bf16_mul(b, a)


@SETTINGS
@given(any32, any32)
def test_sub_is_add_of_negation(a, b):
    assert g.fp32_add(a, b, sub=True) == g.fp32_add(a, b ^ SIGN)


@SETTINGS
@given(any32)
def test_add_zero_identities(a):
    got_neg0 = int(g.fp32_add(a, NZERO))
    got_pos0 = int(g.fp32_add(a, PZERO))
    if is_nan32(a):
        assert got_neg0 == got_pos0 == NAN
        return
    e = (a >> 23) & 0xFF
    # x + (-0) is x for every non-NaN x (a subnormal x is a zero of its sign)
    assert got_neg0 == (a & SIGN if e == 0 else a)
    # x + (+0) is x for every nonzero x; zeros give +0
    assert got_pos0 == (PZERO if e == 0 else a)
    if e != 0xFF:
        assert g.fp32_add(a, a, sub=True) == PZERO
    else:
        assert g.fp32_add(a, a, sub=True) == NAN


@SETTINGS
@given(any32, any32)
def test_max_min_follow_sort_order(a, b):
    mx, mn = int(g.fp32_max(a, b)), int(g.fp32_min(a, b))
    if is_nan32(a) or is_nan32(b):
        assert mx == mn == NAN
        return

    def daz(x):
        return x & SIGN if (x >> 23) & 0xFF == 0 else x

    def key(x):
        # numeric value, with -0 ordered below +0
        v = float(as_f32(np.uint32(x)))
        return (v, not (x >> 31))

    lo, hi = sorted([daz(a), daz(b)], key=key)
    assert (mn, mx) == (lo, hi)
    f = g.fp32_cmp(a, b)
    fa, fb = float(as_f32(np.uint32(daz(a)))), float(as_f32(np.uint32(daz(b))))
    assert (bool(f["lt"]), bool(f["equal"]), bool(f["gt"])) == (fa < fb, fa == fb, fa > fb)


@SETTINGS
@given(any16)
def test_bf16_roundtrip(x):
    back = int(g.fp32_to_bf16(g.bf16_to_fp32(x)))
    e = (x >> 7) & 0xFF
    if is_nan16(x):
        assert back == 0x7FC0
    elif e == 0:
        assert back == x & 0x8000
    else:
        assert back == x


@SETTINGS
@given(any32, any32)
def test_fp32_to_bf16_monotonic(x, y):
    if is_nan32(x) or is_nan32(y):
        return
    vx, vy = float(as_f32(np.uint32(x))), float(as_f32(np.uint32(y)))
    if vx > vy:
        x, y, vx, vy = y, x, vy, vx
    bx, by = g.fp32_to_bf16(x), g.fp32_to_bf16(y)
    fx = float(as_f32(np.uint32(int(bx) << 16)))
    fy = float(as_f32(np.uint32(int(by) << 16)))
    assert fx <= fy


@SETTINGS
@given(any16, any16, any32)
def test_fma_is_mul_then_add(a, b, c):
    # The documented structure, checked against the exact-rational test above
    # for in-range products; here it pins the out-of-range and special cases.
    assert g.fma(a, b, c) == g.fp32_add(g.bf16_mul(a, b), c)


@SETTINGS
@given(normal_bits32)
def test_int_float_roundtrip_on_integers(x):
    # Every fp32 integer of magnitude below 2^31 converts to int and back exactly.
    v = frac_of32(x)
    if abs(v) >= 2**31:
        return
    i = math.trunc(v)
    assert int(g.fp32_to_int(x)) == i & 0xFFFFFFFF
    if v == i and i != 0:
        assert int(g.int_to_fp32(g.fp32_to_int(x))) == x


# ------------------------------------------------------------- fp32 multiply


@st.composite
def fmul_edge_pair(draw):
    """Normals whose product lies near 2^-126 or 2^128, fractions often near all-ones."""
    target = draw(st.sampled_from([125, 126, 127, 128, 380, 381, 382]))
    ea = draw(st.integers(max(1, target - 254), min(254, target - 1)))
    fa = draw(st.integers(0, 2**23 - 1))
    fb = draw(st.one_of(st.integers(0, 2**23 - 1), st.integers(2**23 - 64, 2**23 - 1)))
    sa, sb = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    return (sa << 31) | (ea << 23) | fa, (sb << 31) | ((target - ea) << 23) | fb


@SETTINGS
@given(st.one_of(st.tuples(any32, any32), fmul_edge_pair()))
def test_fp32_mul_vs_exact_rational(ab):
    a, b = ab
    got = int(g.fp32_mul(a, b))
    fa, fb = frac_of32(a), frac_of32(b)
    neg = bool(a >> 31) != bool(b >> 31)
    if is_nan32(a) or is_nan32(b):
        assert got == NAN
    elif fa is None or fb is None:
        other = fb if fa is None else fa
        assert got == (NAN if other == 0 else (NINF if neg else INF))
    else:
        assert got == rne(fa * fb, 24, neg_zero=neg)


def test_fp32_mul_vs_numpy_normals():
    # Where float32's result is normal and finite, IEEE RNE is the policy.
    rng = np.random.default_rng(5)
    a, b = rand_fp(rng, N_RANDOM, 1, 254), rand_fp(rng, N_RANDOM, 1, 254)
    with np.errstate(all="ignore"):
        want = as_bits(as_f32(a) * as_f32(b))
    keep = normal32(want) & (np.abs(as_f32(want)) < np.float32(3.4e38))
    assert keep.sum() > N_RANDOM // 2
    np.testing.assert_array_equal(g.fp32_mul(a, b)[keep], want[keep])


FMUL_CASES = [
    (0x3F800001, 0x3F800001, 0x3F800002),    # (1 + 2^-23)^2 = 1 + 2^-22 + 2^-46: rounds down
    (0x3FC00000, 0x3F800001, 0x3FC00002),    # 1.5 + 1.5 * 2^-23: tie, up to even
    (0x3FC00000, 0x3F800003, 0x3FC00004),    # 1.5 + 4.5 * 2^-23: tie, down to even
    (0x3FFFFFFF, 0x3FFFFFFF, 0x407FFFFE),
    (0x00800001, 0x3F7FFFFF, 0x00800000),    # rounds up to 2^-126: kept, not flushed
    (0x00800000, 0x3F7FFFFF, PZERO),         # (1 - 2^-24) 2^-126 exactly: flushed
    (0x80FFFFFF, 0x3F000000, NZERO),         # just below 2^-126, negative
    (0x01000000, 0x3F000000, MINN),
    (0x7F7FFFFF, 0x3F800001, INF),           # rounds past the maximum
    (0xFF7FFFFF, 0x3F7FFFFF, 0xFF7FFFFE),
    (0x5F800000, 0x5F800000, INF),           # exactly 2^128
    (0x00400000, ONE, PZERO),                # subnormal input is zero
    (0x80400000, ONE, NZERO),
    (INF, PZERO, NAN),
    (NINF, 0xBF800000, INF),
    (NZERO, 0x7F7FFFFF, NZERO),
    (0x7F800001, ONE, NAN),
]


def test_fp32_mul_directed():
    check(g.fp32_mul, FMUL_CASES)
    check(g.fp32_mul, [(b, a, r) for a, b, r in FMUL_CASES])
