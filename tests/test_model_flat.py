"""The eighth pass (docs/performance.md): a launch replayed as one flat sequence (ChipModel._flat), reads of strided
words as views, and GEMVs that widen their bf16 weights themselves; the same results as the plan's steps and as a
launch run step by step."""

import asyncio

import numpy as np
import pytest

from hw.chip import all_io_positions
from hw.mem import params
from hw.tile.params import SMALL
from sw.model import array as array_model
from sw.model import chip as chip_model
from sw.model import fp32
from sw.model.chip import ChipModel, _find_grid, _grid
from sw.model.memory import FlatMemory, MemoryRangeError
from tests.test_model_cext import SPECIAL, kernels  # noqa: F401  (kernels: the fixture)
from tests.test_model_replay import _launch, assert_replay_is_step_by_step
from tests.test_model_speedups import _operands


def _spelled(first, bounds, strides):
    """The offsets a grid names, in C order."""
    if not bounds:
        return np.array([first], np.int64)
    index = np.indices(bounds, np.int64).reshape(len(bounds), -1)
    return first + np.asarray(strides, np.int64) @ index


@pytest.mark.parametrize("offsets", [
    np.arange(512)[:, None] * 2048 + np.arange(8),          # a K cache's rows: runs of 8, 2048 apart
    np.arange(16)[:, None] * 256 + np.arange(4),
    np.arange(3)[:, None, None] * 1000 + np.arange(4)[:, None] * 100 + np.arange(5),
    np.zeros(4, np.int64),                                   # one word four times (a mask row)
    np.tile(np.arange(2), 4),
    np.arange(32) * 256,
    np.arange(6)[:, None] * 3 + np.arange(3) + 7,            # runs that continue each other: one level
])
def test_grids_spell_their_offsets(offsets):
    offsets = np.asarray(offsets, np.int64).reshape(-1)
    first, bounds, strides = _find_grid(offsets)
    assert np.array_equal(_spelled(first, bounds, strides), offsets)
    assert all(s >= 0 for s in strides) and len(bounds) <= 3


@pytest.mark.parametrize("offsets", [
    [0, 1, 3],                                               # no grid
    [3, 2, 1],                                               # a negative stride
    [0, 1, 2, 3, 10, 11, 12, 13, 20, 21],                    # a partial last run
    (np.arange(2)[:, None, None, None] * 10000 + np.arange(3)[:, None, None] * 1000 + np.arange(4)[:, None] * 100
     + np.arange(5)).reshape(-1),                            # four levels
    [0, 1, 2, 10, 11, 12, 20, 21, 23],                       # a run that breaks inside the last one
])
def test_offsets_that_are_no_grid_have_none(offsets):
    assert _find_grid(np.asarray(offsets, np.int64)) is None


def test_grids_are_kept_per_array():
    offsets = np.arange(8)[:, None] * 64 + np.arange(4)
    offsets = offsets.reshape(-1)
    assert _grid(offsets) is _grid(offsets)
    assert _grid(offsets.copy()) == _grid(offsets)


def test_gemv_widens_bf16_weights_as_the_read_does(kernels):
    rng = np.random.default_rng(5)
    top = np.concatenate([SPECIAL >> np.uint32(16), np.arange(0, 1 << 16, 97, dtype=np.uint32)]).astype(np.uint16)
    for trial in range(60):
        groups, m, lanes = int(rng.integers(1, 9)), int(rng.integers(1, 40)), int(rng.choice([1, 2, 4, 8, 16]))
        rows = int(rng.choice([1, 1, 2, 4]))
        rows = min(rows, lanes)
        kind = trial % 3
        halves = (rng.choice(top, groups * m * lanes) if kind == 0 else
                  (_operands(rng, (groups * m * lanes,), trial % 4) >> np.uint32(16)).astype(np.uint16))
        a = _operands(rng, (groups * m * lanes,), trial % 4) if kind != 2 else rng.choice(SPECIAL, groups * m * lanes)
        widened = halves.astype(np.uint32) << np.uint32(16)
        for stride in (m * lanes, 0):
            want, got = (np.empty((groups * rows, lanes), np.uint32) for _ in range(2))
            kernels.gemv(a, widened, want, groups, m, rows, lanes, stride, lanes)
            kernels.gemv(a, halves, got, groups, m, rows, lanes, stride, lanes, 1)
            assert np.array_equal(got, want), (trial, stride)
            same = np.empty_like(want)
            kernels.gemv(a, widened, same, groups, m, rows, lanes, stride, lanes, 0)
            assert np.array_equal(same, want)


