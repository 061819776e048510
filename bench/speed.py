"""How fast each layer is, all measured in one run: ``python -m bench speed`` writes ``build/bench/speed.json``.

- ``rtl_cycles_per_s``: the default model decoded (fused) on the co-simulated
  chip (``chip`` target, Verilator): the report's cycles (``total_cycles``:
  the simulated ones and the assumed 44,000 launch cycles a step) per
  wall-clock second of the decode loop, load of the memory image included;
- ``model_tokens_per_s`` / ``model_tokens_per_s_4x8``: decode steps per
  wall-clock second on the fast model, ``chip`` and ``4x8`` targets (a longer
  run, every step produces a token's logits). Each is the median of
  ``OPENRDU_SPEED_MODEL_RUNS`` (default 5) fresh processes, each of which
  decodes the RTL's tokens on ``chip``, then times the first longer decode on a new
  ``chip`` device and then on a ``4x8`` one: a first decode in its process.
  As a user's later processes do once an earlier one decoded the same model
  on the same target with the same sources (a new model, target, parameter
  or source change runs at the ``_cold_plans`` rate below), they find the
  launch plans that process stored in the launch-plan cache
  (:mod:`sw.model.plan_cache`), here a new folder that one process of the
  same decodes fills first (``model_plan_fill_run``, not counted): the best
  case, as the RTL figure runs on a Verilator build made before
  (``model_plans``: ``"stored"``). One such decode lasts a few hundredths of a
  second, and on a shared 2-core VM its rate varies by a third from run to
  run; the runs are under ``model_runs``;
- ``model_tokens_per_s_cold_plans``, ``model_tokens_per_s_4x8_cold_plans``,
  ``model_over_rtl_cold_plans`` (for information): the same with the cache
  off, so that each process makes every plan it runs (about half of its
  first decode; the runs are under ``model_runs_cold_plans``);
- ``model_tokens_per_s_later`` / ``model_over_rtl_later`` (for information,
  not a goal; also ``..._cold_plans``): the same figures for a third decode
  of each of those processes, again on a new ``chip`` device, once the launch
  plans of every context bucket it reaches are made: what a process that
  serves many requests (Composition of Experts, a sweep) runs at after its
  first;
- ``model_over_rtl``: the fast model's simulated cycles per second over the
  RTL's (the median run's on ``chip``), with stored plans since 5497e0c;
  ``model_over_rtl_cold_plans`` is the figure's earlier meaning;
- ``logits_identical``: the RTL's logits and tokens are bit-identical to the
  fast model's for the same request, in every fast-model process (plans
  stored, made or replayed); ``model_runs_identical``: every process's timed
  decodes give the same tokens and logits on each target, plans stored or
  made;
- ``chip_build_s`` / ``large_build_s``: cold Verilator builds of the ``chip``
  unit and of the 4x8 tile array (``bench.tiles.UNIT_4X8``): each in a fresh
  process, into an empty temporary build folder (``OPENRDU_BUILD_DIR``) with
  ccache off, from elaboration to the linked simulator; the RTL decode
  above runs on that fresh chip build (on the cached one when the builds are
  skipped).

Settings (environment): ``OPENRDU_SPEED_BUILDS`` = ``all`` (default),
``chip`` (skip the 4x8 build, over ten minutes before issue 13's work) or
``none``; ``OPENRDU_SPEED_RTL_TOKENS`` (default 4) and
``OPENRDU_SPEED_MODEL_TOKENS`` (default 64) new tokens after a 5-token prompt;
``OPENRDU_SPEED_MODEL_RUNS`` (default 5) fresh processes for the fast model, with stored plans and again
without.
A skipped build is ``null`` in the JSON.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cosim.harness import REPO

OUT = REPO / "build" / "bench" / "speed.json"
CHECKPOINT = REPO / "models" / "pystdlib-tiny"
PROMPT = [0, 449, 323, 66, 263]        # "<s>def main"


def _units():
    from bench.tiles import UNIT_4X8
    from cosim.tb.units_chip import UNITS

    return {"chip": UNITS["chip"], "large": UNIT_4X8}


def _rtl_progress(index, done, total):
    print(f"[speed] RTL decode: step {done}/{total}", file=sys.stderr, flush=True)


def _child(name, compiled=None, request=None):
    """In a child of :func:`cold_build`: build unit ``name``, then decode on it; print the figures as JSON."""
    from cosim import harness
    from cosim.decode import run_rtl

    start = time.perf_counter()
    built = harness.build(_units()[name], log=lambda line: print(line, file=sys.stderr, flush=True))
    verilog = built.directory / f"{harness.TOPLEVEL}.v"
    out = {"seconds": time.perf_counter() - start, "verilator_s": built.seconds, "cached": built.cached,
           "directory": str(built.directory), "verilog_mb": verilog.stat().st_size / 1e6}
    if compiled:
        out["rtl"] = run_rtl(compiled, json.loads(Path(request).read_text()), progress=_rtl_progress)
    print(json.dumps(out))


def _child_json(args, what, env=None):
    """Run ``python -m bench.speed *args`` in a fresh process; the JSON of its last output line. Raises
    ``RuntimeError`` naming ``what`` (the child's work) where it failed or printed no JSON last."""
    done = subprocess.run([sys.executable, "-m", "bench.speed", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          text=True)
    if done.returncode:
        raise RuntimeError(f"{what} failed (exit {done.returncode}); its error is above")
    try:
        return json.loads(done.stdout.splitlines()[-1])
    except (IndexError, ValueError) as error:
        raise RuntimeError(f"{what} printed no JSON as its last line ({type(error).__name__}: {error}); its "
                           f"output:\n{done.stdout[-2000:]}") from None


def cold_build(name, compiled=None, request=None):
    """Build unit ``name`` (``chip`` or ``large``) from nothing; returns its figures.

    The harness caches builds under ``build/sim`` by a hash of the Verilog,
    flags and tool versions; a fresh process with an empty
    ``OPENRDU_BUILD_DIR`` and ``CCACHE_DISABLE`` has nothing to reuse. With
    ``compiled`` (a compiled model's path) and ``request`` (a dict), the model
    is then decoded on that build (:func:`cosim.decode.run_rtl`), its result
    under ``"rtl"``, so the bench builds the chip once. Raises ``RuntimeError``
    if the build failed or came from a cache.
    """
    with tempfile.TemporaryDirectory(prefix="speed-build-", dir=REPO / "build") as tmp:
        env = {**os.environ, "OPENRDU_BUILD_DIR": tmp, "CCACHE_DISABLE": "1"}
        args = [name]
        if compiled:
            (Path(tmp) / "request.json").write_text(json.dumps(request))
            args += [str(compiled), str(Path(tmp) / "request.json")]
        out = _child_json(["--cold-build", *args],
                          f"the cold build of {name}{' or the decode on it' if compiled else ''}", env)
        if out["cached"] or not Path(out["directory"]).is_relative_to(tmp):
            raise RuntimeError(f"the cold build of {name} was not cold: {out['directory']}")
    return out


def _model_run(compiled, target, tokens):
    from sw.runtime.decode import generate
    from sw.runtime.device import ModelDevice

    return asyncio.run(generate(ModelDevice(target), compiled, PROMPT, max_new_tokens=tokens, stop_at_eos=False))


def _model_child(warm_tokens, tokens):
    """In a fresh process: the bench's fast-model decodes (see the module's docstring), ``warm_tokens`` (the RTL
    request's) before the timed ones; print their rates as JSON."""
    from cli.compile import cached_compile
    from sw.target import CHIP, LARGE

    compiled, _ = cached_compile(CHECKPOINT, CHIP, "fused", None)
    large, _ = cached_compile(CHECKPOINT, LARGE, "fused", None)
    warm = _model_run(compiled, CHIP, int(warm_tokens))
    rates = {"rtl_request": {"logits_sha": warm["logits_sha"], "tokens": warm["tokens"]},
             "chip": _rates(_model_run(compiled, CHIP, int(tokens)))}
    rates["4x8"] = _rates(_model_run(large, LARGE, int(tokens)))
    rates["chip_later"] = _rates(_model_run(compiled, CHIP, int(tokens)))
    print(json.dumps(rates))


def model_runs(warm_tokens, tokens, runs, plans):
    """``runs`` fresh processes of :func:`_model_child` with the launch-plan cache ``plans`` (a folder, or
    ``"off"``); returns their rates, ``{"chip": [rates, ...], "4x8": [...], "chip_later": [...], "rtl_request":
    [...]}``. Raises ``RuntimeError`` if one fails or prints no rates."""
    out = {"chip": [], "4x8": [], "chip_later": [], "rtl_request": []}
    env = {**os.environ, "OPENRDU_PLAN_CACHE": str(plans)}
    for k in range(runs):
        rates = _child_json(["--model-run", str(warm_tokens), str(tokens)], f"fast-model run {k + 1} of {runs}",
                            env)
        for target in out:
            if target not in rates:
                raise RuntimeError(f"fast-model run {k + 1} of {runs} printed no rates for {target}: {rates!r}")
            out[target].append(rates[target])
    return out


def _median(runs):
    """The run of median ``tokens_per_s``: the middle one of an odd count, the lower middle one of an even
    count (a run that happened, not a mean of two)."""
    return sorted(runs, key=lambda r: r["tokens_per_s"])[(len(runs) - 1) // 2]


def _rates(result):
    rep = result["report"]
    return {"steps": rep["steps"], "wall_s": rep["wall_s"], "tokens_per_s": rep["steps"] / rep["wall_s"],
            "cycles_per_s": rep["total_cycles"] / rep["wall_s"], "cycles_per_token": rep["cycles_per_token"],
            "logits_sha": result["logits_sha"], "tokens": result["tokens"]}


def _log(line):
    print(line, flush=True)


def measure(builds, rtl_tokens, model_tokens, runs=5, log=_log):
    """Every figure of ``speed.json``; ``builds`` is ``"all"``, ``"chip"`` or ``"none"``, ``runs`` the fresh
    processes of the fast model's decodes."""
    from cosim.decode import run_rtl
    from cli.compile import cached_compile
    from sw.target import CHIP, LARGE

    if runs < 1:
        raise ValueError(f"the fast model needs at least one run, not {runs}")
    out = {"prompt_ids": PROMPT, "rtl_new_tokens": rtl_tokens, "model_new_tokens": model_tokens,
           "model_runs_n": runs, "cpus": os.cpu_count()}
    log("[speed] compiling the default model for chip and 4x8 (cached in build/compiled) ...")
    compiled, path = cached_compile(CHECKPOINT, CHIP, "fused", None)
    cached_compile(CHECKPOINT, LARGE, "fused", None)    # so that the fast model's processes find it compiled
    request = {"prompt_ids": PROMPT, "max_new_tokens": rtl_tokens, "temperature": 0.0, "top_k": 0, "seed": 0,
               "stop_at_eos": False}
    out["chip_build_s"] = out["large_build_s"] = None
    rtl = None
    for name in {"all": ("chip", "large"), "chip": ("chip",), "none": ()}[builds]:
        log(f"[speed] cold Verilator build of the {name} unit"
            + (f", then {rtl_tokens} tokens decoded on it ..." if name == "chip" else " ..."))
        figures = cold_build(name, path, request) if name == "chip" else cold_build(name)
        rtl = figures.pop("rtl", rtl)
        out[f"{name}_build_s"] = figures["seconds"]
        out[f"{name}_build"] = {k: figures[k] for k in ("seconds", "verilator_s", "verilog_mb")}
        log(f"[speed] {name}: built in {figures['seconds']:.1f} s ({figures['verilator_s']:.1f} s in Verilator "
            f"and the C++ compiler, {figures['verilog_mb']:.1f} MB of Verilog)")
    if rtl is None:
        log(f"[speed] decoding {rtl_tokens} tokens on the RTL chip ...")
        rtl = run_rtl(path, request, progress=_rtl_progress)
    out["rtl"] = _rates(rtl)
    out["rtl_cycles_per_s"] = out["rtl"]["cycles_per_s"]
    log(f"[speed] RTL: {out['rtl_cycles_per_s']:,.0f} cycles/s (the report's, assumed launch cycles included)")
    middle = "median" if runs % 2 else "lower median"
    with tempfile.TemporaryDirectory(prefix="speed-plans-", dir=REPO / "build") as plans:
        log(f"[speed] fast model: one process fills a new launch-plan cache, then {model_tokens} tokens decoded on "
            f"chip and 4x8 in {runs} fresh processes with it and {runs} with the cache off ...")
        out["model_plan_fill_run"] = model_runs(rtl_tokens, model_tokens, 1, plans)
        every = out["model_runs"] = model_runs(rtl_tokens, model_tokens, runs, plans)
        cold = out["model_runs_cold_plans"] = model_runs(rtl_tokens, model_tokens, runs, "off")
    runs_all = (out["model_plan_fill_run"], every, cold)
    same = [r for runs_ in runs_all for r in runs_["rtl_request"]]
    out["logits_identical"] = all(r["logits_sha"] == rtl["logits_sha"] and r["tokens"] == rtl["tokens"]
                                  for r in same)
    out["model_runs_identical"] = all(
        len({(r["logits_sha"], tuple(r["tokens"])) for runs_ in runs_all for r in runs_[name]}) == 1
        for name in ("chip", "4x8", "chip_later"))
    out["model_plans"] = "stored"
    log(f"[speed] logits identical to the RTL's in all {len(same)} fast-model processes: {out['logits_identical']}; "
        f"their timed decodes identical: {out['model_runs_identical']}")
    for suffix, runs_ in (("", every), ("_cold_plans", cold)):
        for name, target in (("", CHIP), ("_4x8", LARGE)):
            rates = out[f"model{name}{suffix}"] = _median(runs_[target.name])
            out[f"model_tokens_per_s{name}{suffix}"] = rates["tokens_per_s"]
            seen = ", ".join(f"{r['tokens_per_s']:,.0f}" for r in runs_[target.name])
            log(f"[speed] fast model on {target.name}, plans {'made in the process' if suffix else 'stored'}: "
                f"{rates['tokens_per_s']:,.1f} tokens/s ({middle} of {seen}), {rates['cycles_per_s']:,.0f} "
                "simulated cycles/s")
        out[f"model_over_rtl{suffix}"] = out[f"model{suffix}"]["cycles_per_s"] / out["rtl_cycles_per_s"]
        later = out[f"model_later{suffix}"] = _median(runs_["chip_later"])
        out[f"model_tokens_per_s_later{suffix}"] = later["tokens_per_s"]
        out[f"model_over_rtl_later{suffix}"] = later["cycles_per_s"] / out["rtl_cycles_per_s"]
    log(f"[speed] fast model over the RTL: {out['model_over_rtl']:,.0f}x with stored plans, "
        f"{out['model_over_rtl_cold_plans']:,.0f}x making them; a later decode of a process "
        f"{out['model_over_rtl_later']:,.0f}x")
    return out


def _count(name, default):
    text = os.environ.get(name, str(default)).strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise SystemExit(f"{name} must be a positive integer, not {text!r}")
    return int(text)


def main():
    builds = os.environ.get("OPENRDU_SPEED_BUILDS", "all")
    if builds not in ("all", "chip", "none"):
        raise SystemExit(f"OPENRDU_SPEED_BUILDS must be all, chip or none, not {builds!r}")
    start = time.perf_counter()
    out = measure(builds, _count("OPENRDU_SPEED_RTL_TOKENS", 4), _count("OPENRDU_SPEED_MODEL_TOKENS", 64),
                  _count("OPENRDU_SPEED_MODEL_RUNS", 5))
    out["bench_wall_s"] = time.perf_counter() - start
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2))
    build = lambda key: "skipped" if out[key] is None else f"{out[key]:.0f} s"
    print(f"RTL {out['rtl_cycles_per_s']:,.0f} cycles/s; fast model {out['model_tokens_per_s']:,.1f} tokens/s on chip, "
          f"{out['model_tokens_per_s_4x8']:,.1f} on 4x8, {out['model_over_rtl']:,.0f}x the RTL in cycles/s "
          f"({out['model_over_rtl_cold_plans']:,.0f}x with every plan made in the process); "
          f"logits identical {out['logits_identical']}; cold builds: chip {build('chip_build_s')}, "
          f"4x8 array {build('large_build_s')}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cold-build"]:
        _child(*sys.argv[2:])
    elif sys.argv[1:2] == ["--model-run"]:
        _model_child(*sys.argv[2:])
    else:
        main()
