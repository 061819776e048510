"""The backend registry (sw/runtime/backends.py): sw offers "model", importing cosim adds "rtl"."""

import subprocess
import sys

import pytest

from sw.errors import OpenRDUError
from sw.runtime import backends

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
