"""Decode modes side by side: op-by-op, fused host-orchestrated, fused chip-orchestrated and looped.

On the default model and the 4x8 target, fast model, every mode in one run:
cycles per token split into kernels, Program Load, launches and read-back,
kernels per token, HBM bytes per token (the tier controllers' counts) and the
roofline fraction (roofline cycles per token, from those bytes at peak HBM
bandwidth, over all cycles of a token). The looped mode runs on the RTL too,
on the co-simulated ``chip-4x8`` target, its logits and cycles checked
against the fast model's.

``looped`` is the program compiled with kernel looping (the decoder layers
one kernel looped over them, :mod:`sw.compiler.loop`), chip-orchestrated;
``looped_note`` says why it fell back to fused kernels where it did. The RTL
figures are the co-simulated ``chip-4x8`` target's (``sw.target.CHIP_4X8``:
the ``chip`` target's tiles and memory on a 4x8 array, whose 16 PCUs hold a
decoder layer of the default model as one kernel): ``rtl.looped_on_rtl`` says
whether the looped kernel ran there (no fallback note), ``rtl.kernel_cycles_ratio``
is the RTL's kernel cycles per token over the fast model's.

Writes ``build/bench/looping.json``; and, from one traced step of the fused (chip-orchestrated) and looped
programs, ``build/bench/looping_trace.json`` (open it in https://ui.perfetto.dev) and
``build/bench/looping_bandwidth.png``, HBM bytes per 1,000 cycles through a decode step with the layer
boundaries marked (docs/images/looping_bandwidth.png is a copy).
"""

import asyncio
import json
import time

from cli.compile import cached_compile
from cosim.decode import run_rtl
from cosim.harness import REPO
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.runtime.trace import COUNTER, chrome_trace
from sw.target import CHIP_4X8, LARGE

OUT = REPO / "build" / "bench" / "looping.json"
TRACE, PICTURE = OUT.with_name("looping_trace.json"), OUT.with_name("looping_bandwidth.png")
CHECKPOINT = REPO / "models" / "pystdlib-tiny"
PROMPT = [0, 449, 323, 66, 263]        # "<s>def main"
NEW_TOKENS = 12
RTL_NEW_TOKENS = 4
# Mode -> (compiled program, orchestration).
MODES = {"unfused": ("unfused", "host"), "fused_host": ("fused", "host"), "fused_chip": ("fused", "chip"),
         "looped": ("looped", "chip")}
KEYS = ("cycles_per_token", "kernel_cycles_per_token", "program_load_cycles_per_token", "launch_cycles_per_token",
        "host_launch_cycles_per_token", "sequencer_cycles_per_token", "host_io_cycles_per_token",
        "kernels_per_token", "hbm_bytes_per_token", "roofline_cycles_per_token", "roofline_fraction", "provenance")


def run_modes(target, prompt, new_tokens):
    out, notes = {}, {}
    for name, (program, orchestration) in MODES.items():
        compiled, _ = cached_compile(CHECKPOINT, target, program, None)
        notes[name] = compiled.loop_note
        out[name] = asyncio.run(generate(ModelDevice(target), compiled, prompt, max_new_tokens=new_tokens,
                                         orchestration=orchestration))
    return out, notes


def run_looped_rtl(target, prompt, new_tokens):
    """The looped program of the default model on ``target``'s RTL and on the fast model, one request each.

    Returns the ``rtl`` section: the RTL's cycles per token (all, kernels, sequencer), the model's, their
    kernel cycles ratio, HBM bytes per token of both, whether the logits (every step's) are bit-identical,
    and whether the looped kernel ran (``looped_on_rtl``; else ``looped_note`` says why it fell back).
    """
    start = time.perf_counter()
    compiled, path = cached_compile(CHECKPOINT, target, "looped", None)
    rtl = run_rtl(path, {"prompt_ids": prompt, "max_new_tokens": new_tokens, "orchestration": "chip"})
    wall = time.perf_counter() - start
    model = asyncio.run(generate(ModelDevice(target), compiled, prompt, max_new_tokens=new_tokens,
                                 orchestration="chip"))
    r, m = rtl["report"], model["report"]
    return {"target": target.name, "mode": "looped", "looped_on_rtl": not compiled.loop_note,
            "looped_note": compiled.loop_note, "kernels_per_token": r["kernels_per_token"],
            "cycles_per_token": r["cycles_per_token"], "kernel_cycles_per_token": r["kernel_cycles_per_token"],
            "sequencer_cycles_per_token": r["sequencer_cycles_per_token"],
            "model_cycles_per_token": m["cycles_per_token"],
            "model_kernel_cycles_per_token": m["kernel_cycles_per_token"],
            "kernel_cycles_ratio": r["kernel_cycles_per_token"] / m["kernel_cycles_per_token"],
            "hbm_bytes_per_token": r["hbm_bytes_per_token"], "model_hbm_bytes_per_token": m["hbm_bytes_per_token"],
            "logits_identical": rtl["logits_sha"] == model["logits_sha"],
            "tokens_identical": rtl["tokens"] == model["tokens"], "tokens": rtl["tokens"],
            "new_tokens": new_tokens, "wall_s": wall}


