"""Composition of Experts on the fast model: a Zipf soak over 150 experts, switching, and Table V's cases.

Writes ``build/bench/coe.json``. The library is ``build/experts`` when ``tools/train_experts.py`` has
written it, else an untrained one (:func:`sw.coe.library.write_untrained`, ``trained_experts`` 0).

- **soak**: ``OPENRDU_COE_SOAK`` requests (default 10,000) over the 150 experts, expert ``i`` of the
  popularity order drawn with probability proportional to ``1 / i**1.1``, each a 2-token prompt and
  1 new token, on ``max_slots`` HBM slots with LRU and prefetch ``LOOKAHEAD`` pairs deep; every
  request's logits digest is compared with its expert run alone (``wrong_outputs``);
- **switching**: ``switch_cycles_ddr`` is the device's copy of one slot (from the soak),
  ``switch_cycles_host`` the same bytes over the host link, ``switch_ratio`` their quotient;
- **latency** (Table V): batches of 1 and 8, 20 and 200 new tokens, every request needing a different
  expert not in HBM. *Analytic from measured cycles*: one expert run of an 8-token prompt and 200
  tokens gives the per-step cycles, the router (same architecture or not) its own prompt cycles, and
  the soak the switch cycles; CoE hides a switch behind the previous request's decode.
"""

import asyncio
import json
import os
import time

import numpy as np

from cli.compile import cached_compile
from cosim.harness import REPO
from sw.coe.controller import LOOKAHEAD, serve
from sw.coe.library import Library, write_untrained
from sw.coe.slots import coe_target, plan
from sw.model.memory_units import host_cycles
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice

OUT = REPO / "build" / "bench" / "coe.json"
TRAINED = REPO / "build" / "experts"
UNTRAINED = REPO / "build" / "coe-untrained"


def _compile(path, target):
    return cached_compile(path, target, "fused", None)[0]


def library():
    target = coe_target()
    if (TRAINED / "manifest.json").is_file():
        return Library(TRAINED, target, size=150, compile=_compile), True
    if not (UNTRAINED / "manifest.json").is_file():
        write_untrained(UNTRAINED, REPO / "models" / "pystdlib-tiny", experts=8,
                        prompts=["def __init__(self", "import os\n", "class Test(", "for i in range("])
    return Library(UNTRAINED, target, size=150, compile=_compile), False


def run(device, compiled, prompt, n, **kw):
    return asyncio.run(generate(device, compiled, prompt, max_new_tokens=n, stop_at_eos=False, **kw))


def router_accuracy(lib):
    rows = lib.prompts[:int(os.environ.get("OPENRDU_COE_ROUTER_PROMPTS", "400"))]
    if not rows:
        return None, 0
    right = 0
    for row in rows:
        out = run(ModelDevice(lib.target), lib.router, lib.encode(row["text"]), 0, keep_logits=True)
        right += lib.classes[int(np.argmax(out["logits"][-1][:len(lib.classes)]))] == row["expert"]
    return right / len(rows), len(rows)


def soak(lib, n, slots, progress, lookahead=LOOKAHEAD):
    rng = np.random.default_rng(2024)
    names = list(lib.experts)
    rng.shuffle(names)
    p = 1.0 / np.arange(1, len(names) + 1) ** 1.1
    picks = rng.choice(len(names), size=n, p=p / p.sum())
    prompts = [[0, 449], [0, 323], [0, 97], [0, 12]]
    requests = [{"prompt_ids": prompts[int(k)], "max_new_tokens": 1, "expert": names[i]}
                for i, k in zip(picks, rng.integers(0, len(prompts), size=n))]
    out = asyncio.run(serve(ModelDevice(lib.target), lib, requests, slots=slots, lookahead=lookahead,
                            progress=progress))
    refs, wrong = {}, 0
    for r, q in zip(out["requests"], requests):
        key = (r["expert"], tuple(q["prompt_ids"]))
        if key not in refs:
            ref = run(ModelDevice(lib.target), lib.alone(r["expert"]), q["prompt_ids"], 1)
            refs[key] = (ref["tokens"], ref["logits_sha"])
        wrong += (r["tokens"], r["logits_sha"]) != refs[key]
    return out, wrong


