"""The affine loop nest of the address generators (PMU read and write, AGCU read and write).

A nest has ``LEVELS`` levels, level 0 innermost; level k runs ``bounds[k]``
iterations (a ``COUNT_BITS``-bit count) and adds ``strides[k]`` per iteration.
A ``last`` mark with level k falls on each iteration where levels 0..k all
finish. ``hw.loopnest.LoopNestCounter`` walks a nest in hardware and
``sw.loopnest.LoopNest`` describes and enumerates one in software.
"""

LEVELS = 4
COUNT_BITS = 16
MAX_COUNT = (1 << COUNT_BITS) - 1
# PMU register ``last_level``: LAST_NEVER (any value LEVELS..7) marks no iteration.
LAST_LEVEL_BITS = 3
LAST_NEVER = LEVELS
# AGCU register ``last_every``: k marks where levels 0..k-1 finish, 0 the transfer's final word only.
LAST_EVERY_BITS = 3
