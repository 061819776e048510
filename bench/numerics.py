"""Verilator throughput of the arithmetic testbenches, in simulated cycles per wall-clock second.

Two ways of running the same Verilator model: Python driving and sampling the
unit's streams every cycle (cocotb driver and monitor), and the BIST collar
running free while Python awaits only its done edge. Writes
``build/bench/numerics.json``.
"""

import json
import time

from cosim import harness
from cosim.harness import REPO
from cosim.tb.arith_cases import CASES
from cosim.tb.units_arith import UNITS

OUT = REPO / "build" / "bench" / "numerics.json"
DRIVEN_OPS = 100_000
FREE_OPS = 2_000_000


def main():
    OUT.parent.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, unit in UNITS.items():
        metrics = OUT.parent / f"numerics-{name}.tmp.json"
        metrics.unlink(missing_ok=True)
        start = time.monotonic()
        results = harness.run(unit, quiet=True, env={
            "OPENRDU_OPS": str(DRIVEN_OPS), "OPENRDU_BIST_OPS": str(FREE_OPS), "OPENRDU_METRICS": str(metrics)},
            log=lambda *_: None)
        if not results.ok:
            raise SystemExit(f"{name}: {results.failed} cocotb tests failed; see {results.xml.parent}/sim.log")
        m = json.loads(metrics.read_text())
        metrics.unlink()
        driven = m["driven"]["cycles"] / m["driven"]["seconds"]
        free = m["free_running"]["cycles"] / m["free_running"]["seconds"]
        rows[name] = {
            "unit": CASES[name].component.__name__,
            "driven_ops": m["driven"]["ops"], "driven_cycles": m["driven"]["cycles"],
            "driven_cycles_per_s": round(driven),
            "free_running_ops": m["free_running"]["ops"], "free_running_cycles": m["free_running"]["cycles"],
            "free_running_cycles_per_s": round(free),
            "speedup": round(free / driven, 2),
            "wall_s": round(time.monotonic() - start, 2),
        }
    report = {"benchmark": "numerics", "units": rows,
              "note": "simulated cycles per wall-clock second; 'driven' = Python touches signals every cycle, "
                      "'free_running' = Python awaits only the BIST done edge"}
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'unit':6} {'driven cyc/s':>14} {'free-running cyc/s':>20} {'ratio':>7}")
    for name, r in rows.items():
        print(f"{name:6} {r['driven_cycles_per_s']:>14,} {r['free_running_cycles_per_s']:>20,} {r['speedup']:>7.1f}")
    print(f"wrote {OUT.relative_to(REPO)}")
