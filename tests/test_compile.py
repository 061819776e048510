"""The compiler's back end: chip ops packed into kernels, run on the fast model, against transformers.

Every shape of ``tests/llama_checkpoints.SHAPES`` (tied and untied embeddings,
grouped-query attention, wide heads) is compiled in both modes for the
co-simulated chip's 2x4 array and, for one shape, for the 4x8 array; the
runtime feeds a prompt one token per step on :class:`ModelDevice` and every
step's logits are compared with transformers' float32 forward over the same
tokens (teacher forcing). Then the fit and split decisions, the errors for
what a target cannot take, ``save`` / ``load`` of program files (corrupt, truncated and
crafted files refused) and the summary.
"""

import asyncio
import dataclasses
import json
import hashlib
import io
import re
import zipfile

import numpy as np
import pytest

from sw.compiler.checkpoint import UnsupportedModelError, load_checkpoint
from sw.compiler.compile import compile_model, default_context, max_context
from sw.compiler.program import FORMAT, VERSION, CompiledModel, load, save
from sw.errors import CompileError, ProgramFormatError
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.target import CHIP, LARGE, TARGETS
from tests.llama_checkpoints import SHAPES, make_checkpoint, transformers_logits

# Weights are bf16 values held exactly in fp32 on the chip and in transformers' float32 forward, and both
# compute in fp32; only the summation order (lane-wise partial sums, cross-lane trees) and the chip's
# rsqrt / exp / reciprocal tail units differ from torch's, so the logits differ by ~1e-6 of their largest
# magnitude (measured: 7e-7 to 1e-6). The bound is 1e-4 of the largest |logit|: two orders of margin over
# rounding noise, while any real mapping error (a wrong weight tile, a missed mask, a stale KV row, RoPE
# on the wrong half) moves logits by a sizeable fraction of their range.
RTOL = 1e-4

CONTEXT = 16          # buckets 4, 8 and 16: ten prompt tokens cross two bucket boundaries
PROMPT_LEN = 10


