"""cocotb job behind decode on the RTL: the runtime's decode loop driving the co-simulated chip.

Run by :func:`cosim.decode.run_rtl` on the build of the models' target (``chip`` or ``chip-4x8``,
named by ``OPENRDU_CHIP_TARGET``; default ``chip``). Reads the
compiled models from the program files named by ``OPENRDU_DECODE_PROGRAM`` (separated by ``os.pathsep``) and the
request (``prompt_ids``, ``max_new_tokens``, ``temperature``, ``top_k``,
``seed``, and optionally ``weights_tier``, ``stop_at_eos``, ``trace``, ``prefill`` and
``orchestration``, one per model when a list) from the JSON
file named by ``OPENRDU_DECODE_REQUEST``; writes the list of
:func:`sw.runtime.decode.generate`'s results, one per model, as JSON to
``OPENRDU_DECODE_RESULT``. Progress goes to stderr as ``step i/n`` lines.
"""

import json
import os
import sys
from pathlib import Path

import cocotb
import numpy as np

from cosim.decode import check_target
from cosim.device import CocotbDevice
from cosim.tb.units_chip import SIMULATED, TARGET
from sw.compiler import program
from sw.runtime.backends import per_model
from sw.runtime.decode import generate

OPTIONAL = ("weights_tier", "stop_at_eos", "trace", "orchestration", "prefill")


# Every run's latest step: the progress file holds them all, so a reader polling it sees each run's end.
_STEPS = {}


def reporter(index):
    """Progress of run ``index``: ``step i/n`` on stderr, and in OPENRDU_DECODE_PROGRESS if set a line
    ``index i n`` for every run so far, written whole (replaced, never seen half-written)."""
    path = os.environ.get("OPENRDU_DECODE_PROGRESS")

    def progress(done, total):
        print(f"step {done}/{total}", file=sys.stderr, flush=True)
        if path:
            _STEPS[index] = (done, total)
            partial = Path(f"{path}.tmp")
            partial.write_text("".join(f"{i} {d} {t}\n" for i, (d, t) in sorted(_STEPS.items())))
            partial.replace(path)
    return progress


@cocotb.test()
async def decode(dut):
    paths = os.environ["OPENRDU_DECODE_PROGRAM"].split(os.pathsep)
    models = [program.load(path) for path in paths]
    built = SIMULATED[os.environ.get("OPENRDU_CHIP_TARGET", TARGET.name)]
    for compiled in models:
        check_target(compiled.target, (built,))
    request = json.loads(Path(os.environ["OPENRDU_DECODE_REQUEST"]).read_text())
    device = CocotbDevice(dut, built)
    # Optional arguments of generate() pass through only when the request names them.
    extra = {key: request[key] for key in OPTIONAL if key in request}
    results = []
    try:
        # Several compiled models (fused and unfused) run one after the other on the one simulated chip.
        for index, compiled in enumerate(models):
            results.append(await generate(device, compiled, list(request["prompt_ids"]),
                                          max_new_tokens=int(request["max_new_tokens"]),
                                          temperature=float(request.get("temperature", 0.0)),
                                          top_k=int(request.get("top_k", 0)), seed=int(request.get("seed", 0)),
                                          progress=reporter(index), **per_model(extra, index)))
    finally:
        await device.close()
    Path(os.environ["OPENRDU_DECODE_RESULT"]).write_text(json.dumps(results, default=plain))


def plain(value):
    """numpy scalars in the result as Python numbers (``json.dumps``'s fallback)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} in the decode result is not JSON-serialisable")
