"""The seventh pass (docs/performance.md): launch plans shared by programs that differ only in their names (a
model's layers), and the runtime's per-launch patterns built once."""

import asyncio
import copy
import dataclasses

import numpy as np
import pytest

from sw.model import chip
from sw.model.chip import ChipModel, _fingerprint


def _compiled(tmp_path, target, seed=0):
    from sw.compiler.compile import compile_model
    from tests.llama_checkpoints import SHAPES, make_checkpoint

    return compile_model(make_checkpoint(tmp_path / f"ck{seed}", seed=seed, **SHAPES["tiny-tied"]), target,
                         mode="fused", context=32)


def _decode(compiled, target, tokens=6):
    from sw.runtime.decode import generate
    from sw.runtime.device import ModelDevice

    return asyncio.run(generate(ModelDevice(target), compiled, [1, 5, 9], max_new_tokens=tokens,
                                stop_at_eos=False, keep_logits=True))


def _fresh(monkeypatch):
    """Every process-wide plan cache empty (what a fresh process starts with)."""
    for name in ("_PLANS", "_ARRAYS", "_FINGERPRINTS", "_LAUNCH_PLANS"):
        monkeypatch.setattr(chip, name, {})


def _counting(monkeypatch):
    """A list that gets one entry per launch run step by step (no plan replayed)."""
    runs = []
    original = ChipModel._execute

    def counted(self, *a, **k):
        runs.append(id(self.program))
        return original(self, *a, **k)
    monkeypatch.setattr(ChipModel, "_execute", counted)
    return runs


def test_layers_have_one_fingerprint(tmp_path):
    from sw.target import CHIP

    compiled = _compiled(tmp_path, CHIP)
    for launches in compiled.buckets.values():
        by_region = {}
        for launch in launches:
            by_region.setdefault(launch.program_region, []).append(launch.program)
        shared = [progs for progs in by_region.values() if len(progs) > 1]
        assert shared, "the layers' launches share program regions"
        # Distinct objects with distinct names (one per layer); most share one fingerprint (a program whose
        # layers differ in more than names, or whose names a repr escapes, keeps one per layer).
        for progs in shared:
            assert len({id(p) for p in progs}) == len(progs)
            assert len({tuple(p.units) for p in progs}) == len(progs)
        assert sum(len({_fingerprint(p) for p in progs}) == 1 for progs in shared) >= len(shared) / 2


def test_a_changed_program_has_another_fingerprint(tmp_path):
    from sw.target import CHIP

    prog = _compiled(tmp_path, CHIP).buckets[8][2].program
    same = copy.deepcopy(prog)
    assert _fingerprint(same) == _fingerprint(prog) is not None
    # A host port's column; two names swapped in one place only (not a consistent renaming).
    changed = []
    moved = copy.deepcopy(prog)
    host = next(iter(moved.host_inputs))
    moved.host_inputs[host] = dataclasses.replace(moved.host_inputs[host], col=moved.host_inputs[host].col + 1)
    changed.append(moved)
    renamed = copy.deepcopy(prog)
    first, second = list(renamed.host_inputs)[:2]
    renamed.host_inputs = {(second if k == first else first if k == second else k): v
                           for k, v in renamed.host_inputs.items()}
    changed.append(renamed)
    for program in changed:
        assert _fingerprint(program) != _fingerprint(prog)


def test_the_whole_repr_fingerprints_other_shapes(monkeypatch, tmp_path):
    # A class with other fields than the fingerprint takes apart (here: a unit's) gets the whole repr, renamed: the
    # layers still share one fingerprint, and a changed program still gets another.
    from sw.target import CHIP

    compiled = _compiled(tmp_path, CHIP)
    taken = _fingerprint(compiled.buckets[8][2].program)
    assert isinstance(taken, tuple)
    monkeypatch.setattr(chip, "_NAMED_FIELDS", dict(chip._NAMED_FIELDS, Unit=("name", "kind", "pos")))
    monkeypatch.setattr(chip, "_FINGERPRINTS", {})
    by_region = {}
    for launch in compiled.buckets[8]:
        by_region.setdefault(launch.program_region, []).append(launch.program)
    shared = [progs for progs in by_region.values() if len(progs) > 1]
    assert all(isinstance(_fingerprint(p), str) for progs in shared for p in progs)
    assert sum(len({_fingerprint(p) for p in progs}) == 1 for progs in shared) >= len(shared) / 2
    prog = compiled.buckets[8][2].program
    moved = copy.deepcopy(prog)
    host = next(iter(moved.host_inputs))
    moved.host_inputs[host] = dataclasses.replace(moved.host_inputs[host], col=moved.host_inputs[host].col + 1)
    assert _fingerprint(moved) != _fingerprint(prog) != taken


