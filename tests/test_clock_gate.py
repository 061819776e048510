"""The units' clock gates, the co-simulated chip's registered reset, and how both reach the Verilator build.

The gated units' behaviour is checked where they run: the PCU testbench (random kernels under idle and
back-pressure insertion), the AGCU testbench and the chip's, whose simulated times did not move, and
their reset tests (``reset_clears_state``, ``reset_clears_the_idle_units``; docs/performance.md).
"""

import re

import pytest
from amaranth import ClockDomain, ClockSignal, Module, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from cosim import split
from cosim.top_reset import GATE_CELL, GATED_CLOCK, REGISTERED, register_reset
from hw.mem import params as mem_params
from hw.mem.agcu import Agcu
from hw.mem.copy import CopyEngine
from hw.mem.sequencer import Sequencer
from hw.tile import clock_gate
from hw.tile.config import ConfigLoader
from hw.tile.fabric import Fabric
from hw.tile.params import SMALL
from hw.tile.pcu import Pcu


def test_gated_pcu_instantiates_the_gate_and_ungated_does_not():
    gated = verilog.convert(Pcu(SMALL), name="top", emit_src=False)
    plain = verilog.convert(Pcu(SMALL, clock_gate=False), name="top", emit_src=False)
    assert re.search(rf"^\s*{clock_gate.MODULE} ", gated, re.M)
    assert "cfg_held" in gated and "clock_en" in gated
    assert clock_gate.MODULE not in plain and "cfg_held" not in plain
    with pytest.raises(TypeError, match="clock_gate must be a bool"):
        Pcu(SMALL, clock_gate=1)


def test_gated_pcu_gates_the_parts_a_record_may_leave_unused():
    gated = verilog.convert(Pcu(SMALL), name="top", emit_src=False)
    cells = set(re.findall(rf"^\s*{clock_gate.MODULE} (\S+)", gated, re.M))
    parts = {"post", "red", "tail", *(f"st{s}_{unit}" for s in range(SMALL.stages) for unit in ("mul", "add"))}
    assert cells == {"gclk_cell", *(f"{part}_gclk_cell" for part in parts)}


def _gate_cells(design):
    return set(re.findall(rf"^\s*{clock_gate.MODULE} (\S+)", verilog.convert(design, name="top", emit_src=False),
                          re.M))


def test_fabric_gates_the_named_networks_and_the_loader_its_registers():
    assert _gate_cells(Fabric(SMALL)) == {"scalar_net_gclk_cell"}
    assert _gate_cells(Fabric(SMALL, gated_networks=())) == set()
    with pytest.raises(ValueError, match="gated_networks must name networks"):
        Fabric(SMALL, gated_networks=("scalar", "gpu"))
    assert _gate_cells(ConfigLoader({1: 40}, version=1)) == {"gclk_cell"}
    assert _gate_cells(ConfigLoader({1: 40}, version=1, clock_gate=False)) == set()
    with pytest.raises(TypeError, match="clock_gate must be a bool"):
        ConfigLoader({1: 40}, version=1, clock_gate=1)


def test_gated_module_ticks_in_reset_whatever_the_enable():
    unit = Module()
    count = Signal(8)
    unit.d.sync += count.eq(count + 1)
    en = Signal(name="en")
    text = verilog.convert(clock_gate.gated_module(unit, en, name="u"), name="top", ports=[en], emit_src=False)
    assert re.search(r"^\s*assign clock_en = en \| rst;$", text, re.M)
    assert re.search(rf"^\s*{clock_gate.MODULE} gclk_cell ", text, re.M)
    assert "module \\top.u (core_clk, core_rst);" in text


def test_agcu_runs_on_one_gate_and_ungated_has_none():
    gated = verilog.convert(Agcu(mem_params.SMALL, lanes=4), name="top", emit_src=False)
    assert set(re.findall(rf"^\s*{clock_gate.MODULE} (\S+)", gated, re.M)) == {"gclk_cell"}
    assert "clock_en" in gated
    assert _gate_cells(Agcu(mem_params.SMALL, lanes=4, clock_gate=False)) == set()
    with pytest.raises(TypeError, match="clock_gate must be a bool"):
        Agcu(mem_params.SMALL, lanes=4, clock_gate=1)


@pytest.mark.parametrize("make", [lambda **kw: CopyEngine(mem_params.SMALL, tag_bits=4, **kw),
                                  lambda **kw: Sequencer(mem_params.SMALL, agcus=4, **kw)],
                         ids=["copy", "sequencer"])
def test_copy_engine_and_sequencer_run_on_one_gate(make):
    assert _gate_cells(make()) == {"gclk_cell"}
    assert _gate_cells(make(clock_gate=False)) == set()
    with pytest.raises(TypeError, match="clock_gate must be a bool"):
        make(clock_gate="yes")


