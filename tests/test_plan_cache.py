"""The launch-plan cache: a decode that replays plans an earlier process stored gives the same logits, tokens,
cycles and tier counts as one that makes every plan, and a damaged or unwritable cache changes nothing but speed."""

import asyncio
import json
import os
import subprocess
import sys

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


def _fresh_process(monkeypatch):
    # What a new process has: no plan made yet (the disk cache aside); the worker's own plans come back after the test.
    for name in ("_PLANS", "_LAUNCH_PLANS", "_UNSTORED"):
        monkeypatch.setattr(chip, name, {})


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
    _fresh_process(monkeypatch)
    reference = _decode(compiled)
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", str(tmp_path / "plans"))
    made, stored = _counting(monkeypatch)
    _fresh_process(monkeypatch)
    cold = _decode(compiled)
    assert stored and len(list((tmp_path / "plans").glob("*.plan"))) == len(set(stored))
    made_cold = len(made)
    made.clear()
    _fresh_process(monkeypatch)
    warm = _decode(compiled)
    # Every launch whose plan was stored is replayed from the disk, not run step by step.
    assert len(made) == made_cold - len(stored)
    _same(cold, reference)
    _same(warm, reference)


def test_a_damaged_entry_is_made_again(compiled, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", "off")
    _fresh_process(monkeypatch)
    reference = _decode(compiled)
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", str(tmp_path))
    _fresh_process(monkeypatch)
    _decode(compiled)
    entries = sorted(tmp_path.glob("*.plan"))
    data = bytearray(entries[0].read_bytes())
    data[-1] ^= 1
    entries[0].write_bytes(bytes(data))
    entries[1].write_bytes(entries[1].read_bytes()[:40])
    capsys.readouterr()
    made, stored = _counting(monkeypatch)
    _fresh_process(monkeypatch)
    _same(_decode(compiled), reference)
    err = capsys.readouterr().err
    assert "checksum does not match" in err and "not a plan file" in err and entries[0].name in err
    assert sorted(set(stored)) == sorted(e.stem for e in entries[:2])
    assert all(plan_cache.load(e.stem) is not None for e in entries)


def test_an_unwritable_folder_is_reported_once(compiled, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", "off")
    _fresh_process(monkeypatch)
    reference = _decode(compiled)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", str(blocked / "plans"))
    monkeypatch.setattr(plan_cache, "_WARNED", set())
    capsys.readouterr()
    _fresh_process(monkeypatch)
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
    # The credit model's FIFO slack comes from the chip's array parameters.
    deeper = ChipModel(replace(model.array_params, switch_fifo_depth=model.array_params.switch_fifo_depth + 1),
                       model.mem_params, model.agcus)
    assert deeper._entry_name(prog, key, None) not in (None, name)
    other = model._key([replace(read_pats[0], nest=replace(read_pats[0].nest, offset=read_pats[0].nest.offset + 1)),
                        *read_pats[1:]], write_pats, None)
    assert model._entry_name(prog, other, None) not in (None, name)
    assert model._entry_name(prog, key, {ins[0]: 1}) is None
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", "off")
    assert plan_cache.folder() is None and model._entry_name(prog, key, None) is None


def test_a_full_folder_loses_its_least_recent_entries(tmp_path):
    for k in range(8):
        (tmp_path / f"{k}.plan").write_bytes(bytes(100))
        os.utime(tmp_path / f"{k}.plan", (1000 + k, 1000 + k))
    (tmp_path / ".partial.plan").write_bytes(bytes(100))
    (tmp_path / ".dead.plan").write_bytes(bytes(100))
    os.utime(tmp_path / ".dead.plan", (1000, 1000))
    plan_cache._prune(tmp_path, limit=500)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial.plan", "5.plan", "6.plan", "7.plan"]
    plan_cache._prune(tmp_path, limit=500)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial.plan", "5.plan", "6.plan", "7.plan"]


def test_a_process_looks_at_the_folder_size_on_its_first_store_and_then_every_so_many_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", str(tmp_path))
    monkeypatch.setattr(plan_cache, "_UNPRUNED", {})
    looked = []
    monkeypatch.setattr(plan_cache, "_prune",
                        lambda where: looked.append(sorted(p.stem for p in where.glob("*.plan"))))
    plan_cache.store("e0", {}, [np.zeros(100, np.int64)])
    size = (tmp_path / "e0.plan").stat().st_size
    monkeypatch.setattr(plan_cache, "PRUNE_EVERY_BYTES", 3 * size)
    for k in range(1, 8):
        plan_cache.store(f"e{k}", {}, [np.zeros(100, np.int64)])
    # The first store looks; later ones add up their bytes and look once three entries' worth more is stored.
    assert [names[-1] for names in looked] == ["e0", "e3", "e6"]


def _one_launch(compiled):
    """A device with the first launch's program loaded, and that launch's patterns at token 0, position 0."""
    from sw.runtime.decode import Session
    from sw.runtime.device import ModelDevice

    launch = compiled.buckets[min(compiled.buckets)][0]
    device = ModelDevice(compiled.target)
    device.chip.load_program(launch.program)
    return device.chip, *Session(device, compiled)._patterns(launch, 0, 0)


def test_a_stored_plan_leaves_errors_and_replaced_tiers_to_the_step_by_step_run(compiled, tmp_path, monkeypatch):
    from sw.model.memory import MemoryRangeError

    def out_of_range(model, reads, writes):
        # The first read moved to the tier's last word: its pattern takes words past the end.
        k, pattern = next(iter(reads.items()))
        tier = model.mem_params.tiers[pattern.tier]
        with pytest.raises(MemoryRangeError, match=f"AGCU {k} "):
            model.execute({**reads, k: pattern.moved(tier.capacity - model.mem_params.word_bytes)}, writes)
        return model.stats

    monkeypatch.setenv("OPENRDU_PLAN_CACHE", "off")
    _fresh_process(monkeypatch)
    reference = out_of_range(*_one_launch(compiled))
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", str(tmp_path))
    _fresh_process(monkeypatch)
    model, reads, writes = _one_launch(compiled)
    model.execute(reads, writes)
    model.execute(reads, writes)
    assert list(tmp_path.glob("*.plan")), "the launch's plan is stored at its first replay"
    made, _ = _counting(monkeypatch)
    _fresh_process(monkeypatch)
    model, reads, writes = _one_launch(compiled)
    cycles, outputs = model.execute(reads, writes)
    assert not made, "the stored plan runs the launch"
    before = {tier: dict(counts) for tier, counts in model.stats.items()}
    # Tiers replaced after the stored plan ran: it does not run on the old ones; the launch runs step by step.
    for tier, old in list(model.memory.items()):
        model.memory[tier] = chip._tier_memory(old.name, old.capacity)
    again = model.execute(reads, writes)
    assert made and again[0] == cycles
    assert all(np.array_equal(again[1][name][0], outputs[name][0]) for name in outputs)
    assert {tier: counts["reads"] - before[tier]["reads"] for tier, counts in model.stats.items()} == \
        {tier: counts["reads"] for tier, counts in before.items()}
    made.clear()
    _fresh_process(monkeypatch)
    stored = out_of_range(*_one_launch(compiled))
    assert stored == reference and made


def test_entry_names_are_the_same_in_another_process(compiled, monkeypatch, tmp_path):
    # Nothing in a name may hang on the process (hash seeds, addresses): another process must find the entry.
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", str(tmp_path))
    _fresh_process(monkeypatch)
    model, reads, writes = _one_launch(compiled)
    model.execute(reads, writes)
    model.execute(reads, writes)
    stored = sorted(p.name for p in tmp_path.glob("*.plan"))
    assert stored
    script = (
        "import json, sys\n"
        "from sw.compiler.compile import compile_model\n"
        "from sw.target import CHIP\n"
        "from tests.llama_checkpoints import SHAPES, make_checkpoint\n"
        "from tests.test_plan_cache import _one_launch\n"
        "from sw.model import plan_cache\n"
        "loaded = []\n"
        "load = plan_cache.load\n"
        "plan_cache.load = lambda name: loaded.append(name) or load(name)\n"
        "compiled = compile_model(make_checkpoint(sys.argv[1], **SHAPES['tiny-tied']), CHIP, mode='fused', "
        "context=32)\n"
        "model, reads, writes = _one_launch(compiled)\n"
        "model.execute(reads, writes)\n"
        "print(json.dumps(loaded))\n")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OPENRDU_PLAN_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model")], env=env, capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded and [f"{name}.plan" for name in loaded] == [n for n in stored if n[:-5] in loaded]
    assert "unusable" not in done.stderr and "does not fit" not in done.stderr


def _rewritten(path, change):
    """The entry at ``path`` with ``change(meta)`` applied and a checksum that matches again."""
    import hashlib

    meta, arrays = plan_cache._parse(path.read_bytes())
    change(meta)
    meta.pop("arrays")
    name = path.stem
    path.unlink()
    plan_cache.store(name, meta, arrays)
    assert path.exists()
    data = path.read_bytes()
    head = len(plan_cache.MAGIC) + hashlib.sha256().digest_size
    assert hashlib.sha256(data[head:]).digest() == data[len(plan_cache.MAGIC):head]


def test_an_entry_with_a_valid_checksum_and_wrong_content_is_made_again(compiled, tmp_path, monkeypatch, capsys):
    import hashlib

    monkeypatch.setenv("OPENRDU_PLAN_CACHE", str(tmp_path))
    _fresh_process(monkeypatch)
    model, reads, writes = _one_launch(compiled)
    expected = model.execute(reads, writes)
    model.execute(reads, writes)
    (entry,) = tmp_path.glob("*.plan")
    _rewritten(entry, lambda meta: meta.update(reads=meta["reads"] + 1))
    huge = json.dumps({"arrays": [["<i8", [1 << 70], 0]]}).encode()
    body = len(huge).to_bytes(8, "little") + huge
    (tmp_path / "huge.plan").write_bytes(plan_cache.MAGIC + hashlib.sha256(body).digest() + body)
    capsys.readouterr()
    assert plan_cache.load("huge") is None and not (tmp_path / "huge.plan").exists()
    made, stored = _counting(monkeypatch)
    _fresh_process(monkeypatch)
    model, reads, writes = _one_launch(compiled)
    cycles, outputs = model.execute(reads, writes)
    err = capsys.readouterr().err
    assert "huge.plan is unusable" in err and f"{entry.name} does not fit its launch" in err and made
    assert cycles == expected[0] and all(np.array_equal(outputs[k][0], expected[1][k][0]) for k in outputs)
    model.execute(reads, writes)
    # Made again at its replay; then each other departure from the launch is refused, and the entry removed.
    for change in (lambda meta: meta["counts"][0].__setitem__(2, -1),
                   lambda meta: meta["outputs"][0].__setitem__(1, len(meta["slots"])),
                   lambda meta: meta["outputs"][0].__setitem__(2, [3, 5]),
                   lambda meta: meta["slots"].__setitem__(meta["outputs"][0][1], ["buffer", 1 << 40])):
        _rewritten(entry, change)
        made.clear()
        _fresh_process(monkeypatch)
        model, reads, writes = _one_launch(compiled)
        cycles, outputs = model.execute(reads, writes)
        assert "does not fit its launch" in capsys.readouterr().err and made and not entry.exists()
        assert cycles == expected[0] and all(np.array_equal(outputs[k][0], expected[1][k][0]) for k in outputs)
        model.execute(reads, writes)


def test_loaded_arrays_are_aligned_and_read_only(compiled, tmp_path, monkeypatch):
    # The compiled sequence reads int64 words through 64-bit pointers, and refuses index arrays it could write.
    monkeypatch.setenv("OPENRDU_PLAN_CACHE", str(tmp_path))
    _fresh_process(monkeypatch)
    model, reads, writes = _one_launch(compiled)
    model.execute(reads, writes)
    model.execute(reads, writes)
    (entry,) = tmp_path.glob("*.plan")
    _, arrays = plan_cache.load(entry.stem)
    assert len(arrays) > 2 and all(a.flags.aligned and not a.flags.writeable for a in arrays)
    # Whatever lies before an int64 array in the file (here 1 to 8 bytes of flags).
    for k in range(1, 9):
        plan_cache.store(f"odd{k}", {}, [np.ones(k, bool), np.arange(5, dtype=np.int64)])
        _, (flags, words) = plan_cache.load(f"odd{k}")
        assert words.flags.aligned and not words.flags.writeable and words.tolist() == list(range(5))
