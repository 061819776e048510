"""``--weights-dtype auto|bf16|fp32``: how a checkpoint's weights stream from HBM, and memory-lean loading.

fp32 and fp16 checkpoints written by transformers' ``save_pretrained`` are compiled under each policy and
decoded on the fast model: greedy tokens equal ``generate``'s for 16 tokens and every step's logits are
within 1e-4 of the largest |logit| of transformers' float32 forward, for ``bf16`` of transformers run on
the same weights rounded to bf16 by torch. ``bf16`` halves the matrices' HBM bytes and leaves a bf16
checkpoint bit for bit as it was; the loader holds one tensor at a time.
"""

import asyncio
import weakref

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from sw.compiler import checkpoint as checkpoint_module  # noqa: E402
from sw.compiler.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from sw.compiler.compile import compile_model  # noqa: E402
from sw.compiler.layout import round_bf16  # noqa: E402
from sw.compiler.program import load, save  # noqa: E402
from sw.runtime.decode import generate  # noqa: E402
from sw.runtime.device import ModelDevice  # noqa: E402
from sw.target import CHIP  # noqa: E402
from tests.llama_checkpoints import (SHAPES, make_checkpoint, rounded_checkpoint, transformers_greedy,  # noqa: E402
                                     transformers_logits)

RTOL = 1e-4                         # as tests/test_variants.py: of the largest |logit|
NEW_TOKENS = 16
PROMPT = [5, 17, 42, 8]
CONTEXT = 32
SHAPE = dict(SHAPES["gqa-untied"], eos_token_id=None, bos_token_id=None, pad_token_id=None)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
TEXT = {("fp32", "auto"): "fp32 streamed as fp32 words (not every value is a bf16 value; --weights-dtype bf16 "
                          "rounds them)",
        ("fp32", "bf16"): "fp32 rounded to bf16 (--weights-dtype bf16)",
        ("fp32", "fp32"): "fp32 streamed as fp32 words (--weights-dtype fp32)",
        ("fp16", "auto"): "fp16 streamed as fp32 words (not every value is a bf16 value; --weights-dtype bf16 "
                          "rounds them)",
        ("fp16", "bf16"): "fp16 rounded to bf16 (--weights-dtype bf16)",
        ("fp16", "fp32"): "fp16 streamed as fp32 words (--weights-dtype fp32)"}


def matrix_bytes(compiled):
    """HBM bytes of the weight matrices (projections, embedding, lm_head): every weight region but the gains."""
    return sum(r.nbytes for r in compiled.memory_map.regions.values() if r.what == "weight" and "norm" not in r.name)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    out = {name: make_checkpoint(root / name, dtype=dtype, **SHAPE) for name, dtype in DTYPES.items()}
    out.update({f"{name}-rounded": rounded_checkpoint(out[name], root / f"{name}-rounded") for name in DTYPES})
    return out


@pytest.fixture(scope="module", params=[(d, p) for d in DTYPES for p in ("auto", "bf16", "fp32")],
                ids=lambda c: "-".join(c))
def decoded(request, folders):
    dtype, policy = request.param
    compiled = compile_model(folders[dtype], CHIP, context=CONTEXT, weights_dtype=policy)
    result = asyncio.run(generate(ModelDevice(CHIP), compiled, PROMPT, max_new_tokens=NEW_TOKENS,
                                  stop_at_eos=False, keep_logits=True))
    # Under bf16 the chip computes with the matrices rounded; transformers runs on them rounded by torch.
    reference = folders[f"{dtype}-rounded" if policy == "bf16" else dtype]
    return dtype, policy, compiled, result, reference


def test_greedy_tokens_equal_generate(decoded):
    dtype, policy, compiled, result, reference = decoded
    assert result["tokens"] == transformers_greedy(reference, PROMPT, NEW_TOKENS)


def test_teacher_forced_logits(decoded):
    dtype, policy, compiled, result, reference = decoded
    theirs = transformers_logits(reference, PROMPT + result["tokens"][:-1])
    scale = float(np.abs(theirs).max())
    err = float(np.abs(result["logits"] - theirs).max())
    assert err <= RTOL * scale, f"{dtype}/{policy}: max |error| {err:.3g} > {RTOL:g} x max |logit| {scale:.3g}"


def test_summary_and_program_file_name_the_policy(decoded, tmp_path):
    dtype, policy, compiled, result, reference = decoded
    assert compiled.weights_dtype == policy and f"weights: {TEXT[dtype, policy]}" in compiled.summary().splitlines()
    save(compiled, tmp_path / "model.rdu")
    back = load(tmp_path / "model.rdu")
    assert (back.weights_dtype, back.weights) == (policy, compiled.weights)


def test_bf16_halves_the_matrices_hbm_bytes(folders):
    sizes = {p: matrix_bytes(compile_model(folders["fp32"], CHIP, context=8, weights_dtype=p))
             for p in ("auto", "bf16", "fp32")}
    assert sizes["auto"] == sizes["fp32"] == 2 * sizes["bf16"]


