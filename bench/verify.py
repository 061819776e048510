"""Verification depth: constrained-random kernels on the fast model and the RTL, with functional coverage.

Runs ``OPENRDU_VERIFY_MODEL`` random kernels (default 10,000: three quarters
single-PCU kernels, a quarter array programs on the 2x4, 3x4 and 2x4 8-lane
arrays) on the fast model against the independent reference
(:mod:`sw.tile.oracle`), in ``OPENRDU_VERIFY_JOBS`` processes (default: one
per usable CPU), and ``OPENRDU_VERIFY_RTL`` kernels (default 200)
on each of the RTL units ``pcu`` and ``array`` against the model, under
stalls drawn from each seed; and ``OPENRDU_VERIFY_HOST`` random AXI bursts
(default 3,000) from concurrent workers under back-pressure on the
``host-fast`` unit; and ``OPENRDU_VERIFY_CHIP`` random host bursts (default
2,000) on the whole chip (unit ``chip``) beside kernels streaming through the
AGCUs and copy-engine copies, back to back. Writes ``build/bench/verify.json`` (counts,
mismatches with their repro commands, special-value classes hit, coverage
fraction and holes, time per kernel) and ``build/bench/coverage.json`` (every
bin's hit count).
"""

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor

from cosim import harness
from cosim.cpus import usable_cpus
from cosim.harness import REPO
from cosim.units import UNITS
from sw.tile import oracle
from sw.tile import random_kernels as rk

OUT = REPO / "build" / "bench" / "verify.json"
COVERAGE = REPO / "build" / "bench" / "coverage.json"
# Seeds of the RTL runs start here, away from the 0.. of make test's runs.
RTL_FIRST_SEED = 100_000


def _chunk(kind, seeds):
    """Check the kernels of ``seeds``; returns (mismatches, coverage hits, census counts, census cross, seconds)."""
    coverage, census, mismatches = rk.Coverage(), oracle.Census(), []
    names = sorted(rk.PARAMS)
    start = time.process_time()
    for seed in seeds:
        if kind == "pcu":
            kernel = rk.pcu_kernel(seed)
            coverage.pcu_kernel(kernel)
            problems, where = rk.check_pcu(kernel, census), {"repro": f"python -m sw.tile.random_kernels pcu {seed}"}
        else:
            params = names[seed % len(names)]
            kernel = rk.array_kernel(seed, params)
            coverage.array_kernel(kernel)
            problems = rk.check_array(kernel, census)
            where = {"params": params, "repro": f"python -m sw.tile.random_kernels array {seed} --params {params}"}
        mismatches += [{"kind": kind, "seed": seed, "problem": problem, **where} for problem in problems]
    return mismatches, coverage.hits, census.counts, census.cross, time.process_time() - start


def _model(count, coverage, census, jobs):
    """Check ``count`` kernels on the model in ``jobs`` processes; returns (mismatches, CPU seconds per PCU /
    array kernel, counts)."""
    arrays = count // 4
    pcus = count - arrays
    work = [("pcu", range(k, pcus, jobs)) for k in range(jobs)] + [("array", range(k, arrays, jobs))
                                                                     for k in range(jobs)]
    mismatches, seconds = [], {"pcu": 0.0, "array": 0.0}
    with ProcessPoolExecutor(jobs) as pool:
        for (kind, _), (found, hits, counts, cross, cpu) in zip(work, pool.map(_chunk, *zip(*work))):
            mismatches += found
            coverage.hits.update(hits)
            census.counts.update(counts)
            census.cross.update(cross)
            seconds[kind] += cpu
    mismatches.sort(key=lambda m: (m["kind"], m["seed"]))
    return mismatches, seconds["pcu"] / max(pcus, 1), seconds["array"] / max(arrays, 1), pcus, arrays


