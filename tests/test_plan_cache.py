"""The launch-plan cache: a decode that replays plans an earlier process stored gives the same logits, tokens,
cycles and tier counts as one that makes every plan, and a damaged or unwritable cache changes nothing but speed."""

import asyncio

import numpy as np
import pytest

from sw.model import chip, plan_cache
from sw.model.chip import ChipModel


def _compile(folder, target):
    from sw.compiler.compile import compile_model
    from tests.llama_checkpoints import SHAPES, make_checkpoint

    return compile_model(make_checkpoint(folder, **SHAPES["tiny-tied"]), target, mode="fused", context=32)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from sw.target import CHIP

    return _compile(tmp_path_factory.mktemp("plan-cache-model"), CHIP)


def _decode(compiled):
    from sw.runtime.decode import generate
    from sw.runtime.device import ModelDevice

    out = asyncio.run(generate(ModelDevice(compiled.target), compiled, [1, 5, 9], max_new_tokens=12,
                               stop_at_eos=False, keep_logits=True))
    report = {k: v for k, v in out["report"].items() if k not in ("wall_s", "load")}
    return out["logits"], out["tokens"], out["step_cycles"], report


def _fresh_process():
    # What a new process has: no plan made yet (the disk cache aside).
    chip._PLANS.clear()
    chip._LAUNCH_PLANS.clear()
    chip._UNSTORED.clear()


def _counting(monkeypatch):
    made, stored = [], []
    execute, store = ChipModel._execute, plan_cache.store
    monkeypatch.setattr(ChipModel, "_execute", lambda self, *a: made.append(1) or execute(self, *a))
    monkeypatch.setattr(plan_cache, "store", lambda *a: stored.append(a[0]) or store(*a))
    return made, stored


def _same(a, b):
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]


@pytest.mark.parametrize("target_name", ["chip", "4x8"])
def test_stored_plans_replay_bit_for_bit(compiled, tmp_path, monkeypatch, target_name):
    # On 4x8 every kernel of a fused layer reads back what it wrote (gated reads): their plans are stored too.
    from sw.target import LARGE

    if target_name == "4x8":
        compiled = _compile(tmp_path / "model", LARGE)
        gated = [launch for launches in compiled.buckets.values() for launch in launches
                 if any(s.direction == "read" and s.pattern(0, 0).after is not None for s in launch.streams)]
        assert gated
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", "off")
    _fresh_process()
    reference = _decode(compiled)
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", str(tmp_path / "plans"))
    made, stored = _counting(monkeypatch)
    _fresh_process()
    cold = _decode(compiled)
    assert stored and len(list((tmp_path / "plans").glob("*.plan"))) == len(set(stored))
    made_cold = len(made)
    made.clear()
    _fresh_process()
    warm = _decode(compiled)
    # Every launch whose plan was stored is replayed from the disk, not run step by step.
    assert len(made) == made_cold - len(stored)
    _same(cold, reference)
    _same(warm, reference)


def test_a_damaged_entry_is_made_again(compiled, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", "off")
    _fresh_process()
    reference = _decode(compiled)
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", str(tmp_path))
    _fresh_process()
    _decode(compiled)
    entries = sorted(tmp_path.glob("*.plan"))
    data = bytearray(entries[0].read_bytes())
    data[-1] ^= 1
    entries[0].write_bytes(bytes(data))
    entries[1].write_bytes(entries[1].read_bytes()[:40])
    capsys.readouterr()
    made, stored = _counting(monkeypatch)
    _fresh_process()
    _same(_decode(compiled), reference)
    err = capsys.readouterr().err
    assert "checksum does not match" in err and "not a plan file" in err and entries[0].name in err
    assert sorted(set(stored)) == sorted(e.stem for e in entries[:2])
    assert all(plan_cache.load(e.stem) is not None for e in entries)


def test_an_unwritable_folder_is_reported_once(compiled, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", "off")
    _fresh_process()
    reference = _decode(compiled)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", str(blocked / "plans"))
    monkeypatch.setattr(plan_cache, "_WARNED", set())
    capsys.readouterr()
    _fresh_process()
    _same(_decode(compiled), reference)
    err = capsys.readouterr().err
    assert err.count("cannot write the launch-plan cache") == 1


def test_entries_name_what_the_plan_follows_from(compiled, monkeypatch, tmp_path):
    from dataclasses import replace

    from sw.runtime.decode import Session
    from sw.runtime.device import ModelDevice

    monkeypatch.setenv("OPENRDU_PLAN_CACHE", str(tmp_path))
    launch = compiled.buckets[min(compiled.buckets)][0]
    reads, writes = Session(ModelDevice(compiled.target), compiled)._patterns(launch, 0, 0)
    device = ModelDevice(compiled.target)
    model = device.chip
    prog = launch.program
    ins, outs, _ = model._ports(prog)
    read_pats, write_pats = [reads[k] for k in ins], [writes[k] for k in outs]
    key = model._key(read_pats, write_pats, None)
    name = model._entry_name(prog, key, None)
    assert name and name == model._entry_name(prog, key, None)
    hbm = model.mem_params.hbm
    slower = ChipModel(model.array_params, replace(model.mem_params, hbm=replace(hbm, latency=hbm.latency + 1)),
                       model.agcus)
    assert slower._entry_name(prog, key, None) not in (None, name)
    other = model._key([replace(read_pats[0], nest=replace(read_pats[0].nest, offset=read_pats[0].nest.offset + 1)),
                        *read_pats[1:]], write_pats, None)
    assert model._entry_name(prog, other, None) not in (None, name)
    assert model._entry_name(prog, key, {ins[0]: 1}) is None
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", "off")
    assert plan_cache.folder() is None and model._entry_name(prog, key, None) is None


def test_a_full_folder_loses_its_least_recent_entries(tmp_path):
    import os

    for k in range(8):
        (tmp_path / f"{k}.plan").write_bytes(bytes(100))
        os.utime(tmp_path / f"{k}.plan", (1000 + k, 1000 + k))
    (tmp_path / ".partial.plan").write_bytes(bytes(100))
    plan_cache._prune(tmp_path, limit=500)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial.plan", "5.plan", "6.plan", "7.plan"]
    plan_cache._prune(tmp_path, limit=500)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial.plan", "5.plan", "6.plan", "7.plan"]
