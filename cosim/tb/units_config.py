"""Simulation unit of the configuration loader testbench."""

from cosim.harness import SimUnit
from facts.bitstream import VERSION
from hw.tile.config import ConfigLoader

# Widths cover one partial word, one exact word, a word plus one bit, and
# multi-word records; id 258 needs the high byte of the 16-bit id field.
TARGETS = {0: 5, 1: 32, 2: 33, 17: 100, 258: 257}
TIMEOUT = 64

UNITS = {
    "config": SimUnit(name="config", design=lambda: ConfigLoader(TARGETS, version=VERSION, timeout=TIMEOUT),
                      testbench="cosim.tb.test_config"),
}
