"""Settings for the whole suite."""

import os

# The launch-plan cache (sw/model/plan_cache.py) is off unless a test turns it on in a folder of its own, so that no
# test depends on plans an earlier run or another worker left on disk; OPENRDU_PLAN_CACHE set outside wins.
os.environ.setdefault("OPENRDU_PLAN_CACHE", "off")
