"""Composition of Experts on the fast model: exact outputs, the slot cache, a short soak, bad input.

The library is built without training (:func:`sw.coe.library.write_untrained`: perturbed copies of
the default model and a router with a fixed random classifier); prompts are a token or three and
requests generate one or two tokens, so the file runs in well under a minute.
"""

import asyncio
import json
import shutil

import numpy as np
import pytest

from cli.compile import cached_compile
from cli.main import main as cli_main
from sw.coe.cache import SlotCache
from sw.coe.controller import serve
from sw.coe.library import Library, write_untrained
from sw.coe.slots import coe_target
from hw.mem.params import DDR, HBM
from sw.errors import ChipError, CoEError
from sw.runtime.decode import Session, generate
from sw.runtime.device import ModelDevice
from tests.llama_checkpoints import make_checkpoint

BASE = "models/pystdlib-tiny"
TARGET = coe_target()


def compile_cached(path, target):
    return cached_compile(path, target, "fused", None)[0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_untrained(tmp_path_factory.mktemp("coe") / "lib", BASE, experts=2, prompts=["def f(x):"])


@pytest.fixture(scope="module")
def library(folder):
    return Library(folder, TARGET, size=150, compile=compile_cached)


_refs = {}


def alone(library, expert, prompt_ids, n):
    """The expert run alone with generate() on a fresh fast-model device: (tokens, logits digest)."""
    key = (expert, tuple(prompt_ids), n)
    if key not in _refs:
        out = asyncio.run(generate(ModelDevice(TARGET), library.alone(expert), prompt_ids, max_new_tokens=n))
        _refs[key] = (out["tokens"], out["logits_sha"])
    return _refs[key]


def test_library_has_150_distinct_experts(library):
    assert len(library) == 150 and library.trained == ["x0", "x1"]
    images = {library.image(n).tobytes() for n in ("x0", "x1", "x0.v001", "x1.v001", "x0.v074")}
    assert len(images) == 5
    assert all(library.image(n).nbytes == library.slot_bytes for n in ("x0", "x1.v010"))


def test_outputs_bit_identical_to_each_expert_alone(library):
    requests = [{"prompt_ids": [0, 449, 323], "max_new_tokens": 2, "expert": "x0.v003"},
                {"prompt_ids": [0, 449], "max_new_tokens": 2},
                {"prompt_ids": [0, 449, 323], "max_new_tokens": 2, "expert": "x1"},
                {"prompt_ids": [0, 449, 323], "max_new_tokens": 2, "expert": "x0.v003"}]
    out = asyncio.run(serve(ModelDevice(TARGET), library, requests, slots=2))
    rows = out["requests"]
    assert [r["expert"] for r in rows[::2]] == ["x0.v003", "x1"] and rows[1]["routed"]
    for r, q in zip(rows, requests):
        assert (r["tokens"], r["logits_sha"]) == alone(library, r["expert"], q["prompt_ids"], 2)
    # A wrong expert would be caught: the same prompt on another expert gives other logits.
    assert alone(library, "x0", [0, 449, 323], 2)[1] != rows[0]["logits_sha"]
    # Pairs of one expert run together, the resident ones first: request 4 (x0.v003) runs second.
    assert [r["order"] for r in rows] == [0, 2, 3, 1]
    assert out["capacity_violations"] == 0 and out["capacity_checks"] >= 2
    assert out["summary"]["hidden_cycles"] > 0 and rows[3]["hit"]


def test_lru_hits_and_switch_accounting(library):
    names = ["x0", "x1", "x0", "x1.v002", "x1", "x0"]
    requests = [{"prompt_ids": [0], "max_new_tokens": 1, "expert": n} for n in names]
    out = asyncio.run(serve(ModelDevice(TARGET), library, requests, slots=2, batch=1, prefetch=False))
    rows = out["requests"]
    # LRU over 2 slots: x0 x1 | x0 hit | x1.v002 evicts x1 | x1 evicts x0 | x0 evicts x1.v002.
    assert [r["hit"] for r in rows] == [False, False, True, False, False, False]
    copy = rows[0]["switch_cycles"]
    assert copy > library.slot_bytes / 2 and [r["switch_cycles"] for r in rows] == [0 if r["hit"] else copy
                                                                                    for r in rows]
    assert out["summary"]["hit_rate"] == pytest.approx(1 / 6) and out["summary"]["hidden_cycles"] == 0
    host = asyncio.run(serve(ModelDevice(TARGET), library, requests, slots=2, batch=1, mode="host"))
    assert [r["logits_sha"] for r in host["requests"]] == [r["logits_sha"] for r in rows]
    assert host["requests"][0]["switch_cycles"] / copy >= 14.9


def test_slot_cache_policies_and_pins():
    cache = SlotCache(2, 64, 1024, 1024 + 128, "lru")
    assert cache.allocate("a") == (0, None) and cache.allocate("b") == (1, None)
    cache.use("a"), cache.use("b"), cache.use("a")
    assert cache.allocate("c") == (1, "b")
    assert cache.allocate("d", pinned={"c"}) == (0, "a")
    with pytest.raises(CoEError, match="still needed"):
        cache.allocate("e", pinned={"c", "d"})
    fifo = SlotCache(2, 64, 0, 128, "fifo")
    fifo.allocate("a"), fifo.allocate("b"), fifo.use("a")
    assert fifo.allocate("c") == (0, "a")
    outside = SlotCache(3, 64, 0, 128, "lru")
    outside.allocate("a"), outside.allocate("b")
    with pytest.raises(CoEError, match="leaves the HBM expert region"):
        outside.allocate("c")
    assert (outside.checks, outside.violations) == (3, 1)


def test_short_zipf_soak_has_no_wrong_outputs(library):
    rng = np.random.default_rng(7)
    names = list(library.experts)
    p = 1.0 / np.arange(1, len(names) + 1) ** 1.2
    picks = rng.choice(len(names), size=16, p=p / p.sum())
    requests = [{"prompt_ids": [0, int(t)], "max_new_tokens": 1, "expert": names[i]}
                for i, t in zip(picks, rng.choice([5, 77], size=16))]
    out = asyncio.run(serve(ModelDevice(TARGET), library, requests, slots=3, lookahead=1))
    wrong = sum((r["tokens"], r["logits_sha"]) != alone(library, r["expert"], q["prompt_ids"], 1)
                for r, q in zip(out["requests"], requests))
    assert wrong == 0 and out["capacity_violations"] == 0
    rows = sorted(out["requests"], key=lambda r: r["order"])
    assert out["summary"]["hit_rate"] > 0 and out["summary"]["hidden_cycles"] > 0
    # A prefetched copy hides behind the previous pair's decode (its kernels and Program Loads, not the
    # host's assumed round trips), never more than either.
    assert all(r["hidden_cycles"] <= min(r["switch_cycles"], prev["decode_cycles"]) for prev, r in zip(rows, rows[1:]))
    assert out["overlap"] == "modelled"
    assert all(r["hidden_cycles"] <= r["switch_cycles"] for r in rows)


class CopyLog(ModelDevice):
    """The fast model, recording each copy's destination and source and how many requests were done when it began."""

    def __init__(self, target):
        super().__init__(target)
        self.done, self.copies = 0, []

    async def copy(self, src_tier, src, dst_tier, dst, nbytes):
        self.copies.append((dst, src, self.done))
        return await super().copy(src_tier, src, dst_tier, dst, nbytes)

    async def start_copy(self, src_tier, src, dst_tier, dst, nbytes):
        self.copies.append((dst, src, self.done))
        return await super().start_copy(src_tier, src, dst_tier, dst, nbytes)

    def progress(self, done, total):
        self.done = done


def test_lookahead_copy_spans_two_requests(library):
    """x1's copy starts while the first x0 request decodes and runs on through the second: it hides more than
    the one decode before x1, which is all that one-ahead prefetch (lookahead 1) can hide."""
    requests = [{"prompt_ids": [0], "max_new_tokens": 1, "expert": n} for n in ("x0", "x0", "x1")]
    deep = asyncio.run(serve(ModelDevice(TARGET), library, requests, slots=3, lookahead=2))["requests"]
    one = asyncio.run(serve(ModelDevice(TARGET), library, requests, slots=3, lookahead=1))["requests"]
    assert [r["hit"] for r in deep] == [False, True, False] and deep[2]["switch_cycles"] == one[2]["switch_cycles"]
    assert 0 < one[2]["hidden_cycles"] <= one[1]["decode_cycles"] and deep[2]["hidden_cycles"] > one[2]["hidden_cycles"]
    before = deep[0]["decode_cycles"] + deep[1]["decode_cycles"]
    assert deep[2]["hidden_cycles"] <= min(deep[2]["switch_cycles"], before)
    assert [r["logits_sha"] for r in deep] == [r["logits_sha"] for r in one]
    with pytest.raises(CoEError, match="lookahead"):
        asyncio.run(serve(ModelDevice(TARGET), library, requests, lookahead=-1))


def test_lookahead_never_takes_a_slot_still_needed(library):
    """Over a skewed trace with batches of 4, every copy into a slot lands where no pair between the copy's
    start and its expert's use runs from; outputs stay exact and the capacity checks pass."""
    rng = np.random.default_rng(3)
    pool = ["x0", "x1", "x0.v001", "x1.v001", "x0.v002", "x1.v002"]
    picks = rng.choice(len(pool), size=20, p=np.array([8, 6, 4, 3, 2, 1]) / 24)
    requests = [{"prompt_ids": [0, 5], "max_new_tokens": 1, "expert": pool[k]} for k in picks]
    device = CopyLog(TARGET)
    out = asyncio.run(serve(device, library, requests, slots=3, batch=4, lookahead=3, progress=device.progress))
    assert out["lookahead"] == 2 and out["capacity_violations"] == 0
    rows = sorted(out["requests"], key=lambda r: r["order"])
    slot_bytes, base = out["plan"]["slot_bytes"], out["plan"]["base"]
    names = list(library.experts)
    assert len(device.copies) == sum(not r["hit"] for r in rows) > 3
    for dst, src, done in device.copies:
        slot, expert = (dst - base) // slot_bytes, names[src // slot_bytes]
        use = next(r for r in rows[done:] if r["expert"] == expert)
        assert use["slot"] == slot and all(r["slot"] != slot for r in rows[done:use["order"]])
    wrong = sum((r["tokens"], r["logits_sha"]) != alone(library, r["expert"], q["prompt_ids"], 1)
                for r, q in zip(out["requests"], requests))
    assert wrong == 0 and all(r["hidden_cycles"] <= r["switch_cycles"] for r in rows)
    assert out["summary"]["hidden_cycles"] > 0


def run_cli(capsys, folder, lines, *extra):
    path = folder.parent / "requests.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    try:
        status = cli_main(["coe", "--experts", str(folder), "--requests", str(path), "--cache-slots", "2", *extra])
    except SystemExit as e:
        return 1 if isinstance(e.code, str) else e.code, str(e.code)
    return status, capsys.readouterr().out


def test_cli_serves_and_compares_with_host(capsys, folder):
    status, out = run_cli(capsys, folder, ['{"prompt": "def", "max_new_tokens": 1, "expert": "x1.v002"}'],
                          "--baseline", "host", "--library-size", "20", "--json")
    result = json.loads(out)
    assert status == 0 and result["experts"] == 20
    assert result["ddr"]["requests"][0]["logits_sha"] == result["host"]["requests"][0]["logits_sha"]


def test_cli_orchestration_chip_same_outputs(capsys, folder):
    """``--orchestration chip``: the sequencer walks each slot's launch lists; outputs equal the host-issued run's,
    and the steps cost fewer cycles."""
    line = ['{"prompt": "def", "max_new_tokens": 2, "expert": "x1.v002"}']
    runs = {}
    for o in ("host", "chip"):
        status, out = run_cli(capsys, folder, line, "--library-size", "20", "--orchestration", o, "--json")
        assert status == 0
        runs[o] = json.loads(out)["ddr"]
    assert runs["chip"]["orchestration"] == "chip" and runs["host"]["orchestration"] == "host"
    assert runs["chip"]["requests"][0]["logits_sha"] == runs["host"]["requests"][0]["logits_sha"]
    assert runs["chip"]["requests"][0]["decode_cycles"] < runs["host"]["requests"][0]["decode_cycles"]


def test_coe_target_host_links():
    """The baseline's host link is the paper's H100 (64 GB/s) or A100 (32 GB/s) against 1 TB/s of DDR -> HBM."""
    from fractions import Fraction

    h100, a100 = coe_target(), coe_target(host_link="a100")
    ddr = h100.memory.ddr.bytes_per_cycle
    assert h100.memory.host_bytes_per_cycle == ddr * Fraction(64, 1000)
    assert a100.memory.host_bytes_per_cycle * 2 == h100.memory.host_bytes_per_cycle
    assert a100.memory.ddr == h100.memory.ddr and a100.array == h100.array
    with pytest.raises(ValueError, match="host_link must be one of"):
        coe_target(host_link="pcie3")


@pytest.mark.parametrize("lines, message", [
    ([], "no requests"),
    (["{not json"], "line 1: not JSON"),
    (['{"prompt": "x", "max_new_tokens": 0}'], "line 1: expected"),
    (['{"prompt": "x", "max_new_tokens": 1, "expert": "nobody"}'], "request 1: unknown expert 'nobody'"),
])
def test_bad_requests_one_line_exit_1(capsys, folder, lines, message):
    status, text = run_cli(capsys, folder, lines)
    assert status == 1 and message in text and text.startswith("openrdu coe: error:") and "\n" not in text


def broken(folder, tmp_path, how):
    copy = shutil.copytree(folder, tmp_path / "lib")
    manifest = json.loads((copy / "manifest.json").read_text())
    if how == "classes":
        manifest["classes"] = ["x0", "x7"]
    else:
        shutil.rmtree(copy / "x1")
        shape = dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=4, vocab_size=512,
                     tie_word_embeddings=True, max_position_embeddings=256)
        make_checkpoint(copy / "x1", intermediate_size=128 if how == "arch" else 256,
                        num_hidden_layers=4 if how == "arch" else 6, **shape)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("how, message", [("classes", "router's classes ['x0', 'x7'] do not match"),
                                          ("arch", "differs from the one the slots were sized for"),
                                          ("large", "more than a slot")])