@pytest.mark.parametrize("kind", range(6))
def test_gemv_in_blocks_of_eight_groups_is_the_golden_sum(kind, kernels, monkeypatch):
    # Eight groups of four or eight lanes at a time run in 8-lane vectors where the processor has AVX2: the same
    # bits as the numpy form and the golden sums, whole blocks and the groups after them, with bf16 weights too.
    from sw.golden import arith as g
    from tests.test_model_cext import _python, _values

    rng = np.random.default_rng(300 + kind)
    for trial in range(24):
        groups, m = int(rng.choice([8, 9, 15, 16, 17, 24, 33])), int(rng.integers(1, 40))
        lanes, rows = int(rng.choice([4, 8])), int(rng.choice([1, 1, 2, 4]))
        a, b = _values(rng, (groups, m, rows, 1), kind), _values(rng, (groups, m, 1, lanes), kind)
        if trial % 2:
            b = b & np.uint32(0xFFFF0000)
        got = fp32.dot(a, b)
        assert np.array_equal(got, _python(monkeypatch, fp32.dot, a, b)), (kind, trial)
        p = g.fp32_mul(np.broadcast_to(a, (groups, m, rows, lanes)), np.broadcast_to(b, (groups, m, rows, lanes)))
        acc = np.zeros((groups, rows, lanes), np.uint32)
        for j in range(m):
            acc = g.fp32_add(p[:, j], acc)
        assert np.array_equal(got, acc), (kind, trial)
        out = np.empty((groups * rows, lanes), np.uint32)
        kernels.gemv(a.reshape(-1), (b >> np.uint32(16)).astype(np.uint16).reshape(-1), out, groups, m, rows, lanes,
                     m * rows, rows, 1)
        if trial % 2:
            assert np.array_equal(out.reshape(acc.shape), acc), (kind, trial)
        shared = a[0, :, 0, 0]
        want = _python(monkeypatch, fp32.dot_shared, shared, b.reshape(groups, m, lanes))
        assert np.array_equal(fp32.dot_shared(shared, b.reshape(groups, m, lanes)), want), (kind, trial)
        # One activation for every group (stride 0) with bf16 weights: the 4-lane blocks take it once a step.
        halves = (b >> np.uint32(16)).astype(np.uint16).reshape(-1)
        out = np.empty((groups, lanes), np.uint32)
        kernels.gemv(np.ascontiguousarray(shared), halves, out, groups, m, 1, lanes, 0, 1, 1)
        wide = (b & np.uint32(0xFFFF0000)).reshape(groups, m, lanes)
        assert np.array_equal(out, _python(monkeypatch, fp32.dot_shared, shared, wide).reshape(groups, lanes)), \
            (kind, trial)
    # Subnormal activations are zeros however large the weights (denormals-are-zero before the product).
    tiny, huge = np.full(16, 0x00400000, np.uint32), np.full(16 * 16 * 4, 0x7E00, np.uint16)
    out = np.empty((16, 4), np.uint32)
    kernels.gemv(tiny, huge, out, 16, 16, 1, 4, 0, 1, 1)
    assert not out.any()


def test_gemv_refuses_bad_halves(kernels):
    out = np.empty((1, 4), np.uint32)
    a, halves = np.zeros(8, np.uint32), np.zeros(8, np.uint16)
    with pytest.raises(ValueError):
        kernels.gemv(a, halves, out, 1, 2, 1, 4, 0, 4, 2)
    with pytest.raises(ValueError):
        kernels.gemv(a, halves, out, 1, 2, 1, 4, 0, 4, 0)       # 16-bit words where 32-bit ones are due
    with pytest.raises(ValueError):
        kernels.gemv(a, np.zeros(8, np.uint32), out, 1, 2, 1, 4, 0, 4, 1)
    with pytest.raises(ValueError):
        kernels.gemv(a, np.zeros(6, np.uint16), out, 1, 2, 1, 4, 0, 4, 1)
    with pytest.raises(TypeError):
        kernels.gemv(a, halves, out, 1, 2, 1, 4, 0, 4, 1, 0)


