"""The co-simulation harness: build caching, failure reporting, waves."""

import re

import pytest
from amaranth import Cat, Const, Elaboratable, Module, Mux, Signal
from amaranth.back import verilog
from amaranth.lib import fifo

from cosim import harness
from cosim.bist import BistCollar
from cosim.dedup import dedup
from cosim.harness import SimUnit
from hw.arith import convert
from hw.arith.fp import unpack32, CANON_NAN16
from hw.arith.pipeline import unary_unit


def _truncating_datapath(m, reg, x):
    """A wrong fp32 -> bf16 conversion: drops the low half instead of rounding."""
    u = unpack32(x)
    result = Mux(u.is_nan, CANON_NAN16, Mux(u.is_zero, Cat(Const(0, 15), u.sign), x[16:32]))
    return reg(result, name="f2bf_out")


def _mutant_unit():
    mutant = unary_unit("TruncatingFp32ToBf16", _truncating_datapath, 32, 16, 1, "A wrong converter.",
                        module=__name__)
    return SimUnit(name="mutant-f2bf", design=lambda: BistCollar(mutant()), testbench="cosim.tb.test_arith",
                   env={"OPENRDU_UNIT": "f2bf", "OPENRDU_OPS": "2000", "OPENRDU_BIST_OPS": "2000"})


def test_wrong_rtl_fails_its_testbench():
    results = harness.run(_mutant_unit(), quiet=True)
    assert results.tests == 4
    # Truncation differs from rounding on about half of all inputs: every
    # value-checking test must catch it.
    assert results.failed >= 3
    assert not results.ok


def test_unchanged_design_reuses_build_and_changed_design_rebuilds():
    unit = SimUnit(name="cache-probe", design=lambda: BistCollar(convert.Bf16ToFp32()),
                   testbench="cosim.tb.test_arith", env={"OPENRDU_UNIT": "bf2f"})
    first = harness.build(unit)
    again = harness.build(unit)
    assert again.cached and again.directory == first.directory
    other = SimUnit(name="cache-probe", design=lambda: BistCollar(convert.Fp32ToBf16()),
                    testbench="cosim.tb.test_arith", env={"OPENRDU_UNIT": "f2bf"})
    assert harness.build(other).directory != first.directory


def test_verilator_runtime_compiled_once(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "BUILD_ROOT", tmp_path)
    # The runtime job (next test) fails to verilate its stub: the build compiles the runtime itself.
    monkeypatch.setattr(harness, "_STUB_VERILOG", "module top(;\n")
    monkeypatch.setattr(harness, "usable_cpus", lambda: 2)
    finish = harness._RuntimeAhead.finish
    monkeypatch.setattr(harness._RuntimeAhead, "finish",
                        lambda self: (self._thread and self._thread.join(), finish(self)))
    builds = [harness.build(SimUnit(name=f"runtime-probe-{k}", design=lambda c=c: BistCollar(c()),
                                    testbench="cosim.tb.test_arith"))
              for k, c in enumerate((convert.Bf16ToFp32, convert.Fp32ToBf16))]
    compiled = [set(re.findall(r" -c -o (\S+\.o) ", (b.directory / "build.log").read_text())) for b in builds]
    runtime = {"verilated.o", "verilated_vpi.o", "verilated_threads.o", "verilated_dpi.o"}
    assert runtime <= compiled[0] and not runtime & compiled[1]
    # cocotb's main includes the design's Vtop.h: shared, it would run one design's model with another's layout.
    assert "verilator.o" in compiled[1]
    # The job's failure is in the log, with Verilator's own message.
    log = (builds[0].directory / "build.log").read_text()
    assert "[cosim] the runtime job ahead of the build stopped" in log and "verilator" in log.split("stopped")[1]
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "runtime").iterdir()) == sorted(r[:-2] for r in runtime)


def test_runtime_compiled_ahead_is_what_the_build_reuses(tmp_path, monkeypatch):
    """A cold build compiles Verilator's runtime in the background while it elaborates and verilates, with
    its own compiler commands (so cache keys): here made to wait for that job, it reuses every object."""
    monkeypatch.setattr(harness, "BUILD_ROOT", tmp_path)
    monkeypatch.setattr(harness, "usable_cpus", lambda: 2)
    finish = harness._RuntimeAhead.finish
    monkeypatch.setattr(harness._RuntimeAhead, "finish",
                        lambda self: (self._thread and self._thread.join(), finish(self)))
    built = harness.build(SimUnit(name="ahead-probe", design=lambda: BistCollar(convert.Bf16ToFp32()),
                                  testbench="cosim.tb.test_arith"))
    log = (built.directory / "build.log").read_text()
    runtime = ["verilated.o", "verilated_dpi.o", "verilated_threads.o", "verilated_vpi.o"]
    assert log.count("[cosim] compiled ahead") == len(runtime)
    assert sorted(re.findall(r" -c -o (verilated\S*\.o) ", log)) == runtime
    # One cache entry each: the build compiled none of its own, under other keys; the stub's folder is gone.
    assert sorted(p.name.split("-")[0] + ".o" for p in (tmp_path / "runtime").iterdir()) == runtime


