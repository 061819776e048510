"""The models' fast fp32 arithmetic (sw/model/fp32.py) equals the golden model bit for bit."""

import numpy as np
import pytest

from sw.golden import arith as g
from sw.model import fp32

SPECIAL = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0x00800000,
                    0x80800000, 0x007FFFFF, 0x80000001, 0x3F7FFFFF, 0x00800001, 0x3F800000, 0x7F7FFFFF], np.uint32)


def patterns(rng, n):
    """Random fp32 patterns, half with exponents near the subnormal, unit and overflow ranges."""
    raw = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    exp = rng.choice([0, 1, 2, 63, 64, 65, 100, 127, 190, 253, 254, 255], n).astype(np.uint32)
    near = (raw & np.uint32(0x807FFFFF)) | (exp << np.uint32(23))
    return np.concatenate([np.where(rng.random(n) < 0.5, raw, near), SPECIAL])


@pytest.mark.parametrize("seed", range(3))
def test_mul_add_sub(seed):
    rng = np.random.default_rng(seed)
    a, b = patterns(rng, 50_000), patterns(rng, 50_000)
    assert np.array_equal(fp32.mul(a, b), g.fp32_mul(a, b))
    assert np.array_equal(fp32.add(a, b), g.fp32_add(a, b))
    assert np.array_equal(fp32.add(a, b, sub=True), g.fp32_add(a, b, sub=True))
    col, row = a[:200, None], b[None, :200]
    assert np.array_equal(fp32.mul(col, row), g.fp32_mul(col, row))


def test_products_at_the_flush_threshold():
    # Exact products just below 2**-126: IEEE rounds some to 2**-126 or a subnormal, the policy otherwise.
    a, b = np.meshgrid(np.arange(0x3F7FFF00, 0x3F800100, dtype=np.uint32),
                       np.arange(0x00800000, 0x00800400, dtype=np.uint32))
    for sign in (0, 0x80000000):
        assert np.array_equal(fp32.mul(a, b ^ np.uint32(sign)), g.fp32_mul(a, b ^ np.uint32(sign)))


@pytest.mark.parametrize("scale", [1.0, 1e-38, None])
def test_accumulate_is_the_golden_sequence(scale):
    rng = np.random.default_rng(7)
    for _ in range(40):
        k = int(rng.integers(1, 40))
        if scale is None:
            x = patterns(rng, k * 6)[:k * 6].reshape(k, 2, 3)
        else:
            x = (rng.standard_normal((k, 2, 3)) * scale).astype(np.float32).view(np.uint32)
            x[rng.random((k, 2, 3)) < 0.2] = np.uint32(0x80000000)
        for start in (0, 0x80000000):
            want = np.empty_like(x)
            acc = np.full((2, 3), start, np.uint32)
            for j in range(k):
                acc = want[j] = g.fp32_add(x[j], acc)
            assert np.array_equal(fp32.accumulate(x, 0, start=start), want)
            assert np.array_equal(fp32.accumulate(np.moveaxis(x, 0, 2), 2, start=start), np.moveaxis(want, 0, 2))


def test_systolic_products_accumulated():
    rng = np.random.default_rng(3)
    a, b = patterns(rng, 60)[:60].reshape(30, 2), patterns(rng, 120)[:120].reshape(30, 4)
    want = np.zeros((2, 4), np.uint32)
    for j in range(30):
        want = g.fp32_add(g.fp32_mul(a[j][:, None], b[j][None, :]), want)
    got = fp32.accumulate(fp32.mul(a[:, :, None], b[:, None, :], canonical=False), 0, normal=True)[-1]
    assert np.array_equal(got, want)
