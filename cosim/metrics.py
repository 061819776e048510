"""Measurements a testbench hands to a benchmark: a JSON file named by ``OPENRDU_METRICS``."""

import json
import os


def record(name, **values):
    """Store ``values`` under ``name`` in the metrics file, if a benchmark asked for one."""
    path = os.environ.get("OPENRDU_METRICS")
    if not path:
        return
    data = json.loads(open(path).read()) if os.path.exists(path) else {}
    data[name] = values
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