def test_compiler_setting(tmp_path, monkeypatch):
    """``OPENRDU_CXX`` picks the models' C++ compiler: GCC's ``c++`` keeps the make variables (so the build
    keys) of before and still builds a unit that passes; Clang, the default where installed, adds its own and
    libatomic; a compiler that does not run is refused by name."""
    if "clang" in (harness._version("c++") or "clang").lower():
        pytest.skip("c++ here is not GCC")
    monkeypatch.setenv("OPENRDU_CXX", "c++")
    assert harness.compiler()[0] == ()
    gcc_vars = harness._build_options(False)[1]
    assert gcc_vars == harness._MAKE_VARS
    monkeypatch.setattr(harness, "BUILD_ROOT", tmp_path)
    unit = SimUnit(name="gcc-probe", design=lambda: BistCollar(convert.Bf16ToFp32()),
                   testbench="cosim.tb.test_arith", env={"OPENRDU_UNIT": "bf2f", "OPENRDU_OPS": "200"})
    built = harness.build(unit)
    assert re.search(r"^c\+\+ .* -c ", (built.directory / "build.log").read_text(), re.M)
    assert harness.run(unit, quiet=True).ok
    monkeypatch.setenv("OPENRDU_CXX", "no-such-compiler")
    with pytest.raises(RuntimeError, match="'no-such-compiler' does not run here"):
        harness._build_options(False)
    if harness._version("clang++"):
        monkeypatch.setenv("OPENRDU_CXX", "clang++")
        clang_vars = harness._build_options(False)[1]
        assert set(clang_vars) - set(gcc_vars) == {"CXX=clang++", "LINK=clang++", "LIBS=-latomic"}
        assert harness._plan(unit, False).directory != built.directory
    # A compiler that exits with an error is refused too, whatever it prints.
    monkeypatch.setenv("OPENRDU_CXX", "false")
    with pytest.raises(RuntimeError, match="'false' does not run here"):
        harness._build_options(False)
    monkeypatch.delenv("OPENRDU_CXX")
    assert harness.compiler() == harness._compiler_of("clang++" if harness._version("clang++") else "c++")


