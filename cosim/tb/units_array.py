"""Simulation units of the tile-array testbench.

``array``: config S (2x4); ``array-3x4``: the same kernels on a 3x4 array
(a second array size: a larger mesh, longer routes). Each tail function is a lane-wide datapath, so
the build gives each only to the PCU that the kernels in
sw/tile/kernels.py place it on: exp, SiLU and a reciprocal so0 at (0, 2)
(softmax, GEMV + bias + SiLU), rsqrt on so0 at (0, 0) (RMSNorm); the other
PCUs have none.
"""

from cosim.harness import SimUnit
from sw.tile.kernels import TEST_POST, TEST_TAIL
from hw.tile.array import TileArray
from hw.tile.params import DEFAULT, SMALL, ArrayParams

ARRAYS = {
    "small": (SMALL, TEST_TAIL, TEST_POST),
    "3x4": (ArrayParams(rows=3, cols=4, lanes=4, stages=2, pmu_bank_words=64), TEST_TAIL, TEST_POST),
    # The default 4x8 array (8 lanes x 4 stages): built only by make bench (bench/tiles.py), too large for tests.
    "4x8": (DEFAULT, TEST_TAIL, TEST_POST),
}


def _unit(name, key):
    params, tail_ops, post_ops = ARRAYS[key]
    return SimUnit(name=name, design=lambda: TileArray(params, pcu_tail_ops=tail_ops, pcu_post_ops=post_ops),
                   testbench="cosim.tb.test_array", env={"OPENRDU_ARRAY": key})


UNITS = {"array": _unit("array", "small"), "array-3x4": _unit("array-3x4", "3x4")}
