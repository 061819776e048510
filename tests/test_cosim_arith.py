"""Every arithmetic unit's cocotb testbench, run in Verilator from pytest."""

import pytest

from cosim import harness
from cosim.units import UNITS


def failure_report(results):
    log = (results.xml.parent / "sim.log").read_text().splitlines()
    keep = [line for line in log if "Error" in line or "differ" in line or " op " in line or "FAIL" in line]
    return "\n".join(keep[-40:])


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_against_golden(name):
    results = harness.run(UNITS[name], quiet=True)
    assert results.tests == 4, f"{name}: expected 4 cocotb tests, ran {results.tests}"
    assert results.failed == 0, f"{name}: {results.failed} cocotb tests failed\n{failure_report(results)}"
