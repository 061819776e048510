"""Memory tiers at config M on the RTL and the fast model: bandwidth, latency, and the model-switching ratio.

Builds the memory system (one 8-lane AGCU, copy engine, host port, HBM and
DDR controllers) at ``hw.mem.params.DEFAULT`` and measures in Verilator:

- per tier, a long AGCU read (16K words from HBM, 4K from DDR): achieved
  bandwidth as a fraction of the configured peak, and the unloaded latency
  of a one-word read;
- DDR -> HBM copy time against host -> HBM time for the same bytes: their
  ratio is the model-switching advantage of the DDR tier (the SN40L paper
  reports 15x to 31x against GPU host links);
- the fast model's estimate of each, and its ratio to the RTL;
- the wall time of a 100 MiB backdoor load into DDR (data already resident).

Writes ``build/bench/memory.json``.
"""

import json
import time

from cosim import harness
from cosim.harness import REPO, SimUnit
from cosim.store import STORE_SOURCES
from hw.mem import params as mem_params
from hw.mem.controller import QUEUE_CYCLES
from hw.mem.system import MemorySystem
from sw.model import memory_units

OUT = REPO / "build" / "bench" / "memory.json"
PARAMS = mem_params.DEFAULT
UNIT = SimUnit(name="memory-m", design=lambda: MemorySystem(PARAMS, lanes=(8,)), testbench="cosim.tb.bench_memory",
               env={"OPENRDU_MEM_PARAMS": "DEFAULT"}, sources=STORE_SOURCES)


def main():
    OUT.parent.mkdir(parents=True, exist_ok=True)
    metrics = OUT.parent / "memory.tmp.json"
    metrics.unlink(missing_ok=True)
    start = time.perf_counter()
    results = harness.run(UNIT, quiet=True, env={"OPENRDU_METRICS": str(metrics)}, log=lambda *_: None)
    wall = time.perf_counter() - start
    if not results.ok:
        raise SystemExit(f"memory benchmark failed in simulation; see {results.xml.parent / 'sim.log'}")
    m = json.loads(metrics.read_text())
    metrics.unlink()
    P, wb = PARAMS, PARAMS.word_bytes
    tiers = {}
    for tier in P.tiers:
        r = m[tier.name]
        peak = float(tier.bytes_per_cycle)
        model = memory_units.stream_cycles(r["words"], tier, word_bytes=wb)
        tiers[tier.name] = {
            "peak_bytes_per_cycle": peak,
            "stream_words": r["words"],
            "stream_cycles_rtl": r["stream_cycles"],
            "stream_cycles_model": round(model),
            "model_over_rtl": round(model / r["stream_cycles"], 4),
            "bandwidth_fraction_of_peak": round(r["words"] * wb / r["stream_cycles"] / peak, 4),
            "configured_latency": tier.latency,
            "single_word_cycles_rtl": r["single_word_cycles"],
            "single_word_cycles_model": QUEUE_CYCLES + tier.latency,
        }
    s = m["switch"]
    copy_model = memory_units.copy_cycles(s["bytes"], P.ddr, P.hbm, word_bytes=wb)
    host_model = memory_units.host_cycles(s["bytes"], P, P.hbm)
    switch = {
        "bytes": s["bytes"],
        "ddr_to_hbm_cycles_rtl": s["copy_cycles"], "ddr_to_hbm_cycles_model": round(copy_model),
        "host_to_hbm_cycles_rtl": s["host_cycles"], "host_to_hbm_cycles_model": round(host_model),
        "switch_speedup_rtl": round(s["host_cycles"] / s["copy_cycles"], 2),
        "switch_speedup_model": round(host_model / copy_model, 2),
        "copy_model_over_rtl": round(copy_model / s["copy_cycles"], 4),
        "host_model_over_rtl": round(host_model / s["host_cycles"], 4),
    }
    backdoor = {"bytes": m["backdoor"]["bytes"], "seconds": round(m["backdoor"]["seconds"], 3)}
    report = {"benchmark": "memory", "params": "hw.mem.params.DEFAULT (config M)", "tiers": tiers, "switch": switch,
              "backdoor_load": backdoor,
              "host_bytes_per_cycle": float(P.host_bytes_per_cycle), "verilator_wall_s": round(wall, 1),
              "build_s": round(results.build.seconds, 1)}
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'tier':5} {'peak B/c':>8} {'stream cyc':>10} {'model':>8} {'m/rtl':>6} {'of peak':>8} {'latency':>8}")
    for name, t in tiers.items():
        print(f"{name:5} {t['peak_bytes_per_cycle']:>8.2f} {t['stream_cycles_rtl']:>10} {t['stream_cycles_model']:>8} "
              f"{t['model_over_rtl']:>6.3f} {t['bandwidth_fraction_of_peak']:>8.1%} {t['single_word_cycles_rtl']:>8}")
    print(f"switch {switch['bytes']} B: DDR->HBM {switch['ddr_to_hbm_cycles_rtl']} cycles, host->HBM "
          f"{switch['host_to_hbm_cycles_rtl']} cycles: {switch['switch_speedup_rtl']}x faster from DDR "
          f"(model {switch['switch_speedup_model']}x)")
    print(f"backdoor load of {backdoor['bytes'] >> 20} MiB into DDR: {backdoor['seconds']} s")
    print(f"wrote {OUT.relative_to(REPO)}")
