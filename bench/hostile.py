"""Hostile and malformed input to ``openrdu compile``, ``openrdu decode`` and the bitstream API.

Each case edits a copy of a tiny valid checkpoint (1 layer, d=16, a byte-level tokenizer of 256 tokens)
or passes a command-line value, runs the command in-process with a deadline, and sorts what came back:

- ``refused``: exit status 1 and one line, ``openrdu compile: error: ...`` or ``openrdu decode: error: ...``;
- ``usage``: argparse's exit status 2 with its ``openrdu decode: error: argument ...`` line;
- ``ok``: exit status 0 (a case that expects it also checks the result);
- ``crash``: any other exception (a traceback: a bug); ``hang``: past the deadline;
- ``wrong``: anything else (two lines, exit 0 where a refusal was due, a different result).

:data:`CASES` is the table tests/test_hostile_inputs.py runs in ``make test``; :func:`generated_cases`
adds systematic and seeded-random ones for ``python -m bench hostile``, which writes
``build/bench/hostile.json`` with counts by kind and outcome.
"""

import contextlib
import io
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cosim.harness import REPO

OUT = REPO / "build" / "bench" / "hostile.json"

CONFIG = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=256, hidden_size=16,
              intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
              max_position_embeddings=32, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
              hidden_act="silu", bos_token_id=None, eos_token_id=None)
IDS = "1,2,3"
DECODE = ["decode", "--checkpoint", "{ckpt}", "--max-new-tokens", "3", "--backend", "model", "--context", "16"]


def write_checkpoint(path, *, dtype="bfloat16", shards=1, seed=0):
    """A tiny random Llama checkpoint with a byte-level tokenizer at ``path``; ``shards`` > 1 writes an index."""
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from sw.compiler.checkpoint import expected_weights, read_shape

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(CONFIG))
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in expected_weights(read_shape(CONFIG)).items():
        values = rng.normal(0, 0.3, shape) + (1.0 if "norm" in name else 0.0)
        # Rounded to bf16 first, so a wider dtype holds the same values and decodes to the same tokens.
        tensors[name] = torch.tensor(values, dtype=torch.float32).to(torch.bfloat16).to(getattr(torch, dtype))
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for k in range(shards):
            file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[k::shards]}
            save_file(part, str(path / file), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, file))
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.save(str(path / "tokenizer.json"))
    return path


@dataclass
class Case:
    """One hostile input: ``edit(folder)`` changes a copy of the checkpoint, then ``argv`` runs.

    ``expect`` is the outcome due and ``message`` a substring of its error line; for ``ok`` with
    ``same_tokens`` the tokens must equal the clean checkpoint's, and ``check(stdout)`` must hold.
    """

    kind: str
    name: str
    edit: object = None
    argv: list = field(default_factory=lambda: DECODE + ["--prompt-ids", IDS, "--json"])
    expect: str = "refused"
    message: str = ""
    same_tokens: bool = False
    check: object = None


def _config(**changes):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        for key, value in changes.items():
            if value is _DROP:
                config.pop(key)
            else:
                config[key] = value
        (folder / "config.json").write_text(json.dumps(config))
    return edit


_DROP = object()


def _write(name, data):
    def edit(folder):
        target = folder / name
        if target.is_symlink() or target.exists():
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        target.write_bytes(data if isinstance(data, bytes) else data.encode())
    return edit


def _replace(name, how):
    """Replace file ``name`` with something that is not a regular file: fifo, dir, loop, dangling, device."""
    def edit(folder):
        target = folder / name
        target.unlink(missing_ok=True)
        if how == "fifo":
            os.mkfifo(target)
        elif how == "dir":
            target.mkdir()
        elif how == "loop":
            os.symlink(target.name + ".b", target)
            os.symlink(target.name, folder / (target.name + ".b"))
        elif how == "dangling":
            os.symlink("nowhere", target)
        elif how == "device":
            os.symlink("/dev/zero", target)
    return edit


