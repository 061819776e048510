"""Backdoor access to the simulated memory tiers.

The Verilator model keeps each tier in a file mapped by ``hw/mem/store.cpp``
(``$OPENRDU_STORE_DIR/tier<N>.bin``). A testbench in the same process maps
the same file with numpy, so it loads weights or checks results at memory
speed, with no per-word simulator calls: this stands for data already
resident in the tier. Timed (frontdoor) transfers go through the host port
or the copy engine instead.
"""

import os
from pathlib import Path

import numpy as np

from hw.mem.params import TIER_NAMES

STORE_SOURCES = ("hw/mem/store.sv", "hw/mem/store.cpp")


class TierStore:
    """A byte view of one tier's backing file.

    Parameters
    ----------
    tier : int
        ``hw.mem.params.HBM`` or ``DDR``.
    capacity : int
        The tier's capacity in bytes; must equal the simulated controller's.
    directory : path, optional
        Defaults to ``$OPENRDU_STORE_DIR``, which the harness sets per run.
    """

    def __init__(self, tier, capacity, directory=None):
        if tier not in TIER_NAMES:
            raise ValueError(f"no memory tier {tier!r}; tiers are {TIER_NAMES}")
        directory = directory or os.environ.get("OPENRDU_STORE_DIR")
        if not directory:
            raise RuntimeError("OPENRDU_STORE_DIR is not set: the backdoor needs the folder the simulator maps")
        self.name, self.capacity = TIER_NAMES[tier], capacity
        path = Path(directory) / f"tier{tier}.bin"
        with open(path, "ab") as handle:
            if handle.tell() < capacity:
                handle.truncate(capacity)
        self.bytes = np.memmap(path, dtype=np.uint8, mode="r+", shape=(capacity,))

    def _check(self, offset, size):
        if offset < 0 or size < 0 or offset + size > self.capacity:
            raise ValueError(f"{self.name}: bytes [{offset}, {offset + size}) are outside its {self.capacity} bytes")

    def write(self, offset, payload):
        """Store ``payload`` (bytes or a numpy array, taken as raw bytes) at ``offset``."""
        raw = np.frombuffer(payload, dtype=np.uint8) if isinstance(payload, (bytes, bytearray, memoryview)) \
            else np.ascontiguousarray(payload).view(np.uint8).reshape(-1)
        self._check(offset, raw.size)
        self.bytes[offset:offset + raw.size] = raw

    def read(self, offset, size):
        """``size`` bytes from ``offset``, as a copy."""
        self._check(offset, size)
        return np.array(self.bytes[offset:offset + size])

    def load_file(self, offset, path):
        """Copy a whole file into the tier at ``offset``; returns its size."""
        raw = np.fromfile(path, dtype=np.uint8)
        self.write(offset, raw)
        return raw.size