def assert_logits_close(ours, theirs, what=""):
    assert ours.shape == theirs.shape, what
    scale = float(np.abs(theirs).max())
    err = float(np.abs(ours - theirs).max())
    assert err <= RTOL * scale, f"{what}: max |error| {err:.3g} > {RTOL:g} x max |logit| {scale:.3g}"
    # Same argmax at every position, unless transformers' top two are closer than the tolerance itself.
    top2 = np.sort(theirs, axis=-1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 2 * RTOL * scale
    assert (ours.argmax(-1) == theirs.argmax(-1))[decided].all(), what
    return err / scale


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One random-weight checkpoint per shape, written once per module (per worker)."""
    root = tmp_path_factory.mktemp("ckpt")
    return {name: make_checkpoint(root / name, **shape) for name, shape in SHAPES.items()}


@pytest.fixture(scope="module")
def compiled(checkpoints):
    """compiled(shape, target, mode) -> CompiledModel, each compiled once per module."""
    cache = {}

    def get(shape, target="chip", mode="fused"):
        key = (shape, target, mode)
        if key not in cache:
            cache[key] = compile_model(load_checkpoint(checkpoints[shape]), TARGETS[target], mode=mode,
                                       context=CONTEXT)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def prompts():
    return {name: [int(t) for t in np.random.default_rng(7).integers(0, shape["vocab_size"], PROMPT_LEN)]
            for name, shape in SHAPES.items()}


@pytest.fixture(scope="module")
def reference(checkpoints, prompts):
    """transformers' float32 logits at every prompt position, once per shape."""
    cache = {}

    def get(shape):
        if shape not in cache:
            cache[shape] = transformers_logits(checkpoints[shape], prompts[shape])
        return cache[shape]

    return get


@pytest.fixture(scope="module")
def run_logits(compiled, prompts):
    """Teacher-forced logits (steps x vocab) of the fast model, once per (shape, target, mode)."""
    cache = {}

    def get(shape, target="chip", mode="fused"):
        key = (shape, target, mode)
        if key not in cache:
            c = compiled(shape, target, mode)
            result = asyncio.run(generate(ModelDevice(c.target), c, prompts[shape], max_new_tokens=0,
                                          keep_logits=True))
            assert result["tokens"] == [] and result["report"]["steps"] == PROMPT_LEN
            cache[key] = result["logits"]
        return cache[key]

    return get


CASES = [(shape, "chip", mode) for shape in sorted(SHAPES) for mode in ("fused", "unfused")]
CASES += [("tiny-tied", "4x8", "fused"), ("tiny-tied", "4x8", "unfused")]


@pytest.mark.parametrize("shape, target, mode", CASES)
def test_teacher_forced_logits_match_transformers(run_logits, reference, shape, target, mode):
    ours = run_logits(shape, target, mode)
    theirs = reference(shape)
    assert ours.dtype == np.float32 and ours.shape == (PROMPT_LEN, SHAPES[shape]["vocab_size"])
    assert_logits_close(ours, theirs, f"{shape} on {target}, {mode}")


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_fused_and_unfused_agree(compiled, run_logits, shape):
    fused, unfused = run_logits(shape, "chip", "fused"), run_logits(shape, "chip", "unfused")
    assert_logits_close(fused, unfused, f"{shape}: fused vs unfused")
    nf, nu = len(compiled(shape, "chip", "fused").launches()), len(compiled(shape, "chip", "unfused").launches())
    assert nf < nu, (nf, nu)
    # Unfused is the op-by-op baseline: one op per kernel.
    assert all(len(launch.ops) == 1 for launch in compiled(shape, "chip", "unfused").launches())
    assert any(len(launch.ops) > 1 for launch in compiled(shape, "chip", "fused").launches())


def test_every_bucket_runs_the_same_ops(compiled):
    c = compiled("tiny-tied")
    assert sorted(c.buckets) == [4, 8, 16] and c.context == CONTEXT
    ops = [[op.name for launch in launches for op in launch.ops] for launches in c.buckets.values()]
    assert all(o == ops[0] for o in ops)
    assert c.launches() is c.buckets[CONTEXT]
    for pos, tp in ((0, 4), (3, 4), (4, 8), (8, 16), (15, 16)):
        assert c.bucket(pos)[0] == tp
    with pytest.raises(CompileError, match="position 16 is past the compiled context of 16"):
        c.bucket(16)


def test_layers_split_to_fit_the_chip_and_fewer_kernels_on_4x8(compiled):
    pcus = CHIP.array.rows * CHIP.array.cols // 2
    assert pcus == 4
    chip = compiled("tiny-tied", "chip", "fused")
    for launch in chip.launches():
        used_pcus, used_pmus = launch.units()
        assert 1 <= used_pcus <= pcus and used_pmus <= pcus
    # A decoder layer needs far more than 4 PCUs, so each layer is spread over several kernels.
    for layer in range(SHAPES["tiny-tied"]["num_hidden_layers"]):
        kernels = [launch for launch in chip.launches() if any(op.name.startswith(f"L{layer}.") for op in launch.ops)]
        assert len(kernels) >= 3, [[op.name for op in k.ops] for k in kernels]
    # Every op of the step is in exactly one kernel, in order (a fused gemv that joined the add or mul after
    # it, "L0.o+add1", stands for both).
    joined = lambda name: [name.split("+")[0]] + [name[:name.rfind(".") + 1] + j for j in name.split("+")[1:]]
    names = [part for launch in chip.launches() for op in launch.ops for part in joined(op.name)]
    assert names == [op.name for launch in compiled("tiny-tied", "chip", "unfused").launches()
                     for op in launch.ops]
    large = compiled("tiny-tied", "4x8", "fused")
    assert len(large.launches()) < len(chip.launches()), (len(large.launches()), len(chip.launches()))
    assert max(len(launch.ops) for launch in large.launches()) > max(len(launch.ops) for launch in chip.launches())


def test_default_context_is_what_a_pmu_holds(checkpoints, tmp_path):
    long = make_checkpoint(tmp_path / "long", max_position_embeddings=1024, **SHAPES["wide-heads"])
    shape = load_checkpoint(long).shape
    # Unless asked for more: K of one head, context x head_dim words, fits one PMU of lanes x pmu_bank_words
    # words whole; longer contexts compile with K chunked (tests/test_long_context.py).
    assert default_context(shape, CHIP) == CHIP.array.pmu_words // shape.head_dim == 128 < max_context(shape, CHIP)
    # And never beyond the model's positions.
    assert default_context(load_checkpoint(checkpoints["gqa-untied"]).shape, CHIP) == 64
    assert max_context(load_checkpoint(checkpoints["gqa-untied"]).shape, CHIP) == 64
    c = compile_model(checkpoints["gqa-untied"], CHIP)  # context defaults to default_context
    assert c.context == 64 and max(c.buckets) == 64


def test_context_beyond_one_pmu_is_chunked_and_beyond_the_target_refused(tmp_path):
    long = make_checkpoint(tmp_path / "long", max_position_embeddings=4096, **SHAPES["wide-heads"])
    c = compile_model(long, CHIP, context=256)          # K of one head is 256 x 64 = 16384 words, two PMUs' worth
    assert any(op.attrs.get("chunk") for launch in c.buckets[256] for op in launch.ops)
    with pytest.raises(CompileError) as e:
        compile_model(long, CHIP, context=4096)
    message = str(e.value)
    assert "attention over 4096 positions" in message and "bytes of HBM" in message
    assert str(CHIP.memory.hbm.capacity) in message
    assert f"attention takes at most {max_context(c.shape, CHIP)} positions" in message


def test_bad_contexts_and_mode(checkpoints):
    with pytest.raises(CompileError, match="context 6 must be a positive multiple of the array's 4 lanes"):
        compile_model(checkpoints["tiny-tied"], CHIP, context=6)
    with pytest.raises(CompileError, match="context 128 exceeds the model's max_position_embeddings 64"):
        compile_model(checkpoints["tiny-tied"], CHIP, context=128)
    with pytest.raises(CompileError, match="mode must be one of fused, unfused, looped"):
        compile_model(checkpoints["tiny-tied"], CHIP, mode="bogus", context=8)


@pytest.mark.parametrize("hidden, heads, padded", [
    # 30 / 3 heads = head_dim 10: 30 is not a multiple of the chip's 4 lanes, nor 10 of RoPE's 2 x 4.
    (30, 3, "hidden 30 -> 32, head_dim 10 -> 16"),
    # 36 / 3 heads = head_dim 12: a multiple of 4 lanes, but RoPE's half-heads of 6 values are not.
    (36, 3, "padding (zeros, invisible in results): head_dim 12 -> 16;"),
])
def test_shapes_the_lanes_cannot_take_are_padded(tmp_path, hidden, heads, padded):
    """tests/test_padding.py checks the results; here the summary names what was padded."""
    path = make_checkpoint(tmp_path / "odd", hidden_size=hidden, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=heads, num_key_value_heads=heads, vocab_size=32)
    assert padded in compile_model(path, CHIP, context=8).summary()


def test_input_too_large_for_a_pmu(checkpoints):
    tiny_pmus = dataclasses.replace(CHIP, name="tiny-pmus",
                                    array=dataclasses.replace(CHIP.array, pmu_bank_words=16))
    assert tiny_pmus.array.pmu_words == 64
    with pytest.raises(CompileError) as e:
        compile_model(checkpoints["wide-heads"], tiny_pmus, context=4)
    message = str(e.value)
    # A hidden-size vector, 128 words, against 64 words per PMU (a wider GEMV input is chunked: test_wide_gemv.py).
    assert "PMU" in message and "128 words" in message and "64 words" in message, message


def test_op_larger_than_the_array(checkpoints):
    one_pcu = dataclasses.replace(CHIP, name="1x2", array=dataclasses.replace(CHIP.array, rows=1, cols=2))
    with pytest.raises(CompileError, match=r"op L0\.norm1 \(rmsnorm\) does not fit the 1x2 array on its own"):
        compile_model(checkpoints["tiny-tied"], one_pcu, context=4)


def test_unsupported_model_type(tmp_path):
    path = make_checkpoint(tmp_path / "m", **SHAPES["tiny-tied"])
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "gemma"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="model_type = 'gemma' is not supported"):
        compile_model(path, CHIP, context=8)


