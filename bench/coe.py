"""Composition of Experts on the fast model: a Zipf soak over 150 experts, switching, and Table V's cases.

Writes ``build/bench/coe.json``. The library is ``build/experts`` when ``tools/train_experts.py`` has
written it, else an untrained one (:func:`sw.coe.library.write_untrained`, ``trained_experts`` 0).

- **soak**: ``OPENRDU_COE_SOAK`` requests (default 10,000) over the 150 experts, expert ``i`` of the
  popularity order drawn with probability proportional to ``1 / i**1.1``, each a 2-token prompt and
  1 new token, on ``max_slots`` HBM slots with LRU and prefetch ``LOOKAHEAD`` pairs deep, decoded
  host-orchestrated (``OPENRDU_COE_ORCHESTRATION=chip``: by the chip's sequencer, one slot fewer); every
  request's logits digest is compared with its expert run alone (``wrong_outputs``);
- **switching**: ``switch_cycles_ddr`` is the device's copy of one slot (from the soak),
  ``switch_cycles_host`` the same bytes over the target's host link (the paper's H100 link, 64 GB/s
  against 1 TB/s of DDR -> HBM: :data:`sw.coe.slots.HOST_LINKS`) as the runtime accounts every host
  transfer (bytes / rate plus the tier's latency: the host link is not simulated word by word),
  ``switch_ratio`` their quotient;
  ``switch_ratio_by_host_link`` the same quotient over the A100 link and the spec's DDR/15 and DDR/31;
- **latency** (Table V): batches of 1 and 8, 20 and 200 new tokens, every request needing a different
  expert not in HBM: 8-token prompts (``<s>`` and the first 7 tokens of held-out prompts, the first
  that the router sends to each expert not yet taken), served by the controller on a cold cache, the
  CoE way (``mode="ddr"``, prefetch) and over the host link (``mode="host"``), both generating every
  token (no stop at EOS), with the chip's sequencer issuing the kernels (``orchestration="chip"``, every
  slot with its launch lists: 6 slots) and again host-orchestrated (7 slots). A case's latency is the
  trace's cycles, from the first routing to the last token. The all-in-HBM figure is the same run less
  its switching: router and decode cycles only (150 experts, or the 8 used, do not fit HBM).
"""

import asyncio
import json
import os
import time
from dataclasses import replace
from fractions import Fraction

import numpy as np

from cli.compile import cached_compile
from cosim.harness import REPO
from sw.coe.controller import LOOKAHEAD, serve
from sw.coe.library import Library, write_untrained
from sw.coe.slots import HOST_LINKS, coe_target, plan
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
    """The router on the chip over the library's held-out prompts: the share routed to their own slice's expert,
    in all and per slice."""
    rows = lib.prompts[:int(os.environ.get("OPENRDU_COE_ROUTER_PROMPTS", "400"))]
    if not rows:
        return None, 0, {}
    right = {}
    for row in rows:
        out = run(ModelDevice(lib.target), lib.router, lib.encode(row["text"]), 0, keep_logits=True)
        right.setdefault(row["expert"], []).append(
            lib.classes[int(np.argmax(out["logits"][-1][:len(lib.classes)]))] == row["expert"])
    return (sum(map(sum, right.values())) / len(rows), len(rows),
            {e: sum(hits) / len(hits) for e, hits in right.items()})


def soak(lib, n, slots, progress, lookahead=LOOKAHEAD, orchestration="host"):
    rng = np.random.default_rng(2024)
    names = list(lib.experts)
    rng.shuffle(names)
    p = 1.0 / np.arange(1, len(names) + 1) ** 1.1
    picks = rng.choice(len(names), size=n, p=p / p.sum())
    prompts = [[0, 449], [0, 323], [0, 97], [0, 12]]
    requests = [{"prompt_ids": prompts[int(k)], "max_new_tokens": 1, "expert": names[i]}
                for i, k in zip(picks, rng.integers(0, len(prompts), size=n))]
    out = asyncio.run(serve(ModelDevice(lib.target), lib, requests, slots=slots, lookahead=lookahead,
                            orchestration=orchestration, progress=progress))
    refs, wrong = {}, 0
    for r, q in zip(out["requests"], requests):
        key = (r["expert"], tuple(q["prompt_ids"]))
        if key not in refs:
            ref = run(ModelDevice(lib.target), lib.alone(r["expert"]), q["prompt_ids"], 1)
            refs[key] = (ref["tokens"], ref["logits_sha"])
        wrong += (r["tokens"], r["logits_sha"]) != refs[key]
    return out, wrong


PROMPT_TOKENS = 8


def distinct_prompts(lib, n=8, tokens=PROMPT_TOKENS):
    """Up to ``n`` prompts of ``tokens`` ids that the router (run alone on the chip) sends to different experts:
    in the library's prompt order, the first for each expert not yet taken. Returns (prompts, experts)."""
    prompts, experts = [], []
    for row in lib.prompts:
        ids = lib.encode(row["text"])[:tokens]
        if len(ids) < tokens:
            continue
        out = run(ModelDevice(lib.target), lib.router, ids, 0, keep_logits=True, orchestration="chip")
        expert = lib.classes[int(np.argmax(out["logits"][-1][:len(lib.classes)]))]
        if expert not in experts:
            prompts.append(ids)
            experts.append(expert)
            if len(experts) == n:
                break
    return prompts, experts


