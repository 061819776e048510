"""End-to-end decode benchmark: the default model on the co-simulated chip and on the fast model.

- On the RTL (`chip` target, Verilator): fused and unfused cycles per token
  and their ratio, HBM bandwidth used against the roofline (bytes per token /
  peak bytes per cycle), simulated cycles and tokens per wall-clock second.
- On the fast model, the same runs: the same tokens and logits (checked
  here), its wall-clock speed-up over the RTL.
- On the fast model only, the 4x8 array, where a decode step of four layers is five kernels.

Writes ``build/bench/decode.json``.
"""

import asyncio
import json
import time

from cosim.decode import run_rtl
from cosim.harness import REPO
from cli.compile import cached_compile
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.target import CHIP, LARGE

OUT = REPO / "build" / "bench" / "decode.json"
CHECKPOINT = REPO / "models" / "pystdlib-tiny"
PROMPT = [0, 449, 323, 66, 263]        # "<s>def main"
NEW_TOKENS = 12
KEYS = ("cycles_per_token", "kernel_cycles_per_token", "program_load_cycles_per_token", "launch_cycles_per_token",
        "host_io_cycles_per_token", "kernels_per_token", "tokens_per_s_simulated", "hbm_bytes_per_token",
        "hbm_bandwidth_fraction", "hbm_bandwidth_fraction_in_kernels", "roofline_cycles_per_token", "total_cycles",
        "wall_s")


def summary(result):
    r = {k: result["report"][k] for k in KEYS}
    r["roofline_fraction"] = r["roofline_cycles_per_token"] / r["cycles_per_token"]
    r["tokens"] = result["tokens"]
    return r


def model_runs(target, modes=("fused", "unfused")):
    out = {}
    for mode in modes:
        compiled, _ = cached_compile(CHECKPOINT, target, mode, None)
        start = time.perf_counter()
        result = asyncio.run(generate(ModelDevice(target), compiled, PROMPT, max_new_tokens=NEW_TOKENS))
        out[mode] = (result, time.perf_counter() - start)
    return out


def main():
    OUT.parent.mkdir(parents=True, exist_ok=True)
    compiled = {mode: cached_compile(CHECKPOINT, CHIP, mode, None) for mode in ("fused", "unfused")}
    request = {"prompt_ids": PROMPT, "max_new_tokens": NEW_TOKENS, "temperature": 0.0, "top_k": 0, "seed": 0}
    start = time.perf_counter()
    rtl = dict(zip(("fused", "unfused"), run_rtl([compiled[m][1] for m in ("fused", "unfused")], request)))
    rtl_wall = time.perf_counter() - start
    model = model_runs(CHIP)
    large = model_runs(LARGE)
    out = {"prompt_ids": PROMPT, "new_tokens": NEW_TOKENS, "rtl_wall_s_including_setup": rtl_wall, "chip": {},
           "4x8_model": {}}
    for mode in ("fused", "unfused"):
        r, (m, m_wall) = rtl[mode], model[mode]
        row = {"rtl": summary(r), "model": summary(m)}
        rep = r["report"]
        row["rtl"]["simulated_cycles_per_wall_s"] = rep["total_cycles"] / rep["wall_s"]
        row["rtl"]["tokens_per_wall_s"] = rep["steps"] / rep["wall_s"]
        row["model"]["tokens_per_wall_s"] = m["report"]["steps"] / m_wall
        row["model_speedup_over_rtl"] = rep["wall_s"] / m_wall
        row["bit_identical"] = r["logits_sha"] == m["logits_sha"] and r["tokens"] == m["tokens"]
        row["model_over_rtl_kernel_cycles"] = (m["report"]["kernel_cycles_per_token"]
                                               / rep["kernel_cycles_per_token"])
        out["chip"][mode] = row
        out["4x8_model"][mode] = summary(large[mode][0])
    for key in ("chip",):
        f, u = (out[key][m]["rtl"]["cycles_per_token"] for m in ("fused", "unfused"))
        out[key]["unfused_over_fused"] = u / f
    f, u = (out["4x8_model"][m]["cycles_per_token"] for m in ("fused", "unfused"))
    out["4x8_model"]["unfused_over_fused"] = u / f
    OUT.write_text(json.dumps(out, indent=2))
    c = out["chip"]
    print(f"chip (RTL): {c['fused']['rtl']['cycles_per_token']:,.0f} cycles/token fused, "
          f"{c['unfused']['rtl']['cycles_per_token']:,.0f} unfused ({c['unfused_over_fused']:.2f}x); "
          f"HBM {c['fused']['rtl']['hbm_bandwidth_fraction']:.1%} of peak fused "
          f"({c['fused']['rtl']['hbm_bandwidth_fraction_in_kernels']:.1%} during kernels); "
          f"{c['fused']['rtl']['simulated_cycles_per_wall_s']:,.0f} simulated cycles/s; fast model "
          f"{c['fused']['model_speedup_over_rtl']:.1f}x faster; bit-identical "
          f"{c['fused']['bit_identical'] and c['unfused']['bit_identical']}")
    g = out["4x8_model"]
    print(f"4x8 (model): {g['fused']['cycles_per_token']:,.0f} cycles/token fused, "
          f"{g['unfused']['cycles_per_token']:,.0f} unfused ({g['unfused_over_fused']:.2f}x)")
    print(f"wrote {OUT}")
