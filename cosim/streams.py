"""Payload integers of the tile networks' streams (``hw.tile.streams``) to and from numpy arrays.

The drivers, monitors and scoreboards that carry them are in :mod:`cosim.components`.
"""

import numpy as np


def pack_vectors(data, last, lanes):
    """``VectorPayload`` integers from (n, lanes) words and n ``last`` flags."""
    rows = np.asarray(data).reshape(-1, lanes)
    return [sum(int(w) << (32 * l) for l, w in enumerate(row)) | int(f) << (32 * lanes) for row, f in zip(rows, last)]


def pack_scalars(data, last):
    """``ScalarPayload`` integers from n words and n ``last`` flags."""
    return [int(w) | int(f) << 32 for w, f in zip(np.asarray(data).reshape(-1), last)]


def unpack_vectors(payloads, lanes):
    """(words (n, lanes) uint32, last (n,) bool) from ``VectorPayload`` integers."""
    data = np.array([[(p >> (32 * l)) & 0xFFFF_FFFF for l in range(lanes)] for p in payloads],
                    dtype=np.uint32).reshape(len(payloads), lanes)
    return data, np.array([(p >> (32 * lanes)) & 1 for p in payloads], dtype=bool)


def unpack_scalars(payloads):
    """(words (n,) uint32, last (n,) bool) from ``ScalarPayload`` integers."""
    return (np.array([p & 0xFFFF_FFFF for p in payloads], dtype=np.uint32),
            np.array([(p >> 32) & 1 for p in payloads], dtype=bool))

