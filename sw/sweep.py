"""Design-space sweeps on the fast model, run in parallel with Ray: what ``openrdu sweep SPEC`` does.

A spec (TOML or JSON) names a base target and a table of axes; the sweep is
the cross product of the axes. Each point is the base target with the
point's fields replaced, compiles the model for it
(:func:`sw.compiler.compile.compile_model`) and decodes on the fast model
(:func:`sw.runtime.decode.generate` on :class:`sw.runtime.device.ModelDevice`),
recording cycles, kernels and HBM bytes per token and the roofline fraction.
A point the target cannot run (a model that does not fit, a target whose
fields contradict each other) is recorded with its error's message.

Points that differ only in what the compiler does not read (host launch
cost, prompt, tokens) share one compiled model, so a Ray task is one such
group: compile once, decode each of its points. A serial run does the same
groups in order in this process and gives exactly the same numbers.

Spec::

    base = "chip"                # a target of sw.target.TARGETS (default "chip") or a target file
    [axes]                       # each a list of values or one value; every axis is optional but model
    model = ["models/pystdlib-tiny"]   # checkpoint folders (relative to the current directory)
    prompt_ids = [0, 449, 323]   # one prompt, or a list of prompts
    tokens = 4                   # new tokens per point (default 4)
    mode = ["fused", "unfused"]
    rows = 2; cols = 4; lanes = [4, 8]; stages = 2
    pmu_kib = 32                 # KiB per PMU, kept when lanes change (default: the base target's)
    word_bytes = 16              # TLN word: a tier moves at most one per cycle
    hbm_bytes_per_cycle = [8, 16]; ddr_bytes_per_cycle = 2
    host_launch_cycles = [500, 2000]
    context = 64                 # KV-cache positions (default: the most the model and the PMUs allow)
"""

import asyncio
import dataclasses
import itertools
import json
import sys
import time
import tomllib
from fractions import Fraction
from pathlib import Path

from sw.errors import OpenRDUError, SweepSpecError, TargetError
from sw.target import TARGETS, load_target

ARRAY_AXES = ("rows", "cols", "lanes", "stages")
# Axis order is the cross product's order: the last axis varies fastest.
AXES = ("model", "mode", *ARRAY_AXES, "pmu_kib", "word_bytes", "hbm_bytes_per_cycle", "ddr_bytes_per_cycle",
        "context", "host_launch_cycles", "prompt_ids", "tokens")
# What the compiler does not read: points differing only here share a compiled model.
RUN_AXES = ("host_launch_cycles", "prompt_ids", "tokens")
RESULT_KEYS = ("cycles_per_token", "kernel_cycles_per_token", "program_load_cycles_per_token",
               "launch_cycles_per_token", "host_io_cycles_per_token", "kernels_per_token", "hbm_bytes_per_token",
               "ddr_bytes_per_token", "hbm_bandwidth_fraction", "roofline_cycles_per_token",
               "tokens_per_s_simulated", "steps", "total_cycles")


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed sweep: ``base`` (a :class:`sw.target.Target`), ``axes`` (name -> list of values, every axis)
    and ``source`` (the file, for messages and the output)."""

    base: object
    axes: dict
    source: str = "spec"

    @property
    def varying(self):
        """The axes with more than one value: what tells the points apart."""
        return [name for name in AXES if len(self.axes[name]) > 1]

    def points(self):
        """Every point's parameters (axis -> value), in cross-product order."""
        return [dict(zip(AXES, values)) for values in itertools.product(*(self.axes[name] for name in AXES))]


