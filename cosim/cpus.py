"""How many CPUs this process may use: one answer for the builds, the split conversion and the simulations."""

import os


def usable_cpus():
    """CPUs this process may run on (a container's or ``taskset``'s share, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
