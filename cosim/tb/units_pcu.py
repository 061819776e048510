"""Simulation unit of the PCU testbench: small array parameters, a tail with exp and recip.

The tail's function set is a build parameter; this unit builds two of them to
keep the Verilator build short, and the testbench runs the kernels that use
them (see cosim/tb/test_pcu.py).
"""

from cosim.harness import SimUnit
from hw.tile.params import SMALL
from hw.tile.pcu import Pcu, TailOp

_TAIL = (TailOp.EXP, TailOp.RECIP)

UNITS = {"pcu": SimUnit(name="pcu", design=lambda: Pcu(SMALL, tail_ops=_TAIL), testbench="cosim.tb.test_pcu",
                        env={"OPENRDU_PARAMS": "SMALL", "OPENRDU_PCU_TAIL": ",".join(op.name for op in _TAIL)})}
