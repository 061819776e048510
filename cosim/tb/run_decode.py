"""cocotb job behind decode on the RTL: the runtime's decode loop driving the co-simulated chip.

Run on the ``chip`` unit's build by :func:`cosim.decode.run_rtl`. Reads the
compiled model from the pickle named by ``OPENRDU_DECODE_PROGRAM`` and the
request (``prompt_ids``, ``max_new_tokens``, ``temperature``, ``top_k``,
``seed``, and optionally ``weights_tier`` and ``stop_at_eos``) from the JSON
file named by ``OPENRDU_DECODE_REQUEST``; writes
:func:`sw.runtime.decode.generate`'s result as JSON to
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
from sw.compiler import mapping
from sw.runtime.decode import generate

OPTIONAL = ("weights_tier", "stop_at_eos")


def progress(done, total):
    print(f"step {done}/{total}", file=sys.stderr, flush=True)


@cocotb.test()
async def decode(dut):
    compiled = mapping.load(os.environ["OPENRDU_DECODE_PROGRAM"])
    check_target(compiled.target)
    request = json.loads(Path(os.environ["OPENRDU_DECODE_REQUEST"]).read_text())
    device = CocotbDevice(dut, compiled.target)
    # Optional arguments of generate() pass through only when the request names them.
    extra = {key: request[key] for key in OPTIONAL if key in request}
    try:
        result = await generate(device, compiled, list(request["prompt_ids"]),
                                max_new_tokens=int(request["max_new_tokens"]),
                                temperature=float(request.get("temperature", 0.0)),
                                top_k=int(request.get("top_k", 0)), seed=int(request.get("seed", 0)),
                                progress=progress, **extra)
    finally:
        await device.close()
    Path(os.environ["OPENRDU_DECODE_RESULT"]).write_text(json.dumps(result, default=plain))


def plain(value):
    """numpy scalars in the result as Python numbers (``json.dumps``'s fallback)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} in the decode result is not JSON-serialisable")
