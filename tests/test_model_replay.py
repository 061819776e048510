"""The fast model's replays (launch plans, PMU gathers, prefix arrivals) and 64-bit tails equal the slow paths."""

import numpy as np
import pytest

from hw.chip import all_io_positions
from hw.mem import params
from hw.tile.params import SMALL
from sw.golden import tail as golden
from sw.model import chip as chip_model
from sw.model import tail
from sw.model.chip import ChipModel
from sw.model.memory import TierModel
from sw.model.pmu import PmuModel
from sw.runtime.chip import Pattern, stream_pattern
from sw.tile.kernels import TEST_POST, TEST_TAIL, gemv_bias_act
from sw.tile.pmu import AddressPattern, PmuConfig, ReadMode
from tests.test_fp32_model import patterns


@pytest.mark.parametrize("name", ["exp", "recip", "rsqrt", "sigmoid", "silu"])
def test_tails_are_the_golden_tails(name):
    rng = np.random.default_rng(len(name))
    # Every class of pattern (NaN, inf, zeros, subnormals), then every exponent with random fractions and signs.
    n = 60000
    fields = (rng.integers(0, 2, n) << 31) | (rng.integers(0, 256, n) << 23) | rng.integers(0, 1 << 23, n)
    for x in (patterns(rng, 4000), fields.astype(np.uint32), fields[:12].astype(np.uint32).reshape(3, 4),
              np.uint32(0x3F800000), np.zeros(0, np.uint32)):
        assert np.array_equal(getattr(tail, name)(x), getattr(golden, name)(x))


