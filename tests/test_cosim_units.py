"""Every cocotb testbench (``cosim/tb/units_*.py``), run in Verilator from pytest."""

import pytest

from cosim import harness
from cosim.units import UNITS


def failure_report(results):
    log = (results.xml.parent / "sim.log").read_text().splitlines()
    keep = [line for line in log if "Error" in line or "differ" in line or " op " in line or "FAIL" in line]
    return "\n".join(keep[-40:])


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_testbench(name):
    results = harness.run(UNITS[name], quiet=True)
    assert results.tests > 0, f"{name}: the testbench ran no cocotb test"
    assert results.failed == 0, f"{name}: {results.failed} of {results.tests} cocotb tests failed\n" \
                                f"{failure_report(results)}"