def _compiled(tmp_path, target):
    from sw.compiler.compile import compile_model
    from tests.llama_checkpoints import SHAPES, make_checkpoint

    return compile_model(make_checkpoint(tmp_path / "ck", **SHAPES["tiny-tied"]), target, mode="fused", context=32)


def _decode(compiled, target):
    from sw.runtime.decode import generate
    from sw.runtime.device import ModelDevice

    device = ModelDevice(target)
    out = asyncio.run(generate(device, compiled, [1, 5, 9], max_new_tokens=5, stop_at_eos=False, keep_logits=True))
    out["memory"] = {tier: m.bytes.copy() for tier, m in device.chip.memory.items() if isinstance(m, FlatMemory)}
    out["stats"] = device.chip.stats
    return out


@pytest.mark.parametrize("target_name", ["chip", "4x8"])
def test_flat_replays_are_the_plans_steps_and_the_launches_run_step_by_step(tmp_path, monkeypatch, target_name,
                                                                           kernels):
    from sw.target import CHIP, LARGE

    target = {"chip": CHIP, "4x8": LARGE}[target_name]
    compiled = _compiled(tmp_path, target)
    _decode(compiled, target)                               # plans made
    runs, halves = [], []
    flat, compiled_steps = ChipModel._flat, array_model.ArrayModel.compiled_steps

    def counted_flat(self, plan):
        run = flat(self, plan)
        if run is None:
            return None
        return lambda *a: runs.append(plan[7]) or run(*a)

    def counted_steps(self, plan, c, found=frozenset()):
        halves.append(len(found))
        return compiled_steps(self, plan, c, found)
    sequence, sequences = ChipModel._sequence, []

    def counted_sequence(self, plan, *a):
        made = sequence(self, plan, *a)
        sequences.append((made is not None, plan[7]))
        return made
    monkeypatch.setattr(ChipModel, "_flat", counted_flat)
    monkeypatch.setattr(array_model.ArrayModel, "compiled_steps", counted_steps)
    monkeypatch.setattr(ChipModel, "_sequence", counted_sequence)
    fast = _decode(compiled, target)
    assert runs, "launches were replayed as flat sequences"
    assert sequences and all(made for made, _ in sequences), "every flat sequence ran as one compiled call"
    if target_name == "chip":
        assert any(halves), "some GEMV took its bf16 weights as they lie in memory"
    else:
        assert any(runs), "gated launches were replayed as flat sequences"
        assert any(gates for _, gates in sequences), "gated launches ran as compiled sequences"
    monkeypatch.setattr(ChipModel, "_sequence", lambda self, *a: None)
    flat_steps = _decode(compiled, target)
    monkeypatch.setattr(ChipModel, "_flat", lambda self, plan: None)
    stepped_plans = _decode(compiled, target)
    monkeypatch.setattr(ChipModel, "_replay", lambda self, *a: None)
    step_by_step = _decode(compiled, target)
    for other in (flat_steps, stepped_plans, step_by_step):
        assert np.array_equal(fast["logits"], other["logits"]) and fast["tokens"] == other["tokens"]
        assert fast["step_cycles"] == other["step_cycles"] and fast["report"]["total_cycles"] == \
            other["report"]["total_cycles"]
        assert fast["stats"] == other["stats"]
        assert all(np.array_equal(fast["memory"][t], other["memory"][t]) for t in fast["memory"])


@pytest.mark.parametrize("target_name", ["chip", "4x8"])
def test_gemvs_read_only_the_activations_they_use(tmp_path, target_name, kernels):
    # A PMU map that broadcasts each activation to every lane feeds a GEMV that reads one word of each lane group:
    # the compiled sequence has the GEMV read those words where they lie, or from a take of just those, and leaves
    # out takes nothing reads (the flat replays' results are checked against the step-by-step runs above).
    from sw.model import chip as chip_model
    from sw.target import CHIP, LARGE

    target = {"chip": CHIP, "4x8": LARGE}[target_name]
    chip_model._SEQUENCES.clear()
    _decode(_compiled(tmp_path, target), target)
    words = {1: 14, 2: 5, 3: 14, 4: 6, 5: 5, 6: 11, 7: 22}
    gemvs = direct = 0
    for _, found in chip_model._SEQUENCES.values():
        if found is None:
            continue
        slots, flat, _, outputs = found
        ops, at = [], 0
        while at < len(flat):
            ops.append(tuple(int(x) for x in flat[at:at + words[int(flat[at])]]))
            at += words[int(flat[at])]
        read = {k for _, k, _, _ in outputs}.union(*(chip_model._op_reads(op) for op in ops))
        taken = {op[1]: op[4] for op in ops if op[0] == 5}
        assert all(k in read for k in taken), "a take nothing reads was left in"
        for op in ops:
            if op[0] != 6:
                continue
            gemvs += 1
            _, a, _, _, groups, m, rows, lanes, stride, step, _ = op
            if a in taken:
                assert taken[a] == (1 if stride == 0 else groups) * m * rows and step == rows, op
            else:
                # Before, every GEMV read a step of its lanes: those reading their words where they lie do not.
                direct += step != lanes
    assert gemvs and direct, (gemvs, direct)