def _tensor(name, dtype=None, shape=None, value=None, file="model.safetensors", extra=None):
    """Rewrite one tensor of the single-file checkpoint (dtype, shape or a value), or add ``extra`` ones."""
    def edit(folder):
        import torch
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(folder / "model.safetensors"))
        if name is not None:
            t = tensors[name]
            if shape is not None:
                t = torch.zeros(shape, dtype=t.dtype)
            if value is not None:
                t = t.float().clone()
                t.view(-1)[0] = value
            if dtype is not None:
                t = (t * 10).to(getattr(torch, dtype)) if dtype != "bool" else t > 0
            tensors[name] = t
        if extra is None:
            save_file(tensors, str(folder / file), metadata={"format": "pt"})
        else:
            save_file({k: tensors[k] for k in extra}, str(folder / file), metadata={"format": "pt"})
    return edit


def _drop_tensor(name):
    def edit(folder):
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(folder / "model.safetensors"))
        tensors.pop(name)
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return edit


def _truncate(name, keep):
    """Cut file ``name`` to ``keep`` bytes, or to that fraction of its length for a float ``keep`` < 1."""
    def edit(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:int(keep * len(data)) if isinstance(keep, float) else keep])
    return edit


def _index(weight_map_edit=None, text=None):
    """Turn the checkpoint into a 2-shard one with an index, then edit the index's weight map or text."""
    def edit(folder):
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(folder / "model.safetensors"))
        (folder / "model.safetensors").unlink()
        names, weight_map = sorted(tensors), {}
        for k in range(2):
            file = f"model-{k + 1:05d}-of-00002.safetensors"
            save_file({n: tensors[n] for n in names[k::2]}, str(folder / file), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(names[k::2], file))
        if weight_map_edit:
            weight_map_edit(weight_map)
        index = folder / "model.safetensors.index.json"
        index.write_text(text if text is not None else json.dumps({"metadata": {}, "weight_map": weight_map}))
    return edit


def _add_tensor(name):
    def edit(folder):
        import torch
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(folder / "model.safetensors"))
        tensors[name] = torch.zeros(4, dtype=torch.bfloat16)
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return edit


def _big_config(folder):
    (folder / "config.json").write_text(json.dumps({**CONFIG, "padding": "x" * (16 << 20)}))


def _escaped(stdout):
    return "\x1b" not in stdout and "\\x1b[31m" in stdout


def _deep(n):
    return '{"vocab_size": ' + "[" * n + "]" * n + "}"


_Q, _D = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.input_layernorm.weight"
_PROMPT = DECODE + ["--prompt", "ab"]
_COMPILE = ["compile", "{ckpt}", "-o", "{tmp}/out.program", "--context", "16"]


def _arg(*values):
    return DECODE + list(values)


