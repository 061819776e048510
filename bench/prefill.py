"""Batched prefill against token-by-token prompts on the default model (fast model, ``4x8`` and ``chip``).

For prompts of 8, 32 and 128 tokens, the cycles from the start to the first generated token's logits
(time to first token): with prefill (the positions before the last prompt token as prefill chunks, then
the last one as a decode step) and token by token (a decode step per prompt token). Both in one run of one
compiled model, host-orchestrated; the tokens and the logits from the last prompt token on are checked
bit-identical. The goal (issue 15): ``ratio`` >= 4 at 128 tokens on ``4x8``.

Writes ``build/bench/prefill.json``::

    {"4x8": {"8": {"prefill_cycles", "token_by_token_cycles", "ratio", ...}, "32": ..., "128": ...},
     "chip": {...}, "model": ..., "compile_seconds": {...}}
"""

import asyncio
import json
import time
from pathlib import Path

import numpy as np

from sw.compiler.compile import compile_model
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.target import TARGETS

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "build" / "bench" / "prefill.json"
MODEL = REPO / "models" / "pystdlib-tiny"
PROMPTS = (8, 32, 128)
NEW_TOKENS = 4


def prompt(n, vocab, seed=0):
    """``n`` token ids: BOS then a deterministic draw from the rest of the vocabulary."""
    rng = np.random.default_rng(seed)
    return [0] + [int(t) for t in rng.integers(2, vocab, n - 1)]


def measure(compiled, n):
    ids = prompt(n, compiled.shape.vocab_size)
    runs = {}
    for prefill in (True, False):
        start = time.perf_counter()
        runs[prefill] = asyncio.run(generate(ModelDevice(compiled.target), compiled, ids, max_new_tokens=NEW_TOKENS,
                                             prefill=prefill, keep_logits=True, stop_at_eos=False))
        runs[prefill]["wall_s"] = time.perf_counter() - start
    batched, stepped = runs[True], runs[False]
    first = len(ids) - 1
    identical = batched["tokens"] == stepped["tokens"] and np.array_equal(batched["logits"], stepped["logits"][first:])
    pre = batched["report"]["prefill"]
    return {
        "prefill_cycles": batched["report"]["prompt_cycles"],
        "token_by_token_cycles": stepped["report"]["prompt_cycles"],
        "ratio": stepped["report"]["prompt_cycles"] / batched["report"]["prompt_cycles"],
        "prefill_kernel_cycles": pre["kernel_cycles"],
        "prefill_launch_cycles": pre["launch_cycles"],
        "prefill_program_load_cycles": pre["program_load_cycles"],
        "prefill_kernels": pre["kernels"], "prefill_chunks": pre["chunks"],
        "prefill_hbm_bytes": pre["hbm_read"] + pre["hbm_written"],
        "last_prompt_step_cycles": batched["step_cycles"][0],
        "tokens_identical_and_logits_bit_identical": bool(identical),
        "wall_s": {"prefill": round(batched["wall_s"], 2), "token_by_token": round(stepped["wall_s"], 2)},
    }


def main():
    OUT.parent.mkdir(parents=True, exist_ok=True)
    result = {"model": str(MODEL.relative_to(REPO)), "prompts": list(PROMPTS), "orchestration": "host",
              "backend": "model", "compile_seconds": {}}
    for name in ("4x8", "chip"):
        target = TARGETS[name]
        start = time.perf_counter()
        compiled = compile_model(MODEL, target, prefill=True)
        result["compile_seconds"][name] = round(time.perf_counter() - start, 1)
        if compiled.prefill_note:
            raise SystemExit(f"bench prefill: {name}: {compiled.prefill_note}")
        result[name] = {str(n): measure(compiled, n) for n in PROMPTS}
        for n in PROMPTS:
            r = result[name][str(n)]
            print(f"prefill {name} {n:4d} tokens: {r['prefill_cycles']:>12,.0f} cycles against "
                  f"{r['token_by_token_cycles']:>12,.0f} token by token: {r['ratio']:.2f}x"
                  f"{'' if r['tokens_identical_and_logits_bit_identical'] else '  (RESULTS DIFFER)'}")
    result["goal_ratio_at_128_on_4x8"] = 4.0
    identical = all(r["tokens_identical_and_logits_bit_identical"] for name in ("4x8", "chip")
                    for r in result[name].values())
    result["all_results_identical"] = identical
    result["goal_met"] = identical and result["4x8"]["128"]["ratio"] >= 4.0
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