def test_bf16_rounding_is_torchs(folders):
    """The fp32 checkpoint under bf16 lays out exactly the image of the checkpoint torch rounded, under auto."""
    ours = compile_model(folders["fp32"], CHIP, context=8, weights_dtype="bf16")
    torchs = compile_model(folders["fp32-rounded"], CHIP, context=8)
    assert torchs.weights == "fp32 holding bf16 values only, streamed as bf16"
    assert ours.image.keys() == torchs.image.keys()
    assert all(np.array_equal(ours.image[r], torchs.image[r]) for r in ours.image)


def test_round_bf16_ties_to_even_like_torch():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(4096).astype(np.float32) * np.float32(10.0) ** rng.integers(-30, 30, 4096)
    # Exactly halfway between two bf16 values, odd and even kept halves, normal exponents only.
    ties = rng.integers(1, 0xFE, 512, dtype=np.uint32) << 23 | rng.integers(0, 128, 512, dtype=np.uint32) << 16 | 0x8000
    x = np.concatenate([x, ties.view(np.float32), -ties.view(np.float32), [0.0, -0.0, 65504.0, 3.3e38]])
    x = x.astype(np.float32)
    assert np.array_equal(round_bf16(x).view(np.uint32),
                          torch.from_numpy(x).to(torch.bfloat16).float().numpy().view(np.uint32))
    assert round_bf16(np.float32([1e-40]))[0] == 0           # a subnormal is zero to the chip's arithmetic


def test_bf16_checkpoint_is_unchanged_bit_for_bit(tmp_path):
    path = make_checkpoint(tmp_path / "bf16", **SHAPE)
    auto, bf16, fp32 = (compile_model(path, CHIP, context=8, weights_dtype=p) for p in ("auto", "bf16", "fp32"))
    assert auto.weights == bf16.weights == "bf16 as stored"
    assert fp32.weights == "bf16 streamed as fp32 words (--weights-dtype fp32)"
    assert auto.image.keys() == bf16.image.keys()
    assert all(np.array_equal(auto.image[r], bf16.image[r]) for r in auto.image)
    assert matrix_bytes(fp32) == 2 * matrix_bytes(auto)


def test_values_past_bf16_range_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    path = make_checkpoint(tmp_path / "big", dtype=torch.float32, **SHAPE)
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight"][0, 0] = 3.4e38
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    compile_model(path, CHIP, context=8, weights_dtype="fp32")
    with pytest.raises(CheckpointError, match=r"weight 'model.layers.0.mlp.up_proj.weight' holds values beyond "
                                              r"bf16's largest"):
        compile_model(path, CHIP, context=8, weights_dtype="bf16")


def test_tensors_are_read_one_at_a_time(tmp_path, monkeypatch):
    """Checking and compiling a checkpoint never holds more than a stacked pair of its matrices at once (norm
    gains stay alive as the image's fp32 words, which view them)."""
    path = make_checkpoint(tmp_path / "m", dtype=torch.float32, **SHAPES["tiny-tied"])
    refs, reads, most = [], [], [0]
    read = checkpoint_module.read_tensor

    def counted(file, name):
        array, dtype = read(file, name)
        refs.append(weakref.ref(array) if array.ndim == 2 else lambda: None)
        reads.append(name)
        most[0] = max(most[0], sum(r() is not None for r in refs))
        return array, dtype

    monkeypatch.setattr(checkpoint_module, "read_tensor", counted)
    ckpt = load_checkpoint(path)
    assert len(reads) == len(ckpt.weights) == 20 and most[0] == 1
    compile_model(ckpt, CHIP, context=8, weights_dtype="bf16")
    assert len(reads) >= 40 and most[0] <= 2          # q and k stack into one region


def test_the_flag_reaches_the_summary_the_program_and_the_cache_key(folders, tmp_path, capsys):
    from cli.compile import cache_key
    from cli.main import main

    main(["compile", str(folders["fp16"]), "-o", str(tmp_path / "m.rdu"), "--context", "8", "--weights-dtype", "bf16"])
    assert f"weights: {TEXT['fp16', 'bf16']}" in capsys.readouterr().out.splitlines()
    assert load(tmp_path / "m.rdu").weights_dtype == "bf16"
    keys = {cache_key(folders["fp16"], CHIP, "fused", 8, p) for p in ("auto", "bf16", "fp32")}
    assert len(keys) == 3 and cache_key(folders["fp16"], CHIP, "fused", 8) in keys
    with pytest.raises(SystemExit):
        main(["compile", str(folders["fp16"]), "-o", str(tmp_path / "m.rdu"), "--weights-dtype", "fp16"])
    assert "argument --weights-dtype: invalid choice: 'fp16'" in capsys.readouterr().err