def test_gate_definition_added_once_and_only_where_used():
    used = "module top(a);\n  openrdu_clock_gate cell (\n  );\nendmodule\n"
    once = clock_gate.add_definition(used)
    assert once.count(f"module {clock_gate.MODULE}(") == 1
    assert clock_gate.add_definition(once) == once
    unused = "module top(a);\nendmodule\n"
    assert clock_gate.add_definition(unused) == unused


def test_registered_reset_replaces_every_use_but_the_port():
    text = ("module top(clk, rst, a, b);\n  input clk;\n  wire clk;\n  input rst;\n  wire rst;\n  input a;\n"
            "  output b;\n  reg b;\n  wire \\rst$3 ;\n  always @(posedge clk)\n    if (rst) b <= 1'h0;\n"
            "  sub u (\n    .rst(rst),\n    .clk(clk)\n  );\n  assign \\rst$3  = rst_other;\n  wire \\a[rst] ;\n"
            "  (* note = \"rst\" *)\n  initial $display(\"rst %d\", rst);\nendmodule\n"
            "module sub(clk, rst);\n  input clk;\n  input rst;\nendmodule\n")
    out = register_reset(text, "top")
    top = out[:out.index("endmodule")]
    assert f"if ({REGISTERED})" in top and f".rst({REGISTERED})" in top
    assert f"{REGISTERED} <= rst;" in top and "always @(posedge clk)" in top
    # The port, its declarations, escaped and longer names and other modules are left alone.
    assert "module top(clk, rst, a, b);" in out and "  input rst;\n" in top and "\\rst$3" in top
    assert "rst_other" in top and out[out.index("module sub"):] == text[text.index("module sub"):]
    assert "\\a[rst] " in top and '(* note = "rst" *)' in top and f'$display("rst %d", {REGISTERED});' in top
    with pytest.raises(ValueError, match="no module 'chip'"):
        register_reset(text, "chip")
    with pytest.raises(ValueError, match="no 1-bit input 'rst'"):
        register_reset(text.replace("  input rst;\n", ""), "top")
    with pytest.raises(ValueError, match="already uses"):
        register_reset(out, "top")


def test_registered_reset_ticks_only_when_the_port_differs():
    text = ("module top(clk, rst, b);\n  input clk;\n  wire clk;\n  input rst;\n  wire rst;\n  output b;\n"
            "  reg b;\n  always @(posedge clk)\n    if (rst) b <= 1'h0;\nendmodule\n")
    out = register_reset(text, "top")
    gate = re.search(rf"^\s*{clock_gate.MODULE} {GATE_CELL} \(\.clk\(clk\), \.en\(rst \^ {REGISTERED}\), "
                     rf"\.gclk\({GATED_CLOCK}\)\);$", out, re.M)
    assert gate, out
    assert f"always @(posedge {GATED_CLOCK})\n    {REGISTERED} <= rst;" in out
    assert out.count(f"module {clock_gate.MODULE}(") == 1
    with pytest.raises(ValueError, match="already uses"):
        register_reset(text.replace("output b;", f"output b;\n  wire {GATED_CLOCK};"), "top")


def _units_with_domains():
    class Gated(wiring.Component):
        """Counts on a clock of its own, local or shared with its parent."""

        def __init__(self, local):
            self.local = local
            super().__init__({"a": In(8), "b": Out(8)})

        def elaborate(self, platform):
            m = Module()
            m.domains.inner = ClockDomain(local=self.local)
            m.d.comb += ClockSignal("inner").eq(ClockSignal())
            m.d.inner += self.b.eq(self.a + 1)
            return m

    class Top(wiring.Component):
        def __init__(self, local):
            self.local = local
            super().__init__({"x": In(8), "z": Out(8)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.u = u = Gated(self.local)
            m.d.comb += [u.a.eq(self.x), self.z.eq(u.b)]
            return m

    return Gated, Top


def test_split_converts_a_unit_with_a_local_domain_alone(monkeypatch):
    Gated, Top = _units_with_domains()
    monkeypatch.setattr(split, "_classes", lambda: (Gated,))
    text, units = split.convert(Top(True), "top", jobs=1)
    assert units == 1 and re.search(r"^module gated_[0-9a-f]{10}\(", text, re.M)
    # A domain the unit shares with its parent would not survive converting it alone.
    with pytest.raises(split.NotSplittable, match="clock domains inner"):
        split.convert(Top(False), "top", jobs=1)



def test_fabric_gated_networks_refuses_a_bare_string():
    with pytest.raises(TypeError, match="not the string 'scalar'"):
        Fabric(SMALL, gated_networks="scalar")