def test_no_fingerprint_where_the_repr_elides(monkeypatch, tmp_path):
    from sw.target import CHIP

    prog = copy.deepcopy(_compiled(tmp_path, CHIP).buckets[8][2].program)
    prog.endpoints = dict(prog.endpoints, big=np.zeros(5000))
    assert _fingerprint(prog) is None


@pytest.mark.parametrize("target_name", ["chip", "4x8"])
def test_a_shared_plan_gives_what_a_fresh_one_does(tmp_path, monkeypatch, target_name):
    # A decode whose layers replay each other's plans (new context buckets included) against one where every
    # launch makes its own: the same logits, tokens and cycles, with fewer launches run step by step.
    from sw.target import CHIP, LARGE

    target = {"chip": CHIP, "4x8": LARGE}[target_name]
    compiled = _compiled(tmp_path, target)
    _fresh(monkeypatch)
    runs = _counting(monkeypatch)
    shared = _decode(compiled, target)
    shared_runs = len(runs)
    _fresh(monkeypatch)
    monkeypatch.setattr(chip, "_fingerprint", lambda prog: None)
    runs.clear()
    own = _decode(compiled, target)
    assert np.array_equal(shared["logits"], own["logits"]) and shared["tokens"] == own["tokens"]
    assert shared["step_cycles"] == own["step_cycles"]
    assert shared["report"]["total_cycles"] == own["report"]["total_cycles"]
    # On 4x8 this model's layers run in launches of their own programs too, but few are cold.
    assert shared_runs < len(runs) if target_name == "chip" else shared_runs <= len(runs)


def test_an_error_in_a_shared_plan_runs_the_launch_itself(tmp_path, monkeypatch):
    # A unit error while replaying another program's plan would name that program's units: the launch runs step
    # by step instead (and raises there, with its own names, where the error is real).
    from sw.target import CHIP

    compiled = _compiled(tmp_path, CHIP)
    _fresh(monkeypatch)
    want = _decode(compiled, CHIP)
    _fresh(monkeypatch)
    replay = ChipModel._replay
    refused = []

    def failing(self, plan, *a):
        if plan[0] is not self.program:
            refused.append(plan[0])
            raise ValueError("unit 'L0.x' (PCU at (0, 0)): a test's error")
        return replay(self, plan, *a)
    monkeypatch.setattr(ChipModel, "_replay", failing)
    got = _decode(compiled, CHIP)
    assert refused, "some launch was offered another program's plan"
    assert np.array_equal(got["logits"], want["logits"]) and got["step_cycles"] == want["step_cycles"]


def test_shared_plans_read_the_new_weights(tmp_path, monkeypatch):
    # Plans hold shapes, never data: a second model of the same shapes (same fingerprints, plans already made)
    # decodes as it does in a fresh process.
    from sw.target import CHIP

    first, second = _compiled(tmp_path, CHIP, seed=0), _compiled(tmp_path, CHIP, seed=1)
    _fresh(monkeypatch)
    _decode(first, CHIP)
    runs = _counting(monkeypatch)
    warm = _decode(second, CHIP)
    warm_runs = len(runs)
    _fresh(monkeypatch)
    cold = _decode(second, CHIP)
    assert np.array_equal(warm["logits"], cold["logits"]) and warm["tokens"] == cold["tokens"]
    assert warm["step_cycles"] == cold["step_cycles"]
    assert warm_runs < len(runs) - warm_runs, "the second model replays the first one's plans"


def test_a_changed_program_makes_its_own_plan(tmp_path, monkeypatch):
    # A launch whose program differs (here: a host port's column) from one with a plan does not replay it.
    from sw.target import CHIP

    compiled = _compiled(tmp_path, CHIP)
    prog = compiled.buckets[8][2].program
    model = ChipModel.__new__(ChipModel)
    model.mem_params = CHIP.memory
    key = ((), (), ())
    monkeypatch.setattr(chip, "_PLANS", {(CHIP.memory, _fingerprint(prog), key): (prog,)})
    # Same content under other names: found, with its outputs renamed; another content: not found.
    copied = copy.deepcopy(prog)
    plan, names = model._known_plan(copied, key)
    assert plan == (prog,) and names == {n: n for n in prog.host_outputs}
    moved = copy.deepcopy(prog)
    host = next(iter(moved.host_inputs))
    moved.host_inputs[host] = dataclasses.replace(moved.host_inputs[host], col=moved.host_inputs[host].col + 1)
    assert model._known_plan(moved, key) is None
    assert model._known_plan(prog, key) == ((prog,), None)