def test_cosim_command_line_names_a_bad_setting_in_one_line(monkeypatch, capsys):
    from cosim.__main__ import main

    monkeypatch.setenv("OPENRDU_CXX", "no-such-compiler")
    assert main(["run", "add"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("python -m cosim: the C++ compiler 'no-such-compiler' does not run here "
                   "(OPENRDU_CXX names the one to use)")


def test_compiler_named_cxx_that_is_clang_gets_its_own_key(tmp_path, monkeypatch):
    """A ``c++`` that is Clang (an alternative, a symlink) links libatomic and is cached apart from GCC's; a
    ``clang++`` that does not run leaves the default to ``c++``."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "c++").write_text("#!/bin/sh\necho 'Debian clang version 14.0.6'\n")
    (fake / "clang++").write_text("#!/bin/sh\nexit 127\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{harness.os.environ['PATH']}")
    harness._compiler_of.cache_clear()
    harness._default_compiler.cache_clear()
    try:
        monkeypatch.setenv("OPENRDU_CXX", "c++")
        assert harness.compiler()[0] == ("CXX=c++", "LINK=c++", "LIBS=-latomic")
        monkeypatch.delenv("OPENRDU_CXX")
        assert harness._default_compiler() == "c++"
    finally:
        harness._compiler_of.cache_clear()
        harness._default_compiler.cache_clear()


def test_only_ports_are_public():
    unit = SimUnit(name="cache-probe", design=lambda: BistCollar(convert.Bf16ToFp32()),
                   testbench="cosim.tb.test_arith")
    control = (harness.build(unit).directory / "public.vlt").read_text()
    publics = [line for line in control.splitlines() if line.startswith("public")]
    assert publics and all('-module "top"' in line for line in publics)
    assert any('"i__payload"' in line for line in publics)
    assert not any("valid_s" in line for line in publics)


def test_waves_written_as_fst():
    unit = SimUnit(name="waves-probe", design=lambda: BistCollar(convert.Bf16ToFp32()),
                   testbench="cosim.tb.test_arith",
                   env={"OPENRDU_UNIT": "bf2f", "OPENRDU_OPS": "200", "OPENRDU_BIST_OPS": "200"})
    results = harness.run(unit, waves=True, testcase="latency_and_throughput", quiet=True)
    assert results.ok
    assert results.waves_file.suffix == ".fst"
    assert results.waves_file.stat().st_size > 0
    assert results.waves_file.read_bytes()[:1] == b"\x00"  # FST header block type


class _ThreeQueues(Elaboratable):
    """Two identical FIFOs and a deeper one: dedup must merge exactly the first two."""

    def __init__(self):
        self.i = [Signal(8, name=f"i{k}") for k in range(3)]
        self.o = [Signal(8, name=f"o{k}") for k in range(3)]

    def elaborate(self, platform):
        m = Module()
        for k, depth in enumerate((4, 4, 8)):
            m.submodules[f"q{k}"] = q = fifo.SyncFIFOBuffered(width=8, depth=depth)
            m.d.comb += [q.w_data.eq(self.i[k]), q.w_en.eq(1), q.r_en.eq(1), self.o[k].eq(q.r_data)]
        return m


def test_dedup_merges_identical_modules_only():
    design = _ThreeQueues()
    text = verilog.convert(design, name="top", emit_src=False, ports=[*design.i, *design.o])
    merged, dropped = dedup(text)
    assert dropped == 1
    assert re.findall(r"^module (\S+?) ?\(", merged, re.M) == ["top", r"\top.q0", r"\top.q2"]
    assert [line.split()[0] for line in merged.splitlines() if line.lstrip().startswith(r"\top.q")] == \
        [r"\top.q0", r"\top.q0", r"\top.q2"]
    # The toplevel's ports, which cocotb sees, keep their names.
    assert re.search(r"^module top\(.*?\);", merged, re.S | re.M).group(0) == \
        re.search(r"^module top\(.*?\);", text, re.S | re.M).group(0)
    assert dedup(merged) == (merged, 0)


def test_build_reports_each_stage_in_a_log(tmp_path, monkeypatch, capsys):
    # A fresh cache folder, so the build runs; capsys's stderr is not a terminal, as in a log.
    monkeypatch.setattr(harness, "BUILD_ROOT", tmp_path)
    unit = SimUnit(name="progress-probe", design=lambda: BistCollar(convert.Bf16ToFp32()),
                   testbench="cosim.tb.test_arith")
    harness.build(unit, log=lambda line: None)
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith("[cosim] progress-probe: ") and "\r" not in line for line in lines)
    assert "verilating" in lines[0]
    total = int(re.search(r"compiling (\d+) C\+\+ files", lines[1]).group(1))
    assert total > 0 and f"compiled {total} of {total} files (100%)" in lines[-2]
    assert "built in" in lines[-1]


def test_verilog_cache_key_names_the_design():
    def unit(design):
        return SimUnit(name="key-probe", design=design, testbench="cosim.tb.test_arith")
    same = [harness._design_key(unit(lambda: BistCollar(convert.Bf16ToFp32()))) for _ in range(2)]
    assert same[0] is not None and same[0] == same[1]
    assert harness._design_key(unit(lambda: BistCollar(convert.Fp32ToBf16()))) != same[0]
    # A closure over an object whose repr does not show its state is never cached.
    state = object()
    assert harness._design_key(unit(lambda: (state, BistCollar(convert.Fp32ToBf16()))[1])) is None


def test_split_converts_each_distinct_unit_once():
    from cosim import split
    from cosim.tb.units_fabric import PARAMS
    from hw.tile.fabric import Fabric

    text, units = split.convert(Fabric(PARAMS["small"]), "top", jobs=1)
    modules = re.findall(r"^module (\S+?) ?\(", text, re.M)
    switches = [m for m in modules if m.startswith("switch_")]
    assert modules[0] == "top" and units == len(switches) >= 1
    # Every switch instance of the top names one of the converted modules, each converted once.
    used = re.findall(r"^\s*(switch_[0-9a-f]{10}) ", text, re.M)
    assert len(used) > len(switches) and set(used) == set(switches) and len(set(switches)) == len(switches)
    # The design is untouched: converted whole afterwards, it has no unit modules.
    whole = verilog.convert(Fabric(PARAMS["small"]), name="top", emit_src=False)
    assert not re.search(r"^module switch_", whole, re.M)


def test_split_leaves_units_with_value_arguments_in_place():
    from cosim import split
    assert split._value_like((1, "a", (2.5, None), {"k": frozenset({3})}))
    assert not split._value_like((Signal(),))
    assert not split._value_like((object(),))


def test_hier_blocks_setting(monkeypatch):
    def design(pcus):
        return ("module top(a);\n" + "".join(f"  pcu_0123456789 pcu_{i} (\n" for i in range(pcus))
                + "  pmu_0123456789 pmu_0 (\nmodule pcu_0123456789(b);\nmodule pmu_0123456789(c);\n")

    text = design(harness._HIER_MIN_INSTANCES)
    monkeypatch.delenv("OPENRDU_HIER_BLOCKS", raising=False)
    assert harness._hier_blocks(text, waves=False) == ["pcu_0123456789"]
    assert harness._hier_blocks(text, waves=True) == []
    # Fewer PCUs (the chip target's four) verilate flat unless the setting names the kind.
    assert harness._hier_blocks(design(harness._HIER_MIN_INSTANCES - 1), waves=False) == []
    monkeypatch.setenv("OPENRDU_HIER_BLOCKS", "pcu")
    assert harness._hier_blocks(design(4), waves=False) == ["pcu_0123456789"]
    monkeypatch.setenv("OPENRDU_HIER_BLOCKS", "0")
    assert harness._hier_blocks(text, waves=False) == []
    monkeypatch.setenv("OPENRDU_HIER_BLOCKS", "1")
    assert harness._hier_blocks(text, waves=False) == ["pcu_0123456789", "pmu_0123456789"]
    monkeypatch.setenv("OPENRDU_HIER_BLOCKS", "pcu,gpu")
    try:
        harness._hier_blocks(text, waves=False)
    except RuntimeError as error:
        assert "gpu" in str(error)
    else:
        raise AssertionError("an unknown kind must be refused")


def _split_probe_classes():
    from amaranth import ClockDomain, ResetInserter
    from amaranth.lib import stream, wiring
    from amaranth.lib.wiring import In, Out

    class Child(wiring.Component):
        def __init__(self, side=None):
            self.side = side
            super().__init__({"a": In(8), "b": Out(8)})

        def elaborate(self, platform):
            m = Module()
            m.d.sync += self.b.eq(self.a + (self.side.payload if self.side is not None else 0))
            return m

    class Holder(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(8), "b": Out(8)})
            self.inner = Child()  # a parent could reach its ports

        def elaborate(self, platform):
            m = Module()
            m.submodules.inner = self.inner
            m.d.comb += [self.inner.a.eq(self.a), self.b.eq(self.inner.b)]
            return m

    class Parent(wiring.Component):
        def __init__(self, how):
            self.how = how
            super().__init__({"x": In(8), "y": In(8), "z": Out(8)})

        def elaborate(self, platform):
            m = Module()
            if self.how == "interface":
                side = stream.Signature(8).create()
                m.d.comb += side.payload.eq(self.y)
                c = Child(side)
            elif self.how == "holder":
                c = Holder()
            else:
                c = Child()
            if self.how == "domain":
                m.domains.sync = ClockDomain(async_reset=True)
            m.submodules.c = ResetInserter(self.y[0])(c) if self.how == "reset" else c
            m.d.comb += [c.a.eq(self.x), self.z.eq(c.b)]
            return m

    return Child, Holder, Parent


def test_split_leaves_units_in_place_when_splitting_would_cut_signals(monkeypatch):
    import pytest
    from cosim import split
    Child, Holder, Parent = _split_probe_classes()
    monkeypatch.setattr(split, "_classes", lambda: (Child, Holder))
    assert split.convert(Parent("plain"), "top", jobs=1)[1] == 1
    # A signal handed to the constructor, a reset inserted around the unit, a sub-unit held as an attribute.
    for how in ("interface", "reset"):
        assert split.convert(Parent(how), "top", jobs=1)[1] == 0, how
    text, units = split.convert(Parent("holder"), "top", jobs=1)
    assert not re.search(r"^module holder_", text, re.M) and units == 1  # only the Child it holds is split out
    with pytest.raises(split.NotSplittable, match="clock domains sync"):
        split.convert(Parent("domain"), "top", jobs=1)


def test_assert_rewriting_covers_the_testbenches_only():
    import importlib

    from _pytest.pathlib import fnmatch_ex

    from cosim.units import UNITS

    modules = {m for unit in UNITS.values()
               for m in (unit.testbench if isinstance(unit.testbench, tuple) else (unit.testbench,))}
    for module in sorted(modules):
        path = importlib.util.find_spec(module).origin
        assert fnmatch_ex(harness.REWRITTEN_MODULES, path), f"{module}'s asserts would not be rewritten"
    for module in ("cosim.device", "sw.runtime.decode", "numpy"):
        assert not fnmatch_ex(harness.REWRITTEN_MODULES, importlib.util.find_spec(module).origin)
