"""Simulation units of the arithmetic testbench: one per unit, in its BIST collar."""

from cosim.bist import BistCollar
from cosim.harness import SimUnit
from cosim.tb.arith_cases import CASES


def _arith_unit(case):
    return SimUnit(name=case.name, design=lambda: BistCollar(case.component()),
                   testbench="cosim.tb.test_arith", env={"OPENRDU_UNIT": case.name})


UNITS = {case.name: _arith_unit(case) for case in CASES.values()}
