"""What each arithmetic unit is tested with: operand fields, golden model, stimulus.

Pure numpy, no cocotb: the cocotb testbench, the pytest wrappers and the
benchmark all read these tables. Stimulus mixes uniform bit patterns with
distributions aimed at the hard cases: close exponents (cancellation), wide
exponent gaps (sticky bits), products at the overflow and underflow
thresholds, integers at the edge of fp32's precision, and special values.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from hw import arith
from sw.golden import arith as golden
from sw.golden import tail as golden_tail

SPECIALS32 = np.array([
    0x0000_0000, 0x8000_0000,              # +-0
    0x0000_0001, 0x807F_FFFF, 0x0040_0000,  # subnormals
    0x0080_0000, 0x8080_0000, 0x0080_0001,  # smallest normals
    0x7F7F_FFFF, 0xFF7F_FFFF, 0x7F7F_0000,  # largest normals
    0x7F80_0000, 0xFF80_0000,              # +-inf
    0x7FC0_0000, 0xFFC0_0000, 0x7F80_0001, 0x7FFF_FFFF,  # NaNs (quiet, signalling)
    0x3F80_0000, 0xBF80_0000, 0x3F7F_FFFF, 0x3F80_0001,  # around 1.0
    0x4B80_0000, 0x4B7F_FFFF, 0x4F00_0000, 0xCF00_0000, 0x4EFF_FFFF,  # 2^24, 2^31 boundaries
], dtype=np.uint32)
SPECIALS16 = np.array([
    0x0000, 0x8000, 0x0001, 0x807F, 0x0080, 0x8080, 0x7F7F, 0xFF7F,
    0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F81, 0x3F80, 0xBF80, 0x3FFF,
    0x1F80, 0x5F80, 0x0100, 0x7F00,
], dtype=np.uint16)


def _pick(rng, pool, n):
    return pool[rng.integers(0, len(pool), n)]


def _fp(rng, n, *, exp_lo=0, exp_hi=256, frac_bits=23):
    """Random floats with exponent fields drawn from [exp_lo, exp_hi)."""
    sign = rng.integers(0, 2, n, dtype=np.uint64)
    exp = rng.integers(exp_lo, exp_hi, n, dtype=np.uint64)
    frac = rng.integers(0, 1 << frac_bits, n, dtype=np.uint64)
    dtype = np.uint32 if frac_bits == 23 else np.uint16
    return ((sign << (8 + frac_bits)) | (exp << frac_bits) | frac).astype(dtype)


def _mixture(rng, n, parts):
    """Concatenate ``parts`` (functions of a count) in equal shares, then shuffle."""
    counts = np.full(len(parts), n // len(parts))
    counts[: n % len(parts)] += 1
    columns = [np.concatenate(arrays) for arrays in zip(*(part(int(c)) for part, c in zip(parts, counts)))]
    order = rng.permutation(n)
    return [c[order] for c in columns]


def _fp32(rng, n):
    return _mixture(rng, n, [
        lambda k: (rng.integers(0, 1 << 32, k, dtype=np.uint64).astype(np.uint32),),
        lambda k: (_fp(rng, k, exp_lo=100, exp_hi=155),),
        lambda k: (_pick(rng, SPECIALS32, k),),
    ])[0]


def _bf16(rng, n):
    return _mixture(rng, n, [
        lambda k: (rng.integers(0, 1 << 16, k, dtype=np.uint32).astype(np.uint16),),
        lambda k: (_fp(rng, k, exp_lo=100, exp_hi=155, frac_bits=7),),
        lambda k: (_pick(rng, SPECIALS16, k),),
    ])[0]


def _near(rng, a, *, max_gap):
    """fp32 values with exponents within ``max_gap`` of ``a``'s and random fractions and signs."""
    exp = (a >> 23) & 0xFF
    gap = rng.integers(-max_gap, max_gap + 1, len(a))
    new_exp = np.clip(exp.astype(np.int64) + gap, 1, 254).astype(np.uint32)
    keep = rng.integers(0, 24, len(a)).astype(np.uint32)
    # Share the top bits of the fraction so differences cancel deeply.
    shared = (a & 0x7F_FFFF) >> keep << keep
    low = rng.integers(0, 1 << 23, len(a), dtype=np.uint64).astype(np.uint32) & ((np.uint32(1) << keep) - 1)
    sign = rng.integers(0, 2, len(a)).astype(np.uint32) << 31
    return sign | (new_exp << 23) | shared | low


