"""Simulation unit of the whole chip: the co-simulated target ``sw.target.CHIP``.

Its 2x4 array (4 lanes, 2 stages, 2048-word PMU banks), an AGCU at every I/O
position, EXP + SILU tails and RECIP + RSQRT post functions on every PCU,
16 MiB HBM and 64 MiB DDR: the chip the compiler maps onto and the runtime
drives, so the testbench, the demo and decode on the RTL share one build.
"""

from cosim.harness import SimUnit
from cosim.store import STORE_SOURCES
from sw.target import CHIP

TARGET = CHIP
ARRAY = CHIP.array
MEMORY = CHIP.memory
AGCUS = CHIP.agcus
TAIL_OPS = CHIP.tail_ops
POST_OPS = CHIP.post_ops

# The device backends' conformance tests and the sequencer's share this simulation: no second build of the same chip.
UNITS = {"chip": SimUnit(name="chip", design=CHIP.chip, testbench=("cosim.tb.test_chip", "cosim.tb.test_device",
                                                                      "cosim.tb.test_sequencer"),
                         sources=STORE_SOURCES)}
