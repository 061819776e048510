"""Cycle counts measured on the RTL, shared by the cosim testbenches and the model tests.

Each entry is a case the RTL testbench runs without stalls, asserting it takes
exactly the cycles listed; the model tests assert that the fast model's
estimate of the same case equals them. So a model timing is held to the RTL,
never to a formula or a second model.

- ``PMU``: PMU runs on ``hw.tile.params.SMALL`` (unit ``pmu``, testcase
  ``timing_table``), cycle 0 the one the configuration is enabled, counted to
  the last vo0 transfer inclusive. A case is a list of runs
  ``(rows, si0, si1, cycles)`` made one after another on the same memory.
- ``TIER_STREAM``: ``words`` reads of consecutive words offered back to back
  to one controller of ``hw.mem.params.SMALL`` (units ``hbm`` and ``ddr``,
  testcase ``stream_timing_table``), counted from the cycle the first is
  offered to the last response inclusive.
- ``ARRAY``: kernels on the SMALL array (unit ``array``, testcase
  ``timing_table``), counted as ``test_array.run_kernel`` does.
"""

import numpy as np

from hw.tile.params import SMALL
from sw.tile.kernel import Kernel
from sw.tile.kernels import ArrayCase
from sw.tile.pmu import AddressPattern, PmuConfig

L = SMALL.lanes


def _rows(rows, **kwargs):
    return PmuConfig(write=AddressPattern.linear(rows, L), read=AddressPattern.linear(rows, L), **kwargs)


_BASES = PmuConfig(write=AddressPattern.linear(1, L, runtime_base=True),
                   read=AddressPattern.linear(2, L, runtime_base=True), write_passes=3, read_passes=3)
_WORDS = SMALL.pmu_words

PMU = {
    # 8 rows written, read in the order 0, 4, 1, 5, ... with last on every second row.
    "row_read_order": (PmuConfig(write=AddressPattern.linear(8, L),
                                 read=AddressPattern((2, 4), (4 * L, L), last_level=0), write_passes=1,
                                 read_passes=1),
                       [(8, (), (), 18)]),
    # 8 passes of 16 rows through one buffer (writes and reads take turns) and through two (they overlap).
    "single_buffer": (_rows(16, write_passes=8, read_passes=8), [(128, (), (), 258)]),
    "double_buffer": (_rows(16, buffers=2, buffer_words=64, write_passes=8, read_passes=8), [(128, (), (), 146)]),
    # Runtime write and read bases per pass, some out of range, four runs on one memory
    # (tests/test_model_plan.py: the model's cached plans give the same cycles as fresh ones).
    "runtime_bases": (_BASES, [(3, (8, _WORDS, 16), (4, _WORDS - 4, 18), 11), (2, (0, 8), (0, 8), 8),
                               (3, (8, _WORDS, 16), (4, _WORDS - 4, 18), 11), (3, (24, 24, 24), (24, 20, 24), 11)]),
}

TIER_STREAM = {"hbm": (500, 526), "ddr": (500, 4031)}


def pmu_copy():
    """One PMU between a host input and a host output of the SMALL array: 4 rows in, the same 4 out."""
    k = Kernel(SMALL, tail_ops=(), post_ops=())
    x = k.host_input("x", col=1)
    buf = k.pmu((0, 1), PmuConfig(write=AddressPattern.linear(4, 4), read=AddressPattern.linear(4, 4)))
    y = k.host_output("y", col=1)
    k.connect(x.out, buf.vi0)
    k.connect(buf.vo0, y.inp)
    data = np.arange(16, dtype=np.uint32).reshape(4, 4)
    return ArrayCase("pmu_copy", k.build(), {"x": (data, np.array([0, 0, 0, 1], bool))},
                     lambda outputs: float(np.any(outputs["y"][0] != data)), 0.0)


ARRAY = {"pmu_copy": (pmu_copy, 15)}