def _add_stimulus(rng, n):
    def close(k):
        a = _fp(rng, k, exp_lo=1, exp_hi=255)
        return a, _near(rng, a, max_gap=2)

    def gap(k):
        a = _fp(rng, k, exp_lo=30, exp_hi=225)
        return a, _near(rng, a, max_gap=30)

    def tiny(k):
        return _fp(rng, k, exp_lo=0, exp_hi=4), _fp(rng, k, exp_lo=0, exp_hi=4)

    def huge(k):
        return _fp(rng, k, exp_lo=252, exp_hi=256), _fp(rng, k, exp_lo=252, exp_hi=256)

    a, b = _mixture(rng, n, [lambda k: (_fp32(rng, k), _fp32(rng, k)), close, gap, tiny, huge])
    sub = rng.integers(0, 2, n).astype(np.uint32)
    return a, b, sub


def _mul_stimulus(rng, n):
    def threshold(k):
        # Exponent fields summing to 127 + {-2..2} (underflow edge) or 127 + {252..256} (overflow edge).
        target = np.where(rng.integers(0, 2, k) == 0, 127 + rng.integers(-2, 3, k), 127 + rng.integers(252, 257, k))
        ea = rng.integers(np.maximum(1, target - 254), np.minimum(254, target - 1) + 1)
        eb = target - ea
        sa, sb = rng.integers(0, 2, k), rng.integers(0, 2, k)
        fa, fb = rng.integers(0, 128, k), rng.integers(0, 128, k)
        return (((sa << 15) | (ea << 7) | fa).astype(np.uint16), ((sb << 15) | (eb << 7) | fb).astype(np.uint16))

    return _mixture(rng, n, [lambda k: (_bf16(rng, k), _bf16(rng, k)), threshold])


def _fmul_stimulus(rng, n):
    def threshold(k):
        # Exponent fields summing to 127 + {-2..1} (the flush edge, where
        # rounding can lift a product to 2^-126) or 127 + {253..255} (overflow).
        target = np.where(rng.integers(0, 2, k) == 0, 127 + rng.integers(-2, 2, k), 127 + rng.integers(253, 256, k))
        ea = rng.integers(np.maximum(1, target - 254), np.minimum(254, target - 1) + 1)
        eb = target - ea
        sa, sb = rng.integers(0, 2, k), rng.integers(0, 2, k)
        fa = rng.integers(0, 1 << 23, k)
        # Fractions near all-ones push the product's rounding across a binade.
        fb = np.where(rng.integers(0, 2, k) == 0, rng.integers(0, 1 << 23, k), (1 << 23) - 1 - rng.integers(0, 64, k))
        return (((sa << 31) | (ea << 23) | fa).astype(np.uint32), ((sb << 31) | (eb << 23) | fb).astype(np.uint32))

    def ties(k):
        # a * (1 + 2^-j): a shifted copy of a is added, so low bits of the
        # 48-bit product often sit exactly on a rounding tie.
        a = _fp(rng, k, exp_lo=64, exp_hi=190)
        j = rng.integers(1, 24, k).astype(np.uint32)
        b = np.uint32(0x3F80_0000) | (np.uint32(1) << (23 - j)) | (rng.integers(0, 2, k).astype(np.uint32) << 31)
        return a, b

    return _mixture(rng, n, [lambda k: (_fp32(rng, k), _fp32(rng, k)), threshold, ties])


def _fmul_directed():
    a, b = _directed_pairs(SPECIALS32)
    edges = [
        (0x3F80_0001, 0x3F80_0001),  # (1 + 2^-23)^2: below the tie, rounds down
        (0x3F80_0001, 0x3FFF_FFFF),  # rounds up across a binade
        (0x3FC0_0000, 0x3F80_0001),  # 1.5 (1 + 2^-23): exact tie, to even
        (0x0080_0001, 0x3F7F_FFFF),  # rounds up to exactly 2^-126: kept
        (0x0080_0000, 0x3F7F_FFFF),  # (1 - 2^-24) 2^-126: exact, flushed
        (0x0100_0000, 0x3F00_0000),  # exactly 2^-126
        (0x8100_0000, 0x3EFF_FFFF),  # just below, negative: -0
        (0x7F7F_FFFF, 0x3F80_0001),  # max (1 + 2^-23): inf
        (0x7F7F_FFFF, 0x3F7F_FFFF),  # stays finite
        (0x5F80_0000, 0x5F80_0000),  # 2^64 * 2^64 = 2^128: inf
        (0x1F80_0000, 0x2000_0000),  # 2^-64 * 2^-63 = 2^-127: flushed
    ]
    ea, eb = np.array(edges, dtype=np.uint32).T
    return [np.concatenate([a, ea, eb]), np.concatenate([b, eb, ea])]


