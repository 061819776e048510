"""A one-layer model decoded on the co-simulated chip (RTL) against the fast model, in every mode.

Both backends run the same runtime; the chip's logits must be bit-identical
to the fast model's at every step, the tokens the same, the kernel cycles
within 10% and the bytes the tier controllers count equal. One simulation
of the ``chip`` unit runs the fused program (issued by the host, then by the
chip's sequencer) and the unfused one.
"""

import asyncio

import numpy as np
import pytest

from tests.llama_checkpoints import SHAPES, make_checkpoint
from tests.test_trace import integrated_bytes
from sw.compiler.compile import compile_model
from sw.compiler.program import save
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.target import CHIP

PROMPT = [3, 17, 5, 9]
NEW = 3


@pytest.fixture(scope="module")
def one_layer(tmp_path_factory):
    root = tmp_path_factory.mktemp("rtl")
    path = make_checkpoint(root / "ckpt", **SHAPES["gqa-untied"])   # 1 layer, 4 heads over 2 KV heads
    compiled = {mode: compile_model(path, CHIP, mode=mode, context=16) for mode in ("fused", "unfused")}
    paths = {}
    for mode, c in compiled.items():
        paths[mode] = root / f"{mode}.pkl"
        save(c, paths[mode])
    return compiled, paths


def test_rtl_decode_is_bit_identical_to_the_fast_model(one_layer):
    from cosim.decode import run_rtl

    compiled, paths = one_layer
    request = {"prompt_ids": PROMPT, "max_new_tokens": NEW, "temperature": 0.0, "top_k": 0, "seed": 0,
               "trace": True}
    seen = []
    # The fused program twice: issued by the host, then walked by the chip's sequencer.
    runs = (("fused", "host"), ("unfused", "host"), ("fused", "chip"))
    rtl = run_rtl([paths[mode] for mode, _ in runs], dict(request, orchestration=[o for _, o in runs]),
                  progress=lambda *a: seen.append(a))
    for (mode, orchestration), got in zip(runs, rtl):
        want = asyncio.run(generate(ModelDevice(CHIP), compiled[mode], PROMPT, max_new_tokens=NEW,
                                    orchestration=orchestration, trace=True))
        check_measured_activity(got, want, compiled[mode])
        assert got["report"]["backend"] == "rtl" and got["report"]["orchestration"] == orchestration
        assert got["logits_sha"] == want["logits_sha"], f"{mode}: RTL logits differ from the fast model's"
        assert got["tokens"] == want["tokens"]
        ratio = np.array(want["step_kernel_cycles"]) / np.array(got["step_kernel_cycles"])
        assert np.all(np.abs(ratio - 1) <= 0.10), f"{mode}: model/RTL kernel cycles per step {ratio}"
        assert got["report"]["kernels_per_token"] == len(compiled[mode].launches(16))
        # The controllers' counts agree: every word the fast model says a step moves, the RTL moved.
        for key in ("hbm_read_bytes_per_token", "hbm_written_bytes_per_token", "ddr_bytes_per_token"):
            assert got["report"][key] == want["report"][key], f"{mode}/{orchestration}: {key}"
    assert rtl[0]["report"]["cycles_per_token"] < rtl[1]["report"]["cycles_per_token"]
    # The sequencer runs the very kernels the host launched, without the round trips; their cycles differ only
    # by the list's fetch, which shares HBM with the kernels' streams (a few cycles a step).
    host, chip = rtl[0], rtl[2]
    assert chip["logits_sha"] == host["logits_sha"]
    ratio = np.array(chip["step_kernel_cycles"]) / np.array(host["step_kernel_cycles"])
    assert np.all(np.abs(ratio - 1) <= 0.01), ratio
    assert chip["report"]["cycles_per_token"] < host["report"]["cycles_per_token"]
    want = asyncio.run(generate(ModelDevice(CHIP), compiled["fused"], PROMPT, max_new_tokens=NEW,
                                orchestration="chip"))["report"]
    got = chip["report"]
    assert got["provenance"]["sequencer_cycles_per_token"] == "measured"
    assert abs(want["sequencer_cycles_per_token"] - got["sequencer_cycles_per_token"]) <= \
        0.05 * got["sequencer_cycles_per_token"] + 16, (want["sequencer_cycles_per_token"],
                                                        got["sequencer_cycles_per_token"])
    assert seen, "no progress was reported during the simulation"


def busy_by_unit(events, kind):
    totals = {}
    for e in events:
        if e["track"].startswith(kind):
            totals[e["track"]] = totals.get(e["track"], 0) + e["args"]["busy"]
    return totals


def check_measured_activity(result, model, compiled):
    """The RTL trace's activity: the units' busy/stall counters and the sampled tier counters; the fast
    model's busy cycles are the RTL's for every PCU (firings and drained rows), and an upper bound for
    every PMU (it counts a cycle that writes and reads twice)."""
    events = result["trace"]
    assert busy_by_unit(model["trace"], "PCU") == busy_by_unit(events, "PCU")
    rtl, modelled = busy_by_unit(events, "PMU"), busy_by_unit(model["trace"], "PMU")
    assert rtl.keys() == modelled.keys()
    for unit, busy in rtl.items():
        assert busy <= modelled[unit], (unit, busy, modelled[unit])
    assert sum(modelled.values()) <= 1.02 * sum(rtl.values())
    units = [e for e in events if e["track"].split(" ")[0] in ("PCU", "PMU")]
    assert units and all(e["args"]["source"] == "measured" for e in units)
    used = {(u.kind.upper(), tuple(u.pos)) for launch in compiled.launches() for u in launch.program.units.values()}
    assert {(e["track"].split(" ")[0], tuple(int(x) for x in e["track"].split(" ")[1].split(","))) for e in units} \
        <= used
    assert sum(e["args"]["busy"] for e in units) > 0
    counted = sum(e["args"].get("hbm_bytes", 0) for e in events if e["track"] in ("kernels", "program load"))
    assert integrated_bytes(events, "hbm") == pytest.approx(counted), "the sampled counters lose bytes"
