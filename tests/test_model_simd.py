"""The GEMV's vector levels (``fastfp.simd``): every level the processor has gives the golden sums, bit for bit."""

import asyncio

import numpy as np
import pytest

from sw.golden import arith as g
from sw.model import fp32
from tests.test_model_cext import _values, kernels  # noqa: F401  (kernels: the fixture)


@pytest.fixture
def levels(kernels):
    """The levels this processor has (0: the portable forms, 1: AVX2 blocks, 2: AVX-512 blocks too), the best
    restored after the test."""
    best = kernels.simd(99)
    yield list(range(best + 1))
    kernels.simd(best)


def _golden(a, b):
    """The golden GEMV of one activation per step for every group: acc = p_j + acc from +0, j in order."""
    groups, m, lanes = b.shape
    acc = np.zeros((groups, lanes), np.uint32)
    for j in range(m):
        acc = g.fp32_add(g.fp32_mul(np.broadcast_to(a[j], (groups, lanes)), b[:, j]), acc)
    return acc


def test_simd_levels_are_clamped(kernels):
    best = kernels.simd()
    try:
        assert kernels.simd(-3) == 0
        assert kernels.simd() == 0
        assert kernels.simd(99) == best
        assert kernels.simd(1) == min(1, best)
    finally:
        kernels.simd(best)
    with pytest.raises(TypeError):
        kernels.simd(1, 2)


@pytest.mark.parametrize("kind", range(6))
def test_shared_bf16_gemv_is_golden_at_every_level(kind, kernels, levels):
    # Groups of four lanes sharing their activations with bf16 weights: sixteen at a time in AVX-512 vectors (steps
    # four at a time, then one by one), eight in AVX2 ones, the rest one by one; special values and products near
    # 2**-126 (kinds 4 and 5) send blocks to the step-by-step path.
    rng = np.random.default_rng(700 + kind)
    for trial in range(16):
        groups = int(rng.choice([16, 17, 24, 32, 33, 48]))
        m, rows = int(rng.choice([1, 3, 4, 7, 8, 13, 16, 33])), int(rng.choice([1, 1, 2]))
        b = _values(rng, (groups, m, 4), kind) & np.uint32(0xFFFF0000)
        halves = (b >> np.uint32(16)).astype(np.uint16).reshape(-1)
        a = _values(rng, (m, rows), kind)
        want = np.stack([_golden(a[:, r], b) for r in range(rows)], axis=1)
        for level in levels:
            kernels.simd(level)
            out = np.empty((groups, rows, 4), np.uint32)
            kernels.gemv(a.reshape(-1), halves, out, groups, m, rows, 4, 0, rows, 1)
            assert np.array_equal(out, want), (kind, trial, level)


def test_shared_bf16_gemv_flushes_at_every_level(kernels, levels):
    # Subnormal bf16 weights are zeros of their sign however large the activation; partial sums that fall under
    # 2**-126 are flushed to their sign at every step; a tiny product takes the block step by step.
    groups, m = 32, 8
    sub = np.full((groups, m, 4), 0x00400000, np.uint32) | (np.arange(groups * m * 4).reshape(groups, m, 4)
                                                            % 2).astype(np.uint32) << np.uint32(31)
    huge = np.full(m, 0x7E000000, np.uint32)
    rng = np.random.default_rng(5)
    near = (rng.integers(1, 1 << 7, (groups, m, 4)).astype(np.uint32) << np.uint32(16)) | np.uint32(0x00800000) | \
        (rng.integers(0, 2, (groups, m, 4)).astype(np.uint32) << np.uint32(31))
    ones = np.full(m, 0x3F800000, np.uint32)
    tiny = np.where(np.arange(m) == 3, np.uint32(0x00900000), ones).astype(np.uint32)
    # A small activation whose step's weights are zeros, small weights elsewhere: no product is tiny, though the
    # least activation times the least weight is (the AVX-512 blocks then test each product); and the same with the
    # least weight in a last step after the blocks of four.
    small = np.where(np.arange(m) == 2, np.uint32(0x0C800000), ones).astype(np.uint32)
    spread = np.full((groups, m, 4), 0x3F800000, np.uint32)
    spread[:, 2] = 0
    spread[:, 5] = 0x2F800000
    odd_m = np.concatenate([small, ones[:1]])
    last = np.concatenate([spread, np.full((groups, 1, 4), 0x2F000000, np.uint32)], axis=1)
    for a, b in ((huge, sub), (ones, near), (tiny, near), (small, spread), (odd_m, last)):
        want = _golden(a, b)
        halves = (b >> np.uint32(16)).astype(np.uint16).reshape(-1)
        for level in levels:
            kernels.simd(level)
            out = np.empty((groups, 4), np.uint32)
            kernels.gemv(a, halves, out, groups, len(a), 1, 4, 0, 1, 1)
            assert np.array_equal(out, want), level


