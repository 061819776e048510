"""``openrdu demo`` (one layer on the chip, checked bit for bit) on a smaller layer, on the ``chip`` unit's build."""

from cli import chip_demo


def test_chip_demo_runs_bit_exact_and_close_to_the_model():
    report = chip_demo.run(k=16, tiles=2)
    assert report["bit_exact_vs_model"]
    assert report["max_rel_error_vs_float64"] <= 1e-5
    assert abs(report["kernel_cycles_model"] / report["kernel_cycles_rtl"] - 1) <= 0.10
    assert report["program_load_cycles"] == report["program_words"]
    assert report["hbm_words_written"] == 2
