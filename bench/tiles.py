"""Tile-array kernels on the RTL and on the fast model: cycles, their ratio, utilisation, speed.

Runs every PCU kernel of ``cosim/tb/pcu_cases.py`` on one PCU, and every
array kernel of ``sw/tile/kernels.py`` on the 2x4 and 3x4 arrays and
on a 4x8 array (``ARRAY_4X8``, the issue's largest size, built only here:
it is too large for the test suite), in Verilator (no stalls) and on the
fast models, and writes ``build/bench/tiles.json``: RTL and model cycles and
their ratio, PCU utilisation (busy cycles over kernel cycles, averaged over
the PCUs used), simulated cycles per wall-clock second in Verilator, and the
fast model's speed-up over the RTL; for every array also its Verilog size
and Verilator build time (``build_s`` is 0 where the build cache was used:
see ``docs/array.md`` for measured build times).
"""

import json
import os
import time

import numpy as np

from cosim import harness
from cosim.harness import REPO, SimUnit
from sw.tile import kernels as array_kernels
from cosim.tb.pcu_cases import cases
from cosim.tb.units_array import ARRAYS, UNITS as ARRAY_UNITS
from cosim.tb.units_pcu import UNITS
from hw.tile.array import TileArray
from hw.tile.pcu import TailOp
from sw.model.array import ArrayModel
from sw.model.pcu import PcuModel

OUT = REPO / "build" / "bench" / "tiles.json"


SEED = int(os.environ.get("OPENRDU_SEED", "1"))

# The 4x8 array: default unit sizes (8 lanes x 4 stages, 512-word PMU banks).
# Tail functions only where the kernels use them, as in the test arrays.
ARRAY_4X8 = ARRAYS["4x8"]
UNIT_4X8 = SimUnit(name="array-4x8",
                   design=lambda: TileArray(ARRAY_4X8[0], pcu_tail_ops=ARRAY_4X8[1], pcu_post_ops=ARRAY_4X8[2]),
                   testbench="cosim.tb.test_array", env={"OPENRDU_ARRAY": "4x8"})


def _seconds(run, repeat=20):
    start = time.perf_counter()
    for _ in range(repeat):
        run()
    return (time.perf_counter() - start) / repeat


BUILDS = {}  # unit name -> Verilog size and build time


def _measure(unit):
    """Run a unit's testbench with metrics on; return what it recorded per kernel."""
    metrics = OUT.parent / f"tiles-{unit.name}.tmp.json"
    metrics.unlink(missing_ok=True)
    results = harness.run(unit, quiet=True, env={"OPENRDU_METRICS": str(metrics)}, log=lambda *_: None)
    if not results.ok:
        raise SystemExit(f"{unit.name}: {results.failed} cocotb tests failed; see {results.xml.parent}/sim.log")
    measured = json.loads(metrics.read_text())
    metrics.unlink()
    verilog = results.build.directory / f"{harness.TOPLEVEL}.v"
    BUILDS[unit.name] = {"verilog_mb": round(verilog.stat().st_size / 1e6, 2),
                         "build_s": round(results.build.seconds, 1), "build_cached": results.build.cached}
    return measured


def _row(unit, m, busy, model_s):
    return {
        "unit": unit, "rtl_cycles": m["rtl_cycles"], "model_cycles": m["model_cycles"],
        "model_over_rtl": round(m["model_cycles"] / m["rtl_cycles"], 3),
        "pcu_utilisation": round(busy / m["rtl_cycles"], 3),
        "rtl_cycles_per_s": round(m["rtl_cycles"] / m["rtl_wall_s"]),
        "model_speedup": round(m["rtl_wall_s"] / model_s, 1),
    }


def _pcu_rows():
    from hw.tile import params as presets

    unit = UNITS["pcu"]
    params = getattr(presets, unit.env["OPENRDU_PARAMS"])
    tail_ops = tuple(TailOp[name] for name in unit.env["OPENRDU_PCU_TAIL"].split(","))
    measured = _measure(unit)
    rows = {}
    for case in cases(params):
        if case.name not in measured:
            continue
        inputs, _ = case.make(params, np.random.default_rng(SEED + 100))  # the testbench's no-stall run
        model = PcuModel(params, case.config, tail_ops=tail_ops)
        m = measured[case.name]
        rows[f"pcu/{case.name}"] = _row("pcu", m, m["busy_cycles"],
                                        _seconds(lambda: model.run(inputs.vi, inputs.si)))
    return rows


def _array_rows():
    rows = {}
    arrays = {**{name: (unit, ARRAYS[unit.env["OPENRDU_ARRAY"]]) for name, unit in ARRAY_UNITS.items()},
              UNIT_4X8.name: (UNIT_4X8, ARRAY_4X8)}
    for name, (unit, (params, tail_ops, post_ops)) in arrays.items():
        measured = _measure(unit)
        BUILDS[name]["array"] = (f"{params.rows}x{params.cols}, {params.lanes} lanes x {params.stages} stages, "
                                 f"{params.pmu_bank_words}-word PMU banks")
        for kernel in array_kernels.kernels_for(params, tail_ops, post_ops):
            case = array_kernels.KERNELS[kernel](params, tail_ops, post_ops, np.random.default_rng(SEED))
            m = measured[case.name]
            model = ArrayModel(case.program)
            busy = sum(m["pcu_busy"]) / len(m["pcu_busy"])
            rows[f"{name}/{case.name}"] = _row(name, m, busy, _seconds(lambda: model.run(case.inputs)))
    return rows


def main():
    OUT.parent.mkdir(parents=True, exist_ok=True)
    rows = {**_pcu_rows(), **_array_rows()}
    report = {"benchmark": "tiles", "kernels": rows, "builds": BUILDS,
              "note": "RTL cycles from first input to last output without stalls; Verilator wall time includes "
                      "the cocotb drivers; model speed-up = RTL wall time / fast-model wall time"}
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'kernel':26} {'RTL cyc':>8} {'model':>7} {'ratio':>6} {'util':>5} {'RTL cyc/s':>10} {'model x':>8}")
    for name, r in rows.items():
        print(f"{name:26} {r['rtl_cycles']:>8} {r['model_cycles']:>7} {r['model_over_rtl']:>6.3f} "
              f"{r['pcu_utilisation']:>5.2f} {r['rtl_cycles_per_s']:>10,} {r['model_speedup']:>8.1f}")
    for name, b in BUILDS.items():
        built = "build cache used" if b["build_cached"] else f"built in {b['build_s']} s"
        print(f"{name:26} Verilog {b['verilog_mb']} MB, {built}")
    print(f"wrote {OUT.relative_to(REPO)}")