def test_decode_is_the_same_at_every_level(kernels, levels):
    # A short decode of the default model on the chip (its weight GEMVs are shared bf16 ones of 32 to 128 groups):
    # the same logits, tokens and cycles at every level.
    from bench.speed import CHECKPOINT
    from cli.compile import cached_compile
    from sw.runtime.decode import generate
    from sw.runtime.device import ModelDevice
    from sw.target import CHIP

    compiled, _ = cached_compile(CHECKPOINT, CHIP, "fused", None)
    seen = []
    for level in levels:
        kernels.simd(level)
        out = asyncio.run(generate(ModelDevice(CHIP), compiled, [0, 449, 323], max_new_tokens=3, stop_at_eos=False))
        seen.append((out["logits_sha"], out["tokens"], out["step_cycles"]))
    assert all(s == seen[0] for s in seen), seen
    assert fp32.kernels() is kernels


@pytest.mark.parametrize("chunk", range(4))
def test_compiled_pcu_is_numpy_at_every_level(chunk, kernels, levels, monkeypatch):
    # A PCU's stages run in AVX-512 vectors at level 2 (registers, scalars per firing and constants as operands,
    # a last partial vector, a product near 2**-126 done element by element): the random kernels of
    # test_model_cext, special values included, give the numpy run's bits at every level.
    from tests.test_model_cext import test_compiled_pcu_matches_numpy_on_random_kernels as check

    for level in levels:
        kernels.simd(level)
        check(chunk, kernels, monkeypatch)


@pytest.mark.parametrize("lanes", [1, 2, 4, 8, 16, 32])
def test_pcu_stages_are_the_same_at_every_level(lanes, kernels, levels):
    # Every stage op on registers, scalars per firing, constants and zeros, for firing counts that leave a partial
    # last vector, with special values: the same vo bits at every level, whatever the lanes.
    from sw.model import fp32 as f, tail  # noqa: F401  (the tail tables are set on first use)

    f.kernels()
    tail.exp(np.zeros(1, np.uint32))
    rng = np.random.default_rng(900 + lanes)
    for trial in range(30):
        n = int(rng.integers(1, 40))
        regs = [rng.choice(SPECIAL_AND_NEAR, (n, lanes)).astype(np.uint32) for _ in range(3)]
        scalars = [rng.choice(SPECIAL_AND_NEAR, n).astype(np.uint32) for _ in range(2)]
        code = np.array([(int(rng.integers(0, 7)), *rng.integers(0, 8, 3), int(rng.integers(0, 4)),
                          int(rng.choice(SPECIAL_AND_NEAR))) for _ in range(int(rng.integers(1, 6)))], np.int64)
        seen = []
        for level in levels:
            kernels.simd(level)
            vo = np.empty((n, lanes), np.uint32)
            kernels.pcu(code, len(code), n, lanes, *regs, *scalars, int(code[-1, 4]), -1, vo, 0, 0, None, None, 0,
                        0, 0, -1, np.empty(n, np.uint32))
            seen.append(vo)
        assert all(np.array_equal(v, seen[0]) for v in seen), (lanes, trial)


SPECIAL_AND_NEAR = np.concatenate([_values(np.random.default_rng(1), (64,), 4), _values(np.random.default_rng(2),
                                                                                       (64,), 5)])