def _rtl(unit_name, count, coverage):
    """Run ``count`` random kernels on an RTL unit; returns (ok, seconds, cycle ratios, repro)."""
    metrics = OUT.parent / f"verify-{unit_name}.tmp.json"
    metrics.unlink(missing_ok=True)
    start = time.perf_counter()
    results = harness.run(UNITS[unit_name], testcase="random_kernels_rtl", quiet=True, log=lambda *_: None,
                          env={"OPENRDU_RANDOM_SEEDS": f"{RTL_FIRST_SEED}:{count}", "OPENRDU_METRICS": str(metrics)})
    seconds = time.perf_counter() - start
    repro = (f"OPENRDU_RANDOM_SEEDS={RTL_FIRST_SEED}:{count} python -m cosim run {unit_name} "
             f"--testcase random_kernels_rtl (the failing seed is in {results.xml.parent}/sim.log)")
    if not results.ok or not metrics.exists():
        return False, seconds, [], repro
    m = json.loads(metrics.read_text())["random_kernels"]
    metrics.unlink()
    coverage.merge(m["coverage"])
    return True, seconds, m["cycle_ratios"], repro


def _host(bursts):
    """Random concurrent AXI bursts under back-pressure on ``host-fast``; returns (ok, seconds)."""
    start = time.perf_counter()
    results = harness.run(UNITS["host-fast"], testcase="random_concurrent_bursts_with_backpressure", quiet=True,
                          log=lambda *_: None, env={"OPENRDU_HOST_STRESS": str(bursts)})
    return results.ok, time.perf_counter() - start


def _chip(bursts):
    """Random host bursts beside kernels and copies on the whole chip; returns (ok, seconds, counts)."""
    metrics = OUT.parent / "verify-chip.tmp.json"
    metrics.unlink(missing_ok=True)
    start = time.perf_counter()
    env = {"OPENRDU_CHIP_STRESS": str(bursts), "OPENRDU_METRICS": str(metrics)}
    results = harness.run(UNITS["chip"], testcase="host_stress_beside_kernels_and_copies", quiet=True,
                          log=lambda *_: None, env=env)
    seconds = time.perf_counter() - start
    counts = json.loads(metrics.read_text())["chip_stress"] if results.ok and metrics.exists() else {}
    metrics.unlink(missing_ok=True)
    return results.ok and bool(counts), seconds, counts


