"""Values kept per object by its identity: ``kept(cache, obj, make)``.

The fast model keeps what it derives from immutable objects it is handed again and again (programs, plans, unit
configurations) in dicts keyed by ``id(obj)``. The object itself is kept beside the value, so an id that Python
reuses after the object is gone is not taken for it.
"""


def kept(cache, obj, make, *, key=None, limit=4096):
    """``make(obj)``, kept in ``cache`` under ``key`` (default ``id(obj)``) with ``obj`` itself.

    Parameters
    ----------
    cache : dict
        Where the values live; emptied once it holds ``limit`` entries.
    obj : object
        What the value is derived from; a hit needs this very object.
    make : callable
        ``make(obj)`` gives the value on a miss.
    key : hashable, optional
        The entry's key, where more than the object's identity tells values apart or one entry per key holds
        whichever object is current there; a hit still needs ``obj`` itself.
    limit : int
        Entries at most.
    """
    at = id(obj) if key is None else key
    known = cache.get(at)
    if known is None or known[0] is not obj:
        if len(cache) >= limit:
            cache.clear()
        known = cache[at] = (obj, make(obj))
    return known[1]
