"""Simulation units of the tile-array testbench.

``array``: config S (2x4). Each tail function is a lane-wide datapath, so
the build gives each only to the PCU that the kernels in
cosim/tb/array_kernels.py place it on: exp, SiLU and a reciprocal so0 at (0, 2)
(softmax, GEMV + bias + SiLU), rsqrt on so0 at (0, 0) (RMSNorm); the other
PCUs have none.
"""

from cosim.harness import SimUnit
from cosim.tb.array_kernels import TEST_POST, TEST_TAIL
from hw.tile.array import TileArray
from hw.tile.params import SMALL

ARRAYS = {"small": (SMALL, TEST_TAIL, TEST_POST)}


def _unit(name, key):
    params, tail_ops, post_ops = ARRAYS[key]
    return SimUnit(name=name, design=lambda: TileArray(params, pcu_tail_ops=tail_ops, pcu_post_ops=post_ops),
                   testbench="cosim.tb.test_array", env={"OPENRDU_ARRAY": key})


UNITS = {"array": _unit("array", "small")}
