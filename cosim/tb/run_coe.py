"""cocotb job behind ``openrdu coe --backend rtl``: the CoE controller driving the co-simulated chip.

Run by :func:`cosim.coe.run_coe`. Reads the job (library folder and size, the saved program files of
the models the library compiled, the requests and the controller's options) from the JSON file named
by ``OPENRDU_COE_JOB``; writes :func:`sw.coe.controller.serve`'s result as JSON to ``OPENRDU_COE_RESULT``.
"""

import json
import os
from pathlib import Path

import cocotb

from cosim.decode import check_target
from cosim.device import CocotbDevice
from cosim.tb.run_decode import plain
from cosim.tb.units_chip import TARGET
from sw.coe.controller import serve
from sw.coe.library import Library
from sw.compiler import program


@cocotb.test()
async def coe(dut):
    job = json.loads(Path(os.environ["OPENRDU_COE_JOB"]).read_text())
    files = job["compiled"]

    def load(path, target):
        compiled = program.load(files[str(Path(path).resolve())])
        check_target(compiled.target)
        return compiled

    library = Library(job["library"], TARGET, size=job["size"], compile=load)
    progress_path = os.environ.get("OPENRDU_DECODE_PROGRESS")

    def progress(done, total):
        if progress_path:
            Path(progress_path).write_text(f"0 {done} {total}")

    device = CocotbDevice(dut, TARGET)
    try:
        out = await serve(device, library, job["requests"], progress=progress, **job["options"])
    finally:
        await device.close()
    Path(os.environ["OPENRDU_COE_RESULT"]).write_text(json.dumps(out, default=plain))