def test_bad_library_one_line_exit_1(capsys, folder, tmp_path, how, message):
    status, text = run_cli(capsys, broken(folder, tmp_path, how),
                           ['{"prompt": "x", "max_new_tokens": 1, "expert": "x0"}'])
    assert status == 1 and message in text and "\n" not in text


def test_a_started_copy_runs_beside_kernels(library):
    """start_copy returns at once; wait_copy reports the part of the copy that later commands did not cover."""
    device, m = ModelDevice(TARGET), TARGET.memory
    data = np.arange(1 << 16, dtype=np.uint32)
    asyncio.run(device.write(DDR, 0, data))
    asyncio.run(device.start_copy(DDR, 0, HBM, 12 << 20, data.nbytes))
    with pytest.raises(ChipError, match="busy"):
        asyncio.run(device.copy(DDR, 0, HBM, 13 << 20, m.word_bytes))
    alone = asyncio.run(device.wait_copy())
    assert alone["waited"] == alone["cycles"] > 0
    assert np.array_equal(asyncio.run(device.read(HBM, 12 << 20, data.size)), data)
    with pytest.raises(ChipError, match="no copy was started"):
        asyncio.run(device.wait_copy())
    # Beside a router step: the step's kernels and Program Loads cover that much of the copy.
    session = Session(device, library.router)
    asyncio.run(session.load())
    asyncio.run(device.start_copy(DDR, 0, HBM, 12 << 20, data.nbytes))
    _, cost = asyncio.run(session.step(0, 0))
    beside = asyncio.run(device.wait_copy())
    covered = cost["kernel_cycles"] + cost["program_load_cycles"]
    assert beside["cycles"] == alone["cycles"] and beside["waited"] == max(0, alone["cycles"] - covered)