TAIL_SPECIALS = np.array([
    0x0000_0000, 0x8000_0000, 0x0000_0001, 0x807F_FFFF,  # zeros and subnormals
    0x7F80_0000, 0xFF80_0000, 0x7FC0_0000, 0xFFC0_0000, 0x7F80_0001, 0xFFFF_FFFF,  # infinities, NaNs
    0x0080_0000, 0x8080_0000, 0x7F7F_FFFF, 0xFF7F_FFFF, 0x7F00_0000, 0x0100_0000,  # range edges
    0x3F80_0000, 0xBF80_0000, 0x4000_0000, 0x3F7F_FFFF, 0x3F80_0001, 0x4080_0000,  # around 1, powers of two
    0x42B0_0000, 0x42B1_7217, 0x42B1_7218, 0x42B2_0000, 0xC2AE_AC4F, 0xC2AE_AC50,  # exp overflow/flush edges
    0xC2BA_0000, 0xC2CF_FFFF, 0xC2D0_0000, 0xC2D0_0001, 0x42D0_0000, 0x42D0_0001,  # silu edges, exp clamp
    0x7E80_0000, 0x7EFF_FFFF, 0x0000_0000, 0x3400_0000, 0xB400_0000, 0x3300_0000,  # recip flush, tiny
], dtype=np.uint32)


def _tail_stimulus(rng, n, *, exp_lo, exp_hi):
    """Uniform patterns, the function's useful exponent range, edges and specials."""
    def near_edges(k):
        base = _pick(rng, TAIL_SPECIALS, k).astype(np.int64)
        return ((base + rng.integers(-300, 301, k)) & 0xFFFF_FFFF).astype(np.uint32),

    return _mixture(rng, n, [
        lambda k: (rng.integers(0, 1 << 32, k, dtype=np.uint64).astype(np.uint32),),
        lambda k: (_fp(rng, k, exp_lo=exp_lo, exp_hi=exp_hi),),
        near_edges,
        lambda k: (_pick(rng, TAIL_SPECIALS, k),),
    ])[0]


def _tail_directed():
    # Every bf16 value with exponent field near the bias (|x| in [2^-8, 2^8]), plus specials.
    bf16 = np.arange(1 << 16, dtype=np.uint32) << 16
    e = (bf16 >> 23) & 0xFF
    return [np.concatenate([TAIL_SPECIALS, bf16[(e >= 119) & (e <= 135)]])]


_TAIL_CODES = {op.value: op.name.lower() for op in arith.TailOp}


def _tail_golden(x, op):
    """Every lane's op applied to its x through the single-function golden models."""
    x, op = np.asarray(x, dtype=np.uint32), np.asarray(op).astype(np.int64)
    out = x.copy()
    for code, name in _TAIL_CODES.items():
        pick = op == code
        if pick.any():
            out[pick] = golden_tail.apply(name, x[pick])
    return out


def _tail_ops(rng, n):
    """Op codes 0-7: the six functions, NONE and the unused code 7 (which passes x)."""
    return rng.integers(0, 8, n).astype(np.uint32)


def _combined_directed():
    (x,) = _tail_directed()
    return [np.tile(x, 8), np.repeat(np.arange(8, dtype=np.uint32), len(x))]


def _fma_stimulus(rng, n):
    def cancel(k):
        a, b = _bf16(rng, k), _bf16(rng, k)
        p = golden.bf16_mul(a, b)
        return a, b, _near(rng, p, max_gap=1) ^ np.uint32(0x8000_0000)

    return _mixture(rng, n, [lambda k: (_bf16(rng, k), _bf16(rng, k), _fp32(rng, k)), cancel])


def _int_stimulus(rng, n):
    def edge(k):
        power = rng.integers(0, 32, k, dtype=np.int64)
        offset = rng.integers(-3, 4, k)
        value = (np.int64(1) << power) + offset
        sign = np.where(rng.integers(0, 2, k) == 0, 1, -1)
        return ((value * sign) & 0xFFFF_FFFF).astype(np.uint32),

    return _mixture(rng, n, [
        lambda k: (rng.integers(0, 1 << 32, k, dtype=np.uint64).astype(np.uint32),),
        lambda k: ((rng.integers(-70000, 70000, k) & 0xFFFF_FFFF).astype(np.uint32),),
        edge,
    ])[0]


