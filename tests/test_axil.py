"""The AXI4-Lite master's testbench (unit ``axil``, cosim/tb/test_axil.py) fails wrong masters.

The right master passes it in tests/test_cosim_units.py; here each mutant of
tests/axil_mutants.py must fail the cocotb tests that check the rule it breaks.
"""

import xml.etree.ElementTree as ElementTree
from dataclasses import replace

import pytest

from cosim import harness
from cosim.units import UNITS

# Mutant -> the cocotb tests that fail it: those that check the rule it breaks, and no others (a mutant
# that failed every test, say in its construction, would prove nothing).
MUTANTS = {
    "IgnoresResponses": {"model_slave_under_idle_and_backpressure", "register_bank_behind_a_slice",
                         "concurrent_callers_in_call_order", "unsolicited_responses"},
    "IgnoresResets": {"reset_in_the_middle_of_accesses", "cancelled_callers", "unsolicited_responses",
                      "stray_responses_back_to_back"},
    "SwallowsStrayResponses": {"unsolicited_responses", "stray_responses_back_to_back"},
    "TakesAwWithW": {"model_slave_under_idle_and_backpressure", "concurrent_callers_in_call_order"},
    "Unserialized": {"concurrent_callers_in_call_order", "cancelled_callers"},
}


def failed_tests(xml):
    return {case.get("name") for case in ElementTree.parse(xml).iter("testcase")
            if case.find("failure") is not None or case.find("error") is not None}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_wrong_master_fails_its_testbench(mutant):
    unit = UNITS["axil"]
    # A fixed seed: which tests a wrong master fails must not depend on the caller's OPENRDU_SEED.
    unit = replace(unit, env={**unit.env, "OPENRDU_AXIL_MASTER": f"tests.axil_mutants:{mutant}",
                              "OPENRDU_AXIL_OPS": "100", "OPENRDU_SEED": "1"})
    results = harness.run(unit, quiet=True)
    assert results.tests == 7
    failed = failed_tests(results.xml)
    assert failed == MUTANTS[mutant], f"{mutant} failed {sorted(failed)}, expected {sorted(MUTANTS[mutant])}"