def table_v(lib, prompts, orchestration):
    """The paper's cases served by the controller, CoE and host-link ways: latencies (cycles) and the ratios."""
    slots = plan(lib, 1, orchestration=orchestration).max_slots
    out = {"slots": slots}
    for batch in (1, 8):
        for n in (20, 200):
            requests = [{"prompt_ids": ids, "max_new_tokens": n, "stop_at_eos": False} for ids in prompts[:batch]]
            runs = {mode: asyncio.run(serve(ModelDevice(lib.target), lib, requests, slots=slots, mode=mode,
                                            batch=batch, orchestration=orchestration))
                    for mode in ("ddr", "host")}
            coe, host = runs["ddr"], runs["host"]
            if [r["logits_sha"] for r in coe["requests"]] != [r["logits_sha"] for r in host["requests"]]:
                raise AssertionError(f"batch {batch}, {n} tokens: the CoE and host-link runs differ")
            rows = coe["requests"]
            router = sum(r["router_cycles"] for r in rows)
            decode = sum(r["decode_cycles"] for r in rows)
            switched = sum(r["switch_cycles"] for r in rows)
            hidden = sum(r["hidden_cycles"] for r in rows)
            hbm = router + decode
            case = {"coe_cycles": coe["total_cycles"], "host_cycles": host["total_cycles"], "hbm_cycles": hbm,
                    "host_over_coe": host["total_cycles"] / coe["total_cycles"],
                    "coe_over_hbm": coe["total_cycles"] / hbm, "router_cycles": router, "decode_cycles": decode,
                    "switches": sum(1 for r in rows if r["switch_cycles"]), "switch_cycles": switched,
                    "hidden_cycles": hidden, "experts": [r["expert"] for r in rows]}
            if batch == 1:
                h = host["requests"][0]
                case["expert_only_host_over_coe"] = ((h["decode_cycles"] + h["switch_cycles"])
                                                     / (rows[0]["decode_cycles"] + rows[0]["switch_cycles"]))
            out[f"batch{batch}_tokens{n}"] = case
    out["method"] = (f"measured on the fast model: the controller serves {PROMPT_TOKENS}-token prompts routed to "
                     "different experts on a cold cache, CoE (DDR->HBM copies, prefetch beside routing and decoding) "
                     "and host-link switching, every token generated; latency = the trace's cycles; all-in-HBM = "
                     "the CoE run's router and decode cycles")
    return out


def main():
    start = time.perf_counter()
    n = int(os.environ.get("OPENRDU_COE_SOAK", "10000"))
    orchestration = os.environ.get("OPENRDU_COE_ORCHESTRATION", "host")
    lib, trained = library()
    p = plan(lib, 1, orchestration=orchestration)
    slots = p.max_slots
    accuracy, routed, by_slice = router_accuracy(lib)
    last = [0.0]

    def progress(done, total):
        if done == total or time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"coe soak: {done}/{total} requests", flush=True)

    out, wrong = soak(lib, n, slots, progress, orchestration=orchestration)
    s = out["summary"]
    switch_ddr = max(r["switch_cycles"] for r in out["requests"])
    m = lib.target.memory
    switch_host = host_cycles(lib.slot_bytes, m, m.hbm)
    links = {**HOST_LINKS, "ddr/15": Fraction(1, 15), "ddr/31": Fraction(1, 31)}
    by_link = {name: host_cycles(lib.slot_bytes, replace(m, host_bytes_per_cycle=m.ddr.bytes_per_cycle * f), m.hbm)
               / switch_ddr for name, f in links.items()}
    prompts, routed_to = distinct_prompts(lib)
    latency = table_v(lib, prompts, "chip")
    result = {
        "experts": len(lib), "trained_experts": len(lib.trained) if trained else 0,
        "requests": n, "router_accuracy": accuracy, "router_prompts": routed,
        "router_accuracy_by_slice": by_slice,
        "router_accuracy_min_slice": min(by_slice.values()) if by_slice else None,
        "wrong_outputs": wrong, "capacity_violations": out["capacity_violations"],
        "hit_rate": s["hit_rate"], "switch_cycles_ddr": switch_ddr, "switch_cycles_host": switch_host,
        "switch_ratio": switch_host / switch_ddr, "switch_ratio_by_host_link": by_link,
        "host_link_bytes_per_cycle": float(m.host_bytes_per_cycle), "hidden_switch_fraction": s["hidden_fraction"],
        "latency": latency, "latency_host_orchestrated": table_v(lib, prompts, "host"),
        "latency_prompts": {"experts": routed_to, "prompt_ids": prompts},
        "footprint": {"slot_bytes": lib.slot_bytes, "experts_in_ddr": lib.target.memory.ddr.capacity // lib.slot_bytes,
                      "experts_in_hbm": slots, "hbm_slots_used": slots},
        "soak": {k: v for k, v in s.items()}, "capacity_checks": out["capacity_checks"],
        "backend": "model", "target": lib.target.describe(), "library": "trained" if trained else "untrained",
        "overlap": out["overlap"], "lookahead": out["lookahead"], "orchestration": out["orchestration"],
        "wall_s": time.perf_counter() - start,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(f"coe: {len(lib)} experts, {n} requests, wrong {wrong}, hit rate {s['hit_rate']:.1%}, switch ratio "
          f"{result['switch_ratio']:.2f}, hidden {s['hidden_fraction']:.1%}, batch-8/20-token host/CoE "
          f"{result['latency']['batch8_tokens20']['host_over_coe']:.2f}x, router {accuracy} (lowest slice "
          f"{result['router_accuracy_min_slice']}) -> {OUT}")
    return result


if __name__ == "__main__":
    main()