def load_spec(path):
    """Read a TOML (``.toml``) or JSON spec file; raises :class:`SweepSpecError` naming the file and field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SweepSpecError(f"{path}: cannot read the sweep spec ({e.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise SweepSpecError(f"{path}: not valid {kind}: {e}") from None
    return parse_spec(data, str(path))


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_value(name, value, base):
    """None when ``value`` is a valid value of axis ``name`` on its own, else what is wrong with it."""
    if name == "model":
        return None if isinstance(value, str) and value else "must be a checkpoint folder path"
    if name == "mode":
        return None if value in ("fused", "unfused") else f"must be 'fused' or 'unfused', not {value!r}"
    if name in ARRAY_AXES:
        try:
            dataclasses.replace(base.array, **{name: value})
        except ValueError as e:
            return str(e)
        return None
    if name == "word_bytes":
        ok = _integer(value) and 4 <= value <= 128 and not value & (value - 1)
        return None if ok else f"must be a power of two from 4 to 128, not {value!r}"
    if name in ("pmu_kib", "hbm_bytes_per_cycle", "ddr_bytes_per_cycle"):
        return None if _number(value) and value > 0 else f"must be a positive number, not {value!r}"
    if name == "host_launch_cycles":
        return None if _integer(value) and value >= 0 else f"must be an integer >= 0, not {value!r}"
    if name in ("context", "tokens"):
        return None if _integer(value) and value >= 1 else f"must be an integer >= 1, not {value!r}"
    if name == "prompt_ids":
        ok = isinstance(value, list) and value and all(_integer(t) and t >= 0 for t in value)
        return None if ok else f"each prompt must be a non-empty list of token ids >= 0, not {value!r}"
    raise AssertionError(name)


def _defaults(base):
    m = base.memory
    kib = Fraction(base.array.pmu_words * 4, 1024)
    plain = lambda f: int(f) if f.denominator == 1 else float(f)
    return {"mode": "fused", **{name: getattr(base.array, name) for name in ARRAY_AXES}, "pmu_kib": plain(kib),
            "word_bytes": m.word_bytes, "hbm_bytes_per_cycle": plain(m.hbm.bytes_per_cycle),
            "ddr_bytes_per_cycle": plain(m.ddr.bytes_per_cycle), "context": None,
            "host_launch_cycles": base.host_launch_cycles, "tokens": 4}


def parse_spec(data, source="spec"):
    """Check a spec's fields (a dict as read from TOML or JSON) and fill in the defaults.

    Raises
    ------
    SweepSpecError
        One line naming ``source`` and the field: an unknown field or axis, a
        missing ``model`` or ``prompt_ids``, an empty axis, a value of the wrong
        type or out of range (a lane count that is not a power of two, ...).
    """
    if not isinstance(data, dict):
        raise SweepSpecError(f"{source}: a sweep spec is a table with 'base' and 'axes', not {type(data).__name__}")
    unknown = sorted(set(data) - {"base", "axes"})
    if unknown:
        raise SweepSpecError(f"{source}: unknown field {unknown[0]!r}; a spec has 'base' and 'axes'")
    base_name = data.get("base", "chip")
    if isinstance(base_name, str) and base_name.endswith((".toml", ".json")):
        try:
            base = load_target(base_name)           # a target file (docs/targets.md)
        except TargetError as e:
            raise SweepSpecError(f"{source}: base: {e}") from None
    elif base_name not in TARGETS:
        raise SweepSpecError(f"{source}: base: unknown target {base_name!r}; targets: {', '.join(sorted(TARGETS))}")
    else:
        base = TARGETS[base_name]
    axes = data.get("axes")
    if not isinstance(axes, dict):
        raise SweepSpecError(f"{source}: axes: missing or not a table of axis -> values")
    for name in axes:
        if name not in AXES:
            raise SweepSpecError(f"{source}: axes.{name}: unknown axis; axes: {', '.join(AXES)}")
    for name in ("model", "prompt_ids"):
        if name not in axes:
            raise SweepSpecError(f"{source}: axes.{name}: required")
    out = {}
    for name in AXES:
        value = axes.get(name, _defaults(base).get(name))
        # A flat list of token ids is one prompt.
        one = not isinstance(value, list) or (name == "prompt_ids" and all(not isinstance(v, list) for v in value))
        values = [value] if one else value
        if not values:
            raise SweepSpecError(f"{source}: axes.{name}: an empty list; give at least one value")
        for v in values:
            problem = None if name == "context" and v is None else _check_value(name, v, base)
            if problem:
                raise SweepSpecError(f"{source}: axes.{name}: {problem}")
        out[name] = values
    return Spec(base, out, source)


def point_target(base, params):
    """``base`` with the point's array, memory and launch fields; raises :class:`TargetError` if they clash.

    The PMU keeps ``pmu_kib`` whatever the lane count (bank words = KiB x 256 / lanes), and a tier's
    bandwidth is split over its channels as in the base.
    """
    lanes = params["lanes"]
    bank = Fraction(str(params["pmu_kib"])) * 256 / lanes
    if bank.denominator != 1:
        raise TargetError(f"pmu_kib {params['pmu_kib']} is not a whole number of {lanes}-lane rows of 4 bytes")
    m = base.memory
    try:
        array = dataclasses.replace(base.array, **{name: params[name] for name in ARRAY_AXES},
                                    pmu_bank_words=int(bank))
        bandwidth = {t.name: Fraction(str(params[f"{t.name}_bytes_per_cycle"])) for t in m.tiers}
        tiers = {t.name: dataclasses.replace(t, channel_bytes_per_cycle=bandwidth[t.name] / t.channels)
                 for t in m.tiers}
        memory = dataclasses.replace(m, word_bytes=params["word_bytes"], **tiers)
    except ValueError as e:
        raise TargetError(str(e)) from None
    return dataclasses.replace(base, name=f"{base.name}-sweep", array=array, memory=memory,
                               host_launch_cycles=params["host_launch_cycles"])


def _error(e):
    return {"type": type(e).__name__, "message": str(e)}


def run_group(checkpoint, jobs):
    """Compile ``checkpoint`` once for the first job's target and decode every job on the fast model.

    Parameters
    ----------
    checkpoint : sw.compiler.checkpoint.Checkpoint
        The loaded checkpoint of every job.
    jobs : list of (int, dict, Target)
        Point index, parameters and target; the jobs differ only in :data:`RUN_AXES`.

    Returns
    -------
    list of dict
        One record per job: ``index``, ``status`` ("ok" or "error"), ``result`` or ``error``, ``wall_s``.
    """
    from sw.compiler.compile import compile_model
    from sw.runtime.decode import generate
    from sw.runtime.device import ModelDevice

    index, params, target = jobs[0]
    start = time.perf_counter()
    try:
        compiled = compile_model(checkpoint, target, mode=params["mode"], context=params["context"])
    except OpenRDUError as e:
        return [{"index": i, "status": "error", "error": _error(e)} for i, _, _ in jobs]
    compile_s = time.perf_counter() - start
    records = []
    for index, params, target in jobs:
        start = time.perf_counter()
        try:
            # Launch cost lives on the target; the compiler never reads it, so the model is shared.
            run = dataclasses.replace(compiled, target=target)
            out = asyncio.run(generate(ModelDevice(target), run, params["prompt_ids"],
                                       max_new_tokens=params["tokens"], stop_at_eos=False))
        except OpenRDUError as e:
            records.append({"index": index, "status": "error", "error": _error(e)})
            continue
        report = out["report"]
        result = {key: report[key] for key in RESULT_KEYS}
        result["roofline_fraction"] = report["roofline_cycles_per_token"] / report["cycles_per_token"]
        result.update(context=compiled.context, tokens=out["tokens"], logits_sha=out["logits_sha"])
        records.append({"index": index, "status": "ok", "result": result,
                        "wall_s": {"compile": compile_s if not records else 0.0,
                                   "decode": time.perf_counter() - start}})
    return records


def _groups(spec, points):
    """(model, jobs) per compiled model, and the records of points whose target is invalid."""
    groups, invalid = {}, []
    for index, params in enumerate(points):
        try:
            target = point_target(spec.base, params)
        except TargetError as e:
            invalid.append({"index": index, "status": "error", "error": _error(e)})
            continue
        key = (params["model"], params["mode"], params["context"],
               dataclasses.replace(target, host_launch_cycles=0))
        groups.setdefault(key, []).append((index, params, target))
    return [(key[0], jobs) for key, jobs in groups.items()], invalid


def _load_models(spec):
    from sw.compiler.checkpoint import load_checkpoint

    models = {}
    for path in spec.axes["model"]:
        try:
            models[path] = load_checkpoint(Path(path))
        except OpenRDUError as e:
            raise SweepSpecError(f"{spec.source}: axes.model: {e}") from None
    return models


SHORT = {"hbm_bytes_per_cycle": "hbm", "ddr_bytes_per_cycle": "ddr", "host_launch_cycles": "launch",
         "prompt_ids": "prompt", "word_bytes": "word"}


def label(spec, params):
    """A short name of a point: its values on the varying axes (``lanes=8 hbm=16 launch=500``)."""
    parts = []
    for name in spec.varying:
        value = params[name]
        if name == "model":
            value = Path(value).name
        elif name == "prompt_ids":
            value = f"#{spec.axes[name].index(value)}"
        parts.append(f"{SHORT.get(name, name)}={value}")
    return " ".join(parts) or "base"


def _ray_map(groups, models, address, num_cpus, done):
    import logging

    import ray

    started = not ray.is_initialized()
    if started:
        options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        ray.init(address=address, **options) if address else ray.init(num_cpus=num_cpus, **options)
    try:
        remote = ray.remote(num_cpus=1)(run_group)
        refs = {path: ray.put(ckpt) for path, ckpt in models.items()}
        pending = [remote.remote(refs[model], jobs) for model, jobs in groups]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            done(ray.get(ready[0]))
    finally:
        if started:
            ray.shutdown()


def run_sweep(spec, *, serial=False, address=None, num_cpus=None, log=None):
    """Run every point of ``spec``; returns the sweep as a JSON-serialisable dict.

    Parameters
    ----------
    spec : Spec
    serial : bool
        Run the points in this process, one after another, instead of on Ray.
    address : str, optional
        A Ray cluster's address (``ray.init(address=...)``, e.g. ``"auto"`` or
        ``"ray://host:10001"``); by default a local Ray instance is started
        for the sweep (or the one this process already started is used). The
        checkpoints travel in Ray's object store; every node needs OpenRDU installed.
    num_cpus : int, optional
        CPUs of the local Ray instance (default: all).
    log : callable, optional
        ``log(line)`` once per finished point.

    Returns
    -------
    dict
        ``base``, ``axes`` (every axis's values), ``varying``, ``points`` (per
        point: ``index``, ``label``, ``params``, ``target`` and ``status``, then
        ``result`` or ``error``), ``fits`` (points that ran), ``runner``, ``wall_s``.

    Raises
    ------
    SweepSpecError
        A model folder is not a checkpoint the compiler reads.
    """
    start = time.perf_counter()
    points = spec.points()
    models = _load_models(spec)
    groups, invalid = _groups(spec, points)
    records = []

    def done(batch):
        for r in batch:
            records.append(r)
            if log:
                what = (f"{r['result']['cycles_per_token']:,.0f} cycles/token" if r["status"] == "ok"
                        else f"{r['error']['type']}: {r['error']['message']}")
                log(f"[sweep] {len(records)}/{len(points)} {label(spec, points[r['index']])}: {what}")

    done(invalid)
    if serial:
        for model, jobs in groups:
            done(run_group(models[model], jobs))
    else:
        _ray_map(groups, models, address, num_cpus, done)
    records.sort(key=lambda r: r["index"])
    out_points = []
    for r in records:
        params = points[r["index"]]
        try:
            target = point_target(spec.base, params).describe()
        except TargetError:
            target = None
        out_points.append({"index": r["index"], "label": label(spec, params), "params": params, "target": target,
                           **{k: v for k, v in r.items() if k != "index"}})
    return {"spec": spec.source, "base": spec.base.name, "axes": spec.axes, "varying": spec.varying,
            "points": out_points, "fits": sum(p["status"] == "ok" for p in out_points),
            "runner": "serial" if serial else f"ray ({address or 'local'})", "wall_s": time.perf_counter() - start}


def plot(sweep, path):
    """Write a PNG of cycles per token and roofline fraction per point (points that did not run marked x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sweep["points"]
    n = len(points)
    x = list(range(n))
    ok = [p["status"] == "ok" for p in points]
    fig, axes = plt.subplots(2, 1, sharex=True, figsize=(min(max(8.0, 0.4 * n), 40.0), 7.0))
    for ax, key, title in ((axes[0], "cycles_per_token", "cycles per token"),
                           (axes[1], "roofline_fraction", "roofline fraction")):
        values = [p["result"][key] if good else 0 for p, good in zip(points, ok)]
        ax.bar(x, values, color=["tab:blue" if good else "none" for good in ok])
        bad = [i for i, good in zip(x, ok) if not good]
        ax.plot(bad, [0] * len(bad), "x", color="tab:red", label="does not run" if bad else None)
        ax.set_ylabel(title)
        if bad:
            ax.legend(loc="upper right")
    axes[1].set_ylim(0, 1)
    axes[1].set_xticks(x, [p["label"] for p in points], rotation=90, fontsize=7)
    axes[0].set_title(f"{Path(sweep['spec']).name} on {sweep['base']}: {sweep['fits']} of {n} points ran",
                      fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def stderr_log(line):
    print(line, file=sys.stderr, flush=True)