def main():
    OUT.parent.mkdir(parents=True, exist_ok=True)
    n_model = int(os.environ.get("OPENRDU_VERIFY_MODEL", "10000"))
    n_rtl = int(os.environ.get("OPENRDU_VERIFY_RTL", "200"))
    coverage, census = rk.Coverage(), oracle.Census()
    start = time.perf_counter()
    jobs = int(os.environ.get("OPENRDU_VERIFY_JOBS", str(usable_cpus())))
    mismatches, pcu_s, array_s, pcus, arrays = _model(n_model, coverage, census, jobs)
    model_s = time.perf_counter() - start
    coverage.census(census)

    rtl = {}
    for unit in ("pcu", "array"):
        ok, seconds, ratios, repro = _rtl(unit, n_rtl, coverage) if n_rtl else (True, 0.0, [], "")
        rtl[unit] = {"kernels": n_rtl, "passed": ok, "wall_s": round(seconds, 1),
                     "model_over_rtl_cycles": [round(min(ratios), 3), round(max(ratios), 3)] if ratios else None}
        if not ok:
            mismatches.append({"kind": f"rtl {unit}", "problem": "RTL differs from the model", "repro": repro})
    n_host = int(os.environ.get("OPENRDU_VERIFY_HOST", "3000"))
    host_ok, host_s = _host(n_host) if n_host else (True, 0.0)
    if not host_ok:
        mismatches.append({"kind": "rtl host-fast", "problem": "a random AXI burst read back wrong",
                           "repro": f"OPENRDU_HOST_STRESS={n_host} python -m cosim run host-fast --testcase "
                                    f"random_concurrent_bursts_with_backpressure"})
    n_chip = int(os.environ.get("OPENRDU_VERIFY_CHIP", "2000"))
    chip_ok, chip_s, chip_counts = _chip(n_chip) if n_chip else (True, 0.0, {})
    if not chip_ok:
        mismatches.append({"kind": "rtl chip", "problem": "host bursts, kernels or copies on the chip differ",
                           "repro": f"OPENRDU_CHIP_STRESS={n_chip} python -m cosim run chip --testcase "
                                    f"host_stress_beside_kernels_and_copies"})
    fraction, holes, hits = coverage.report()
    specials = [name for name in rk.BINS["special"] if census.counts[name]]
    report = {
        "benchmark": "verify",
        "random_kernels_model": pcus + arrays,
        "random_kernels_model_pcu": pcus, "random_kernels_model_array": arrays,
        "random_kernels_rtl": sum(r["kernels"] for r in rtl.values()),
        "rtl": rtl,
        "host_bursts_rtl": n_host, "host_bursts_passed": host_ok, "host_wall_s": round(host_s, 1),
        "chip_stress": {"host_bursts": n_chip, "passed": chip_ok, "wall_s": round(chip_s, 1),
                        "kernels": chip_counts.get("kernels", 0), "copies": chip_counts.get("copies", 0),
                        "copy_bytes": chip_counts.get("copy_bytes", 0),
                        "host_bytes_written": chip_counts.get("bytes_written", 0)},
        "mismatches": len(mismatches),
        "mismatch_list": mismatches[:50],
        "special_value_classes": list(rk.BINS["special"]),
        "special_value_classes_hit": len(specials),
        "special_value_classes_hit_list": specials,
        "special_value_counts": {k: census.counts[k] for k in rk.BINS["special"]},
        "coverage_fraction": round(fraction, 4),
        "coverage_holes": holes,
        "model_s": round(model_s, 1), "model_processes": jobs,
        "model_cpu_ms_per_pcu_kernel": round(1e3 * pcu_s, 2),
        "model_cpu_ms_per_array_kernel": round(1e3 * array_s, 2),
        "note": "model kernels: fast model against the independent reference (sw/tile/oracle.py), bit for bit; "
                "RTL kernels: Verilator against the fast model, bit for bit, under stalls drawn from each seed",
    }
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    COVERAGE.write_text(json.dumps({"coverage_fraction": round(fraction, 4), "holes": holes,
                                    "bins": {c: list(map(str, names)) for c, names in rk.BINS.items()},
                                    "hits": hits}, indent=2) + "\n")
    print(f"model: {pcus} PCU kernels ({1e3 * pcu_s:.1f} ms CPU each), {arrays} array kernels "
          f"({1e3 * array_s:.1f} ms CPU each), {model_s:.0f} s in {jobs} processes")
    for unit, r in rtl.items():
        print(f"RTL {unit}: {r['kernels']} kernels, {'pass' if r['passed'] else 'FAIL'}, {r['wall_s']} s, "
              f"model/RTL cycles {r['model_over_rtl_cycles']}")
    print(f"RTL host-fast: {n_host} random AXI bursts under back-pressure, {'pass' if host_ok else 'FAIL'}, "
          f"{host_s:.1f} s")
    print(f"RTL chip: {n_chip} random host bursts beside {chip_counts.get('kernels', 0)} kernels and "
          f"{chip_counts.get('copies', 0)} copies, {'pass' if chip_ok else 'FAIL'}, {chip_s:.1f} s")
    print(f"mismatches: {len(mismatches)}; special-value classes hit: {len(specials)} of "
          f"{len(rk.BINS['special'])}; coverage {fraction:.1%}, holes: {', '.join(holes) or 'none'}")
    for m in mismatches[:10]:
        print(f"  {m['kind']} seed {m.get('seed', '?')}: {m['problem']}\n    repro: {m['repro']}")
    print(f"wrote {OUT.relative_to(REPO)} and {COVERAGE.relative_to(REPO)}")
    if mismatches:
        raise SystemExit(f"verify: {len(mismatches)} mismatches")
