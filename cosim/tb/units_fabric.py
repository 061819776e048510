"""Simulation units of the fabric testbench: the switch mesh alone, unit ports on top."""

from cosim.harness import SimUnit
from hw.tile.fabric import Fabric
from hw.tile.params import SMALL, ArrayParams

FABRIC_3X3 = ArrayParams(rows=3, cols=3, lanes=4, stages=2, pmu_bank_words=64)
PARAMS = {"small": SMALL, "3x3": FABRIC_3X3}

UNITS = {
    "fabric": SimUnit(name="fabric", design=lambda: Fabric(PARAMS["small"]), testbench="cosim.tb.test_fabric",
                      env={"OPENRDU_FABRIC": "small"}),
    "fabric-3x3": SimUnit(name="fabric-3x3", design=lambda: Fabric(PARAMS["3x3"]), testbench="cosim.tb.test_fabric",
                          env={"OPENRDU_FABRIC": "3x3"}),
}