CASES = [
    # config.json: wrong types, ranges, relations, and files that are not JSON objects
    Case("config", "head_dim float", _config(head_dim=32.0), message="head_dim = 32.0: expected"),
    Case("config", "rms_norm_eps string", _config(rms_norm_eps="abc"), message="rms_norm_eps = 'abc'"),
    Case("config", "rope_theta string", _config(rope_theta="x"), message="rope_theta = 'x'"),
    Case("config", "rope_parameters string", _config(rope_parameters="abc"), message="rope_parameters = 'abc'"),
    Case("config", "rope_theta infinite", _write("config.json", json.dumps(CONFIG)[:-1] + ', "rope_parameters": '
                                                 '{"rope_theta": 1e400}}'), message="rope_parameters.rope_theta"),
    Case("config", "integer of 5000 digits", _write("config.json", '{"vocab_size": ' + "7" * 5000 + "}"),
         message="not valid JSON (Exceeds the limit"),
    Case("config", "100000-deep nesting", _write("config.json", _deep(100_000)), message="nested too deeply"),
    Case("config", "num_key_value_heads 0", _config(num_key_value_heads=0), message="num_key_value_heads = 0"),
    Case("config", "head_dim 0", _config(head_dim=0), message="head_dim = 0"),
    Case("config", "tie_word_embeddings string", _config(tie_word_embeddings="false"),
         message="tie_word_embeddings = 'false': expected true or false"),
    Case("config", "eos_token_id string", _config(eos_token_id="abc"), message="eos_token_id = 'abc'"),
    Case("config", "eos_token_id list with a string", _config(eos_token_id=[1, "x"]), message="eos_token_id"),
    Case("config", "eos_token_id outside the vocabulary", _config(eos_token_id=100_000),
         message="outside the vocabulary"),
    Case("config", "rms_norm_eps NaN", _write("config.json", json.dumps(CONFIG)[:-1] + ', "rms_norm_eps": NaN}'),
         message="NaN is not a JSON value"),
    Case("config", "rms_norm_eps negative", _config(rms_norm_eps=-1e-5), message="rms_norm_eps = -1e-05"),
    Case("config", "rope_theta 0", _config(rope_theta=0), message="rope_theta = 0"),
    Case("config", "architectures string", _config(architectures="LlamaForCausalLM"),
         message="architectures = 'LlamaForCausalLM': expected a list"),
    Case("config", "num_hidden_layers 1000000", _config(num_hidden_layers=1_000_000),
         message="num_hidden_layers = 1000000"),
    Case("config", "vocab_size true", _config(vocab_size=True), message="vocab_size = True"),
    Case("config", "hidden_size string", _config(hidden_size="16"), message="hidden_size = '16'"),
    Case("config", "intermediate_size float", _config(intermediate_size=1.5e3), message="intermediate_size"),
    Case("config", "a list", _write("config.json", "[]"), message="expected a JSON object"),
    Case("config", "repeated key", _write("config.json", json.dumps(CONFIG)[:-1] + ', "head_dim": 16}'),
         message="appears twice"),
    Case("config", "not UTF-8", _write("config.json", b'{"model_type": "\xff"}'), message="not UTF-8"),
    Case("config", "empty", _write("config.json", ""), message="not valid JSON"),
    Case("config", "missing vocab_size", _config(vocab_size=_DROP), message="missing 'vocab_size'"),
    Case("config", "longrope rope", _config(rope_scaling={"rope_type": "longrope", "factor": 8.0}),
         message="rope_scaling.rope_type = 'longrope' is not supported"),
    Case("config", "larger than any target", _config(vocab_size=1 << 21, hidden_size=1 << 16, head_dim=None,
                                                     num_attention_heads=1024, num_key_value_heads=1024),
         message="do not fit the memory of any target"),
    Case("config", "odd head_dim", _config(hidden_size=14, head_dim=7), message="must be even"),
    Case("config", "heads do not divide", _config(num_key_value_heads=3, num_attention_heads=4, head_dim=4),
         message="must divide"),
    Case("config", "over the size limit", _big_config, message="more than a config.json"),
    Case("config", "via compile: head_dim float", _config(head_dim=8.0), argv=_COMPILE,
         message="openrdu compile: error:"),
    # weights: dtypes, duplicates, shards, corrupt files
    Case("weights", "projection as int8", _tensor(_Q, dtype="int8"), message="stored as I8"),
    Case("weights", "norm as bool", _tensor(_D, dtype="bool"), message="stored as BOOL"),
    Case("weights", "projection as float8", _tensor(_Q, dtype="float8_e4m3fn"), message="stored as F8_E4M3"),
    Case("weights", "tensor defined twice", _tensor(_D, file="extra.safetensors", extra=[_D]),
         message="is defined twice"),
    Case("weights", "truncated", _truncate("model.safetensors", 100), message="cannot read the weights"),
    Case("weights", "garbage header", _write("model.safetensors", b"\x10\0\0\0\0\0\0\0{garbage"),
         message="cannot read the weights"),
    Case("weights", "wrong shape", _tensor(_Q, shape=(8, 16)), message="has shape (8, 16)"),
    Case("weights", "NaN value", _tensor(_Q, dtype="float32", value=float("nan")), message="NaN or infinity"),
    Case("weights", "unknown tensor", _add_tensor("model.layers.0.self_attn.q_proj.bias"), message="does not use"),
    Case("weights", "missing tensor", _drop_tensor(_Q), message=f"weight {_Q!r} is missing"),
    Case("weights", "index names a missing shard", _index(text='{"weight_map": {"a": "gone.safetensors"}}'),
         message="which is not in"),
    Case("weights", "index shard outside the folder",
         _index(weight_map_edit=lambda m: m.update({_Q: "../model-00001-of-00002.safetensors"})),
         message="is not the name of a *.safetensors file"),
    Case("weights", "index not JSON", _index(text="{"), message="not valid JSON"),
    Case("weights", "index places a tensor in the wrong shard",
         _index(weight_map_edit=lambda m: m.update({_Q: next(f for f in m.values() if f != m[_Q])})),
         message="which the index places in"),
    Case("weights", "float64 weights", lambda folder: write_checkpoint(folder, dtype="float64"), expect="ok",
         same_tokens=True),
    Case("weights", "sharded with an index", lambda folder: _index()(folder), expect="ok", same_tokens=True),
    # files that are not regular files
    Case("files", "weights a FIFO", _replace("model.safetensors", "fifo"), message="a FIFO, not a regular file"),
    Case("files", "weights a directory", _replace("model.safetensors", "dir"), message="a directory"),
    Case("files", "weights a symlink loop", _replace("model.safetensors", "loop"), message="a symlink loop"),
    Case("files", "config a symlink loop", _replace("config.json", "loop"), message="a symlink loop"),
    Case("files", "config a dangling symlink", _replace("config.json", "dangling"), message="does not exist"),
    Case("files", "config a device", _replace("config.json", "device"), message="a character device"),
    Case("files", "checkpoint a file", argv=_arg("--prompt-ids", IDS, "--checkpoint", "{ckpt}/config.json"),
         message="no such checkpoint folder"),
    # tokenizer files (--prompt loads the tokenizer; --prompt-ids never does)
    Case("tokenizer", "truncated", _truncate("tokenizer.json", 50), argv=_PROMPT, message="not valid JSON"),
    Case("tokenizer", "empty", _write("tokenizer.json", ""), argv=_PROMPT, message="not valid JSON"),
    Case("tokenizer", "{}", _write("tokenizer.json", "{}"), argv=_PROMPT, message="not a tokenizer"),
    Case("tokenizer", "unknown model", _write("tokenizer.json", '{"model": {"type": "Nonsense"}}'), argv=_PROMPT,
         message="cannot load the tokenizer"),
    Case("tokenizer", "corrupt tokenizer_config.json", _write("tokenizer_config.json", '{"model_max'),
         argv=_PROMPT, message="tokenizer_config.json: not valid JSON"),
    Case("tokenizer", "tokenizer a FIFO", _replace("tokenizer.json", "fifo"), argv=_PROMPT, message="a FIFO"),
    Case("tokenizer", "broken, with --prompt-ids", _write("tokenizer.json", "{"), expect="ok", same_tokens=True),
    Case("tokenizer", "control characters escaped", argv=DECODE + ["--prompt", "a\x1b[31mb"], expect="ok",
         check=_escaped),
    # command-line values
    Case("argv", "ids with empty items", argv=_arg("--prompt-ids", ",,,0,,449,,"), expect="usage",
         message="argument --prompt-ids"),
    Case("argv", "ids in Arabic-Indic digits", argv=_arg("--prompt-ids", "\u0663"), expect="usage"),
    Case("argv", "ids with a space", argv=_arg("--prompt-ids", "1, 2"), expect="usage"),
    Case("argv", "ids empty", argv=_arg("--prompt-ids", ""), expect="usage"),
    Case("argv", "ids in exponent form", argv=_arg("--prompt-ids", "1e3"), expect="usage"),
    Case("argv", "id of 10 digits", argv=_arg("--prompt-ids", "1234567890"), expect="usage"),
    Case("argv", "id outside the vocabulary", argv=_arg("--prompt-ids", "999"), message="outside the vocabulary"),
    Case("argv", "seed -1", argv=_arg("--prompt-ids", IDS, "--seed", "-1"), expect="usage", message="--seed"),
    Case("argv", "seed 2**32", argv=_arg("--prompt-ids", IDS, "--seed", str(1 << 32)), expect="usage"),
    Case("argv", "seed 1.5", argv=_arg("--prompt-ids", IDS, "--seed", "1.5"), expect="usage"),
    Case("argv", "temperature nan", argv=_arg("--prompt-ids", IDS, "--temperature", "nan"), expect="usage"),
    Case("argv", "temperature inf", argv=_arg("--prompt-ids", IDS, "--temperature", "inf"), expect="usage"),
    Case("argv", "temperature -1", argv=_arg("--prompt-ids", IDS, "--temperature", "-1"), expect="usage"),
    Case("argv", "top-k without temperature", argv=_arg("--prompt-ids", IDS, "--top-k", "5"), expect="usage",
         message="needs --temperature > 0"),
    Case("argv", "top-k -1", argv=_arg("--prompt-ids", IDS, "--top-k", "-1", "--temperature", "1"),
         expect="usage"),
    Case("argv", "max-new-tokens 0", argv=_arg("--prompt-ids", IDS, "--max-new-tokens", "0"), expect="usage"),
    Case("argv", "prompt not UTF-8", argv=_arg("--prompt", "a\udcffb"), expect="usage", message="not valid UTF-8"),
    Case("argv", "past the context", argv=_arg("--prompt-ids", IDS, "--max-new-tokens", "100"),
         message="compiled for a context of 16"),
]


