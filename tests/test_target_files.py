"""Targets users define: ``--target`` takes a named target or a TOML/JSON file, checked field by field."""

import asyncio
import dataclasses
import json
from fractions import Fraction

import pytest

from cli.main import main as openrdu
from sw.compiler.compile import compile_model
from sw.compiler.program import load
from sw.errors import TargetError
from sw.runtime.decode import generate
from sw.runtime.device import ModelDevice
from sw.target import CHIP, LARGE, TARGETS, load_target
from tests.llama_checkpoints import make_checkpoint

MiB = 1 << 20

FULL = """
base = "chip"
name = "wide"
clock_hz = 1.5e9
host_launch_cycles = 500
[array]
rows = 2
cols = 6
lanes = 8
stages = 3
pmu_kib = 16
switch_fifo_depth = 3
unit_fifo_depth = 5
vector_channels = 2
scalar_channels = 1
[memory]
word_bytes = 32
host_bytes_per_cycle = "1/3"
agcus = 3
agcu_outstanding = 128
copy_outstanding = 32
[hbm]
capacity_mib = 128
channels = 4
channel_bytes_per_cycle = 6.5
latency = 100
queue_depth = 12
[ddr]
capacity = 536870912
channels = 2
channel_bytes_per_cycle = "3/2"
latency = 300
queue_depth = 4
"""


def test_named_targets_pass_through():
    assert all(load_target(name) is target for name, target in TARGETS.items())
    assert load_target(CHIP) is CHIP


def test_a_full_toml_file_sets_every_field(tmp_path):
    path = tmp_path / "wide.toml"
    path.write_text(FULL)
    t = load_target(str(path))
    a, m = t.array, t.memory
    assert (t.name, t.clock_hz, t.host_launch_cycles) == ("wide", 1.5e9, 500)
    assert (a.rows, a.cols, a.lanes, a.stages, a.pmu_bank_words, a.pmu_words * 4) == (2, 6, 8, 3, 512, 16 * 1024)
    assert (a.switch_fifo_depth, a.unit_fifo_depth, a.vector_channels, a.scalar_channels) == (3, 5, 2, 1)
    assert (m.word_bytes, m.host_bytes_per_cycle, m.agcus, m.agcu_outstanding, m.copy_outstanding) == \
        (32, Fraction(1, 3), 3, 128, 32)
    assert (m.hbm.capacity, m.hbm.channels, m.hbm.channel_bytes_per_cycle, m.hbm.latency, m.hbm.queue_depth) == \
        (128 * MiB, 4, Fraction(13, 2), 100, 12)
    assert (m.ddr.capacity, m.ddr.channels, m.ddr.channel_bytes_per_cycle, m.ddr.latency, m.ddr.queue_depth) == \
        (512 * MiB, 2, Fraction(3, 2), 300, 4)
    assert (t.tail_ops, t.post_ops) == (CHIP.tail_ops, CHIP.post_ops)
    # The full description names every one of them.
    text = t.details()
    for word in ("rows 2", "cols 6", "lanes 8", "stages 3", "pmu_bank_words 512", "PMU 16 KiB", "capacity 128 MiB",
                 "4 channels x 13/2 B/cycle", "latency 100", "queue 12", "capacity 512 MiB", "latency 300",
                 "word 32 B", "host link 1/3 B/cycle", "3 AGCUs", "clock 1.5 GHz", "host launch 500 cycles"):
        assert word in text, word


def test_a_json_file_fills_what_it_leaves_out_from_its_base(tmp_path):
    path = tmp_path / "big-hbm.json"
    path.write_text(json.dumps({"base": "4x8", "hbm": {"capacity_mib": 4096, "latency": 200}}))
    t = load_target(path)
    assert t.name == "big-hbm"                                 # the file's name
    assert t.memory.hbm == dataclasses.replace(LARGE.memory.hbm, capacity=4096 * MiB, latency=200)
    assert (t.array, t.memory.ddr, t.clock_hz) == (LARGE.array, LARGE.memory.ddr, LARGE.clock_hz)
    (tmp_path / "empty.toml").write_text("")
    assert load_target(tmp_path / "empty.toml") == dataclasses.replace(CHIP, name="empty")   # base "chip"


