# amaranth: UnusedElaboratable=no
# (constructor checks build arrays that are never elaborated: that takes half a minute each)
"""The kernel API, the array's configuration targets and ArrayModel: builds, refusals, and math."""

import numpy as np
import pytest
from amaranth.hdl import Shape

from cosim.tb import timing_cases
from sw.tile import kernels as array_kernels
from sw.tile.kernels import TEST_POST, TEST_TAIL
from hw.tile.array import TileArray, config_targets, switch_id, unit_id
from hw.tile.params import SMALL, ArrayParams
from hw.tile.pcu import TailOp
from sw import bitstream
from sw.model.array import ArrayModel
from sw.tile.kernel import Kernel, KernelError
from sw.tile.pcu import PcuConfig, Stage
from sw.tile.pmu import AddressPattern, PmuConfig
from sw.tile.route import RoutingError

SMALL_2X2 = ArrayParams(rows=2, cols=2, lanes=4, stages=2, pmu_bank_words=64)
ROW_BUFFER = PmuConfig(write=AddressPattern.linear(4, 4), read=AddressPattern.linear(4, 4))


def build(name, params=SMALL, seed=0):
    return array_kernels.KERNELS[name](params, TEST_TAIL, TEST_POST, np.random.default_rng(seed))


@pytest.mark.parametrize("name", list(array_kernels.KERNELS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_model_against_float64(name, seed):
    case = build(name, seed=seed)
    run = ArrayModel(case.program).run(case.inputs)
    assert case.error(run.outputs) <= case.tolerance
    assert run.cycles >= max(run.unit_cycles.values())


def test_gemv_on_2x2():
    tail = {(1, 1): (TailOp.EXP,)}
    case = array_kernels.gemv_bias_act(SMALL_2X2, tail, (), np.random.default_rng(3))
    assert case.name == "gemv_bias_exp"
    assert case.error(ArrayModel(case.program).run(case.inputs).outputs) <= case.tolerance
    assert case.program.host_inputs["bias"].top == "io_b0_vo0"


def test_bitstream_covers_used_units_and_every_switch():
    prog = build("softmax").program
    targets = {k: Shape.cast(v).width for k, v in config_targets(SMALL).items()}
    segments = bitstream.unpack(prog.words, expected=targets)
    switches = {switch_id(SMALL, mr, c) for mr in range(SMALL.rows + 2) for c in range(SMALL.cols)}
    units = {unit_id(SMALL, *u.pos) for u in prog.units.values()}
    assert set(segments) == units | switches
    assert len(units) == 5 and min(switches) == SMALL.rows * SMALL.cols
    for u in prog.units.values():
        assert segments[unit_id(SMALL, *u.pos)] == u.config.pack(SMALL)
    for (mr, c), value in prog.routing.pack().items():
        assert segments[switch_id(SMALL, mr, c)] == value


def test_program_summary_and_io_map():
    prog = build("gemm").program
    assert {n: h.top for n, h in prog.host_inputs.items()} == {"a": "io_t0_vo0", "b0": "io_t1_vo0",
                                                               "b1": "io_t2_vo0"}
    assert {n: h.top for n, h in prog.host_outputs.items()} == {"c0": "io_b0_vi0", "c1": "io_b1_vi0"}
    text = prog.summary()
    assert "PCU 'mm1' at (1, 1)" in text and "a.vo0 -> mm0.vi0, mm1.vi0" in text and "channels" in text


def test_model_is_exact_on_a_copy():
    """A single PMU between host ports returns its input, and the estimate counts fabric hops: the cycles
    the RTL array takes (cosim/tb/timing_cases.py, checked by `cosim run array`)."""
    build, rtl_cycles = timing_cases.ARRAY["pmu_copy"]
    case = build()
    data, _ = case.inputs["x"]
    run = ArrayModel(case.program).run(case.inputs)
    assert (run.outputs["y"][0] == data).all() and list(run.outputs["y"][1]) == [0, 0, 0, 1]
    # 4 words in, 1 hop + 1 cycle to the PMU, 4 + 4 + 2 PMU cycles, 2 hops + 1 to the host, 1 to finish.
    assert run.cycles == rtl_cycles


def test_refuses_wrong_positions():
    k = Kernel(SMALL)
    with pytest.raises(KernelError, match=r"position \(0, 1\) is a PMU, not a PCU"):
        k.pcu((0, 1), PcuConfig())
    with pytest.raises(KernelError, match=r"position \(1, 1\) is a PCU, not a PMU"):
        k.pmu((1, 1), ROW_BUFFER)
    with pytest.raises(KernelError, match=r"position \(2, 0\) is outside the 2x4 array"):
        k.pcu((2, 0), PcuConfig())
    with pytest.raises(KernelError, match=r"I/O column 4 is outside"):
        k.host_input("x", col=4)
    k.pcu((0, 0), PcuConfig(), name="a")
    with pytest.raises(KernelError, match=r"\(0, 0\) is already used by 'a'"):
        k.pcu((0, 0), PcuConfig())
    k.host_input("x", col=0)
    with pytest.raises(KernelError, match="io_t0_vo0 is already used by 'x'"):
        k.host_input("x2", col=0)


def test_unit_config_error_names_unit_and_field():
    k = Kernel(SMALL, tail_ops=(), post_ops=())
    x = k.host_input("x", col=0)
    mac = k.pcu((0, 0), PcuConfig(tail="exp"), name="mac")
    y = k.host_output("y", col=0)
    k.connect(x.out, mac.vi0)
    k.connect(mac.vo0, y.inp)
    with pytest.raises(KernelError, match=r"unit 'mac' \(PCU at \(0, 0\)\): PcuConfig.tail: .*built without 'exp'"):
        k.build()
    k2 = Kernel(SMALL)
    x = k2.host_input("x", col=1)
    bad = PmuConfig(write=AddressPattern.linear(4, 3), read=AddressPattern.linear(4, 4))
    buf = k2.pmu((0, 1), bad, name="buf")
    y = k2.host_output("y", col=1)
    k2.connect(x.out, buf.vi0)
    k2.connect(buf.vo0, y.inp)
    with pytest.raises(KernelError, match=r"unit 'buf' \(PMU at \(0, 1\)\): write.strides\[0\]"):
        k2.build()


def test_wiring_errors():
    k = Kernel(SMALL)
    x = k.host_input("x", col=0)
    s = k.host_input("s", col=0, network="scalar")
    mac = k.pcu((0, 0), PcuConfig(inputs=(0, 1), stages=(Stage("add", "r0", "r1"),)), name="mac")
    y = k.host_output("y", col=0)
    with pytest.raises(KernelError, match="scalar network"):
        k.connect(s.out, mac.vi0)
    with pytest.raises(KernelError, match="is an input port"):
        k.connect(mac.vi0, y.inp)
    k.connect(x.out, mac.vi0)
    k.connect(mac.vo0, y.inp)
    with pytest.raises(KernelError, match=r"unit 'mac' \(PCU at \(0, 0\)\) consumes vi1, but no connection"):
        k.build()
    k.connect(s.out, mac.si0)
    with pytest.raises(KernelError, match="drives si0 of unit 'mac'.*does not consume"):
        k.build()


def _crossing_kernel(channels):
    """Four streams from columns 0-1 to columns 2-3 of a one-row array: the cut has three links."""
    params = ArrayParams(rows=1, cols=4, lanes=4, stages=2, pmu_bank_words=64, vector_channels=channels)
    k = Kernel(params)
    ins = [k.host_input("a", col=0), k.host_input("b", col=1), k.host_input("c", col=0, side="b"),
           k.host_input("d", col=1, side="b")]
    pcu = k.pcu((0, 2), PcuConfig(inputs=(0, 1, 2), stages=(Stage("fma", "r0", "r1", "r2"),)), name="fma")
    pmu = k.pmu((0, 3), ROW_BUFFER, name="buf")
    for j, sink in enumerate([pcu.vi0, pcu.vi1, pcu.vi2]):
        k.connect(ins[j].out, sink)
    k.connect(pcu.vo0, k.host_output("y", col=2).inp)
    k.connect(ins[3].out, pmu.vi0, name="d to buf")
    k.connect(pmu.vo0, k.host_output("z", col=3).inp)
    return k


def test_unroutable_kernel_names_the_connection():
    with pytest.raises(RoutingError, match=r"kernel connection cannot be routed: net '.*': cannot reach sink "
                                           r".*no free vector channel on any path; saturated links"):
        _crossing_kernel(1).build()
    assert _crossing_kernel(2).build().routing.stats()["vector"]["max_link_use"] == 2


def test_array_constructor_checks():
    with pytest.raises(ValueError, match="params must be an ArrayParams"):
        TileArray("S")
    with pytest.raises(ValueError, match=r"pcu_tail_ops: \(0, 1\) is not a PCU position"):
        TileArray(SMALL, pcu_tail_ops={(0, 1): (TailOp.EXP,)})
    with pytest.raises(ValueError, match="pcu_post_ops for PCU .* must be a tuple of TailOp"):
        TileArray(SMALL, pcu_post_ops=(TailOp.NONE,))
    with pytest.raises(ValueError, match="rows must be at most 14"):
        TileArray(ArrayParams(rows=15, cols=2, lanes=4, stages=2, pmu_bank_words=64))
    array = TileArray(SMALL, pcu_tail_ops=(), pcu_post_ops=())
    ports = set(array.signature.members)
    assert {"config", "config_status", "config_load_cycles", "busy_cycles", "stall_cycles",
            "io_t0_vo0", "io_t3_vi0", "io_b2_so0", "io_b1_si0"} <= ports


def test_a_built_program_round_trips_through_a_program_file():
    """Compiled models are saved as program files: a program and its units must load back equal and run the same."""
    from sw.compiler.program import dumps, loads

    case = build("softmax")
    data = dumps(case.program)
    again = loads(data)
    assert again == case.program and again is not case.program
    assert dumps(again) == data
    assert np.array_equal(again.words, case.program.words)
    want = ArrayModel(case.program).run(case.inputs).outputs["y"][0]
    assert np.array_equal(ArrayModel(again).run(case.inputs).outputs["y"][0], want)
    with pytest.raises(AttributeError, match="has no port 'vo9'"):
        next(iter(again.units.values())).vo9