class Hang(BaseException):
    """A case ran past its deadline (a BaseException, so that no ``except Exception`` swallows it)."""


@contextlib.contextmanager
def deadline(seconds):
    def expire(signum, frame):
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(argv, timeout=120):
    """``openrdu ARGV`` in this process: (exit status, stdout, stderr); other exceptions propagate."""
    from cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with deadline(timeout), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv) or 0
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
            if isinstance(e.code, str):
                err.write(e.code + "\n")
    return status, out.getvalue(), err.getvalue()


def outcome(case, status, stdout, stderr, base_tokens=None):
    """(outcome, detail) of a case's run: see the module docstring."""
    lines = stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    if status == 1 and len(lines) == 1 and last.startswith(("openrdu compile: error: ", "openrdu decode: error: ")) \
            and "Traceback" not in stderr:
        got = "refused"
    elif status == 2 and last.startswith("openrdu decode: error: argument ") and "Traceback" not in stderr:
        got = "usage"
    elif status == 0:
        got = "ok"
        if case.same_tokens and json.loads(stdout)["tokens"] != base_tokens:
            return "wrong", f"tokens {json.loads(stdout)['tokens']}, the clean checkpoint gives {base_tokens}"
        if case.check and not case.check(stdout):
            return "wrong", f"output fails its check: {stdout[:200]!r}"
    else:
        return "wrong", f"exit status {status}, stderr {stderr[-300:]!r}"
    if got == case.expect and case.message and case.message not in last:
        return "wrong", f"{last!r} does not say {case.message!r}"
    return got, last