BAD = [
    ("a.toml", "[array]\nlane = 4\n", "array.lane: unknown field"),
    ("a.toml", "colour = 'red'\n", "colour: unknown field"),
    ("a.toml", "[array]\nrows = '4'\n", "array.rows = '4': Input should be a valid integer"),
    ("a.json", '{"array": {"rows": 4.0}}', "array.rows = 4.0: Input should be a valid integer"),
    ("a.toml", "[array]\nlanes = 3\n", "array.lanes must be a power of two, not 3"),
    ("a.toml", "[array]\nrows = 99\n", "array.rows must be an integer in [1, 16], not 99"),
    ("a.toml", "[array]\npmu_kib = 24\n", "array.pmu_bank_words must be a power of two, not 1536"),
    ("a.toml", "[array]\npmu_kib = 16\npmu_bank_words = 1024\n",
     "array.pmu_bank_words and array.pmu_kib both given; give one"),
    ("a.toml", "[hbm]\ncapacity_mib = 48\n", "hbm.capacity must be a power of two, not 50331648"),
    ("a.toml", "[ddr]\ncapacity_mib = 64\ncapacity = 1024\n", "ddr.capacity and ddr.capacity_mib both given"),
    ("a.toml", "[hbm]\nlatency = 0\n", "hbm.latency must be an integer in [1, 4096], not 0"),
    ("a.toml", "[hbm]\nchannel_bytes_per_cycle = '2/0'\n",
     "hbm.channel_bytes_per_cycle = '2/0': '2/0' is not a number"),
    ("a.toml", "[hbm]\nchannel_bytes_per_cycle = -1\n", "hbm.channel_bytes_per_cycle = -1: expected a positive"),
    ("a.toml", "[hbm]\nchannel_bytes_per_cycle = 64\n", "hbm: 128 B/cycle exceeds one 16-byte TLN word per cycle"),
    ("a.toml", "[memory]\nword_bytes = 24\n", "memory.word_bytes must be a power of two, not 24"),
    ("a.toml", "clock_hz = -1.0\n", "clock_hz = -1.0: Input should be greater than 0"),
    ("a.toml", "clock_hz = 'fast'\n", "clock_hz = 'fast': Input should be a valid number"),
    ("a.toml", "host_launch_cycles = true\n", "host_launch_cycles = True: Input should be a valid integer"),
    ("a.toml", "name = 'a b'\n", "name = 'a b': String should match pattern"),
    ("a.toml", "base = 'huge'\n", "base = 'huge': not a named target (4x8, chip, chip-4x8)"),
    ("a.toml", "array = 4\n", "array = 4: Input should be a valid dictionary"),
    ("a.toml", "[array\n", "not valid TOML"),
    ("a.json", "[1, 2]", "a target file is a table of fields, not list"),
    ("a.json", '{"base": "chip", "base": "4x8"}', "not valid JSON (key 'base' appears twice in one object)"),
    ("a.json", '{"clock_hz": NaN}', "not valid JSON (NaN is not a JSON value)"),
    ("a.json", "{", "not valid JSON"),
]


@pytest.mark.parametrize("name, text, message", BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_files_are_one_line_naming_the_file_and_field(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TargetError) as info:
        load_target(str(path))
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_bad_names_and_paths(tmp_path):
    with pytest.raises(TargetError, match=r"unknown target 'chp': give one of 4x8, chip, chip-4x8 or a .toml or .json target"):
        load_target("chp")
    with pytest.raises(TargetError, match="no such file"):
        load_target(str(tmp_path / "missing.toml"))
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(TargetError, match="a directory, not a regular file"):
        load_target(str(tmp_path / "dir.toml"))
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(TargetError, match="not UTF-8 text"):
        load_target(str(tmp_path / "bin.toml"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("t") / "ckpt", hidden_size=32, intermediate_size=32,
                           num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, vocab_size=32,
                           tie_word_embeddings=True)


@pytest.mark.parametrize("command", ["compile", "decode"])
def test_the_command_line_refuses_a_bad_file_in_one_line(checkpoint, tmp_path, command):
    bad = tmp_path / "bad.toml"
    bad.write_text("[array]\nlanes = 6\n")
    args = ([str(checkpoint), "-o", str(tmp_path / "m.rdu")] if command == "compile" else
            ["--checkpoint", str(checkpoint), "--prompt-ids", "1,2", "--backend", "model"])
    with pytest.raises(SystemExit) as info:
        openrdu([command, *args, "--target", str(bad)])
    assert info.value.code == f"openrdu {command}: error: {bad}: array.lanes must be a power of two, not 6"
    assert not (tmp_path / "m.rdu").exists()


def test_a_file_target_compiles_runs_and_is_printed_in_full(checkpoint, tmp_path, capsys):
    """Same arithmetic as the chip, so the same tokens; slower HBM and a faster clock show in the report."""
    path = tmp_path / "slow-hbm.toml"
    path.write_text('base = "chip"\nclock_hz = 2e9\n[hbm]\nlatency = 400\ncapacity_mib = 32\n')
    assert openrdu(["compile", str(checkpoint), "-o", str(tmp_path / "m.rdu"), "--context", "8",
                    "--target", str(path)]) == 0
    out = capsys.readouterr().out
    target = load_target(path)
    assert f"target {target.describe()}\n  {target.details()}\n" in out
    assert "HBM 32 MiB" in out and "latency 400" in out and "clock 2 GHz" in out
    mine = load(tmp_path / "m.rdu")
    assert mine.target == target
    run = lambda compiled: asyncio.run(generate(ModelDevice(compiled.target), compiled, [3, 1, 4], max_new_tokens=4,
                                                stop_at_eos=False))
    mine, chip = run(mine), run(compile_model(checkpoint, CHIP, context=8))
    assert mine["tokens"] == chip["tokens"] and mine["logits_sha"] == chip["logits_sha"]
    assert mine["report"]["target"] == "slow-hbm" and mine["report"]["clock_hz"] == 2e9
    assert mine["report"]["kernel_cycles_per_token"] > chip["report"]["kernel_cycles_per_token"]


def test_a_sweep_spec_may_name_a_target_file_as_its_base(tmp_path):
    from sw.errors import SweepSpecError
    from sw.sweep import parse_spec

    path = tmp_path / "fast-host.toml"
    path.write_text('[memory]\nhost_bytes_per_cycle = 1\n')
    axes = {"model": "m", "prompt_ids": [1, 2]}
    spec = parse_spec({"base": str(path), "axes": axes}, "spec.json")
    assert spec.base == load_target(path) and spec.base.memory.host_bytes_per_cycle == 1
    path.write_text('[memory]\nhost_bytes_per_cycle = 0\n')
    with pytest.raises(SweepSpecError, match=r"^spec.json: base: .*fast-host.toml: memory.host_bytes_per_cycle = 0: "):
        parse_spec({"base": str(path), "axes": axes}, "spec.json")
