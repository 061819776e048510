"""An integrated clock gate (ICG): a unit's clock runs only in cycles its enable asks for.

The gate is the standard latch-and-AND cell: a latch, transparent while the
clock is low, holds the enable through the high phase, so the gated clock
never glitches when the enable changes after a rising edge. Amaranth has no
latches, so the cell is a Verilog module (:data:`VERILOG`) instantiated by
name; :func:`add_definition` appends it to a design's Verilog for the
Verilator build.

In silicon the gate saves the clock power of idle units. In the
co-simulation it saves time: Verilator evaluates a clock domain's logic only
on that domain's edges, so an idle unit's registers behind a gate cost
nothing per cycle; logic that reads signals of other domains still runs at
their edges (docs/performance.md).
"""

import re

from amaranth import Module, Signal, Value
from amaranth.hdl import ClockDomain, ClockSignal, DomainRenamer, Instance, ResetSignal

MODULE = "openrdu_clock_gate"

VERILOG = f"""
module {MODULE}(clk, en, gclk);
  input clk;
  input en;
  output gclk;
  reg en_latched;
  initial en_latched = 1'b1;
  /* verilator lint_off LATCH */
  always @(clk or en)
    if (!clk) en_latched = en;
  /* verilator lint_on LATCH */
  assign gclk = clk & en_latched;
endmodule
"""


def check_clock_gate(clock_gate):
    """Refuse a unit's ``clock_gate`` argument unless it is a bool; raises ``TypeError``."""
    if not isinstance(clock_gate, bool):
        raise TypeError(f"clock_gate must be a bool, not {clock_gate!r}")


def clock_gate(m, en, *, domain="sync", name="gclk"):
    """Add a gate to ``m`` and return the gated clock: ``domain``'s clock in the cycles where ``en`` was high.

    ``en`` is sampled through the low phase of the clock (the cycle before the edge it lets through), as an
    enable register's input would be.
    """
    gclk = Signal(name=name)
    m.submodules[f"{name}_cell"] = Instance(MODULE, i_clk=ClockSignal(domain), i_en=en, o_gclk=gclk)
    return gclk


def gated_module(unit, en, *, name):
    """A module that runs ``unit`` (its ``sync`` logic) on a clock that ticks after the cycles where ``en`` or
    reset held.

    ``en`` must be high in every cycle in which a register of ``unit`` can change, reset aside: the clock also
    ticks through reset, so the unit's registers take their reset values even when it was idle, and it behaves
    as ungated. ``name`` names the submodule.
    """
    m = Module()
    m.domains.core = ClockDomain("core", local=True)
    m.submodules[name] = DomainRenamer("core")(unit)
    clock_en = Signal(name="clock_en")
    m.d.comb += [
        clock_en.eq(en | ResetSignal()),
        ClockSignal("core").eq(clock_gate(m, clock_en)),
        ResetSignal("core").eq(ResetSignal()),
    ]
    return m


def gated_unit(unit, *, cfg, held, active, offered):
    """A module that runs ``unit`` on a gated clock; the pattern the tile units share.

    Parameters
    ----------
    unit : Module
        The unit's logic in the ``sync`` domain, configured by ``held``.
    cfg : Value
        The configuration record from outside.
    held : Signal
        A reset-less register of ``cfg``'s shape (made by the caller, who gives it its layout). It loads
        ``cfg`` on the gated clock, so the unit sees a new record one cycle late; it follows ``cfg`` through
        reset, when the gate is open.
    active : Value
        Work in flight inside ``unit`` (data buffered, in a pipeline or offered on an output).
    offered : Value
        Work arriving: any input stream's ``valid``.

    The clock ticks in the cycles after one where ``active``, ``offered``, a configuration change or reset
    held: every cycle in which a register of ``unit`` can change. A unit's registers must change only then.
    """
    unit.d.sync += held.eq(cfg)
    return gated_module(unit, active | offered | (Value.cast(held) != Value.cast(cfg)), name="unit")


def add_definition(text):
    """``text`` (Verilog) with the gate's module appended when it instantiates the gate and lacks the module."""
    uses = re.search(rf"^\s*{MODULE}\s", text, re.M)
    defines = re.search(rf"^module {MODULE}\(", text, re.M)
    return text + VERILOG if uses and not defines else text
