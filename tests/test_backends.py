"""The backend registry (sw/runtime/backends.py): sw offers "model", importing cosim adds "rtl"."""

import subprocess
import sys
from pathlib import Path

import pytest

from sw.errors import CompileError, OpenRDUError
from sw.runtime import backends
from sw.target import CHIP, CHIP_4X8, LARGE

IMPORTS = """
import sys
import sw.runtime.decode, sw.compiler.compile
from sw.runtime import backends
assert not [m for m in sys.modules if m == "cosim" or m.startswith("cosim.")], "sw imported cosim"
assert sorted(backends.BACKENDS) == ["model"], sorted(backends.BACKENDS)
import cosim
assert sorted(backends.BACKENDS) == ["model", "rtl"], sorted(backends.BACKENDS)
assert "cosim.decode" not in sys.modules, "registering rtl loaded the chip's RTL"
"""


def test_sw_alone_offers_the_model_and_cosim_adds_rtl():
    r = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_an_unknown_backend_is_a_user_error():
    with pytest.raises(OpenRDUError, match="no backend 'fpga' is registered"):
        backends.get("fpga")
    with pytest.raises(TypeError):
        backends.register("fpga")


def test_the_rtl_backend_takes_the_co_simulated_targets_and_names_them_otherwise():
    import cosim  # noqa: F401  (registers "rtl")

    check = backends.get("rtl").check_target
    for target in (CHIP, CHIP_4X8):
        check(target)
    with pytest.raises(OpenRDUError, match=r"co-simulates the targets chip, chip-4x8; compile with --target chip or "
                                           r"chip-4x8 \(this model was compiled for target '4x8'\)"):
        check(LARGE)


def test_models_of_one_rtl_run_share_a_target(monkeypatch):
    from cli.compile import cached_compile
    from cosim import decode

    def simulate(*args, **kwargs):
        raise AssertionError("refused models reached a simulation")

    monkeypatch.setattr(decode, "run_chip_testbench", simulate)
    checkpoint = Path(__file__).parents[1] / "models" / "pystdlib-tiny"
    paths = [cached_compile(checkpoint, target, "fused", 16)[1] for target in (CHIP, CHIP_4X8)]
    with pytest.raises(CompileError, match="one simulation of one chip; they were compiled for the targets chip, "
                                           "chip-4x8: compile them for one"):
        decode.run_rtl(paths, {"prompt_ids": [0], "max_new_tokens": 1})


def test_the_model_backend_runs_each_model_and_reports_progress(monkeypatch):
    calls = []

    async def generate(device, model, prompt_ids, *, progress, **kwargs):
        progress(1, 2)
        calls.append((device.target, model, prompt_ids, kwargs))
        return {"model": model.name}

    class Device:
        def __init__(self, target):
            self.target = target

    class Model:
        def __init__(self, name):
            self.name, self.target = name, f"target of {name}"

    monkeypatch.setattr("sw.runtime.decode.generate", generate)
    monkeypatch.setattr("sw.runtime.device.ModelDevice", Device)
    seen = []
    out = backends.get("model").run([Model("fused"), Model("unfused")], ["a", "b"],
                                    {"prompt_ids": [1, 2], "max_new_tokens": 3, "seed": 4},
                                    lambda index, done, total: seen.append((index, done, total)))
    assert out == [{"model": "fused"}, {"model": "unfused"}]
    assert seen == [(0, 1, 2), (1, 1, 2)]
    assert [(target, ids, kwargs) for target, _, ids, kwargs in calls] == [
        (f"target of {mode}", [1, 2], {"max_new_tokens": 3, "seed": 4}) for mode in ("fused", "unfused")]
