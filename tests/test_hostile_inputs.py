"""Hostile and malformed input (issue 12): each is one clear error line, argparse's usage error, or the right result.

The table of cases lives in bench/hostile.py (``make bench`` runs it with many generated cases more); here
every case of the table runs in-process against a tiny checkpoint with a deadline, hypothesis feeds random
values to the config schema and the --prompt-ids parser, and a few cases run as real subprocesses.
"""

import argparse
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from bench.hostile import CASES, CONFIG, IDS, deadline, reference_tokens, run_case, run_cli, write_checkpoint
from sw.compiler.checkpoint import read_shape
from cli.decode import escape, token_ids
from sw.errors import OpenRDUError


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("hostile") / "base")


@pytest.fixture(scope="module")
def base_tokens(base):
    return reference_tokens(base)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}: {c.name}" for c in CASES])
def test_hostile_case(case, base, base_tokens, tmp_path):
    got, detail = run_case(case, base, tmp_path / "work", base_tokens, timeout=120)
    assert got == case.expect, detail


json_values = st.recursive(st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70)
                           | st.floats(allow_nan=True) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3), max_leaves=6)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(CONFIG) + ["rope_parameters", "rope_scaling", "pretraining_tp",
                                                           "mlp_bias", "attention_bias"]),
                       json_values, min_size=1, max_size=4))
def test_any_config_values_give_a_shape_or_an_openrdu_error(changes):
    """Random JSON values in the fields the compiler reads: a checked shape or an OpenRDUError, nothing else."""
    config = {**CONFIG, **changes}
    with deadline(10):
        try:
            shape = read_shape(config)
        except OpenRDUError as error:
            assert "\n" not in str(error)
            return
    assert all(isinstance(getattr(shape, f), int) and not isinstance(getattr(shape, f), bool) and getattr(shape, f) > 0
               for f in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                         "head_dim", "max_positions"))
    assert shape.num_heads % shape.num_kv_heads == 0 and shape.head_dim % 2 == 0
    assert 0 < shape.rms_norm_eps <= 1 and 1 <= shape.rope_theta <= 1e12
    assert isinstance(shape.tie_word_embeddings, bool)
    assert shape.eos_token_id is None or 0 <= shape.eos_token_id < shape.vocab_size


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789,- x\u0663\u00b2+_.", max_size=12))
def test_prompt_ids_are_ascii_digit_lists_or_refused(text):
    try:
        ids = token_ids(text)
    except argparse.ArgumentTypeError:
        parts = text.split(",")
        assert not all(p.isascii() and p.isdigit() and len(p) <= 9 for p in parts)
        return
    assert ",".join(map(str, ids)) == ",".join(str(int(p)) for p in text.split(","))


def test_escape_keeps_code_readable_and_neutralises_controls():
    assert escape("def f():\n\treturn 1") == "def f():\n\treturn 1"
    assert escape("a\x1b[2Jb\x07\x7f\x9b\u202e") == "a\\x1b[2Jb\\x07\\x7f\\x9b\\u202e"
    assert escape("line\nbreak", keep="") == "line\\x0abreak"


def openrdu(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, timeout=timeout,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def test_subprocess_fifo_weights_and_invalid_utf8_prompt(base, tmp_path):
    """Real processes: a FIFO in place of the weights does not hang; argv bytes that are not UTF-8 are refused."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for f in base.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    r = openrdu("decode", "--checkpoint", str(folder), "--prompt-ids", IDS, "--backend", "model", "--context", "16")
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 1 and len(err) == 1 and err[0].startswith("openrdu decode: error: "), r.stderr
    assert "a FIFO, not a regular file" in err[0]
    r = subprocess.run([sys.executable, "-m", "cli", "decode", "--checkpoint", str(base).encode(), "--prompt",
                        b"a\xffb", "--backend", "model"], capture_output=True, timeout=120)
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2 and err[-1].startswith("openrdu decode: error: argument --prompt: not valid UTF-8")
    assert b"Traceback" not in r.stderr


def test_error_line_is_one_line_with_a_newline_in_the_path(tmp_path):
    folder = tmp_path / "a\nb\x1b[31m"
    status, _, err = run_cli(["decode", "--checkpoint", str(folder), "--prompt-ids", "1", "--backend", "model"])
    assert status == 1 and err.count("\n") == 1 and "\\x0ab\\x1b[31m: no such checkpoint folder" in err
    # compile and sweep print their own error lines: the same escaping.
    status, _, err = run_cli(["compile", str(folder), "-o", str(tmp_path / "m.rdu")])
    assert status == 1 and err.count("\n") == 1 and "\\x0ab\\x1b[31m: no such checkpoint folder" in err
    status, _, err = run_cli(["sweep", str(folder)])
    assert status == 1 and err.count("\n") == 1 and "\\x0ab\\x1b[31m" in err


def test_json_output_escapes_through_json(base, base_tokens):
    """--json prints the text as JSON, whose string escapes already cover every control character."""
    status, out, err = run_cli(["decode", "--checkpoint", str(base), "--prompt", "a\x1bb", "--max-new-tokens", "1",
                                "--backend", "model", "--context", "16", "--json"])
    assert status == 0, err
    assert "\x1b" not in out and json.loads(out)["text"].startswith("a\x1bb")
