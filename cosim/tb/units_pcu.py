"""Simulation unit of the PCU testbench: small array parameters, every tail function."""

from cosim.harness import SimUnit
from hw.tile.params import SMALL
from hw.tile.pcu import Pcu, ALL_TAIL_OPS

UNITS = {"pcu": SimUnit(name="pcu", design=lambda: Pcu(SMALL), testbench="cosim.tb.test_pcu",
                        env={"OPENRDU_PARAMS": "SMALL",
                             "OPENRDU_PCU_TAIL": ",".join(op.name for op in ALL_TAIL_OPS)})}
