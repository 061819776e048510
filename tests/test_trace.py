"""Decode traces: every host command of a step on its track, HBM bytes from the tier counters, Chrome JSON."""

import asyncio
import json
import subprocess
import sys

import pytest

from hw.mem.params import HBM
from sw.compiler.compile import compile_model
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.runtime.trace import TRACKS, chrome_trace
from sw.target import CHIP
from tests.llama_checkpoints import SHAPES, make_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("trace"), **SHAPES["tiny-tied"])


@pytest.fixture(scope="module", params=["fused", "unfused"])
def traced(request, checkpoint):
    compiled = compile_model(checkpoint, CHIP, mode=request.param, context=32)
    result = asyncio.run(generate(ModelDevice(CHIP), compiled, [0, 5, 9], max_new_tokens=3, trace=True))
    return compiled, result


def test_the_trace_accounts_for_every_cycle(traced):
    compiled, result = traced
    events, report = result["trace"], result["report"]
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
    events, report = result["trace"], result["report"]
    assert sum(e["cycles"] for e in events) == pytest.approx(report["total_cycles"])
    assert [e["track"] for e in events[:5]] == ["host", "program load", "sequencer", "kernels", "host"]
    assert sum(e["cycles"] for e in events if e["track"] == "kernels") == sum(result["step_kernel_cycles"])
    assert sum(e["args"]["hbm_bytes"] for e in events if e["track"] == "kernels") == pytest.approx(
        report["hbm_bytes_per_token"] * report["steps"])


def test_chrome_trace_format(traced):
    _, result = traced
    trace = chrome_trace({"fused": result["trace"]}, CHIP.clock_hz)
    json.dumps(trace)
    events = trace["traceEvents"]
    threads = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert threads == set(TRACKS)
    spans = [e for e in events if e["ph"] == "X"]
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in spans)
    peak = 1000 * CHIP.memory.hbm.bytes_per_cycle
    rates = [e["args"]["hbm"] for e in events if e["ph"] == "C" and e["name"].startswith("HBM")]
    assert max(rates) <= peak and sorted(set(rates))[0] == 0.0


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
