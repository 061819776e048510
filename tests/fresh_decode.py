"""A short fast-model decode that builds every plan and credit service afresh, for comparing two code paths."""

import asyncio


def tiny_compiled(tmp_path):
    """The ``tiny-tied`` test checkpoint compiled fused for the ``chip`` target (context 16)."""
    from sw.compiler.compile import compile_model
    from sw.target import CHIP
    from tests.llama_checkpoints import SHAPES, make_checkpoint

    return compile_model(make_checkpoint(tmp_path, **SHAPES["tiny-tied"]), CHIP, mode="fused", context=16)


def fresh_decode(compiled):
    """``generate``'s result for prompt [0, 5, 7] and 4 new tokens on the chip target, its report without the wall
    time. The model's process-wide caches (plans, credit services and what is built on them) are emptied first, so
    that nothing an earlier decode made is reused."""
    from sw.model import chip
    from sw.runtime.decode import generate
    from sw.runtime.device import ModelDevice
    from sw.target import CHIP

    for cache in (chip._CREDITS, chip._PLANS, chip._ARRIVALS, chip._ARRAYS, chip._LAUNCH_PLANS):
        cache.clear()
    result = asyncio.run(generate(ModelDevice(CHIP), compiled, [0, 5, 7], max_new_tokens=4, stop_at_eos=False))
    result["report"].pop("wall_s")
    return result