def test_save_load_round_trip(compiled, prompts, tmp_path):
    c = compiled("gqa-untied")
    save(c, tmp_path / "model.rdu")
    back = load(tmp_path / "model.rdu")
    assert isinstance(back, CompiledModel)
    assert back.summary() == c.summary()
    assert {tp: len(ls) for tp, ls in back.buckets.items()} == {tp: len(ls) for tp, ls in c.buckets.items()}
    assert (back.mode, back.context, back.target, back.shape) == (c.mode, c.context, c.target, c.shape)
    assert back.image.keys() == c.image.keys()
    assert all(np.array_equal(back.image[k], c.image[k]) for k in c.image)
    # The loaded model runs and computes the same logits bit for bit.
    run = lambda m: asyncio.run(generate(ModelDevice(m.target), m, prompts["gqa-untied"][:3], max_new_tokens=0))
    assert run(back)["logits_sha"] == run(c)["logits_sha"]


def _rewrite(source, target, edit):
    """Copy program file ``source`` to ``target`` with ``edit(members)`` applied and a valid checksum:
    a crafted file that only the content checks can refuse."""
    with zipfile.ZipFile(source) as z:
        members = {name: z.read(name) for name in z.namelist()}
    edit(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        z.comment = b"0" * (len(FORMAT) + 72)
    body = out.getvalue()[:-(len(FORMAT) + 72)]
    target.write_bytes(body + f"{FORMAT} sha256={hashlib.sha256(body).hexdigest()}".encode())
    return target


@pytest.fixture(scope="module")
def program_file(compiled, tmp_path_factory):
    path = tmp_path_factory.mktemp("program") / "model.rdu"
    save(compiled("gqa-untied"), path)
    return path


def test_load_refuses_other_formats(program_file, tmp_path):
    other = tmp_path / "other.rdu"
    for data, problem in [(b"", "not an OpenRDU"), (b"\x80\x04}q\x00." * 20, "not an OpenRDU"),
                          (json.dumps({"format": FORMAT, "buckets": {}}).encode(), "not an OpenRDU"),
                          (program_file.read_bytes()[:-5] + b"fffff", "checksum mismatch")]:
        other.write_bytes(data)
        with pytest.raises(ProgramFormatError, match=f"{re.escape(str(other))}: {problem}"):
            load(other)
    # A plain zip that is not a program, with a valid-looking checksum.
    _rewrite(program_file, other, lambda m: m.update({"manifest.json": b"[]"}))
    with pytest.raises(ProgramFormatError, match="not a readable"):
        load(other)
    with pytest.raises(ProgramFormatError, match="no such file"):
        load(tmp_path / "missing.rdu")
    with pytest.raises(ProgramFormatError, match="a directory"):
        load(tmp_path)


def test_load_refuses_another_format_version(program_file, tmp_path):
    def version(members):
        manifest = json.loads(members["manifest.json"])
        manifest["version"] = VERSION + 1
        members["manifest.json"] = json.dumps(manifest).encode()

    crafted = _rewrite(program_file, tmp_path / "v2.rdu", version)
    with pytest.raises(ProgramFormatError, match=f"v2.rdu: format version {VERSION + 1}; this OpenRDU reads "
                                                 f"version {VERSION}"):
        load(crafted)
    # The same rewrite without the edit loads: it is the version that is refused.
    assert load(_rewrite(program_file, tmp_path / "same.rdu", lambda m: None)).summary() == load(program_file).summary()


def test_load_refuses_crafted_contents(program_file, tmp_path):
    """A file with valid checksums but other classes or a changed member is refused, never run."""
    def objects(edit):
        def apply(members):
            members["objects.json"] = edit(members["objects.json"])
            manifest = json.loads(members["manifest.json"])
            manifest["payload"]["objects.json"]["sha256"] = hashlib.sha256(members["objects.json"]).hexdigest()
            members["manifest.json"] = json.dumps(manifest).encode()
        return apply

    swap = objects(lambda b: b.replace(b'"sw.compiler.memory_map.MemoryMap"', b'"os._wrap_close"', 1))
    with pytest.raises(ProgramFormatError, match="'os._wrap_close' is not a class this file may hold"):
        load(_rewrite(program_file, tmp_path / "class.rdu", swap))
    changed = lambda m: m.update({"objects.json": m["objects.json"].replace(b'"fused"', b'"fusex"', 1)})
    with pytest.raises(ProgramFormatError, match="objects.json: SHA-256 differs from the manifest"):
        load(_rewrite(program_file, tmp_path / "member.rdu", changed))

    def huge(members):
        # An array header claiming terabytes: refused before numpy allocates them.
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<u4", "fortran_order": False,
                                                      "shape": (10_000_000_000_000,)})
        members["arrays/0.npy"] = header.getvalue() + bytes(64)
        manifest = json.loads(members["manifest.json"])
        manifest["payload"]["arrays/0.npy"]["sha256"] = hashlib.sha256(members["arrays/0.npy"]).hexdigest()
        members["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(ProgramFormatError, match=r"header \(.*shape \(10000000000000,\)\) does not match"):
        load(_rewrite(program_file, tmp_path / "huge.rdu", huge))


def test_load_refuses_fields_of_the_wrong_type(program_file, tmp_path):
    """A file with valid checksums whose fields hold the wrong types (written by ``dumps`` itself, so only the
    annotation check can refuse it) fails at load naming the field's path, not later in the runtime."""
    import copy

    from sw.compiler import program

    def first(m):
        return next(iter(m.buckets))

    def bad_bound(m):
        stream = m.buckets[first(m)][0].streams[0]
        nest = copy.copy(stream.nest)
        object.__setattr__(nest, "bounds", (str(nest.bounds[0]),) + nest.bounds[1:])
        object.__setattr__(stream, "nest", nest)

    name = lambda m: next(iter(m.image))
    cases = [
        (lambda m: m.buckets.update({first(m): "x"}), lambda m: rf"CompiledModel\.buckets\[{first(m)}\]: "
                                                                 r"expected list, got str"),
        (lambda m: m.buckets[first(m)][0].streams.__setitem__(0, "x"),
         lambda m: rf"CompiledModel\.buckets\[{first(m)}\]\[0\]\.streams\[0\]: expected Stream, got str"),
        (bad_bound, lambda m: rf"CompiledModel\.buckets\[{first(m)}\]\[0\]\.streams\[0\]\.nest\.bounds\[0\]: "
                              r"expected int, got str"),
        (lambda m: m.image.update({name(m): m.image[name(m)].tolist()}),
         lambda m: rf"CompiledModel\.image\[{re.escape(repr(name(m)))}\]: expected ndarray, got list"),
        (lambda m: m.image.update({name(m): m.image[name(m)].astype(np.float32)}),
         lambda m: rf"CompiledModel\.image\[{re.escape(repr(name(m)))}\]: expected an array of uint32, got one of "
                   r"float32"),
        (lambda m: setattr(m, "context", True), lambda m: r"CompiledModel\.context: expected int, got bool"),
        (lambda m: setattr(m.memory_map, "regions", []),
         lambda m: r"CompiledModel\.memory_map\.regions: expected dict, got list"),
        (lambda m: object.__setattr__(m.target, "name", None),
         lambda m: r"CompiledModel\.target\.name: expected str, got None"),
    ]
    for i, (edit, problem) in enumerate(cases):
        model = load(program_file)
        where = problem(model)
        edit(model)
        bad = tmp_path / f"bad{i}.rdu"
        bad.write_bytes(program.dumps(model))
        with pytest.raises(ProgramFormatError, match=f"^{re.escape(str(bad))}: {where}$"):
            load(bad)


def test_program_file_classes_have_precise_annotations():
    """Every field a program file may hold resolves to an annotation the loader checks; the loose ones are
    only those whose values really vary (an op's attrs) or that never reach a file (a Checkpoint's Path)."""
    import enum
    import typing

    from sw.compiler import artifact
    from sw.compiler.program import _storable

    loose = set()
    for cls in _storable():
        if issubclass(cls, enum.Enum):
            continue
        for name, hint in artifact._hints(cls).items():
            if hint in (object, typing.Any, dict, list, tuple):
                loose.add(f"{cls.__name__}.{name}")
    assert loose == {"Checkpoint.weights", "Checkpoint.weight_dtypes"}


def test_flipped_or_truncated_program_files_are_refused(program_file, tmp_path):
    """Random byte flips anywhere in the file and truncations at any length never load."""
    data = program_file.read_bytes()
    rng = np.random.default_rng(12)
    bad = tmp_path / "bad.rdu"
    cases = [(int(at), int(rng.integers(1, 256))) for at in rng.integers(0, len(data), 150)]
    cases += [(int(at), 1 << int(rng.integers(0, 8))) for at in rng.integers(len(data) - 200, len(data), 50)]
    for at, mask in cases:
        flipped = bytearray(data)
        flipped[at] ^= mask
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ProgramFormatError, match="bad.rdu: "):
            load(bad)
    for length in [0, 1, 100, len(data) // 2, len(data) - 1, *rng.integers(0, len(data), 20)]:
        bad.write_bytes(data[:int(length)])
        with pytest.raises(ProgramFormatError, match="bad.rdu: "):
            load(bad)


def test_the_passes_print_their_results(checkpoints):
    """``openrdu compile --ir``: the graph, then each pass's result, from the same compile."""
    from sw.compiler.decode import decode_graph

    texts = []
    c = compile_model(checkpoints["gqa-untied"], CHIP, context=8, trace=texts.append)
    heads = [text.splitlines()[0].split(" (")[0].split(":")[0] for text in texts]
    assert heads == ["== checkpoint", "== graph", "== chip ops", "== kernels", "== memory map", "== program"]
    assert texts[1] == f"== graph\n{decode_graph(c.shape, context=8, weight_dtype='bf16')}"
    assert all(f"  {op}" in texts[2] for launch in c.launches() for op in launch.ops)
    assert texts[3].count("\n") == len(c.launches()) and texts[4] == f"== memory map\n{c.memory_map.table()}"


def test_cache_reuses_entries_and_rebuilds_a_corrupt_one(checkpoints, tmp_path, monkeypatch, capsys):
    from cli import compile as compile_cli

    monkeypatch.setattr(compile_cli, "CACHE", tmp_path / "cache")
    first, path = compile_cli.cached_compile(checkpoints["gqa-untied"], CHIP, "fused", 8)
    again, same = compile_cli.cached_compile(checkpoints["gqa-untied"], CHIP, "fused", 8)
    assert same == path and path.suffix == ".rdu" and again.summary() == first.summary()
    assert capsys.readouterr().err == ""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))
    rebuilt, same = compile_cli.cached_compile(checkpoints["gqa-untied"], CHIP, "fused", 8)
    err = capsys.readouterr().err
    assert same == path and err.count("\n") == 1 and "compiling again" in err and str(path) in err, err
    assert "checksum mismatch" in err
    equal = lambda a, b: a.memory_map.table() == b.memory_map.table() and a.image.keys() == b.image.keys() and \
        all(np.array_equal(a.image[k], b.image[k]) for k in a.image)
    assert equal(rebuilt, first) and equal(load(path), first)