@pytest.mark.parametrize("compiled_sequence", [True, False])
def test_a_flat_replay_stores_what_a_step_by_step_run_stores(kernels, monkeypatch, compiled_sequence):
    from sw.tile.kernels import TEST_POST, TEST_TAIL, gemv_bias_act

    if not compiled_sequence:
        monkeypatch.setattr(ChipModel, "_sequence", lambda self, *a: None)
    case = gemv_bias_act(SMALL, TEST_TAIL, TEST_POST, np.random.default_rng(0))
    replayed, stepped = (ChipModel(SMALL, params.SMALL, all_io_positions(SMALL)) for _ in range(2))
    for chip in (replayed, stepped):
        chip.load_program(case.program)
    for k, (at, out) in enumerate(((0, 0x8000), (0x10000, 0x9000), (0x20000, 0x8000), (0x30000, 0xA000))):
        launches = [_launch(chip, case, at, out, np.random.default_rng(k)) for chip in (replayed, stepped)]
        if k == 3:
            # A tier replaced: the flat sequence (bound to the old one) steps aside; the plan's steps run.
            old = replayed.memory[params.HBM]
            replayed.memory[params.HBM] = FlatMemory(old.name, old.capacity)
            replayed.memory[params.HBM].bytes[:] = old.bytes
        assert_replay_is_step_by_step(replayed, stepped, launches)
    flats = [run for plan, run in replayed._flats.values()]
    assert flats and all(run is not None for run in flats)
    # The outputs a replay gives are its own: a later replay does not change them.
    reads, writes = _launch(replayed, case, 0, 0x8000, np.random.default_rng(9))
    kept = replayed.execute(reads, writes)[1]
    copies = {name: (data.copy(), last.copy()) for name, (data, last) in kept.items()}
    replayed.execute(*_launch(replayed, case, 0, 0x8000, np.random.default_rng(10)))
    assert all(np.array_equal(kept[n][i], copies[n][i]) for n in kept for i in (0, 1))


def test_a_flat_replay_steps_aside_for_the_numpy_forms_and_for_words_outside_a_tier(kernels, monkeypatch):
    from sw.tile.kernels import TEST_POST, TEST_TAIL, gemv_bias_act

    case = gemv_bias_act(SMALL, TEST_TAIL, TEST_POST, np.random.default_rng(0))
    chip = ChipModel(SMALL, params.SMALL, all_io_positions(SMALL))
    chip.load_program(case.program)
    chip.execute(*_launch(chip, case, 0, 0x8000, np.random.default_rng(0)))
    plans = chip._ports(case.program)[2]
    (plan, _), = plans.values()
    reads, writes = _launch(chip, case, 0x10000, 0x9000, np.random.default_rng(1))
    agcus = [chip.agcu_at(p.side, p.col) for p in case.program.host_inputs.values()]
    read_pats = [reads[k] for k in agcus]
    write_pats = [writes[chip.agcu_at(p.side, p.col)] for p in case.program.host_outputs.values()]
    run = chip._flat(plan)
    read_bases, write_bases = [p.base for p in read_pats], [p.base for p in write_pats]
    with monkeypatch.context() as m:
        m.setattr(fp32, "_C", False)
        assert run(read_bases, write_bases) is None
    with monkeypatch.context() as m:
        m.setattr(chip_model.pcu_model, "reduce_lanes", lambda op, x: x[:, 0])
        assert run(read_bases, write_bases) is None
    far = read_pats[0].moved(params.SMALL.tiers[params.HBM].capacity)
    assert run([far.base] + read_bases[1:], write_bases) is None
    before = chip.memory[params.HBM].bytes.copy()
    assert run(read_bases, write_bases) is not None
    assert not np.array_equal(before, chip.memory[params.HBM].bytes)
    # A word outside its tier: the launch runs step by step and says so, as without the flat sequence.
    with pytest.raises(MemoryRangeError):
        chip.execute({**reads, agcus[0]: far}, writes)