LAUNCH_SWEEP = (1000, 2000, 4000, 6000, 8000, 10000)
GOALS = {"fused_host_over_looped": ("fused_host", 1.5), "unfused_over_looped": ("unfused", 3.0)}


def launch_sweep(modes, host_launch_cycles):
    """The ratio goals as the host's round trip per launch varies (the spec's 2,000-10,000 cycles, an
    assumption): each mode's cycles per token less its host launches, plus its host commands per token at
    each cost. Derived from this run's figures, not run again.

    Returns ``(points, break_even)``: per cost the two ratios; per goal the least cost at which it is met
    (None where no cost meets it: the baseline's launches grow no faster than the looped one's).
    """
    def parts(name):
        m = modes[name]
        commands = m["host_launch_cycles_per_token"] / host_launch_cycles
        return m["cycles_per_token"] - m["host_launch_cycles_per_token"], commands

    points = []
    for h in LAUNCH_SWEEP:
        cycles = {name: base + n * h for name, (base, n) in ((n, parts(n)) for n in modes)}
        points.append({"host_launch_cycles": h} | {goal: cycles[base] / cycles["looped"]
                                                   for goal, (base, _) in GOALS.items()})
    (looped, n_looped), even = parts("looped"), {}
    for goal, (name, ratio) in GOALS.items():
        base, n = parts(name)
        # (base + n h) / (looped + n_looped h) >= ratio
        slope = n - ratio * n_looped
        need = (ratio * looped - base) / slope if slope > 0 else None
        even[goal] = None if need is None else max(0.0, need)
    return points, even


def boundaries(events):
    """Where a step's kernels (the launch list's, as sequenced, or the host's) and a looped kernel's iterations
    start: (cycle, label) from a trace's ``sequenced kernels`` (else ``kernels``) and unit tracks."""
    sequenced = [e for e in events if e["track"] == "sequenced kernels"]
    marks = [(e["start"], e["name"].split(":")[0]) for e in sequenced or
             [e for e in events if e["track"] == "kernels"]]
    starts = {}
    for e in events:
        if e["track"].split(" ")[0] in ("PCU", "PMU") and "(iteration" in e["name"]:
            i = int(e["name"].rsplit(" ", 1)[1].rstrip(")"))
            starts[i] = min(starts.get(i, e["start"]), e["start"])
    return sorted(marks + [(at, f"layer {i}") for i, at in starts.items() if i])


