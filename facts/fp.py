"""fp32 and bf16 bit patterns that the RTL and the golden models both produce (docs/numerics.md)."""

CANON_NAN32 = 0x7FC0_0000  # the one NaN every unit returns
CANON_NAN16 = 0x7FC0
INF32 = 0x7F80_0000