def _f2i_stimulus(rng, n):
    return _mixture(rng, n, [
        lambda k: (_fp32(rng, k),),
        lambda k: (_fp(rng, k, exp_lo=120, exp_hi=162),),
    ])[0]


def _cmp_stimulus(rng, n):
    def equalish(k):
        a = _fp32(rng, k)
        flip = rng.integers(0, 2, k).astype(np.uint32) << 31
        return a, np.where(rng.integers(0, 2, k) == 0, a, a ^ flip)

    return _mixture(rng, n, [lambda k: (_fp32(rng, k), _fp32(rng, k)), equalish,
                             lambda k: (_fp(rng, k, exp_lo=0, exp_hi=2), _fp(rng, k, exp_lo=0, exp_hi=2))])


def _directed_pairs(pool):
    a, b = np.meshgrid(pool, pool)
    return a.ravel(), b.ravel()


def _cmp_golden(a, b):
    flags = golden.fp32_cmp(a, b)
    out = golden.fp32_max(a, b).astype(object) | (golden.fp32_min(a, b).astype(object) << 32)
    for bit, name in enumerate(("lt", "equal", "gt", "unordered")):
        out = out | (flags[name].astype(object) << (64 + bit))
    return out


@dataclass(frozen=True)
class ArithCase:
    """One arithmetic unit under test.

    ``fields`` are the input payload's fields as (name, width) from the least
    significant bit up; ``golden`` maps field arrays to the expected output
    payloads; ``stimulus(rng, n)`` and ``directed()`` return field arrays.
    """

    name: str
    component: type
    fields: tuple
    golden: Callable
    stimulus: Callable
    directed: Callable

    def pack(self, columns):
        packed = np.zeros(len(columns[0]), dtype=object)
        shift = 0
        for (_, width), column in zip(self.fields, columns):
            packed = packed | (np.asarray(column).astype(np.uint64).astype(object) << shift)
            shift += width
        return [int(v) for v in packed]

    def unpack(self, payloads):
        columns, shift = [], 0
        for _, width in self.fields:
            columns.append(np.array([(p >> shift) & ((1 << width) - 1) for p in payloads],
                                    dtype=np.uint32 if width > 16 else np.uint16 if width > 1 else np.uint32))
            shift += width
        return columns

    def expected(self, columns):
        return [int(v) for v in np.asarray(self.golden(*columns)).astype(object)]


def _fma_directed():
    pool16 = SPECIALS16
    a, b = _directed_pairs(pool16)
    c = np.resize(SPECIALS32, len(a))
    # a*b + c cancelling exactly, and 1*1 + tiny ties.
    extra_a = np.array([0x3F80, 0x3F80, 0x4000, 0x3FC0], dtype=np.uint16)
    extra_b = np.array([0x3F80, 0x3F80, 0x3F80, 0x3FC0], dtype=np.uint16)
    extra_c = np.array([0xBF80_0000, 0x3380_0000, 0xC000_0000, 0xC010_0000], dtype=np.uint32)
    return [np.concatenate([a, extra_a]), np.concatenate([b, extra_b]), np.concatenate([c, extra_c])]


def _add_directed():
    a, b = _directed_pairs(SPECIALS32)
    ties = [
        (0x3F80_0000, 0x3380_0000),  # 1 + 2^-24: tie, stays even at 1
        (0x3F80_0001, 0x3380_0000),  # odd + half ulp: tie rounds up to even
        (0x3F80_0000, 0x3380_0001),  # just above the tie: rounds up
        (0x3FFF_FFFF, 0x3400_0000),  # carry out of rounding into the exponent
        (0x7F7F_FFFF, 0x7380_0000),  # max + half ulp: tie, rounds to even (inf)
        (0x7F7F_FFFF, 0x7300_0000),  # max + quarter ulp: stays max
        (0x3F80_0001, 0xBF80_0000),  # catastrophic cancellation to 2^-23
        (0x0080_0001, 0x8080_0000),  # difference is subnormal: flushed to +0
        (0x8080_0001, 0x0080_0000),  # same, negative: -0
        (0x4B80_0000, 0x3F80_0000),  # 2^24 + 1: tie to even
    ]
    ta, tb = np.array(ties, dtype=np.uint32).T
    a, b = np.concatenate([a, a, ta]), np.concatenate([b, b, tb])
    sub = np.concatenate([np.zeros(len(SPECIALS32) ** 2), np.ones(len(SPECIALS32) ** 2), np.zeros(len(ties))])
    return [a, b, sub.astype(np.uint32)]


