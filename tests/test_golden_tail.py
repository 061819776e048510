"""Tests of the golden tail functions (sw/golden/tail.py) against float64 references.

Accuracy is measured on every bf16 value plus 1M uniform fp32 patterns, in
ulps of the float64 reference and relatively, with the bounds documented in
docs/numerics.md. Special values follow the same page; hypothesis checks
monotonicity and symmetries that hold bit for bit.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facts import tail as tables
from hw.arith import tail as rtl
from sw.golden import arith as g
from sw.golden import tail as t

SETTINGS = settings(max_examples=300, deadline=None)

NAN, INF, NINF, PZERO, NZERO, ONE = 0x7FC00000, 0x7F800000, 0xFF800000, 0, 0x80000000, 0x3F800000

# Documented worst cases (docs/numerics.md), with a little headroom over the
# measured values (0.506 to 0.513 ulp): ulps of the float64 reference, and
# relative error.
ULP_BOUND = {"exp": 0.52, "recip": 0.52, "rsqrt": 0.52, "sigmoid": 0.52, "silu": 0.52}
REL_BOUND = {name: 2.0**-23.9 for name in ULP_BOUND}


def _sigmoid64(x):
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


REFERENCE = {
    "exp": np.exp,
    "recip": lambda x: 1 / x,
    "rsqrt": lambda x: 1 / np.sqrt(x),
    "sigmoid": _sigmoid64,
    "silu": lambda x: x * _sigmoid64(x),
}


@pytest.fixture(scope="module")
def sweep():
    """Every bf16 value as fp32 and 1M uniform fp32 patterns, after denormals-are-zero."""
    rng = np.random.default_rng(2024)
    x = np.concatenate([np.arange(1 << 16, dtype=np.uint32) << np.uint32(16),
                        rng.integers(0, 1 << 32, 1_000_000, dtype=np.uint64).astype(np.uint32)])
    return g.daz32(x)


def errors(name, x):
    """(ulp error, relative error, inputs) where the reference is a finite normal fp32 value."""
    with np.errstate(all="ignore"):
        xf = x.view(np.float32).astype(np.float64)
        ref = REFERENCE[name](xf)
    got = getattr(t, name)(x).view(np.float32).astype(np.float64)
    # Normal results; the top binade is left out because a result there may
    # legitimately round past the largest finite value.
    ok = np.isfinite(xf) & (np.abs(ref) >= 2.0**-126) & (np.abs(ref) < 2.0**127)
    ref, got, xf = ref[ok], got[ok], xf[ok]
    err = np.abs(got - ref)
    ulp = 2.0 ** (np.floor(np.log2(np.abs(ref))) - 23)
    return err / ulp, err / np.abs(ref), xf


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_accuracy_vs_float64(name, sweep):
    ulps, rel, xf = errors(name, sweep)
    assert len(ulps) > 400_000
    worst = int(np.argmax(ulps))
    assert ulps[worst] <= ULP_BOUND[name], f"{name}({xf[worst]!r}): {ulps[worst]:.3f} ulp"
    if name in REL_BOUND:
        assert rel.max() <= REL_BOUND[name], f"{name}: relative error 2^{np.log2(rel.max()):.2f}"


def test_exp_flush_and_overflow_thresholds():
    # e^x crosses 2^-126 near x = -87.336 and 2^128 near x = 88.723: the
    # golden result is zero or infinite exactly where float64 rounds there.
    x = np.arange(0xC2AE_0000, 0xC2AF_0000, dtype=np.uint32)
    x = np.concatenate([x, np.arange(0x42B1_0000, 0x42B2_0000, dtype=np.uint32)])
    ref = np.exp(x.view(np.float32).astype(np.float64))
    got = t.exp(x)
    far = np.abs(np.log2(ref) - np.where(ref < 1, -126, 128)) > 2.0**-20
    flushed, overflowed = got == PZERO, got == INF
    assert np.array_equal(flushed[far], (ref < 2.0**-126)[far])
    assert np.array_equal(overflowed[far], (ref >= 2.0**128)[far])


SPECIALS = {
    "exp": [(NINF, PZERO), (INF, INF), (PZERO, ONE), (NZERO, ONE), (0x00000001, ONE), (0x42B20000, INF),
            (0xC2C00000, PZERO), (0x7F7FFFFF, INF), (0xFF7FFFFF, PZERO), (NAN, NAN), (0xFFFFFFFF, NAN)],
    "recip": [(PZERO, INF), (NZERO, NINF), (0x807FFFFF, NINF), (INF, PZERO), (NINF, NZERO), (ONE, ONE),
              (0xC0000000, 0xBF000000), (0x7E800000, 0x00800000), (0x7F000000, PZERO), (0xFF000000, NZERO),
              (0x00800000, 0x7E800000), (0x7F800001, NAN)],
    "rsqrt": [(PZERO, INF), (NZERO, NINF), (0x00000001, INF), (INF, PZERO), (NINF, NAN), (0xBF800000, NAN),
              (0x80800000, NAN), (ONE, ONE), (0x40800000, 0x3F000000), (0x3E800000, 0x40000000), (NAN, NAN)],
    "sigmoid": [(NINF, PZERO), (INF, ONE), (PZERO, 0x3F000000), (NZERO, 0x3F000000), (0xC2C80000, PZERO),
                (0x42C80000, ONE), (0xFFC00000, NAN)],
    "silu": [(NINF, NZERO), (INF, INF), (PZERO, PZERO), (NZERO, NZERO), (0xC2D00001, NZERO),
             (0xFF7FFFFF, NZERO), (0x7F7FFFFF, 0x7F7FFFFF), (0x7F800001, NAN)],
}


@pytest.mark.parametrize("name", sorted(SPECIALS))
def test_special_values(name):
    x, want = (np.array(c, dtype=np.uint32) for c in zip(*SPECIALS[name]))
    got = getattr(t, name)(x)
    bad = [(hex(a), hex(w), hex(r)) for a, w, r in zip(x, want, got) if w != r]
    assert not bad, f"{name}: (input, want, got): {bad}"


def test_silu_keeps_results_sigmoid_would_flush():
    # sigmoid(-90) < 2^-126 flushes, but -90 sigmoid(-90) ~ -2^-123.3 is normal.
    x = g.f32_bits(np.float32(-90.0))
    assert t.sigmoid(x) == PZERO
    want = -90.0 * np.exp(-90.0)
    got = float(t.silu(x).view(np.float32))
    assert got != 0 and abs(got / want - 1) < 2.0**-22


def test_nan_inputs_give_canonical_nan():
    nans = np.array([0x7F800001, 0x7FC00000, 0xFFC00000, 0xFFFFFFFF, 0x7FBFFFFF], dtype=np.uint32)
    for name in REFERENCE:
        assert (getattr(t, name)(nans) == NAN).all(), name


def test_sigmoid_and_silu_do_not_flush_normal_results():
    # sigmoid(x) ~ e^x is normal down to x ~ -87.34, silu down to x ~ -91.86.
    for name, lo in (("sigmoid", -87.3), ("silu", -91.8)):
        x = np.linspace(lo, -20.0, 4001).astype(np.float32)
        got = getattr(t, name)(x.view(np.uint32)).view(np.float32).astype(np.float64)
        want = REFERENCE[name](x.astype(np.float64))
        assert np.all(np.abs(got / want - 1) < 2.0**-23.9), name


def test_rtl_constants_are_the_golden_tables():
    for name in ("EXP_LOG2E", "EXP_TABLE", "EXP_POLY", "EXP_X_HUGE", "EXP_HUGE_N", "SEED_FRAC",
                 "RECIP_SEED", "RSQRT_SEED"):
        assert getattr(rtl, name) == getattr(t, name) == getattr(tables, name), name
    assert abs(tables.EXP_LOG2E / 2.0**38 - 1 / np.log(2)) < 2.0**-38
    j = np.arange(128)
    assert np.allclose(np.array(tables.EXP_TABLE, dtype=np.float64) / 2.0**32, 2.0 ** (j / 128), rtol=2.0**-33,
                       atol=0)
    assert max(tables.RECIP_SEED) < 2 ** (tables.SEED_FRAC + 1) and max(tables.RSQRT_SEED) < 2 ** (tables.SEED_FRAC + 1)


def test_apply_dispatches_every_tail_op():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 1 << 32, 1000, dtype=np.uint64).astype(np.uint32)
    assert np.array_equal(t.apply("none", x), x)
    assert np.array_equal(t.apply("bf16", x), g.bf16_to_fp32(g.fp32_to_bf16(x)))
    for name in REFERENCE:
        assert np.array_equal(t.apply(name, x), getattr(t, name)(x)), name
    assert sorted(t.OPS) == sorted(op.name.lower() for op in rtl.TailOp)


def test_tail_latencies():
    op = rtl.TailOp
    assert rtl.tail_latency(()) == 0
    assert rtl.tail_latency((op.EXP,)) == rtl.EXP_LATENCY == rtl.Exp.LATENCY
    assert rtl.tail_latency(tuple(op)) == max(rtl.SIGMOID_LATENCY, rtl.SILU_LATENCY)
    assert rtl.tail_latency((op.RECIP, op.RSQRT)) == max(rtl.RECIP_LATENCY, rtl.RSQRT_LATENCY)


def test_api_shapes():
    for name in REFERENCE:
        fn = getattr(t, name)
        r = fn(ONE)
        assert isinstance(r, np.ndarray) and r.dtype == np.uint32 and r.shape == ()
        assert fn(np.full((3, 2), ONE, dtype=np.uint32)).shape == (3, 2)
    with pytest.raises(TypeError):
        t.exp(np.float32(1.0))


finite32 = st.integers(0, 0xFFFFFFFF).filter(lambda b: (b >> 23) & 0xFF != 0xFF)


def _key(bits):
    """Integer whose order is the float order (after denormals-are-zero, -0 == +0)."""
    b = int(g.daz32(bits))
    mag = b & 0x7FFFFFFF
    return -mag if b >> 31 else mag


@SETTINGS
@given(finite32, finite32)
def test_exp_monotonic(a, b):
    if _key(a) > _key(b):
        a, b = b, a
    assert _key(t.exp(a)) <= _key(t.exp(b))


@SETTINGS
@given(finite32, finite32)
def test_sigmoid_monotonic(a, b):
    if _key(a) > _key(b):
        a, b = b, a
    assert _key(t.sigmoid(a)) <= _key(t.sigmoid(b))


@SETTINGS
@given(finite32, finite32)
def test_recip_and_rsqrt_antitone(a, b):
    a, b = a & 0x7FFFFFFF, b & 0x7FFFFFFF
    if _key(a) > _key(b):
        a, b = b, a
    assert _key(t.recip(a)) >= _key(t.recip(b))
    assert _key(t.rsqrt(a)) >= _key(t.rsqrt(b))


@SETTINGS
@given(finite32)
def test_recip_is_odd_and_powers_of_two_are_exact(x):
    assert int(t.recip(x ^ 0x80000000)) == int(t.recip(x)) ^ 0x80000000 or (x & 0x7F800000) == 0
    e = (x >> 23) & 0xFF
    if 1 <= e <= 253:
        p = x & 0xFF800000
        assert float(t.recip(p).view(np.float32)) == 1 / float(np.uint32(p).view(np.float32))


@SETTINGS
@given(finite32)
def test_sigmoid_in_unit_interval(x):
    y = float(t.sigmoid(x).view(np.float32))
    assert 0.0 <= y <= 1.0


def test_tail_tables_against_their_defining_formulas():
    # Each constant is the correctly rounded value of its formula, computed here in 60-digit decimals
    # rather than float64, and each table has the accuracy its algorithm needs (docs/numerics.md).
    from decimal import Decimal, getcontext

    getcontext().prec = 60
    ln2 = Decimal(2).ln()
    nearest = lambda d: int(d.to_integral_value())
    assert tables.EXP_LOG2E == nearest(Decimal(2) ** 38 / ln2)
    assert tables.EXP_TABLE == tuple(nearest((ln2 * j / 128).exp() * 2 ** 32) for j in range(128))
    fact = lambda k: Decimal(int(np.prod(range(1, k + 1))))
    assert tables.EXP_POLY == tuple(nearest(ln2 ** k / fact(k) * 2 ** 32) for k in (1, 2, 3))
    # The cubic's truncation error on r < 2^-7 (documented 2^-34.7).
    r = np.linspace(0, 2.0 ** -7, 10001)
    c1, c2, c3 = (c / 2.0 ** 32 for c in tables.EXP_POLY)
    assert np.max(np.abs(2.0 ** r - (1 + c1 * r + c2 * r * r + c3 * r ** 3))) < 2.0 ** -34.5
    # From |x| = 2^(EXP_X_HUGE - 127) = 128 on, |x log2 e| > 128: e^x overflows or flushes, as does
    # 2^(+-EXP_HUGE_N) whatever the significand.
    assert 2.0 ** (tables.EXP_X_HUGE - 127) * np.log2(np.e) > 128 and 2.0 ** (tables.EXP_X_HUGE - 128) < 128
    assert tables.EXP_HUGE_N > 128 + 2
    # Newton seeds: relative error at most 2^-7.9 over each interval, so two quadratic steps reach
    # about 2^-31.6 before the final correction to 32 fraction bits.
    frac = 2.0 ** tables.SEED_FRAC
    j = np.arange(128)
    for lo, hi, seed, f in ((1 + j / 128, 1 + (j + 1) / 128, np.array(tables.RECIP_SEED) / frac, lambda d: 1 / d),
                            (2.0 ** (j // 64) * (1 + (j % 64) / 64), 2.0 ** (j // 64) * (1 + (j % 64 + 1) / 64),
                             np.array(tables.RSQRT_SEED) / frac, lambda d: 1 / np.sqrt(d))):
        worst = np.maximum(np.abs(seed / f(lo) - 1), np.abs(seed / f(hi) - 1))
        assert worst.max() < 2.0 ** -7.9, f"seed relative error 2^{np.log2(worst.max()):.2f}"
