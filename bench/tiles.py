"""Tile-array kernels on the RTL and on the fast model: cycles, their ratio, utilisation, speed.

Runs every PCU kernel of ``cosim/tb/pcu_cases.py`` in Verilator (no stalls)
and on the fast model, and writes ``build/bench/tiles.json``: RTL and model
cycles and their ratio, PCU utilisation (busy cycles over kernel cycles),
simulated cycles per wall-clock second in Verilator, and the fast model's
speed-up over the RTL.
"""

import json
import os
import time

import numpy as np

from cosim import harness
from cosim.harness import REPO
from cosim.tb.pcu_cases import cases
from cosim.tb.units_pcu import UNITS
from hw.tile.pcu import TailOp
from sw.model.pcu import PcuModel

OUT = REPO / "build" / "bench" / "tiles.json"


def _model_seconds(params, case, tail_ops, seed, repeat=20):
    inputs, _ = case.make(params, np.random.default_rng(seed))
    model = PcuModel(params, case.config, tail_ops=tail_ops)
    start = time.perf_counter()
    for _ in range(repeat):
        model.run(inputs.vi, inputs.si)
    return (time.perf_counter() - start) / repeat


def main():
    from hw.tile import params as presets

    OUT.parent.mkdir(parents=True, exist_ok=True)
    unit = UNITS["pcu"]
    params = getattr(presets, unit.env["OPENRDU_PARAMS"])
    tail_ops = tuple(TailOp[name] for name in unit.env["OPENRDU_PCU_TAIL"].split(","))
    metrics = OUT.parent / "tiles-pcu.tmp.json"
    metrics.unlink(missing_ok=True)
    results = harness.run(unit, quiet=True, env={"OPENRDU_METRICS": str(metrics)}, log=lambda *_: None)
    if not results.ok:
        raise SystemExit(f"pcu: {results.failed} cocotb tests failed; see {results.xml.parent}/sim.log")
    measured = json.loads(metrics.read_text())
    metrics.unlink()
    seed = int(os.environ.get("OPENRDU_SEED", "1")) + 100  # the testbench's no-stall run
    rows = {}
    for case in cases(params):
        if case.name not in measured:
            continue
        m = measured[case.name]
        model_s = _model_seconds(params, case, tail_ops, seed)
        rows[case.name] = {
            "unit": "pcu", "rtl_cycles": m["rtl_cycles"], "model_cycles": m["model_cycles"],
            "model_over_rtl": round(m["model_cycles"] / m["rtl_cycles"], 3),
            "pcu_utilisation": round(m["busy_cycles"] / m["rtl_cycles"], 3),
            "rtl_cycles_per_s": round(m["rtl_cycles"] / m["rtl_wall_s"]),
            "model_speedup": round(m["rtl_wall_s"] / model_s, 1),
        }
    report = {"benchmark": "tiles", "params": params.__dict__, "pcu_tail": [op.name.lower() for op in tail_ops],
              "kernels": rows,
              "note": "RTL cycles from first input to last output without stalls; Verilator wall time includes "
                      "the cocotb drivers; model speed-up = RTL wall time / fast-model wall time"}
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'kernel':18} {'RTL cyc':>8} {'model':>7} {'ratio':>6} {'util':>5} {'RTL cyc/s':>10} {'model x':>8}")
    for name, r in rows.items():
        print(f"{name:18} {r['rtl_cycles']:>8} {r['model_cycles']:>7} {r['model_over_rtl']:>6.3f} "
              f"{r['pcu_utilisation']:>5.2f} {r['rtl_cycles_per_s']:>10,} {r['model_speedup']:>8.1f}")
    print(f"wrote {OUT.relative_to(REPO)}")
