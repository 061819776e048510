"""Decode timelines as Chrome trace JSON, which https://ui.perfetto.dev and chrome://tracing open.

:class:`sw.runtime.decode.Session` records, when asked, one event per host command of each step
(host launch, Program Load, kernel, logits read-back; under chip orchestration one host command, the
step's Program Loads, the sequencer's own cycles and its kernels) in chip cycles from the session's start, and
per kernel the HBM and DDR bytes its tier controllers counted (``Device.tier_stats`` before and after:
measured on both backends, not taken from the compiled stream sizes). These are the :data:`TRACKS`.

Beside them, what the device saw inside each command (``Device.activity``): a track per PCU and PMU
with its busy and stalled cycles, a track per AGCU with its streams, and counter samples of the HBM and
DDR bytes the controllers had moved (:func:`activity_events`). :func:`chrome_trace` turns the events of
one or more runs into the trace format (times in microseconds at the target's clock): a process per run,
a thread per track, and counter tracks of HBM and DDR bytes per 1,000 cycles.
"""

import numpy as np

TRACKS = ("host", "program load", "sequencer", "kernels")
COUNTER = "counter"
RATE_WINDOW = 1000


def event(track, name, start, cycles, **args):
    """One recorded interval: ``start`` and ``cycles`` in chip cycles, ``args`` JSON-serialisable."""
    return {"track": track, "name": name, "start": float(start), "cycles": float(cycles), "args": args}


def counter(name, start, value):
    """A counter track's value from cycle ``start`` on (a :data:`COUNTER` event of no duration)."""
    return {"track": COUNTER, "name": name, "start": float(start), "cycles": 0.0, "args": {"value": float(value)}}


def rate_samples(streams, cycles, words=(), *, peaks=None, window=RATE_WINDOW):
    """Cumulative bytes per tier at every ``window`` cycles of a command ``cycles`` long.

    ``words``: (tier name, bytes per word, cycles): words whose every cycle is known (the fast model's
    tier service); ``streams``: (tier name, bytes, first, end): bytes taken to move evenly from cycle
    ``first`` to ``end`` (both included). ``peaks``: tier name -> bytes per cycle; a window's bytes
    beyond its tier's peak move on to the next window (a stream timed apart from the tier's service,
    such as a write, waits for the tier there), the last window keeping what is left. Returns the
    :meth:`sw.runtime.device.Device.activity` ``samples`` form: ``[(cycle, {tier: bytes})]``.
    """
    tiers = sorted({s[0] for s in streams} | {w[0] for w in words})
    marks = np.array(list(range(0, int(cycles), window)) + [int(cycles)])
    moved = {t: np.zeros(len(marks)) for t in tiers}
    for tier, nbytes, first, end in streams:
        span = end - first + 1
        moved[tier] += nbytes * np.clip(marks - first, 0, span) / span
    for tier, word_bytes, times in words:
        moved[tier] += word_bytes * np.searchsorted(np.sort(times), marks, side="left")
    for tier, peak in (peaks or {}).items():
        if tier not in moved:
            continue
        per = np.diff(moved[tier])
        room, carry = peak * np.diff(marks), 0.0
        for i in range(len(per)):
            per[i] += carry
            carry = max(per[i] - room[i], 0.0) if i + 1 < len(per) else 0.0
            per[i] -= carry
        moved[tier] = np.concatenate([[moved[tier][0]], moved[tier][0] + np.cumsum(per)])
    return [(int(at), {t: float(moved[t][i]) for t in tiers}) for i, at in enumerate(marks)]


def _unit_track(unit):
    kind, (row, col) = unit["kind"], unit["pos"]
    return f"{kind.upper()} {row},{col}"