def bandwidth_picture(target, prompt):
    """One traced decode step of the fused program (host- and chip-orchestrated) and the looped one (fast model):
    the Chrome trace of each and a plot of the HBM bytes per 1,000 cycles through the step, kernel and layer
    starts marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, steps = {}, {}
    for name, program, orchestration in (("fused, host-orchestrated", "fused", "host"),
                                         ("fused, chip-orchestrated", "fused", "chip"), ("looped", "looped", "chip")):
        compiled, _ = cached_compile(CHECKPOINT, target, program, None)
        result = asyncio.run(generate(ModelDevice(target), compiled, prompt, max_new_tokens=1,
                                      orchestration=orchestration, trace=True))
        events = result["trace"]
        runs[name] = events
        # The last step: from the previous step's read-back to its own.
        backs = sorted(e["start"] + e["cycles"] for e in events if e["track"] == "host" and "read-back" in e["name"])
        steps[name] = (backs[-2], backs[-1], result["report"]["cycles_per_token"])
    TRACE.write_text(json.dumps(chrome_trace(runs, target.clock_hz)))
    peak = 1000 * float(target.memory.hbm.bytes_per_cycle)
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 7), sharex=True, sharey=True)
    for ax, (name, events) in zip(axes, runs.items()):
        begin, end, cycles = steps[name]
        samples = sorted((e["start"], e["args"]["value"]) for e in events if e["track"] == COUNTER
                         and e["name"].startswith("HBM") and begin <= e["start"] <= end)
        ax.step([t - begin for t, _ in samples], [v / peak for _, v in samples], where="post", lw=0.9)
        for at, label in boundaries([e for e in events if begin <= e["start"] <= end]):
            ax.axvline(at - begin, color="grey", ls=":", lw=0.8)
            ax.text(at - begin, 1.3, label, fontsize=6, color="grey", rotation=90, va="top")
        ax.axhline(1.0, color="red", ls="--", lw=0.8)
        ax.set_ylim(0, 1.35)
        ax.set_ylabel("HBM / peak")
        ax.set_title(f"{name}: {cycles:,.0f} cycles per token", fontsize=9, loc="left")
    axes[-1].set_xlabel("cycles from the previous step's read-back (fast model, 1,000-cycle windows)")
    fig.suptitle(f"HBM bandwidth through one decode step, default model, {target.name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(PICTURE, dpi=110)
    plt.close(fig)


def main():
    OUT.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bandwidth_picture(LARGE, PROMPT)
    runs, notes = run_modes(LARGE, PROMPT, NEW_TOKENS)
    modes = {name: {k: r["report"][k] for k in KEYS} | {"tokens": r["tokens"]} for name, r in runs.items()}
    cycles = {name: m["cycles_per_token"] for name, m in modes.items()}
    out = {"target": LARGE.name, "tokens_identical": len({tuple(r["tokens"]) for r in runs.values()}) == 1,
           "logits_identical": len({r["logits_sha"] for r in runs.values()}) == 1,
           "modes": modes, "looped_implemented": not notes["looped"], "looped_note": notes["looped"],
           "fused_host_over_fused_chip": cycles["fused_host"] / cycles["fused_chip"],
           "unfused_over_fused_chip": cycles["unfused"] / cycles["fused_chip"],
           "fused_host_over_looped": cycles["fused_host"] / cycles["looped"],
           "unfused_over_looped": cycles["unfused"] / cycles["looped"],
           "prompt_ids": PROMPT, "new_tokens": NEW_TOKENS}
    out["launch_sweep"], out["host_launch_cycles_to_meet"] = launch_sweep(modes, LARGE.host_launch_cycles)
    out["rtl"] = run_looped_rtl(CHIP_4X8, PROMPT, RTL_NEW_TOKENS)
    out["wall_s"] = time.perf_counter() - start
    OUT.write_text(json.dumps(out, indent=2))
    print(f"looping (4x8, fast model): cycles/token unfused {cycles['unfused']:,.0f}, fused host "
          f"{cycles['fused_host']:,.0f}, fused chip {cycles['fused_chip']:,.0f}, looped {cycles['looped']:,.0f}; "
          "roofline " + ", ".join(f"{n} {m['roofline_fraction']:.1%}" for n, m in modes.items())
          + f"; tokens identical {out['tokens_identical']}" + (f"; looped: {notes['looped']}" if notes["looped"] else ""))
    print(f"  fused host / looped {out['fused_host_over_looped']:.2f}x, unfused / looped {out['unfused_over_looped']:.2f}x"
          f" at {LARGE.host_launch_cycles:,} cycles per host launch (assumed); goals met from "
          + ", ".join(f"{goal} {'never' if h is None else f'{h:,.0f} cycles'}"
                      for goal, h in out["host_launch_cycles_to_meet"].items()))
    rtl = out["rtl"]
    print(f"  RTL ({rtl['target']} target, {rtl['kernels_per_token']:g} kernels/token, looped program"
          f"{'' if rtl['looped_on_rtl'] else ' = fused: ' + rtl['looped_note']}): {rtl['cycles_per_token']:,.0f} "
          f"cycles/token (model {rtl['model_cycles_per_token']:,.0f}), kernels {rtl['kernel_cycles_per_token']:,.0f} "
          f"(model {rtl['model_kernel_cycles_per_token']:,.0f}, RTL / model {rtl['kernel_cycles_ratio']:.4f}), "
          f"logits identical {rtl['logits_identical']}, {rtl['wall_s']:.0f} s")
    print(f"wrote {OUT}, {TRACE} and {PICTURE}")


if __name__ == "__main__":
    main()
