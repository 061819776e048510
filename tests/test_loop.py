"""Kernel looping (sw/compiler/loop.py, sw/model/loop.py): the decoder layers as one kernel looped over them.

The looped program computes what the fused one does, bit for bit, on the fast model; its looped kernel
walks each AGCU pattern's outermost level over the layers, its PMUs run their passes once per layer, and
its reads of the residual row wait for the previous layer's write. Where a layer does not fit one kernel
the compiler fuses instead and says why.
"""

import asyncio
import random
from dataclasses import replace

import numpy as np
import pytest

from facts.loopnest import LEVELS
from sw.compiler.compile import compile_model
from sw.compiler.loop import carry_region, find_layers
from sw.compiler.lower import lower
from sw.compiler.decode import Padding, decode_graph
from sw.loopnest import LoopNest
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.target import CHIP, LARGE
from tests.llama_checkpoints import SHAPES, make_checkpoint, transformers_greedy

PROMPT = [3, 17, 5, 9]
LAYERS = 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("loop") / "ckpt", **dict(SHAPES["tiny-tied"],
                                                                             num_hidden_layers=LAYERS))


@pytest.fixture(scope="module")
def compiled(checkpoint):
    return {mode: compile_model(checkpoint, LARGE, mode=mode, context=16) for mode in ("fused", "looped")}


def test_the_layers_are_one_looped_kernel(compiled):
    looped = compiled["looped"]
    assert looped.loop_note == ""
    for tp, launches in looped.buckets.items():
        names = [[op.name for op in launch.ops] for launch in launches]
        assert names[0] == ["embed"] and names[-1] == ["final_norm", "lm_head", "argmax"], names
        kernel = launches[1]
        assert kernel.program.iterations == LAYERS
        assert [n for n in names[1] if n.startswith("L0.")] == [n.replace("L1.", "L0.") for n in names[1]
                                                                  if n.startswith("L1.")]
        body = looped.memory_map
        for s in kernel.streams:
            bounds, strides = s.nest.padded()
            assert bounds[LEVELS - 1] == LAYERS, s
            if s.region.startswith(("w.L0.", "kv.L0.")):
                step = body[s.region.replace("L0.", "L1.")].offset - body[s.region].offset
                assert strides[LEVELS - 1] * looped.target.memory.word_bytes == step, s
        carry_reads = [s for s in kernel.streams if s.direction == "read" and s.region == carry_region(0)]
        writer = [s for s in kernel.streams if s.direction == "write" and s.region == carry_region(1)]
        assert carry_reads and len(writer) == 1
        assert all(s.after == writer[0].agcu and s.lag == 1 for s in carry_reads)
        # The KV reads wait for this layer's cache write: lag 0.
        assert any(s.after is not None and s.lag == 0 for s in kernel.streams if s.direction == "read")
        pmus = [u.config for u in kernel.program.units.values() if u.kind == "pmu"]
        assert all(c.write_passes % LAYERS == 0 and c.read_passes % LAYERS == 0 for c in pmus)


def test_looped_decodes_the_fused_logits_bit_for_bit(compiled, checkpoint):
    out = {mode: asyncio.run(generate(ModelDevice(LARGE), compiled[mode], PROMPT, max_new_tokens=4,
                                      orchestration="chip"))
           for mode in compiled}
    assert out["looped"]["logits_sha"] == out["fused"]["logits_sha"]
    assert out["looped"]["tokens"] == out["fused"]["tokens"] == transformers_greedy(checkpoint, PROMPT, 4)
    assert out["looped"]["report"]["kernels_per_token"] == 3


def test_a_layer_too_big_for_the_array_is_fused_with_a_note(checkpoint):
    compiled = compile_model(checkpoint, CHIP, mode="looped", context=16)
    assert compiled.loop_note.startswith("layers not looped (") and compiled.loop_note.endswith("; fused instead")
    assert "a layer does not fit one kernel of the 2x4 array" in compiled.loop_note
    assert all(launch.program.iterations == 1 for launch in compiled.launches())
    assert "looping: layers not looped" in compiled.summary()


