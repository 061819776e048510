"""Decode traces: every host command of a step on its track, HBM bytes from the tier counters, Chrome JSON."""

import asyncio
import json
import re
import subprocess
import sys

import pytest

from hw.mem.params import HBM
from sw.compiler.compile import compile_model
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.runtime.trace import COUNTER, RATE_WINDOW, TRACKS, chrome_trace
from sw.target import CHIP, LARGE
from tests.llama_checkpoints import SHAPES, make_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("trace"), **SHAPES["tiny-tied"])


@pytest.fixture(scope="module", params=["fused", "unfused"])
def traced(request, checkpoint):
    compiled = compile_model(checkpoint, CHIP, mode=request.param, context=32)
    result = asyncio.run(generate(ModelDevice(CHIP), compiled, [0, 5, 9], max_new_tokens=3, trace=True))
    return compiled, result


def commands(events):
    """The host commands' timeline: the events on the TRACKS (the rest is the device's activity inside them)."""
    return [e for e in events if e["track"] in TRACKS]


def test_the_trace_accounts_for_every_cycle(traced):
    compiled, result = traced
    events, report = commands(result["trace"]), result["report"]
    kernels = [e for e in events if e["track"] == "kernels"]
    assert len(kernels) == report["kernels_per_token"] * report["steps"]
    assert sum(e["cycles"] for e in kernels) == sum(result["step_kernel_cycles"])
    assert sum(e["cycles"] for e in events) == pytest.approx(report["total_cycles"])
    # One timeline: each event starts where the one before it ended.
    for before, after in zip(events, events[1:]):
        assert after["start"] == pytest.approx(before["start"] + before["cycles"])
    names = {op.name for launch in compiled.launches() for op in launch.ops}
    assert all(set(e["args"]["ops"]) <= names and e["args"]["ops"] for e in kernels)


def test_hbm_bytes_are_the_controllers_counts(traced):
    compiled, result = traced
    report, wb = result["report"], CHIP.memory.word_bytes
    kernels = [e for e in result["trace"] if e["track"] == "kernels"]
    # Kernels and Program Loads are all of a step's HBM traffic: the report counts the same controllers.
    counted = [e for e in result["trace"] if "hbm_bytes" in e["args"]]
    assert {e["track"] for e in counted} == {"kernels", "program load"}
    assert sum(e["args"]["hbm_bytes"] for e in counted) == pytest.approx(report["hbm_bytes_per_token"] * report["steps"])
    # The kernels' counted bytes are their compiled streams' words.
    streamed = sum(s.words * wb for pos in range(report["steps"]) for launch in compiled.bucket(pos)[1]
                   for s in launch.streams if s.tier == HBM)
    assert sum(e["args"]["hbm_bytes"] for e in kernels) == streamed
    assert all(e["args"]["hbm_bytes"] > 0 and e["args"]["ddr_bytes"] == 0 for e in kernels)


def test_chip_orchestrated_trace(checkpoint):
    """A step under the sequencer is one host command: its Program Loads, sequencing and kernels follow it."""
    compiled = compile_model(checkpoint, CHIP, mode="fused", context=32)
    result = asyncio.run(generate(ModelDevice(CHIP), compiled, [0, 5, 9], max_new_tokens=3, trace=True,
                                  orchestration="chip"))
    events, report = commands(result["trace"]), result["report"]
    assert sum(e["cycles"] for e in events) == pytest.approx(report["total_cycles"])
    assert [e["track"] for e in events[:5]] == ["host", "program load", "sequencer", "kernels", "host"]
    assert re.fullmatch(r"Program Loads \(\d+\)", events[1]["name"]), events[1]["name"]
    assert sum(e["cycles"] for e in events if e["track"] == "kernels") == sum(result["step_kernel_cycles"])
    assert sum(e["args"]["hbm_bytes"] for e in events if e["track"] == "kernels") == pytest.approx(
        report["hbm_bytes_per_token"] * report["steps"])


def test_chrome_trace_format(traced):
    _, result = traced
    trace = chrome_trace({"fused": result["trace"]}, CHIP.clock_hz)
    json.dumps(trace)
    events = trace["traceEvents"]
    threads = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert set(TRACKS) <= threads
    assert {t.split(" ")[0] for t in threads - set(TRACKS)} == {"AGCU", "PCU", "PMU", "program"}
    spans = [e for e in events if e["ph"] == "X"]
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in spans)
    peak = 1000 * CHIP.memory.hbm.bytes_per_cycle
    rates = [e["args"]["hbm"] for e in events if e["ph"] == "C" and e["name"].startswith("HBM")]
    assert 0 < max(rates) <= peak and sorted(set(rates))[0] == 0.0
    # Slices on one track nest (the trace format's rule; Perfetto drops the ones that do not).
    for track in {(e["pid"], e["tid"]) for e in spans}:
        on = sorted((e["ts"], e["ts"] + e["dur"]) for e in spans if (e["pid"], e["tid"]) == track)
        assert all(b0 >= a1 - 1e-9 or (b0 >= a0 and b1 <= a1 + 1e-9) for (a0, a1), (b0, b1) in zip(on, on[1:])), track


