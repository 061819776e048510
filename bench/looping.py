"""Decode modes side by side: op-by-op, fused host-orchestrated, fused chip-orchestrated (and looped).

On the default model and the 4x8 target, fast model, every mode in one run:
cycles per token split into kernels, Program Load, launches and read-back,
kernels per token, HBM bytes per token (the tier controllers' counts) and the
roofline fraction (roofline cycles per token, from those bytes at peak HBM
bandwidth, over all cycles of a token). On the co-simulated ``chip`` target
the chip-orchestrated mode runs on the RTL too, its logits checked against
the fast model's.

Kernel looping (issue 16, item 3) is not built yet: ``modes.looped`` is
``null`` and ``looped_implemented`` false, so the goals that name it cannot be
read from this file until it is.

Writes ``build/bench/looping.json``.
"""

import asyncio
import json
import time

from cli.compile import cached_compile
from cosim.decode import run_rtl
from cosim.harness import REPO
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.target import CHIP, LARGE

OUT = REPO / "build" / "bench" / "looping.json"
CHECKPOINT = REPO / "models" / "pystdlib-tiny"
PROMPT = [0, 449, 323, 66, 263]        # "<s>def main"
NEW_TOKENS = 12
RTL_NEW_TOKENS = 4
# Mode -> (compiled program, orchestration).
MODES = {"unfused": ("unfused", "host"), "fused_host": ("fused", "host"), "fused_chip": ("fused", "chip")}
KEYS = ("cycles_per_token", "kernel_cycles_per_token", "program_load_cycles_per_token", "launch_cycles_per_token",
        "host_launch_cycles_per_token", "sequencer_cycles_per_token", "host_io_cycles_per_token",
        "kernels_per_token", "hbm_bytes_per_token", "roofline_cycles_per_token", "roofline_fraction", "provenance")


def run_modes(target, prompt, new_tokens):
    out = {}
    for name, (program, orchestration) in MODES.items():
        compiled, _ = cached_compile(CHECKPOINT, target, program, None)
        out[name] = asyncio.run(generate(ModelDevice(target), compiled, prompt, max_new_tokens=new_tokens,
                                         orchestration=orchestration))
    return out


def main():
    OUT.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runs = run_modes(LARGE, PROMPT, NEW_TOKENS)
    modes = {name: {k: r["report"][k] for k in KEYS} | {"tokens": r["tokens"]} for name, r in runs.items()}
    cycles = {name: m["cycles_per_token"] for name, m in modes.items()}
    out = {"target": LARGE.name, "tokens_identical": len({tuple(r["tokens"]) for r in runs.values()}) == 1,
           "logits_identical": len({r["logits_sha"] for r in runs.values()}) == 1,
           "modes": modes | {"looped": None}, "looped_implemented": False,
           "fused_host_over_fused_chip": cycles["fused_host"] / cycles["fused_chip"],
           "unfused_over_fused_chip": cycles["unfused"] / cycles["fused_chip"],
           "prompt_ids": PROMPT, "new_tokens": NEW_TOKENS}
    # The RTL: the chip-orchestrated step on the co-simulated chip against the fast model, same request.
    compiled, path = cached_compile(CHECKPOINT, CHIP, "fused", None)
    request = {"prompt_ids": PROMPT, "max_new_tokens": RTL_NEW_TOKENS, "orchestration": "chip"}
    rtl = run_rtl(path, request)
    model = asyncio.run(generate(ModelDevice(CHIP), compiled, PROMPT, max_new_tokens=RTL_NEW_TOKENS,
                                 orchestration="chip"))
    out["rtl"] = {"target": CHIP.name, "mode": "fused_chip", "cycles_per_token": rtl["report"]["cycles_per_token"],
                  "kernel_cycles_per_token": rtl["report"]["kernel_cycles_per_token"],
                  "sequencer_cycles_per_token": rtl["report"]["sequencer_cycles_per_token"],
                  "model_cycles_per_token": model["report"]["cycles_per_token"],
                  "hbm_bytes_per_token": rtl["report"]["hbm_bytes_per_token"],
                  "model_hbm_bytes_per_token": model["report"]["hbm_bytes_per_token"],
                  "logits_identical": rtl["logits_sha"] == model["logits_sha"], "tokens": rtl["tokens"]}
    out["wall_s"] = time.perf_counter() - start
    OUT.write_text(json.dumps(out, indent=2))
    print(f"looping (4x8, fast model): cycles/token unfused {cycles['unfused']:,.0f}, fused host "
          f"{cycles['fused_host']:,.0f}, fused chip {cycles['fused_chip']:,.0f}; roofline "
          + ", ".join(f"{n} {m['roofline_fraction']:.1%}" for n, m in modes.items())
          + f"; tokens identical {out['tokens_identical']}; looped: not built")
    print(f"  RTL (chip target, chip-orchestrated): {out['rtl']['cycles_per_token']:,.0f} cycles/token "
          f"(model {out['rtl']['model_cycles_per_token']:,.0f}), logits identical {out['rtl']['logits_identical']}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