def _ops(checkpoint):
    from sw.compiler.checkpoint import load_checkpoint

    shape = load_checkpoint(checkpoint).shape
    graph = decode_graph(shape, context=16, padding=Padding.of(shape, LARGE.array.lanes))
    return lower(graph, LARGE, 16, fused=True)


def test_find_layers_names_why_it_cannot_loop(checkpoint):
    step = _ops(checkpoint)
    ops, tensors = list(step.ops), step.tensors
    found = find_layers(ops, tensors)
    assert len(found.layers) == LAYERS and found.carry[0] == "x0" and found.carry[-1] == f"L{LAYERS - 1}.x_out"
    assert find_layers([op for op in ops if not op.name.startswith("L")], tensors) == \
        "no decoder layers among the chip ops"
    one = [op for op in ops if not op.name.startswith(("L1.", "L2."))]
    assert find_layers(one, tensors) == "one layer: nothing to loop"
    differ = [replace(op, attrs=dict(op.attrs, eps=1e-3)) if op.name == "L1.norm2" else op for op in ops]
    assert find_layers(differ, tensors) == "layer 1 differs from layer 0 (at L#.norm2)"
    moved = ops[:]
    first = next(i for i, op in enumerate(moved) if op.name.startswith("L1."))
    moved.insert(first, moved.pop(next(i for i, op in enumerate(moved) if op.name == "final_norm")))
    assert find_layers(moved, tensors) == "the layers' ops are not consecutive"


def test_loop_nest_compact_and_outer_level_keep_addresses_and_marks():
    rng = random.Random(5)
    for _ in range(2000):
        n = rng.randint(1, LEVELS)
        bounds = [rng.choice([1, 1, 2, 3, 4]) for _ in range(n)]
        strides = []
        for k in range(n):
            strides.append(rng.choice([0, 1, 2, -1, bounds[k - 1] * strides[k - 1] if k else 1]))
        nest = LoopNest(bounds, strides, 0, rng.choice([None] + list(range(LEVELS))))
        small = nest.compact()
        assert np.array_equal(small.addresses(), nest.addresses()) and np.array_equal(small.ends(), nest.ends())
        if len(small.bounds) == LEVELS:
            with pytest.raises(ValueError, match="no level left"):
                small.with_outer(3, 100)
            continue
        looped = small.with_outer(3, 100)
        assert np.array_equal(looped.addresses(), np.concatenate([small.addresses() + 100 * i for i in range(3)]))
        marks = small.ends().copy()
        if small.last_level is None or small.last_level >= len(small.bounds) - 1:
            marks[:] = False
            marks[-1] = True
        assert np.array_equal(looped.ends(), np.tile(marks, 3))


def test_a_program_is_looped_in_every_bucket_or_none(tmp_path):
    # Grouped-query attention: where a bucket attends over fewer positions than the cache holds, its V read
    # needs all four loop levels, so that bucket cannot loop; the whole program is fused, saying where.
    path = make_checkpoint(tmp_path / "gqa", **dict(SHAPES["gqa-untied"], num_hidden_layers=2))
    compiled = compile_model(path, LARGE, mode="looped", context=16)
    assert "attending over 8 positions" in compiled.loop_note and "no level left" in compiled.loop_note
    assert all(launch.program.iterations == 1 for launches in compiled.buckets.values() for launch in launches)


def test_a_gate_pairs_the_iterations_of_read_and_write():
    from hw.mem.params import HBM
    from sw.runtime.chip import Pattern, gate_problem

    looped = Pattern(HBM, 0, LoopNest((4, 1, 1, 3), (1, 0, 0, 4)))
    once = Pattern(HBM, 0, LoopNest((4,), (1,)))
    assert gate_problem(Pattern(HBM, 64, LoopNest((4, 1, 1, 3), (1, 0, 0, 4)), after=2, lag=1), {2: looped}) == ""
    assert gate_problem(Pattern(HBM, 64, LoopNest((4, 1, 1, 3), (1, 0, 0, 4)), after=2), {2: once}) == ""
    assert "this kernel does not run" in gate_problem(Pattern(HBM, 64, once.nest, after=5), {2: looped})
    assert "gated on AGCU 2's write of 3" in gate_problem(Pattern(HBM, 64, once.nest, after=2), {2: looped})