def test_cli_writes_the_trace_and_refuses_a_bad_path(checkpoint, tmp_path):
    out = tmp_path / "decode.json"
    base = [sys.executable, "-m", "cli", "decode", "--checkpoint", str(checkpoint), "--prompt-ids", "0,5",
            "--max-new-tokens", "1", "--backend", "model", "--json"]
    done = subprocess.run([*base, "--trace", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "trace" not in json.loads(done.stdout)["fused"]
    assert any(e["ph"] == "X" for e in json.loads(out.read_text())["traceEvents"])
    bad = subprocess.run([*base, "--trace", str(tmp_path / "missing" / "t.json")], capture_output=True, text=True)
    assert bad.returncode == 1 and "--trace" in bad.stderr and "Traceback" not in bad.stderr


def integrated_bytes(events, tier):
    """Bytes under the ``tier`` counter track: each rate (bytes per 1000 cycles) held until the next sample."""
    samples = sorted((e["start"], e["args"]["value"]) for e in events
                     if e["track"] == COUNTER and e["name"].startswith(tier.upper()))
    return sum(rate * (t1 - t0) / RATE_WINDOW for (t0, rate), (t1, _) in zip(samples, samples[1:]))


def test_activity_tracks(traced):
    """Units, AGCU streams and the bandwidth counters inside each kernel: the counters carry every byte the
    tier controllers counted for the kernels, each unit's busy and stalled cycles fit its span."""
    compiled, result = traced
    events = result["trace"]
    counted = [e for e in events if e["track"] in ("kernels", "program load")]
    assert integrated_bytes(events, "hbm") == pytest.approx(sum(e["args"]["hbm_bytes"] for e in counted))
    units = [e for e in events if e["track"].split(" ")[0] in ("PCU", "PMU")]
    used = {(kind, tuple(u.pos)) for launch in compiled.launches() for u in launch.program.units.values()
            for kind in [u.kind.upper()]}
    assert {(e["track"].split(" ")[0], tuple(int(x) for x in e["track"].split(" ")[1].split(","))) for e in units} == used
    for e in units:
        assert e["args"]["busy"] > 0 and e["args"]["source"] == "modelled"
        if e["track"].startswith("PCU"):
            # A PCU fires at most once a cycle: its firings and drained rows fit the span its timing gives it.
            assert e["args"]["busy"] <= e["cycles"] + 1, e
    streams = [e for e in events if e["track"].startswith("AGCU")]
    host_ports = sum(len(launch.program.host_inputs) + len(launch.program.host_outputs)
                     for pos in range(result["report"]["steps"]) for launch in compiled.bucket(pos)[1])
    assert len(streams) == host_ports


def test_looped_activity_shows_each_layer(checkpoint):
    """A looped kernel's units run once per layer (iteration), and the words its reads fetched ahead for the
    next layer are on the counters before that layer starts: every byte the controllers counted is there."""
    compiled = compile_model(checkpoint, LARGE, mode="looped", context=32)
    assert not compiled.loop_note
    result = asyncio.run(generate(ModelDevice(LARGE), compiled, [0, 5, 9], max_new_tokens=2, trace=True,
                                  orchestration="chip"))
    events, layers = result["trace"], compiled.shape.num_layers
    kernels = [e for e in events if e["track"] == "kernels"]
    assert integrated_bytes(events, "hbm") == pytest.approx(
        sum(e["args"]["hbm_bytes"] for e in kernels) + sum(e["args"].get("hbm_bytes", 0) for e in events
                                                           if e["track"] == "program load"), rel=1e-3)
    looped = [e for e in events if e["track"].startswith("PCU") and "(iteration" in e["name"]]
    assert {int(e["name"].rsplit(" ", 1)[1].rstrip(")")) for e in looped} == set(range(layers))
    ahead = [e for e in events if e["track"].startswith("AGCU") and e["name"].startswith("read ahead")]
    assert ahead and all(e["args"]["words"] > 0 for e in ahead)


def test_tracing_changes_no_result(traced, checkpoint):
    """Recording runs every kernel step by step instead of replaying its plan: same cycles, logits, bytes."""
    compiled, result = traced
    plain = asyncio.run(generate(ModelDevice(CHIP), compiled, [0, 5, 9], max_new_tokens=3))
    assert plain["logits_sha"] == result["logits_sha"]
    assert plain["step_kernel_cycles"] == result["step_kernel_cycles"]
    assert plain["report"]["hbm_bytes_per_token"] == result["report"]["hbm_bytes_per_token"]