def test_chip_orchestration_gives_each_slot_its_launch_lists(library):
    """With the sequencer issuing the kernels every slot walks launch lists of its own (after the slots, so one
    slot fewer fits); outputs stay those of each expert alone, and the steps cost less than host-issued ones."""
    from sw.coe.slots import plan, slot_model

    host, chip = plan(library, 2), plan(library, 2, orchestration="chip")
    assert host.lists_bytes == 0 and chip.lists_bytes > 0 and chip.max_slots <= host.max_slots
    models = [slot_model(library.arch, chip, s) for s in range(2)]
    lists = [{tp: m.image[name].tobytes() for tp, name in m.launch_lists.items()} for m in models]
    assert set(lists[0]) == set(library.arch.launch_lists) and all(lists[0][tp] != lists[1][tp] for tp in lists[0])
    assert models[1].memory_map[models[1].launch_lists[4]].offset == chip.lists_offset(1)
    assert not slot_model(library.arch, host, 1).launch_lists
    requests = [{"prompt_ids": [0, 449], "max_new_tokens": 2, "expert": "x1.v004"},
                {"prompt_ids": [0, 323], "max_new_tokens": 2},
                {"prompt_ids": [0, 449], "max_new_tokens": 2, "expert": "x0"}]
    runs = {o: asyncio.run(serve(ModelDevice(TARGET), library, requests, slots=2, orchestration=o))
            for o in ("host", "chip")}
    for r, q in zip(runs["chip"]["requests"], requests):
        assert (r["tokens"], r["logits_sha"]) == alone(library, r["expert"], q["prompt_ids"], 2)
    assert runs["chip"]["orchestration"] == "chip" and runs["chip"]["capacity_violations"] == 0
    assert runs["chip"]["total_cycles"] < runs["host"]["total_cycles"]
    with pytest.raises(CoEError, match="unknown orchestration"):
        asyncio.run(serve(ModelDevice(TARGET), library, requests, orchestration="gpu"))


