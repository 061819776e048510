"""Arithmetic demo: ``y = a * x + y`` on the co-simulated FMA unit.

Until the end-to-end decoder runs, this is the project's main job: it
elaborates the bf16 x bf16 + fp32 multiply-add unit to Verilog, builds it with
Verilator (or reuses the cached build), streams a vector through it under
cocotb, and checks every result against the golden model and against a
float64 reference.
"""

import json
import tempfile
from pathlib import Path

import numpy as np

from cosim import harness
from cosim.harness import SimUnit
from hw.arith import Fma
from sw.golden import arith as golden


def run(n=4096, seed=0):
    rng = np.random.default_rng(seed)
    a = golden.fp32_to_bf16(golden.f32_bits(np.float32(0.75)))
    x = golden.fp32_to_bf16(golden.f32_bits(rng.standard_normal(n).astype(np.float32)))
    y = golden.f32_bits(rng.standard_normal(n).astype(np.float32))
    payloads = [int(a) | int(xi) << 16 | int(yi) << 32 for xi, yi in zip(x, y)]

    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "vectors.json"
        job.write_text(json.dumps({"payloads": payloads}))
        unit = SimUnit(name="demo-fma", design=Fma, testbench="cosim.tb.run_vectors",
                       env={"OPENRDU_VECTORS": str(job)})
        results = harness.run(unit, quiet=True)
        if not results.ok:
            raise SystemExit(f"the co-simulation failed; see {results.xml.parent / 'sim.log'}")
        done = json.loads(job.read_text())

    rtl = np.array(done["outputs"], dtype=np.uint32)
    expected = golden.fma(np.full(n, a, dtype=np.uint16), x, y)
    exact = np.float64(golden.bits_f32(golden.bf16_to_fp32(a))) * golden.bits_f32(golden.bf16_to_fp32(x)).astype(
        np.float64) + golden.bits_f32(y).astype(np.float64)
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    error_ulps = np.abs(golden.bits_f32(rtl).astype(np.float64) - exact) / ulp
    return {
        "elements": n, "cycles": done["cycles"], "latency": Fma.LATENCY,
        "results_per_cycle": n / done["cycles"],
        "bit_exact_vs_golden": bool(np.array_equal(rtl, expected)),
        "max_error_ulps_vs_float64": float(error_ulps.max()),
        "build_cached": results.build.cached,
        "sample": [(float(golden.bits_f32(golden.bf16_to_fp32(x[k]))), float(golden.bits_f32(y[k])),
                    float(golden.bits_f32(rtl[k]))) for k in range(4)],
    }


def main():
    report = run()
    print("y = 0.75 * x + y on the Verilator model of the bf16 x bf16 + fp32 FMA unit")
    for xi, yi, r in report["sample"]:
        print(f"  0.75 * {xi:+.6f} + {yi:+.6f} = {r:+.8f}")
    print(f"elements:                 {report['elements']}")
    print(f"simulated cycles:         {report['cycles']} ({report['results_per_cycle']:.3f} results/cycle, "
          f"latency {report['latency']})")
    print(f"bit-exact vs golden:      {report['bit_exact_vs_golden']}")
    print(f"max error vs float64:     {report['max_error_ulps_vs_float64']:.2f} ulp (RNE allows 0.5)")
    print(f"Verilator build:          {'cached' if report['build_cached'] else 'built now'}")
    return 0 if report["bit_exact_vs_golden"] and report["max_error_ulps_vs_float64"] <= 0.5 else 1
