"""Constant tables of the PCU tail functions (exp, recip, rsqrt, sigmoid, silu).

``hw.arith.tail`` builds its ROMs and constant multipliers from these and
``sw.golden.tail`` computes with them, so the RTL and the golden model agree
bit for bit. The algorithms and their accuracy are in docs/numerics.md.
"""

import math

# exp: t = x log2(e) with 32 fraction bits is the product of the 24-bit
# significand and log2(e) scaled by 2^38, shifted right by 156 - e.
EXP_LOG2E = round(2**38 / math.log(2))
# |x| >= 128 (exponent field 134 and up, infinities included) saturates:
# n = +-EXP_HUGE_N puts every result far outside the normal range.
EXP_X_HUGE = 134
EXP_HUGE_N = 400
# 2^f = 2^(j/128) (1 + p(r)) with j the top 7 bits of f and r < 2^-7 the rest:
# a table with 32 fraction bits, and p(r) = c1 r + c2 r^2 + c3 r^3 (Taylor,
# 2^-34.7 truncation error) with coefficients scaled by 2^32.
EXP_TABLE = tuple(round(2 ** (j / 128) * 2**32) for j in range(128))
EXP_POLY = tuple(round(math.log(2) ** k / math.factorial(k) * 2**32) for k in (1, 2, 3))

# Newton seeds with 12 fraction bits, minimising the worst relative error on
# each interval [a, b) of the reduced argument: 2 / (a + b) for 1/d on the top
# 7 fraction bits, 2 / (sqrt(a) + sqrt(b)) for 1/sqrt(D) on the exponent
# parity and the top 6 fraction bits.
SEED_FRAC = 12
RECIP_SEED = tuple(round(2**SEED_FRAC * 2 / ((1 + j / 128) + (1 + (j + 1) / 128))) for j in range(128))
RSQRT_SEED = tuple(round(2**SEED_FRAC * 2 / (math.sqrt(2 ** (j // 64) * (1 + (j % 64) / 64))
                                              + math.sqrt(2 ** (j // 64) * (1 + (j % 64 + 1) / 64))))
                   for j in range(128))
