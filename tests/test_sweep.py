"""``openrdu sweep``: a tiny sweep on Ray gives the serial run's numbers; bad specs get one line naming the field.

The sweep is a 1-layer random-weight checkpoint, 2 tokens, over two lane
counts (16 lanes cannot hold its 8-position context, which must be a whole
number of lane vectors: points that do not fit) and two host launch costs,
which share one compiled model.
"""

import json

import pytest

from cli import main as cli
from sw import sweep
from sw.errors import SweepSpecError
from tests.llama_checkpoints import make_checkpoint

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
            vocab_size=48, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(make_checkpoint(tmp_path_factory.mktemp("sweep") / "ckpt", **TINY))


def axes(checkpoint, **extra):
    return {"model": checkpoint, "prompt_ids": [1, 2, 3], "tokens": 2, "context": 8, **extra}


def numbers(result):
    return [{k: v for k, v in p.items() if k != "wall_s"} for p in result["points"]]


def test_ray_gives_the_serial_numbers(checkpoint, tmp_path):
    import ray

    spec_path = tmp_path / "tiny.json"
    spec_path.write_text(json.dumps({"base": "chip", "axes": axes(checkpoint, lanes=[4, 16],
                                                                  host_launch_cycles=[500, 2000])}))
    out = tmp_path / "serial.json"
    assert cli.main(["sweep", str(spec_path), "--serial", "-o", str(out)]) == 0
    serial = json.loads(out.read_text())
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        parallel = sweep.run_sweep(sweep.load_spec(spec_path))
    finally:
        ray.shutdown()
    assert parallel["runner"].startswith("ray") and serial["runner"] == "serial"
    assert numbers(parallel) == numbers(serial)

    points = serial["points"]
    assert [(p["params"]["lanes"], p["params"]["host_launch_cycles"]) for p in points] == [
        (4, 500), (4, 2000), (16, 500), (16, 2000)]
    assert [p["status"] for p in points] == ["ok", "ok", "error", "error"]
    assert points[2]["error"]["type"] == "CompileError" and "context 8" in points[2]["error"]["message"]
    r, s = points[0]["result"], points[1]["result"]
    # One compiled model, two launch costs: only the launches' share moves.
    assert s["cycles_per_token"] - r["cycles_per_token"] == 1500 * r["kernels_per_token"]
    assert r["kernel_cycles_per_token"] == s["kernel_cycles_per_token"] and r["logits_sha"] == s["logits_sha"]
    assert 0 < r["roofline_fraction"] < 1 and r["hbm_bytes_per_token"] > 0 and len(r["tokens"]) == 2
    assert serial["fits"] == 2 and serial["varying"] == ["lanes", "host_launch_cycles"]


@pytest.mark.parametrize("data, field", [
    ({"axes": {"prompt_ids": [1]}}, "axes.model"),
    ({"axes": {"model": "m"}}, "axes.prompt_ids"),
    ({"base": "chip", "axis": {}}, "'axis'"),
    ({"base": "8x8", "axes": {}}, "base"),
    ({"axes": {"model": "m", "prompt_ids": [1], "lanes": [4, 3]}}, "axes.lanes"),
    ({"axes": {"model": "m", "prompt_ids": [1], "rows": []}}, "axes.rows"),
    ({"axes": {"model": "m", "prompt_ids": [1], "mode": "fast"}}, "axes.mode"),
    ({"axes": {"model": "m", "prompt_ids": [1], "hbm_bytes_per_cycle": [16, -1]}}, "axes.hbm_bytes_per_cycle"),
    ({"axes": {"model": "m", "prompt_ids": [[1], []]}}, "axes.prompt_ids"),
    ({"axes": {"model": "m", "prompt_ids": [1], "tokens": 0}}, "axes.tokens"),
    ({"axes": {"model": "m", "prompt_ids": [1], "pmu_size": 32}}, "axes.pmu_size"),
])
def test_a_bad_spec_names_the_field(data, field):
    with pytest.raises(SweepSpecError) as error:
        sweep.parse_spec(data, "spec.toml")
    message = str(error.value)
    assert message.startswith("spec.toml: ") and field in message and "\n" not in message


def test_the_command_refuses_a_bad_spec_in_one_line(checkpoint, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[axes]\nmodel = "{checkpoint}"\nprompt_ids = [1, 2]\nstages = [2, 9]\n')
    with pytest.raises(SystemExit) as stop:
        cli.main(["sweep", str(bad), "--serial", "-o", str(tmp_path / "out.json")])
    message = str(stop.value.code)
    assert message.startswith("openrdu sweep: error: ") and "axes.stages" in message and "\n" not in message
    assert not (tmp_path / "out.json").exists()
    bad.write_text("[axes\n")
    with pytest.raises(SystemExit) as stop:
        cli.main(["sweep", str(bad)])
    assert "not valid TOML" in str(stop.value.code)
    bad.write_text(f'[axes]\nmodel = "{tmp_path / "missing"}"\nprompt_ids = [1]\n')
    with pytest.raises(SystemExit) as stop:
        cli.main(["sweep", str(bad), "--serial"])
    assert "axes.model" in str(stop.value.code) and "\n" not in str(stop.value.code)
