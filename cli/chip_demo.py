"""``openrdu demo``: a GEMV + bias + SiLU layer run on the co-simulated chip.

Until the end-to-end decoder runs this is the project's main job. It builds
the whole chip (the ``chip`` target of ``sw/target.py``: tile array, AGCUs,
memory tiers, host port) with Verilator, or reuses the cached build; places a layer's bitstream, weights,
input and bias in HBM; and has the runtime's driver load the program, set the
AGCU arguments and execute over AXI4-Lite. It prints the results, the RTL's
cycles beside the fast model's estimate, the HBM traffic, and whether the
chip matched the model bit for bit.
"""

import json
import tempfile
from dataclasses import replace
from pathlib import Path

from cosim import harness
from cosim.tb.units_chip import MEMORY, UNITS


def run(k=64, tiles=8):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.json"
        unit = replace(UNITS["chip"], testbench="cosim.tb.run_chip_demo",
                       env={"OPENRDU_DEMO_REPORT": str(path), "OPENRDU_DEMO_K": str(k),
                            "OPENRDU_DEMO_TILES": str(tiles)})
        results = harness.run(unit, quiet=True)
        if not results.ok:
            raise SystemExit(f"the co-simulation failed; see {results.xml.parent / 'sim.log'}")
        report = json.loads(path.read_text())
    report["build_cached"] = results.build.cached
    return report


def main():
    r = run()
    words = r["hbm_words_read"] + r["hbm_words_written"]
    peak = float(MEMORY.hbm.bytes_per_cycle)
    print(f"y = SiLU(x @ W + b): {r['k']} inputs, {r['outputs']} outputs, on the co-simulated chip "
          f"(2x4 tile array, AGCUs streaming from HBM)")
    print(f"  y[:6] = {', '.join(f'{v:+.5f}' for v in r['sample'])}")
    print(f"program load:       {r['program_words']} words in {r['program_load_cycles']} cycles")
    print(f"kernel:             {r['kernel_cycles_rtl']} cycles on the RTL, {r['kernel_cycles_model']} estimated "
          f"by the fast model ({r['kernel_cycles_model'] / r['kernel_cycles_rtl']:.3f})")
    print(f"HBM traffic:        {r['hbm_words_read']} words read, {r['hbm_words_written']} written "
          f"({words * MEMORY.word_bytes} bytes, {words * MEMORY.word_bytes / r['kernel_cycles_rtl'] / peak:.0%} "
          f"of peak over the kernel)")
    print(f"bit-exact vs model: {r['bit_exact_vs_model']}")
    print(f"error vs float64:   {r['max_rel_error_vs_float64']:.2e} (relative to the largest output)")
    print(f"Verilator build:    {'cached' if r['build_cached'] else 'built now'}")
    return 0 if r["bit_exact_vs_model"] and r["max_rel_error_vs_float64"] <= 1e-5 else 1
