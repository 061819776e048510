"""Size parameters of the tile array."""

from dataclasses import dataclass, fields

_LIMITS = {
    "rows": (1, 16), "cols": (2, 16), "lanes": (2, 32), "stages": (1, 8),
    "pmu_bank_words": (16, 1 << 16), "switch_fifo_depth": (1, 16), "unit_fifo_depth": (1, 16),
    "vector_channels": (1, 8), "scalar_channels": (1, 8),
}


@dataclass(frozen=True)
class ArrayParams:
    """Sizes of one tile array; see docs/tile-array.md for each field.

    Raises ``ValueError`` naming the field when a value is out of range, and
    when ``lanes`` or ``pmu_bank_words`` is not a power of two (PMU bank and
    row selection are bit fields).
    """

    rows: int = 4
    cols: int = 8
    lanes: int = 8
    stages: int = 4
    pmu_bank_words: int = 512
    switch_fifo_depth: int = 2
    unit_fifo_depth: int = 4
    vector_channels: int = 2
    scalar_channels: int = 2

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            lo, hi = _LIMITS[f.name]
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ValueError(f"ArrayParams.{f.name} must be an integer in [{lo}, {hi}], not {value!r}")
        for name in ("lanes", "pmu_bank_words"):
            value = getattr(self, name)
            if value & (value - 1):
                raise ValueError(f"ArrayParams.{name} must be a power of two, not {value}")

    @property
    def pmu_words(self):
        """32-bit words in one PMU."""
        return self.lanes * self.pmu_bank_words

    def is_pcu(self, row, col):
        return (row + col) % 2 == 0

    def units(self):
        """(row, col, kind) of every unit, kind "pcu" or "pmu", in unit-id order."""
        return [(r, c, "pcu" if self.is_pcu(r, c) else "pmu") for r in range(self.rows) for c in range(self.cols)]


SMALL = ArrayParams(rows=2, cols=4, lanes=4, stages=2, pmu_bank_words=64)
DEFAULT = ArrayParams()