def activity_events(activity, at, *, names=(), labels=()):
    """Trace events of one command's ``activity`` (``Device.activity``) that started at cycle ``at``.

    ``names``: per kernel of the command, a dict of unit position -> the compiler's unit name, for the
    slices' labels (``labels``: each kernel's, for the ``sequenced kernels`` track of a launch list's
    kernels, where the activity places them); units no kernel names are left out (their counters may
    move while they are idle: an unconfigured PMU whose scalar port is ready counts as stalled). Units
    and AGCU streams become intervals on their own tracks (``args`` with busy and
    stalled cycles, words and tier); the samples become ``HBM/DDR bytes per 1000 cycles`` counters.
    """
    out = []
    length = max([s + c for s, c in activity["kernels"]] + [t for t, _ in activity["samples"]] + [0])
    used = {pos for kernel in names for pos in kernel}
    if len(activity["kernels"]) > 1:
        for k, (start, cycles) in enumerate(activity["kernels"]):
            label = labels[k] if k < len(labels) else f"kernel {k}"
            out.append(event("sequenced kernels", label, at + start, cycles, entry=k, source=activity["source"]))
    for u in activity["units"]:
        if names and tuple(u["pos"]) not in used:
            continue                       # a unit no kernel of the command configured
        k = u.get("kernel")
        if k is None and len(names) == 1:
            k = 0
        label = u.get("name") or (names[k].get(tuple(u["pos"])) if k is not None and k < len(names) else
                                  f"{len(names)} kernels" if names else None)
        if label and "iteration" in u:
            label = f"{label} (iteration {u['iteration']})"
        end = length if u["end"] is None else u["end"]
        span = max(end - u["start"], 0)
        out.append(event(_unit_track(u), label or f"{u['kind']} {u['pos'][0]},{u['pos'][1]}", at + u["start"], span,
                         busy=u["busy"], stalled=u["stall"], idle=max(span - u["busy"] - u["stall"], 0),
                         source=activity["source"]))
    for s in activity["streams"]:
        # One track per direction: a read and a write of one AGCU overlap, and slices on a track must nest.
        track = f"AGCU {s['agcu']} {s['direction']}" if s["agcu"] is not None else s["track"]
        out.append(event(track, f"{s['direction']} {s['tier'].upper()} {s['words']} words", at + s["start"],
                         max(s["end"] - s["start"], 0), words=s["words"], tier=s["tier"], source=activity["source"]))
    samples = activity["samples"]
    for (t0, b0), (t1, b1) in zip(samples, samples[1:]):
        if t1 <= t0:
            continue
        for tier in ("hbm", "ddr"):
            rate = RATE_WINDOW * (b1.get(tier, 0) - b0.get(tier, 0)) / (t1 - t0)
            out.append(counter(f"{tier.upper()} bytes per {RATE_WINDOW} cycles", at + t0, rate))
    if samples:
        for tier in ("hbm", "ddr"):
            out.append(counter(f"{tier.upper()} bytes per {RATE_WINDOW} cycles", at + samples[-1][0], 0.0))
    return out


def chrome_trace(runs, clock_hz):
    """Chrome trace JSON (a dict) of ``runs``: label -> list of :func:`event` / :func:`counter` dicts.

    A run with counter events shows them as counter tracks; one without shows each kernel's average
    rate from its ``args``' ``hbm_bytes`` / ``ddr_bytes`` on ``HBM bytes per 1000 cycles`` and
    ``DDR bytes per 1000 cycles`` for its duration.
    """
    us = 1e6 / float(clock_hz)
    out = []
    for pid, (label, events) in enumerate(runs.items(), 1):
        out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": label}})
        tracks = list(TRACKS) + sorted({e["track"] for e in events} - set(TRACKS) - {COUNTER},
                                       key=lambda t: (t.split(" ")[0], [int(x) if x.isdigit() else x
                                                                        for x in t.replace(",", " ").split()]))
        for tid, track in enumerate(tracks, 1):
            out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": track}})
            out.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
        sampled = any(e["track"] == COUNTER for e in events)
        for e in events:
            ts, dur = e["start"] * us, e["cycles"] * us
            if e["track"] == COUNTER:
                tier = e["name"].split(" ")[0].lower()
                out.append({"ph": "C", "name": e["name"], "pid": pid, "ts": ts, "args": {tier: e["args"]["value"]}})
                continue
            out.append({"ph": "X", "name": e["name"], "cat": e["track"], "pid": pid,
                        "tid": tracks.index(e["track"]) + 1, "ts": ts, "dur": dur, "args": e["args"]})
            if not sampled and e["track"] == "kernels" and "hbm_bytes" in e["args"] and e["cycles"] > 0:
                for tier in ("hbm", "ddr"):
                    name = f"{tier.upper()} bytes per {RATE_WINDOW} cycles"
                    rate = RATE_WINDOW * e["args"][f"{tier}_bytes"] / e["cycles"]
                    out.append({"ph": "C", "name": name, "pid": pid, "ts": ts, "args": {tier: rate}})
                    out.append({"ph": "C", "name": name, "pid": pid, "ts": ts + dur, "args": {tier: 0.0}})
    return {"traceEvents": out, "displayTimeUnit": "ns", "otherData": {"clock_hz": clock_hz, "time_unit": "us"}}
