"""Decode timelines as Chrome trace JSON, which https://ui.perfetto.dev and chrome://tracing open.

:class:`sw.runtime.decode.Session` records, when asked, one event per host command of each step
(host launch, Program Load, kernel, logits read-back; under chip orchestration one host command, the
step's Program Loads, the sequencer's own cycles and its kernels) in chip cycles from the session's start, and
per kernel the HBM and DDR bytes its tier controllers counted (``Device.tier_stats`` before and after:
measured on both backends, not taken from the compiled stream sizes). :func:`chrome_trace` turns the
events of one or more runs into the trace format (times in microseconds at the target's clock):
a process per run, a thread per track, and counter tracks of HBM and DDR bytes per 1,000 cycles.
"""

TRACKS = ("host", "program load", "sequencer", "kernels")


def event(track, name, start, cycles, **args):
    """One recorded interval: ``start`` and ``cycles`` in chip cycles, ``args`` JSON-serialisable."""
    return {"track": track, "name": name, "start": float(start), "cycles": float(cycles), "args": args}


def chrome_trace(runs, clock_hz):
    """Chrome trace JSON (a dict) of ``runs``: label -> list of :func:`event` dicts.

    Kernel events whose ``args`` hold ``hbm_bytes`` / ``ddr_bytes`` also set the counter tracks
    ``HBM bytes per 1000 cycles`` and ``DDR bytes per 1000 cycles`` for their duration.
    """
    us = 1e6 / float(clock_hz)
    out = []
    for pid, (label, events) in enumerate(runs.items(), 1):
        out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": label}})
        for tid, track in enumerate(TRACKS, 1):
            out.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": track}})
        for e in events:
            ts, dur = e["start"] * us, e["cycles"] * us
            out.append({"ph": "X", "name": e["name"], "cat": e["track"], "pid": pid,
                        "tid": TRACKS.index(e["track"]) + 1, "ts": ts, "dur": dur, "args": e["args"]})
            if e["track"] == "kernels" and "hbm_bytes" in e["args"] and e["cycles"] > 0:
                for tier in ("hbm", "ddr"):
                    name = f"{tier.upper()} bytes per 1000 cycles"
                    rate = 1000.0 * e["args"][f"{tier}_bytes"] / e["cycles"]
                    out.append({"ph": "C", "name": name, "pid": pid, "ts": ts, "args": {tier: rate}})
                    out.append({"ph": "C", "name": name, "pid": pid, "ts": ts + dur, "args": {tier: 0.0}})
    return {"traceEvents": out, "displayTimeUnit": "ns", "otherData": {"clock_hz": clock_hz, "time_unit": "us"}}
