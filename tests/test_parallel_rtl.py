"""Simulations at once: runs of one Verilator build side by side, and ``decode --compare``'s modes split among
several simulations giving the results of one."""

import fcntl
import threading

import pytest

from cosim import harness
from cosim.bist import BistCollar
from cosim.harness import SimUnit
from hw.arith import convert
from tests.llama_checkpoints import SHAPES, make_checkpoint


def test_run_folders_are_taken_in_turn(tmp_path):
    with harness._run_folder(tmp_path) as first, harness._run_folder(tmp_path) as second:
        assert (first.name, second.name) == ("run", "run-2")
        with harness._run_folder(tmp_path) as third:
            assert third.name == "run-3"
    # Released, the first is taken again: run folders do not pile up.
    with harness._run_folder(tmp_path) as again:
        assert again.name == "run"


def test_two_runs_of_one_build_proceed_at_once():
    # The design of tests/test_harness.py's cache probe: the same build folder, built once for both.
    unit = SimUnit(name="cache-probe", design=lambda: BistCollar(convert.Bf16ToFp32()),
                   testbench="cosim.tb.test_arith",
                   env={"OPENRDU_UNIT": "bf2f", "OPENRDU_OPS": "200", "OPENRDU_BIST_OPS": "200"})
    built = harness.build(unit, log=lambda line: None)
    runs = [None, None]

    def simulate(k):
        runs[k] = harness.run(unit, testcase="latency_and_throughput", quiet=True, log=lambda line: None)

    threads = [threading.Thread(target=simulate, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is not None and r.ok and r.build.directory == built.directory for r in runs)
    # Each held a run folder of its own while both ran (a second run in turn would have taken the first's),
    # and each folder keeps the log its messages point to.
    assert runs[0].xml.parent != runs[1].xml.parent
    assert all((r.xml.parent / "sim.log").is_file() for r in runs)
    # Both are over: a rebuild's exclusive lock is free.
    with open(harness.BUILD_ROOT / f"{built.directory.name}.run.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_the_compare_modes_give_the_same_results_in_one_simulation_and_in_several(tmp_path, monkeypatch, capsys):
    from cli.decode import MODES, run
    from sw.compiler.compile import compile_model
    from sw.compiler.program import save
    from sw.target import CHIP

    checkpoint = make_checkpoint(tmp_path / "ckpt", **SHAPES["gqa-untied"])   # one layer
    compiled, paths = {}, {}
    for program in ("fused", "unfused"):
        compiled[program] = compile_model(checkpoint, CHIP, mode=program, context=16)
        paths[program] = tmp_path / f"{program}.pkl"
        save(compiled[program], paths[program])
    modes = {name: MODES[name] for name in ("unfused", "fused", "fused_chip")}
    request = {"prompt_ids": [3], "max_new_tokens": 1, "temperature": 0.0, "top_k": 0, "seed": 0}
    results = {}
    # 1: today's one simulation of every mode; 2: the unfused mode in one, the two fused ones in the other.
    for sims in ("1", "2"):
        monkeypatch.setenv("OPENRDU_PARALLEL_SIMS", sims)
        results[sims] = run(modes, compiled, paths, request, "rtl", progress="lines")
        err = capsys.readouterr().err
        for name in modes:
            assert f"{name} on rtl: step 1/1 (100%)" in err, (sims, err)
    for name in modes:
        one, several = results["1"][name], results["2"][name]
        assert one["report"].pop("wall_s") > 0 and several["report"].pop("wall_s") > 0
        assert one == several, name
    assert results["1"]["fused"]["tokens"] == results["1"]["unfused"]["tokens"]


def test_a_bad_simulation_count_is_refused(monkeypatch):
    from cosim.decode import SimulationError, groups, parallel_sims

    monkeypatch.setenv("OPENRDU_PARALLEL_SIMS", "0")
    with pytest.raises(SimulationError, match="OPENRDU_PARALLEL_SIMS must be a positive integer"):
        parallel_sims()
    monkeypatch.delenv("OPENRDU_PARALLEL_SIMS")
    assert parallel_sims() >= 1
    # The heaviest model alone; the others share the other simulation, each group in the models' order.
    assert groups([59, 22, 22], 2) == [[0], [1, 2]]
    assert groups([59, 22, 22], 1) == [[0, 1, 2]] and groups([59, 22, 22], 8) == [[0], [1], [2]]


def test_the_progress_watcher_reports_every_runs_last_step(tmp_path):
    from cosim.decode import _watch

    path, seen, done = tmp_path / "progress", [], threading.Event()
    done.set()  # the simulation is over: one last read
    path.write_text("0 23 23\n1 7 23\n")    # run_decode.py: every run's latest step
    _watch(path, lambda *step: seen.append(step), done)
    path.write_text("0 4 9")                # run_coe.py: one run, one line
    _watch(path, lambda *step: seen.append(step), done)
    assert seen == [(0, 23, 23), (1, 7, 23), (0, 4, 9)]


def test_runs_under_way_share_the_terminal_line(capsys):
    from cli.decode import Board, Progress

    board = Board([Progress(f"{name:>7} on rtl", "bar") for name in ("unfused", "fused")])
    board(0, 1, 4)
    board(1, 2, 4)
    assert capsys.readouterr().err.rsplit("\r", 1)[1].startswith("unfused on rtl 1/4  fused on rtl 2/4  ")
    board(1, 4, 4)     # fused ends: its full bar on a line of its own, then unfused's bar alone
    err = capsys.readouterr().err
    assert "  fused on rtl [" + "#" * 30 + "] step 4/4" in err.split("\n")[0]
    assert err.split("\n")[1].startswith("\runfused on rtl [")
    board(0, 4, 4)
    assert capsys.readouterr().err.endswith("\n")