CASES = {c.name: c for c in [
    ArithCase("mul", arith.Bf16Mul, (("a", 16), ("b", 16)), golden.bf16_mul,
              _mul_stimulus, lambda: _directed_pairs(SPECIALS16)),
    ArithCase("fmul", arith.Fp32Mul, (("a", 32), ("b", 32)), golden.fp32_mul, _fmul_stimulus, _fmul_directed),
    ArithCase("add", arith.Fp32Add, (("a", 32), ("b", 32), ("sub", 1)),
              lambda a, b, sub: golden.fp32_add(a, b, sub=sub.astype(bool)), _add_stimulus, _add_directed),
    ArithCase("fma", arith.Fma, (("a", 16), ("b", 16), ("c", 32)), golden.fma, _fma_stimulus, _fma_directed),
    ArithCase("f2bf", arith.Fp32ToBf16, (("x", 32),), golden.fp32_to_bf16, lambda rng, n: [_fp32(rng, n)],
              lambda: [np.concatenate([SPECIALS32, np.array([0x3F80_8000, 0x3F81_8000, 0x3F80_8001, 0x7F7F_8000,
                                                             0x7F7F_7FFF, 0x0080_8000], dtype=np.uint32)])]),
    ArithCase("bf2f", arith.Bf16ToFp32, (("x", 16),), golden.bf16_to_fp32, lambda rng, n: [_bf16(rng, n)],
              lambda: [np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)]),
    ArithCase("i2f", arith.IntToFp32, (("x", 32),), golden.int_to_fp32, lambda rng, n: [_int_stimulus(rng, n)],
              lambda: [np.array([0, 1, 0xFFFF_FFFF, 0x8000_0000, 0x7FFF_FFFF, (1 << 24) + 1, (1 << 24) + 3,
                                 0xFEFF_FFFF, 0x0100_0001, 0x7FFF_FFC0, 0x7FFF_FFBF], dtype=np.uint32)]),
    ArithCase("f2i", arith.Fp32ToInt, (("x", 32),), golden.fp32_to_int, lambda rng, n: [_f2i_stimulus(rng, n)],
              lambda: [np.concatenate([SPECIALS32, np.array([0x3F7F_FFFF, 0xBF7F_FFFF, 0x4F00_0000, 0xCF00_0000,
                                                             0xCF00_0001, 0x4EFF_FFFF, 0xBFC0_0000], dtype=np.uint32)])]),
    ArithCase("cmp", arith.Fp32Cmp, (("a", 32), ("b", 32)), _cmp_golden, _cmp_stimulus,
              lambda: _directed_pairs(SPECIALS32)),
    ArithCase("exp", arith.Exp, (("x", 32),), golden_tail.exp,
              lambda rng, n: [_tail_stimulus(rng, n, exp_lo=110, exp_hi=134)], _tail_directed),
    ArithCase("recip", arith.Recip, (("x", 32),), golden_tail.recip,
              lambda rng, n: [_tail_stimulus(rng, n, exp_lo=1, exp_hi=255)], _tail_directed),
    ArithCase("rsqrt", arith.Rsqrt, (("x", 32),), golden_tail.rsqrt,
              lambda rng, n: [_tail_stimulus(rng, n, exp_lo=1, exp_hi=255)], _tail_directed),
    ArithCase("sigmoid", arith.Sigmoid, (("x", 32),), golden_tail.sigmoid,
              lambda rng, n: [_tail_stimulus(rng, n, exp_lo=110, exp_hi=134)], _tail_directed),
    ArithCase("silu", arith.Silu, (("x", 32),), golden_tail.silu,
              lambda rng, n: [_tail_stimulus(rng, n, exp_lo=110, exp_hi=134)], _tail_directed),
    ArithCase("tail", arith.Tail, (("x", 32), ("op", 3)), _tail_golden,
              lambda rng, n: [_tail_stimulus(rng, n, exp_lo=100, exp_hi=155), _tail_ops(rng, n)],
              _combined_directed),
]}
