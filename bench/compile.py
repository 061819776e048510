"""Compiler benchmark: per model shape and target, compile time, kernels, resource use, cycles per token.

Compiles random-weight checkpoints of several shapes (written by
transformers' ``save_pretrained``) and the default model, fused and unfused,
for the co-simulated 2x4 chip and the 4x8 array, and records the static
estimate of cycles per token (sw/compiler/estimate.py) of each and their
ratio.

``estimate_vs_measured`` checks that estimate against the fast model: per
target and decode mode of :mod:`bench.looping` (unfused, fused host- and
chip-orchestrated, looped), the default model decodes a few greedy tokens
that all attend within its smallest context bucket, and each row holds the
measured cycles per token (all, and in kernels), the estimate of that
bucket with the same orchestration, and ``estimate_over_measured`` (and
``kernel_estimate_over_measured``); ``estimate_within_10pct`` says whether
every ratio of every row lies within 10% of 1. Writes
``build/bench/compile.json``.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

from bench.looping import MODES, PROMPT, run_modes
from cli.compile import cached_compile
from cosim.harness import REPO
from sw.compiler.compile import compile_model
from sw.compiler.estimate import estimate_step
from sw.target import TARGETS

sys.path.insert(0, str(REPO / "tests"))
from llama_checkpoints import SHAPES, make_checkpoint  # noqa: E402

OUT = REPO / "build" / "bench" / "compile.json"
DEFAULT_MODEL = REPO / "models" / "pystdlib-tiny"


def measure(checkpoint, target, mode, context):
    start = time.perf_counter()
    compiled = compile_model(checkpoint, target, mode=mode, context=context)
    seconds = time.perf_counter() - start
    launches = compiled.launches()
    units = [launch.units() for launch in launches]
    cells = target.array.rows * target.array.cols // 2
    est = estimate_step(compiled, compiled.context)
    return {"compile_s": round(seconds, 2), "kernels": len(launches), "buckets": len(compiled.buckets),
            "context": compiled.context,
            "pcu_use_max": max(c for c, _ in units) / cells, "pmu_use_max": max(m for _, m in units) / cells,
            "pcu_use_mean": sum(c for c, _ in units) / len(units) / cells,
            "pmu_use_mean": sum(m for _, m in units) / len(units) / cells,
            "routes": sum(len(launch.program.connections) for launch in launches),
            "bytes_read_per_token": est["bytes_read"], "bytes_written_per_token": est["bytes_written"],
            "estimated_cycles_per_token": est["cycles"], "estimated_kernel_cycles_per_token": est["kernel_cycles"]}


# The measured decode: a prompt of two tokens and two new ones, positions 0..2, inside every target's first
# context bucket (4 or more positions), so every step runs the launches the estimate prices.
CHECK_PROMPT, CHECK_TOKENS = PROMPT[:2], 2
TOLERANCE = 0.10


def estimate_vs_measured(target):
    """Per decode mode of :mod:`bench.looping`: the fast model's cycles per token of a short greedy decode of the
    default model on ``target`` beside the static estimate of the bucket it ran in (rows of a table)."""
    runs, notes = run_modes(target, CHECK_PROMPT, CHECK_TOKENS)
    rows = []
    for name, (program, orchestration) in MODES.items():
        compiled, _ = cached_compile(DEFAULT_MODEL, target, program, None)
        last = len(CHECK_PROMPT) + CHECK_TOKENS - 2
        tp = compiled.bucket(0)[0]
        if compiled.bucket(last)[0] != tp:
            raise RuntimeError(f"{target.name}: the checked decode leaves its first context bucket of {tp} positions")
        est = estimate_step(compiled, tp, orchestration)
        r = runs[name]["report"]
        row = {"target": target.name, "mode": name, "program": compiled.mode, "orchestration": orchestration,
               "measured_on": r["backend"],
               "bucket": tp, "steps": r["steps"], "kernels_per_token": r["kernels_per_token"],
               "measured_cycles_per_token": r["cycles_per_token"],
               "measured_kernel_cycles_per_token": r["kernel_cycles_per_token"],
               "estimated_cycles_per_token": est["cycles"], "estimated_kernel_cycles_per_token": est["kernel_cycles"],
               "estimate_over_measured": est["cycles"] / r["cycles_per_token"],
               "kernel_estimate_over_measured": est["kernel_cycles"] / r["kernel_cycles_per_token"],
               "looped_note": notes[name] if program == "looped" else ""}
        row["within_10pct"] = all(abs(row[k] - 1) <= TOLERANCE
                                  for k in ("estimate_over_measured", "kernel_estimate_over_measured"))
        rows.append(row)
        print(f"{target.name:<9} {name:<10} bucket {tp:>3}: measured {row['measured_cycles_per_token']:>9,.0f} "
              f"({row['measured_kernel_cycles_per_token']:>9,.0f} in kernels), estimated "
              f"{row['estimated_cycles_per_token']:>9,.0f} ({row['estimated_kernel_cycles_per_token']:>9,.0f}); "
              f"estimate / measured {row['estimate_over_measured']:.3f} "
              f"(kernels {row['kernel_estimate_over_measured']:.3f})"
              + ("" if row["within_10pct"] else "  OUTSIDE 10%"))
    return rows


def main():
    OUT.parent.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for name, shape in SHAPES.items():
            models[name] = make_checkpoint(Path(tmp) / name, **shape)
        models["pystdlib-tiny (default)"] = DEFAULT_MODEL
        for name, path in models.items():
            for target in TARGETS.values():
                context = 64 if name != "pystdlib-tiny (default)" else None
                row = {"model": name, "target": target.name}
                for mode in ("fused", "unfused"):
                    row[mode] = measure(path, target, mode, context)
                row["unfused_over_fused_cycles"] = (row["unfused"]["estimated_cycles_per_token"]
                                                    / row["fused"]["estimated_cycles_per_token"])
                results.append(row)
                print(f"{name:<24} {target.name:<5} kernels {row['fused']['kernels']:>3} fused / "
                      f"{row['unfused']['kernels']:>3} unfused; est. cycles/token "
                      f"{row['fused']['estimated_cycles_per_token']:>9,.0f} / "
                      f"{row['unfused']['estimated_cycles_per_token']:>9,.0f} "
                      f"({row['unfused_over_fused_cycles']:.2f}x); compile {row['fused']['compile_s']:.1f} s")
    checks = [row for target in TARGETS.values() for row in estimate_vs_measured(target)]
    within = all(row["within_10pct"] for row in checks)
    print(f"estimate within 10% of the fast model in every row: {within}")
    OUT.write_text(json.dumps({"results": results, "estimate_vs_measured": checks, "estimate_within_10pct": within,
                               "estimate_check": {"prompt_ids": CHECK_PROMPT, "new_tokens": CHECK_TOKENS,
                                                  "tolerance": TOLERANCE}}, indent=2))
    print(f"wrote {OUT}")