def test_first_switch_hides_behind_the_routing_of_the_batch(library):
    """The expert of the first routed request starts copying while the rest of the batch is routed, so even the
    batch's first switch is hidden (before, it always waited); the copy covers no more than that routing."""
    requests = [{"prompt_ids": [0, t], "max_new_tokens": 1, "stop_at_eos": False} for t in (449, 323, 97)]
    out = asyncio.run(serve(ModelDevice(TARGET), library, requests, slots=2, batch=3))
    rows = sorted(out["requests"], key=lambda r: r["order"])
    first = rows[0]
    assert all(r["routed"] for r in rows) and not first["hit"] and first["switch_cycles"] > 0
    later = sum(r["router_cycles"] for r in rows if r["index"] > first["index"])
    assert 0 < first["hidden_cycles"] <= min(first["switch_cycles"], later)
    for r, q in zip(out["requests"], requests):
        assert (r["tokens"], r["logits_sha"]) == alone(library, r["expert"], q["prompt_ids"], 1)
    none = asyncio.run(serve(ModelDevice(TARGET), library, requests, slots=2, batch=3, prefetch=False))
    assert none["summary"]["hidden_cycles"] == 0 and none["total_cycles"] > out["total_cycles"]


def test_a_routed_batch_waits_until_the_queue_runs_out(library):
    """The next batch is routed only once the current one has run (routing it when the window reaches it would
    stall the pairs still queued); its first expert's copy starts beside its own routing instead."""
    requests = [{"prompt_ids": [0, t], "max_new_tokens": 1} for t in (449, 323, 97, 12)]
    out = asyncio.run(serve(ModelDevice(TARGET), library, requests, slots=3, batch=2, lookahead=2))
    rows = out["requests"]
    assert sorted(r["order"] for r in rows[:2]) == [0, 1] and all(r["routed"] for r in rows)
    first = rows[:2]
    assert max(r["latency_cycles"] for r in first) <= sum(r["router_cycles"] + r["decode_cycles"] + r["switch_cycles"]
                                                          - r["hidden_cycles"] for r in first)
    for r, q in zip(rows, requests):
        assert (r["tokens"], r["logits_sha"]) == alone(library, r["expert"], q["prompt_ids"], 1)
