"""Compiler benchmark: per model shape and target, compile time, kernels, resource use, cycles per token.

Compiles random-weight checkpoints of several shapes (written by
transformers' ``save_pretrained``) and the default model, fused and unfused,
for the co-simulated 2x4 chip and the 4x8 array, and records the static
estimate of cycles per token (sw/compiler/estimate.py) of each and their
ratio. Writes ``build/bench/compile.json``.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

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
    OUT.write_text(json.dumps({"results": results}, indent=2))
    print(f"wrote {OUT}")
