"""The co-simulation harness: build caching, failure reporting, waves."""

from amaranth import Cat, Const, Mux

from cosim import harness
from cosim.bist import BistCollar
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
