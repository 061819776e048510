"""Simulation units of the whole chip: the co-simulated targets ``sw.target.CHIP`` and ``sw.target.CHIP_4X8``.

``chip``: its 2x4 array (4 lanes, 2 stages, 2048-word PMU banks), an AGCU at
every I/O position, EXP + SILU tails and RECIP + RSQRT post functions on every
PCU, 16 MiB HBM and 64 MiB DDR: the chip the compiler maps onto and the
runtime drives, so the testbench, the demo and decode on the RTL share one
build.

``chip-4x8``: the same tiles and memory on a 4x8 array (16 PCUs, 16 AGCUs),
where a decoder layer of the default model is one kernel and its looped
program loops. Only decode on the RTL runs it (:func:`cosim.decode.run_rtl`,
``bench looping``): it is in :data:`TARGET_UNITS`, not in :data:`UNITS`, so
``make test`` does not build it.
"""

from cosim.harness import SimUnit
from cosim.store import STORE_SOURCES
from sw.target import CHIP, CHIP_4X8

TARGET = CHIP
ARRAY = CHIP.array
MEMORY = CHIP.memory
AGCUS = CHIP.agcus
TAIL_OPS = CHIP.tail_ops
POST_OPS = CHIP.post_ops

# The device backends' conformance tests and the sequencer's share this simulation: no second build of the same chip.
# Its reset input is registered (cosim.top_reset): CocotbDevice waits two cycles after releasing reset.
UNITS = {"chip": SimUnit(name="chip", design=CHIP.chip, testbench=("cosim.tb.test_chip", "cosim.tb.test_device",
                                                                      "cosim.tb.test_sequencer", "cosim.tb.test_loop"),
                         sources=STORE_SOURCES, registered_reset=True)}

# Co-simulated target's name -> the unit whose build is that chip; the testbench is the caller's.
TARGET_UNITS = {CHIP.name: UNITS["chip"],
                CHIP_4X8.name: SimUnit(name="chip-4x8", design=CHIP_4X8.chip, testbench="cosim.tb.run_decode",
                                       sources=STORE_SOURCES, registered_reset=True)}
# The targets of TARGET_UNITS, by name.
SIMULATED = {CHIP.name: CHIP, CHIP_4X8.name: CHIP_4X8}
