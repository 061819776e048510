"""Simulation units of the PMU testbench: small parameters, and the default ones."""

from cosim.harness import SimUnit
from hw.tile import params
from hw.tile.pmu import Pmu

UNITS = {
    "pmu": SimUnit(name="pmu", design=lambda: Pmu(params.SMALL), testbench="cosim.tb.test_pmu",
                   env={"OPENRDU_PMU_PARAMS": "SMALL"}),
    "pmu-m": SimUnit(name="pmu-m", design=lambda: Pmu(params.DEFAULT), testbench="cosim.tb.test_pmu",
                     env={"OPENRDU_PMU_PARAMS": "DEFAULT"}),
}