def test_cache_key_reads_only_the_checkpoint_files_it_uses(tmp_path):
    import os

    from cli.compile import cache_key

    path = make_checkpoint(tmp_path / "m", **SHAPES["tiny-tied"])
    key = cache_key(path, CHIP, "fused", 8)
    # Unrelated files, even a FIFO that would block a reader, are neither read nor part of the key.
    os.mkfifo(path / "notes.fifo")
    (path / "README.md").write_text("hello")
    assert cache_key(path, CHIP, "fused", 8) == key
    assert cache_key(path, CHIP, "unfused", 8) != key and cache_key(path, CHIP, "fused", 4) != key
    (path / "config.json").write_text((path / "config.json").read_text() + "\n")
    assert cache_key(path, CHIP, "fused", 8) != key


def test_output_path_is_checked_before_compiling(checkpoints, tmp_path, monkeypatch):
    import argparse

    from cli import compile as compile_cli

    def never(*args, **kwargs):
        raise AssertionError("compiled before the output path was checked")

    monkeypatch.setattr(compile_cli, "compile_model", never)
    for output, problem in [(tmp_path / "missing" / "m.rdu", "no folder"), (tmp_path, "it is a folder")]:
        args = argparse.Namespace(checkpoint=str(checkpoints["tiny-tied"]), output=str(output), target="chip",
                                  unfused=False, context=8, memory_map=False, json=None, ir=False)
        with pytest.raises(SystemExit, match=f"openrdu compile: error: cannot write {re.escape(str(output))}: "
                                             f"{problem}"):
            compile_cli.main(args)


@pytest.mark.parametrize("target", ["chip", "4x8"])
def test_summary(compiled, target):
    c = compiled("tiny-tied", target)
    text = c.summary()
    for word in ("kernels", "PCUs", "PMUs", "bytes", "cycles"):
        assert word in text, word
    assert f"{len(c.launches())} kernels per decode step" in text
    assert TARGETS[target].describe() in text
    # One row per kernel.
    assert sum(1 for line in text.splitlines() if re.match(r"k\d+ ", line)) == len(c.launches())


def test_large_target_is_the_4x8_array():
    assert (LARGE.array.rows, LARGE.array.cols, LARGE.array.lanes) == (4, 8, 8)
    assert (CHIP.array.rows, CHIP.array.cols, CHIP.array.lanes) == (2, 4, 4)
