"""Simulation unit of the whole chip: config S tile array, an AGCU at every I/O position, SMALL memory."""

from cosim.harness import SimUnit
from cosim.store import STORE_SOURCES
from cosim.tb.array_kernels import TEST_POST, TEST_TAIL
from hw.chip import Chip, all_io_positions
from hw.mem import params as mem_params
from hw.tile.params import SMALL

ARRAY = SMALL
MEMORY = mem_params.SMALL
AGCUS = all_io_positions(ARRAY)


def small_chip():
    return Chip(ARRAY, MEMORY, agcus=AGCUS, pcu_tail_ops=TEST_TAIL, pcu_post_ops=TEST_POST)


UNITS = {"chip": SimUnit(name="chip", design=small_chip, testbench="cosim.tb.test_chip", sources=STORE_SOURCES)}