def test_tier_service_of_more_words_extends_the_fewer():
    for tier in params.SMALL.tiers:
        for streams, total in ((1, 700), (3, 50), (3, 2000), (2, 5)):
            want = TierModel(tier, word_bytes=params.SMALL.word_bytes).service(
                (chip_model.AGCU_START_CYCLES + np.arange(total) // streams).tolist())
            assert chip_model._service(tier, params.SMALL.word_bytes, streams, total)[:total] == want


def test_credit_service_without_holds_is_the_round_robin_service():
    for tier in params.SMALL.tiers:
        for streams, words in ((1, 300), (3, 100)):
            free = [(words, words, np.full(words, chip_model._NEVER), 0)] * streams
            got = chip_model._credit_service(tier, params.SMALL.word_bytes, free, 64)
            want = chip_model._service(tier, params.SMALL.word_bytes, streams, streams * words)
            assert got == [want[k:streams * words:streams] for k in range(streams)]


def test_credit_service_holds_a_stream_at_its_credits():
    # Stream 1's sink takes nothing before cycle 5000: its AGCU has `outstanding` words, then stops, and
    # stream 0 has the tier to itself; bf16 words (two vectors each) free their slot with the second vector.
    # (Fewer credits than the tier's latency at its bandwidth would slow even a stream alone.)
    tier, wb, outstanding = params.SMALL.hbm, params.SMALL.word_bytes, params.SMALL.agcu_outstanding
    got = chip_model._credit_service(tier, wb, [(300, 300, np.full(300, chip_model._NEVER), 0),
                                                (200, 400, np.full(400, 5000), 0)], outstanding)
    held = np.array(got[1])
    assert np.all(held[:outstanding] < 1000) and np.all(held[outstanding:] > 5000)
    shared = chip_model._service(tier, wb, 2, 500)
    assert got[0][-1] < shared[chip_model._round_robin([300, 200])[0][-1]]
    alone = TierModel(tier, word_bytes=wb).service([chip_model.AGCU_START_CYCLES + j for j in range(300)])
    assert got[0][-1] <= alone[-1] + outstanding


def test_credit_service_serves_only_the_words_not_held():
    # Words already in the AGCU's buffer (a looped kernel's next iteration) answer at once and take no request:
    # the rest is the service of a stream that many words shorter, its first word's credit still counted.
    tier, wb, outstanding = params.SMALL.hbm, params.SMALL.word_bytes, params.SMALL.agcu_outstanding
    free = chip_model._NEVER
    got = chip_model._credit_service(tier, wb, [(300, 300, np.full(300, free), outstanding)], outstanding)[0]
    assert got[:outstanding] == [-chip_model.AGCU_READ_CYCLES] * outstanding
    shorter = chip_model._credit_service(tier, wb, [(300 - outstanding, 300 - outstanding,
                                                     np.full(300 - outstanding, free), 0)], outstanding)[0]
    assert got[outstanding:] == shorter
    # A sink that takes nothing before cycle 5000 holds even the first word past the buffered ones.
    held = chip_model._credit_service(tier, wb, [(300, 300, np.full(300, 5000), outstanding)], outstanding)[0]
    assert min(held[outstanding:]) > 5000


@pytest.mark.parametrize("config", [
    PmuConfig(write=AddressPattern.linear(4, SMALL.lanes), read=AddressPattern.linear(4, SMALL.lanes)),
    PmuConfig(write=AddressPattern.linear(4, SMALL.lanes), read=AddressPattern.linear(6, SMALL.lanes),
              read_mode=ReadMode.ROW),
    PmuConfig(write=AddressPattern.linear(1, SMALL.lanes, runtime_base=True),
              read=AddressPattern.linear(2, SMALL.lanes, runtime_base=True), write_passes=3, read_passes=3),
], ids=["same", "wider-read", "runtime-bases"])
def test_pmu_gather_is_a_run_from_zeroed_banks(config):
    rng = np.random.default_rng(3)
    model = PmuModel(SMALL, config)
    bases = ([8, 16, 0], [4, 0, 12]) if config.write.runtime_base else ((), ())
    for n in (4, 8, 12):
        m = rng.integers(0, 1 << 32, (n, SMALL.lanes), dtype=np.uint64).astype(np.uint32)
        want = PmuModel(SMALL, config).run(m, *bases)
        vo0, last, errors, cycles = model.gather(m, *bases)
        assert np.array_equal(vo0, want.vo0) and np.array_equal(last, want.last)
        assert (errors, cycles) == (want.errors, want.cycles)
        assert not model.banks.any(), "a gather leaves the banks alone"


def _launch(chip, case, at, out, rng):
    """Reads and writes of ``case`` with its inputs (new random data) stored from byte ``at``, its output at ``out``."""
    wb, hbm = params.SMALL.word_bytes, params.HBM
    reads = {}
    for name, (data, last) in case.inputs.items():
        port = case.program.host_inputs[name]
        fresh = rng.integers(0, 1 << 30, np.shape(data), dtype=np.uint64).astype(np.uint32)
        chip.memory[hbm].write(at, fresh)
        reads[chip.agcu_at(port.side, port.col)] = stream_pattern(hbm, at, last, lanes=SMALL.lanes, word_bytes=wb)
        at += 0x1000
    port = case.program.host_outputs["y"]
    return reads, {chip.agcu_at(port.side, port.col): Pattern.linear(hbm, out, 3 * SMALL.lanes * 4 // wb)}


def assert_replay_is_step_by_step(replayed, stepped, launches):
    """``replayed.execute`` of ``launches[0]`` against ``stepped._execute`` of ``launches[1]``: cycles, outputs,
    HBM bytes and counters."""
    got = replayed.execute(*launches[0])
    want = stepped._execute(*launches[1])
    assert got[0] == want[0]
    assert all(np.array_equal(got[1][n][i], want[1][n][i]) for n in want[1] for i in (0, 1))
    assert np.array_equal(replayed.memory[params.HBM].bytes, stepped.memory[params.HBM].bytes)
    assert replayed.stats == stepped.stats


def test_a_replayed_launch_is_the_launch_run_step_by_step():
    case = gemv_bias_act(SMALL, TEST_TAIL, TEST_POST, np.random.default_rng(0))
    replayed, stepped = (ChipModel(SMALL, params.SMALL, all_io_positions(SMALL)) for _ in range(2))
    for chip in (replayed, stepped):
        chip.load_program(case.program)
    for k, (at, out) in enumerate(((0, 0x8000), (0x10000, 0x9000), (0x20000, 0x8000))):
        launches = [_launch(chip, case, at, out, np.random.default_rng(k)) for chip in (replayed, stepped)]
        assert_replay_is_step_by_step(replayed, stepped, launches)
    # The plan was made by the first launch; the others replayed it.
    assert len(replayed._ports(case.program)[2]) == 1


@pytest.mark.parametrize("kind", ["normal", "tiny", "special"])
@pytest.mark.parametrize("shape", [(5, 8), (1, 9), (3, 1), (40, 4), (7, 2)])
def test_one_pass_sums_are_the_golden_sums(kind, shape):
    from sw.golden import arith as g
    from sw.model import fp32

    rng = np.random.default_rng(sum(shape) + len(kind))
    if kind == "special":
        x = patterns(rng, shape[0] * shape[1])[:shape[0] * shape[1]].reshape(shape)
    else:
        scale = 1.0 if kind == "normal" else 2.0 ** -110
        x = (rng.standard_normal(shape) * scale * 2.0 ** rng.integers(-20, 20, shape)).astype(np.float32).view(np.uint32)
        x[rng.random(shape) < 0.2] = 0x80000000
    if shape[1] & (shape[1] - 1) == 0:
        lanes = x
        while lanes.shape[1] > 1:
            lanes = g.fp32_add(lanes[:, 0::2], lanes[:, 1::2])
        assert np.array_equal(fp32.lane_sums(x), lanes[:, 0])
    for start in (0, 0x80000000):
        acc = np.full(shape[0], start, np.uint32)
        for j in range(shape[1]):
            acc = g.fp32_add(x[:, j], acc)
        assert np.array_equal(fp32.ordered_sums(x, start=start), acc)


def test_constants_differing_only_in_the_sign_of_zero_are_not_shared():
    """Found by ``bench verify``: caches keyed by a configuration took a bias of -0.0 for 0.0 (equal floats,
    equal hashes), so a kernel run after its +0 twin gave +0 where the chip gives -0."""
    import dataclasses

    from sw.model.array import _unit_model
    from sw.model.pcu import PcuModel, scalar_post
    from sw.tile.pcu import PcuConfig

    zero = np.zeros(2, np.uint32)
    plus = PcuConfig(so="group", reduce="sum", so_scale=-2.0, so_bias=0.0)
    minus = dataclasses.replace(plus, so_bias=-0.0)
    assert scalar_post(plus, zero).tolist() == [0, 0]              # -0 + +0 = +0
    assert scalar_post(minus, zero).tolist() == [0x80000000] * 2   # -0 + -0 = -0
    ops = dict(tail_ops=TEST_TAIL[(0, 2)], post_ops=TEST_POST[(0, 2)])
    a = _unit_model(PcuModel, SMALL, plus, **ops)
    b = _unit_model(PcuModel, SMALL, minus, **ops)
    assert a is not b and b.config.so_bias == 0.0 and str(b.config.so_bias) == "-0.0"


def test_round_robin_positions():
    # Word j of stream k: every word of the rounds before j, then the streams before k still served in round j.
    rng = np.random.default_rng(3)
    cases = [[5], [3, 3], [4, 1, 7], [0, 2], [2, 0, 2], [0], []] + [rng.integers(0, 40, rng.integers(1, 7)).tolist()
                                                                  for _ in range(50)]
    for counts in cases:
        got = chip_model._round_robin(counts)
        assert len(got) == len(counts)
        for k, c in enumerate(counts):
            j = np.arange(c)
            want = sum((np.minimum(m, j) for m in counts), np.zeros(c, np.int64)) + \
                sum(((m > j) for m in counts[:k]), np.zeros(c, np.int64))
            assert np.array_equal(got[k], want), (counts, k)
        served = np.concatenate(got + [np.zeros(0, np.int64)])
        assert np.array_equal(np.sort(served), np.arange(sum(counts)))