def _read_only(values):
    held = np.array(values, np.int64)
    held.flags.writeable = False
    return held


def test_a_compiled_sequence_refuses_what_leaves_its_buffers(kernels):
    # seq_build checks every op against its buffers and the rows its bases may take; seq_run runs nothing for a
    # base that is not a whole word inside its rows.
    tier, data = np.zeros((64, 8), np.uint8), np.zeros(16, np.uint32)
    checks = np.array([[0, 57]], np.int64)                     # rows 0 to 56: 8 rows from each fit
    read = (1, 1, 0, 0, 0, 0, 1, 1, 8, 0, 0, 1, -1, 8)        # 8 rows from the base's row into slot 1

    def build(ops, slots=(tier, data), checks=checks, reads=1):
        return kernels.seq_build(slots, np.array(ops, np.int64), checks, 8, reads, 0)

    sequence = build(read)
    tier[3:11] = np.arange(64, dtype=np.uint8).reshape(8, 8)
    taken = build((5, 1, 0, 2, 16), (tier, data, _read_only(np.arange(16) * 4)))
    assert kernels.seq_run(taken, [0], []) is True
    assert np.array_equal(data, tier.view(np.uint32).reshape(-1)[:64:4])
    assert kernels.seq_run(sequence, [24], []) is True
    assert np.array_equal(data.view(np.uint8), np.arange(64, dtype=np.uint8))
    for base in (25, -8, 57 * 8, 1 << 80):
        assert kernels.seq_run(sequence, [base], []) is False
    with pytest.raises(ValueError):
        kernels.seq_run(sequence, [0, 8], [])
    for ops, slots, bounds in (
            (read[:4] + (1,) + read[5:], (tier, data), checks),              # a widened read: 128 bytes
            (read, (tier, data), np.array([[0, 58]], np.int64)),              # row 57 + 8 leaves the tier
            (read, (tier, data), np.array([[-1, 60]], np.int64)),
            (read[:1] + (2,) + read[2:], (tier, data), checks),               # no slot 2
            (read[:3] + (1,) + read[4:], (tier, data), checks),               # a write's base for a read
            ((5, 1, 0, 2, 16), (tier, data, _read_only(np.full(16, 512))), checks),  # a take past its source
            ((5, 1, 0, 2, 16), (tier, data, np.zeros(16, np.int64)), checks),  # indices an op could write
            # A slice that writes the indices a take then reads: checked in range, out of it at the run.
            ((4, 2, 1, 0, 1, 16, 5, 1, 1, 2, 16), (tier, np.full(16, 1 << 30, np.uint32), np.zeros(16, np.int64)),
             checks),
            ((4, 1, 0, 500, 1, 16), (tier, data), checks),                    # a slice past its source
            ((6, 1, 1, 1, 1, 3, 1, 4, 0, 4, 0), (tier, data), checks),        # a GEMV's weights of the wrong size
            ((2, 1, 0, 0, 0), (tier, data), checks),                          # a half slot that is a buffer
            ((2, 2, 0, 0, 0), (tier, data, 9 * 8), checks),                   # a half slot leaving the tier
            (read + (9,), (tier, data), checks)):                             # a truncated op
        with pytest.raises(ValueError):
            build(ops, slots, bounds)


def test_op_reads_names_the_offsets_slot_not_the_row_count():
    # SQ_READ: code, data, tier, base, widen, first, shape (3), strides (3), offsets slot, rows (fastfp.c).
    grid = (1, 7, 2, 0, 1, 0, 1, 1, 64, 0, 0, 1, -1, 64)
    listed = (1, 7, 2, 0, 1, 0, 1, 1, 64, 0, 0, 1, 9, 64)
    written = (3, 7, 2, 0, 0, 0, 1, 1, 64, 0, 0, 1, 9, 64)
    assert set(chip_model._op_reads(grid)) == {2}
    assert set(chip_model._op_reads(listed)) == {2, 9}
    assert set(chip_model._op_reads(written)) == {2, 9, 7}