def table_v(lib, switch_ddr, switch_host):
    """Overall and expert-only latencies (cycles) of the paper's cases, and the ratios."""
    prompt = [0, 449, 323, 97, 12, 5, 77, 300]
    steps = run(ModelDevice(lib.target), lib.alone(next(iter(lib.experts))), prompt, 200)["step_cycles"]
    router = sum(run(ModelDevice(lib.target), lib.router, prompt, 0)["step_cycles"])
    out = {}
    for batch in (1, 8):
        for n in (20, 200):
            decode = sum(steps[:len(prompt) + n - 1])
            coe = batch * (router + decode) + switch_ddr + (batch - 1) * max(0.0, switch_ddr - decode)
            host = batch * (router + decode + switch_host)
            hbm = batch * (router + decode)
            case = {"coe_cycles": coe, "host_cycles": host, "hbm_cycles": hbm, "host_over_coe": host / coe,
                    "coe_over_hbm": coe / hbm}
            if batch == 1:
                case["expert_only_host_over_coe"] = (decode + switch_host) / (decode + switch_ddr)
            out[f"batch{batch}_tokens{n}"] = case
    out["method"] = ("analytic from measured cycles: per-step cycles of one expert run (8-token prompt, 200 tokens), "
                     "the router's prompt cycles, the measured DDR->HBM copy; every request needs a different expert "
                     "not in HBM; CoE hides each switch but the first behind the previous decode")
    return out


def main():
    start = time.perf_counter()
    n = int(os.environ.get("OPENRDU_COE_SOAK", "10000"))
    lib, trained = library()
    p = plan(lib, 1)
    slots = p.max_slots
    accuracy, routed = router_accuracy(lib)
    last = [0.0]

    def progress(done, total):
        if done == total or time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"coe soak: {done}/{total} requests", flush=True)

    out, wrong = soak(lib, n, slots, progress)
    s = out["summary"]
    switch_ddr = max(r["switch_cycles"] for r in out["requests"])
    switch_host = host_cycles(lib.slot_bytes, lib.target.memory, lib.target.memory.hbm)
    result = {
        "experts": len(lib), "trained_experts": len(lib.trained) if trained else 0,
        "requests": n, "router_accuracy": accuracy, "router_prompts": routed,
        "wrong_outputs": wrong, "capacity_violations": out["capacity_violations"],
        "hit_rate": s["hit_rate"], "switch_cycles_ddr": switch_ddr, "switch_cycles_host": switch_host,
        "switch_ratio": switch_host / switch_ddr, "hidden_switch_fraction": s["hidden_fraction"],
        "latency": table_v(lib, switch_ddr, switch_host),
        "footprint": {"slot_bytes": lib.slot_bytes, "experts_in_ddr": lib.target.memory.ddr.capacity // lib.slot_bytes,
                      "experts_in_hbm": slots, "hbm_slots_used": slots},
        "soak": {k: v for k, v in s.items()}, "capacity_checks": out["capacity_checks"],
        "backend": "model", "target": lib.target.describe(), "library": "trained" if trained else "untrained",
        "overlap": out["overlap"], "lookahead": out["lookahead"], "wall_s": time.perf_counter() - start,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(f"coe: {len(lib)} experts, {n} requests, wrong {wrong}, hit rate {s['hit_rate']:.1%}, switch ratio "
          f"{result['switch_ratio']:.2f}, hidden {s['hidden_fraction']:.1%}, batch-8/20-token host/CoE "
          f"{result['latency']['batch8_tokens20']['host_over_coe']:.2f}x -> {OUT}")
    return result


if __name__ == "__main__":
    main()