def test_session_patterns_keep_the_launch_order_and_fixed_objects(tmp_path):
    from sw.runtime.decode import Session
    from sw.runtime.device import ModelDevice
    from sw.target import CHIP

    compiled = _compiled(tmp_path, CHIP)
    session = Session(ModelDevice(CHIP), compiled)
    for launches in compiled.buckets.values():
        for launch in launches:
            before = None
            for token, pos in ((0, 0), (7, 3), (1, 31)):
                reads, writes = session._patterns(launch, token, pos)
                want_reads, want_writes = launch.patterns(token, pos)
                assert list(reads.items()) == list(want_reads.items())
                assert list(writes.items()) == list(want_writes.items())
                if before is not None:
                    for s in launch.streams:
                        if not (s.token_stride or s.pos_stride):
                            got = (reads if s.direction == "read" else writes)[s.agcu]
                            assert got is (before[0] if s.direction == "read" else before[1])[s.agcu]
                before = reads, writes


def test_session_patterns_follow_replaced_streams(tmp_path):
    # The patterns are kept per launch across sessions; a launch given other streams gets patterns built again.
    from sw.runtime.decode import Session
    from sw.runtime.device import ModelDevice
    from sw.target import CHIP

    compiled = _compiled(tmp_path, CHIP)
    launch = compiled.buckets[8][2]
    session = Session(ModelDevice(CHIP), compiled)
    before = session._patterns(launch, 1, 2)
    assert before == launch.patterns(1, 2)
    other = Session(ModelDevice(CHIP), compiled)
    assert other._patterns(launch, 1, 2) == launch.patterns(1, 2)
    launch.streams = [dataclasses.replace(s, offset=s.offset + 64) for s in launch.streams]
    moved = other._patterns(launch, 1, 2)
    assert moved == launch.patterns(1, 2) and moved != before


def test_a_new_chip_finds_the_launch_plans_kept_for_the_process(tmp_path, monkeypatch):
    # ChipModel.launcher keeps its plan look-up per program and pattern objects for the process (the eleventh pass):
    # a second decode's new chip finds every launch's plan without looking it up, with the same results; new
    # process-wide plans (a fresh process's) look again.
    from sw.target import CHIP

    compiled = _compiled(tmp_path, CHIP)
    _fresh(monkeypatch)
    monkeypatch.setattr(chip, "_LAUNCH_PLANS", {})
    first = _decode(compiled, CHIP)
    looked = []
    found_plan = ChipModel._found_plan
    monkeypatch.setattr(ChipModel, "_found_plan", lambda self, *a: looked.append(1) or found_plan(self, *a))
    again = _decode(compiled, CHIP)
    assert not looked, "a new chip's launchers take the plans kept for the process"
    _fresh(monkeypatch)
    cold = _decode(compiled, CHIP)
    assert looked, "new process-wide plans are looked up again"
    for got in (again, cold):
        assert np.array_equal(got["logits"], first["logits"]) and got["tokens"] == first["tokens"]
        assert got["step_cycles"] == first["step_cycles"]


def test_a_kept_launch_plan_needs_the_same_pattern_objects(tmp_path, monkeypatch):
    # The kept look-up is by the patterns' identities: a pattern replaced in the dict the runtime hands over (here an
    # equal copy) is looked up again, as are other AGCUs or memory parameters.
    from sw.runtime.decode import Session
    from sw.runtime.device import ModelDevice
    from sw.target import CHIP

    compiled = _compiled(tmp_path, CHIP)
    _fresh(monkeypatch)
    monkeypatch.setattr(chip, "_LAUNCH_PLANS", {})
    _decode(compiled, CHIP)
    launch = compiled.buckets[8][2]
    _, _, reads, writes, _ = Session._known_patterns(launch)
    model = ModelDevice(CHIP).chip
    model.load_program(launch.program)
    kept = model._launch_plan(launch.program, reads, writes)
    assert kept is not None
    looked = []
    found_plan = ChipModel._found_plan
    monkeypatch.setattr(ChipModel, "_found_plan", lambda self, *a: looked.append(1) or found_plan(self, *a))
    assert model._launch_plan(launch.program, reads, writes) is kept and not looked
    agcu = next(iter(reads))
    kept_pattern = reads[agcu]
    monkeypatch.setitem(reads, agcu, dataclasses.replace(kept_pattern))
    again = model._launch_plan(launch.program, reads, writes)
    assert looked and again is not kept and again[2] is kept[2] and again[:2] == kept[:2]
    other = ChipModel(model.array_params, model.mem_params, model.agcus[::-1])
    other.load_program(launch.program)
    assert other._launch_plan(launch.program, reads, writes) is not again, "other AGCUs look again"
    slower = ChipModel(model.array_params, dataclasses.replace(model.mem_params, hbm=dataclasses.replace(
        model.mem_params.hbm, latency=model.mem_params.hbm.latency + 1)), model.agcus)
    slower.load_program(launch.program)
    looked.clear()
    assert slower._launch_plan(launch.program, reads, writes) is None and looked, \
        "other memory parameters look again (and find no plan for them yet)"