def run_case(case, base, work, base_tokens=None, timeout=120, catch=False):
    """Run ``case`` on a fresh copy of the checkpoint at ``base`` inside ``work``; returns (outcome, detail)."""
    folder = work / "ckpt"
    if folder.exists() or folder.is_symlink():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(base, folder)
    if case.edit:
        case.edit(folder)
    argv = [a.replace("{ckpt}", str(folder)).replace("{tmp}", str(work)) for a in case.argv]
    try:
        status, stdout, stderr = run_cli(argv, timeout)
    except Hang as e:
        return "hang", str(e)
    except Exception as e:  # noqa: BLE001  (the bench counts crashes; the test lets them raise)
        if not catch:
            raise
        return "crash", f"{type(e).__name__}: {e}"[:300]
    return outcome(case, status, stdout, stderr, base_tokens)


def reference_tokens(base):
    status, stdout, stderr = run_cli([a.replace("{ckpt}", str(base)) for a in DECODE + ["--prompt-ids", IDS,
                                                                                          "--json"]])
    assert status == 0, stderr
    return json.loads(stdout)["tokens"]


def generated_cases(seed=0):
    """More cases of the same kinds: every checked config field with values of the wrong type or range,
    every weight with the dtypes the compiler refuses, truncated and bit-flipped weight headers and
    tokenizers, and seeded random command-line values."""
    rng = random.Random(seed)
    bad = {"string": "x", "float": 2.5, "whole float": 8.0, "bool": True, "list": [1], "object": {"a": 1},
           "negative": -3, "zero": 0, "huge": 1 << 40}
    valid = {("eos_token_id", "list"), ("eos_token_id", "zero"), ("bos_token_id", "zero"),
             ("rope_parameters", "object"), ("rope_theta", "float"), ("rope_theta", "whole float"),
             ("tie_word_embeddings", "bool")}
    cases = []
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                "tie_word_embeddings", "eos_token_id", "bos_token_id", "attention_bias", "rope_parameters",
                "architectures", "model_type", "hidden_act"):
        for what, value in bad.items():
            if (key, what) not in valid:
                cases.append(Case("config", f"{key} {what}", _config(**{key: value}), message=key))
    for name in sorted(_expected_names()):
        for dtype in ("int8", "int32", "int64", "uint8", "bool"):
            cases.append(Case("weights", f"{name} as {dtype}", _tensor(name, dtype=dtype), message="stored as"))
        cases.append(Case("weights", f"{name} defined twice", _tensor(name, file="zz.safetensors", extra=[name]),
                          message="defined twice"))
    for k in range(20):
        keep = round(rng.random() * 0.999, 4)
        cases.append(Case("weights", f"truncated to {keep:.1%}", _truncate("model.safetensors", keep)))
    for k in range(20):
        cut = round(rng.random() * 0.999, 4)
        cases.append(Case("tokenizer", f"tokenizer.json truncated to {cut:.1%}", _truncate("tokenizer.json", cut),
                          argv=_PROMPT))
    alphabet = "0123456789,,- x\u0663\u00b2+_.e\x00"
    for k in range(40):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 8)))
        valid = text != "" and all(part.isdigit() and part.isascii() and len(part) <= 9
                                   for part in text.split(","))
        if valid:
            continue
        cases.append(Case("argv", f"ids {text!r}", argv=_arg("--prompt-ids", text), expect="usage"))
    for option in ("--seed", "--temperature", "--top-k", "--max-new-tokens"):
        for text in ("", " 1", "1 ", "0x10", "1_0", "\u0663", "1e400", "-0.0.0", "nan", "-inf", "--", "١٢"):
            cases.append(Case("argv", f"{option} {text!r}", argv=_arg("--prompt-ids", IDS, option, text),
                              expect="usage"))
    return cases


