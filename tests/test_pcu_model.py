"""The PCU fast model against mathematics, and the configuration checks."""

import numpy as np
import pytest

from cosim.tb.pcu_cases import cases
from hw.tile.params import SMALL, DEFAULT
from hw.tile.pcu import pcu_config_layout
from sw.model.pcu import PcuModel
from sw.tile.pcu import PcuConfig, Stage


@pytest.mark.parametrize("params", [SMALL, DEFAULT], ids=["small", "default"])
@pytest.mark.parametrize("case", cases(SMALL), ids=lambda c: c.name)
def test_kernel_means_what_it_says(params, case):
    case = next(c for c in cases(params) if c.name == case.name)
    inputs, reference = case.make(params, np.random.default_rng(7))
    result = PcuModel(params, case.config).run(inputs.vi, inputs.si)
    assert reference(result) <= case.tolerance, f"{case.name}: error {reference(result):.3g} > {case.tolerance}"


def test_pack_round_trips_through_the_layout():
    config = PcuConfig(inputs=(0, 1), s0="per_group", stages=(Stage("fma", "r0", "s0", "const", "r2", 7),),
                       out_src="r2", tail="exp", reduce="sum", so="group", so_func="recip")
    layout = pcu_config_layout(SMALL)
    value = config.pack(SMALL)
    view = layout.const(config.record(SMALL))
    assert value == view.as_value().value
    assert value < 1 << layout.size


@pytest.mark.parametrize("config, field", [
    (PcuConfig(inputs=()), "inputs"),
    (PcuConfig(inputs=(3,)), "inputs"),
    (PcuConfig(inputs=(0,), group_src=1), "group_src"),
    (PcuConfig(stages=(Stage(),) * 3), "stages"),
    (PcuConfig(stages=(Stage("div"),)), "stages[0].op"),
    (PcuConfig(stages=(Stage("add", "r0", "s0"),)), "stages[0]"),
    (PcuConfig(tail="tanh"), "tail"),
    (PcuConfig(so="group"), "so"),
    (PcuConfig(vo=False), "vo"),
    (PcuConfig(inputs=(0,), systolic=True, systolic_rows=1), "inputs"),
    (PcuConfig(inputs=(0, 1), systolic=True, systolic_rows=3), "systolic_rows"),
    (PcuConfig(systolic_rows=1), "systolic_rows"),
    (PcuConfig(inputs=(0, 1, 2), systolic_operand=True), "systolic_operand"),
    (PcuConfig(inputs=(0, 1), systolic=True, systolic_rows=1, systolic_operand=True), "inputs"),
    (PcuConfig(inputs=(0, 1, 2), systolic=True, systolic_rows=1), "inputs"),
    (PcuConfig(inputs=(0, 1, 2), group_src=2, systolic=True, systolic_rows=1, systolic_operand=True), "group_src"),
    (PcuConfig(inputs=(0, 1), systolic=True, systolic_rows=1, s0="per_group"), "systolic"),
    (PcuConfig(inputs=(0, 1), systolic=True, systolic_rows=1, so="group"), "so"),
])
def test_refused_configurations_name_the_field(config, field):
    with pytest.raises(ValueError, match=rf"PcuConfig\.{field.replace('[', '.').replace(']', '.')}"):
        config.validate(SMALL)


def test_tail_function_missing_from_the_build_is_refused():
    with pytest.raises(ValueError, match="built without 'silu'"):
        PcuConfig(tail="silu").validate(SMALL, tail_ops=("exp", "recip"))


def test_model_refuses_mismatched_inputs():
    model = PcuModel(SMALL, PcuConfig(inputs=(0, 1)))
    data = np.zeros((3, SMALL.lanes), np.uint32)
    with pytest.raises(ValueError, match="different lengths"):
        model.run({0: (data, np.ones(3, bool)), 1: (data[:2], np.ones(2, bool))})
    with pytest.raises(ValueError, match="no `last` flag"):
        model.run({0: (data, np.zeros(3, bool)), 1: (data, np.zeros(3, bool))})


def test_systolic_operand_needs_one_vector_per_drained_row():
    config = PcuConfig(inputs=(0, 1, 2), systolic=True, systolic_rows=2, systolic_operand=True,
                       stages=(Stage("add", "r0", "r1"),))
    model = PcuModel(SMALL, config)
    data = np.zeros((6, SMALL.lanes), np.uint32)
    last = np.array([0, 0, 1, 0, 0, 1], bool)
    vi = {0: (data, last), 1: (data, last)}
    with pytest.raises(ValueError, match="2 groups x 2 rows = 4 needed, 3 given"):
        model.run({**vi, 2: (data[:3], np.zeros(3, bool))})
    assert len(model.run({**vi, 2: (data[:4], np.zeros(4, bool))}).vo) == 4


def test_systolic_reduction_folds_over_the_drained_rows_groups():
    # GEMV tiles of one row each; vi2's last flags group the drained rows 2 + 1 for so0's fold.
    config = PcuConfig(inputs=(0, 1, 2), systolic=True, systolic_rows=1, systolic_operand=True,
                       stages=(Stage("add", "r0", "r1"),), reduce="sum", so="group")
    model = PcuModel(SMALL, config)
    lanes = SMALL.lanes
    ones = np.full((6, lanes), 0x3F800000, np.uint32)  # 1.0: each tile of two firings drains 2.0 per lane
    last = np.array([0, 1, 0, 1, 0, 1], bool)
    operand = np.zeros((3, lanes), np.uint32)
    vi = {0: (ones, last), 1: (ones, last)}
    r = model.run({**vi, 2: (operand, np.array([0, 1, 1], bool))})
    assert r.so.view(np.float32).tolist() == [4.0 * lanes, 2.0 * lanes] and r.so_last.tolist() == [True, True]
    assert r.vo_last.tolist() == [False, True, True]
    with pytest.raises(ValueError, match="final group of drained rows"):
        model.run({**vi, 2: (operand, np.array([0, 1, 0], bool))})
