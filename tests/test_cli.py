"""The ``openrdu compile`` and ``openrdu decode`` commands: output, JSON, and bad input without tracebacks."""

import json
import os
import subprocess
import sys

import pytest

from sw.compiler.program import load
from tests.llama_checkpoints import SHAPES, make_checkpoint

DEFAULT_MODEL = "models/pystdlib-tiny"


def openrdu(*args):
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("cli") / "ckpt", **SHAPES["gqa-untied"])


def test_compile_writes_the_program_and_prints_a_summary(checkpoint, tmp_path):
    out = tmp_path / "model.rdu"
    r = openrdu("compile", str(checkpoint), "-o", str(out), "--context", "16", "--memory-map",
                "--json", str(tmp_path / "estimate.json"))
    assert r.returncode == 0, r.stderr
    assert load(out).mode == "fused"
    for word in ("kernels per decode step", "PCUs", "PMUs", "routes", "bytes read", "cycles", "kv_cache",
                 "memory map:"):
        assert word in r.stdout
    estimate = json.loads((tmp_path / "estimate.json").read_text())
    assert estimate["cycles"] > estimate["kernel_cycles"] > 0
    unfused = openrdu("compile", str(checkpoint), "-o", str(tmp_path / "u.rdu"), "--context", "16", "--unfused")
    assert unfused.returncode == 0, unfused.stderr
    kernels = lambda text: int(text.split(" kernels per decode step")[0].rsplit(" ", 1)[-1])
    assert kernels(unfused.stdout) > kernels(r.stdout)


def test_a_closed_pipe_ends_the_command_quietly(checkpoint, tmp_path):
    """`openrdu compile --ir | head -1`: the reader has gone; no BrokenPipeError traceback, status 141."""
    read_end, write_end = os.pipe()
    os.close(read_end)              # closed before the command writes: every write to stdout fails
    try:
        r = subprocess.run([sys.executable, "-m", "cli", "compile", str(checkpoint), "-o", str(tmp_path / "m.rdu"),
                            "--context", "16", "--ir"], stdout=write_end, stderr=subprocess.PIPE, text=True,
                           timeout=600)
    finally:
        os.close(write_end)
    assert r.returncode == 141 and "Traceback" not in r.stderr, r.stderr


def test_decode_json_on_the_model_backend(checkpoint):
    r = openrdu("decode", "--checkpoint", str(checkpoint), "--prompt-ids", "3,17,5", "--max-new-tokens", "2",
                "--backend", "model", "--context", "16", "--compare", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["text"] is None                       # the random checkpoint has no tokenizer
    assert len(out["tokens"]) == 2
    assert out["fused"]["tokens"] == out["unfused"]["tokens"] == out["tokens"]
    assert out["fused"]["report"]["cycles_per_token"] < out["unfused"]["report"]["cycles_per_token"]
    chip = out["fused_chip"]
    assert chip["tokens"] == out["tokens"] and chip["logits_sha"] == out["fused"]["logits_sha"]
    assert chip["report"]["orchestration"] == "chip"
    assert chip["report"]["cycles_per_token"] < out["fused"]["report"]["cycles_per_token"]


def test_decode_orchestrated_by_the_chip(checkpoint):
    r = openrdu("decode", "--checkpoint", str(checkpoint), "--prompt-ids", "3,17,5", "--max-new-tokens", "2",
                "--backend", "model", "--context", "16", "--orchestration", "chip")
    assert r.returncode == 0, r.stderr
    assert "fused_chip" in r.stdout and "on-chip sequencing" in r.stdout and "assumed" in r.stdout
    r = openrdu("decode", "--checkpoint", str(checkpoint), "--prompt-ids", "3", "--backend", "model",
                "--orchestration", "fpga")
    assert r.returncode == 2 and "invalid choice: 'fpga'" in r.stderr


def test_decode_prints_text_and_the_report():
    r = openrdu("decode", "--checkpoint", DEFAULT_MODEL, "--prompt", "import os", "--max-new-tokens", "2",
                "--backend", "model", "--context", "16")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("import os") == 1
    for row in ("cycles per token", "tokens/s at clock", "HBM bandwidth used", "HBM bytes per token", "wall-clock"):
        assert row in r.stdout
    assert "fused on model: step" in r.stderr       # progress lines: stderr is a pipe, not a terminal


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "/no/such/folder", "--prompt-ids", "1"], "no such checkpoint folder"),
    (["--checkpoint", DEFAULT_MODEL, "--prompt", ""], "prompt is empty"),
    (["--checkpoint", DEFAULT_MODEL, "--prompt-ids", ",".join(["5"] * 20), "--context", "16"], "compiled for a context"),
    (["--checkpoint", DEFAULT_MODEL, "--prompt-ids", "1,x"], "not a comma-separated list"),
    (["--checkpoint", DEFAULT_MODEL, "--prompt-ids", "1", "--target", "4x8", "--backend", "rtl"], "--target chip"),
])
def test_decode_bad_input_is_one_clear_line(args, message):
    r = openrdu("decode", "--max-new-tokens", "4", "--backend", "model", *args)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_decode_refuses_a_corrupt_checkpoint(checkpoint, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in checkpoint.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    r = openrdu("decode", "--checkpoint", str(broken), "--prompt-ids", "1", "--backend", "model")
    assert r.returncode != 0
    assert "cannot read the weights" in r.stderr and "Traceback" not in r.stderr


def test_progress_prints_lines_off_a_terminal_and_a_bar_on_one(capsys):
    from cli.decode import Progress

    lines = Progress("fused on model", "lines")
    for done in range(1, 101):
        lines(done, 100)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "fused on model: 100 steps" and len(err) == 1 + 20
    assert err[1].startswith("fused on model: step 5/100 (5%)") and err[-1].startswith("fused on model: step 100/100")
    bar = Progress("  fused on model", "bar")
    bar(1, 3)
    bar(3, 3)
    assert capsys.readouterr().err.count("\r") == 2
    Progress("quiet", None)(1, 1)
    assert capsys.readouterr().err == ""