def _expected_names():
    from sw.compiler.checkpoint import expected_weights, read_shape

    return expected_weights(read_shape(CONFIG))


def bitstream_cases():
    """(name, words, expected exception) for the bitstream API: non-integer and out-of-range words."""
    import numpy as np

    from sw import bitstream

    good = bitstream.pack({0: (3, 5), 1: (7, 32)})
    out = []
    for k in range(len(good)):
        for what, value, error in (("float", good[k] + 0.7, TypeError), ("whole float", float(good[k]), TypeError),
                                   ("numpy float", np.float64(good[k]), TypeError), ("str", str(good[k]), TypeError),
                                   ("bool", True, TypeError), ("None", None, TypeError),
                                   ("negative", -1, ValueError), ("33 bits", 1 << 32, ValueError)):
            words = list(good)
            words[k] = value
            out.append((f"word {k} {what}", words, error))
    return out


def main():
    OUT.parent.mkdir(parents=True, exist_ok=True)
    counts, failures = {}, []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="openrdu-hostile-") as tmp:
        base = write_checkpoint(Path(tmp) / "base")
        tokens = reference_tokens(base)
        cases = CASES + generated_cases()
        for k, case in enumerate(cases):
            got, detail = run_case(case, base, Path(tmp) / "work", tokens, catch=True)
            counts.setdefault(case.kind, {}).setdefault(got, 0)
            counts[case.kind][got] += 1
            if got != case.expect:
                failures.append({"kind": case.kind, "case": case.name, "expected": case.expect, "got": got,
                                 "detail": detail})
            if (k + 1) % 50 == 0:
                print(f"hostile: {k + 1}/{len(cases)} cases, {len(failures)} not as expected", file=sys.stderr)
    from sw import bitstream

    for name, words, error in bitstream_cases():
        try:
            bitstream.unpack(words, expected={0: 5, 1: 32})
            got = "accepted"
        except error:
            got = "refused"
        except Exception as e:  # noqa: BLE001
            got = f"crash ({type(e).__name__})"
        counts.setdefault("bitstream", {}).setdefault(got, 0)
        counts["bitstream"][got] += 1
        if got != "refused":
            failures.append({"kind": "bitstream", "case": name, "expected": "refused", "got": got, "detail": ""})
    total = sum(sum(c.values()) for c in counts.values())
    result = {"cases": total, "by_kind": counts, "not_as_expected": failures,
              "wall_s": round(time.perf_counter() - start, 1)}
    OUT.write_text(json.dumps(result, indent=2))
    for kind, by in counts.items():
        print(f"{kind:<10} " + ", ".join(f"{n} {o}" for o, n in sorted(by.items())))
    print(f"{total} cases, {len(failures)} not as expected; wrote {OUT}")
    if failures:
        raise SystemExit(f"hostile: {len(failures)} cases not as expected, e.g. {failures[0]}")
