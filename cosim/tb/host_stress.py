"""Random AXI4 bursts under back-pressure, checked against a byte model: the host-port stress that
``test_host`` runs on the host unit alone and ``test_chip`` beside kernels and copies on the whole chip.
"""

import numpy as np
from cocotb.triggers import gather
from cocotbext.axi import AxiResp

from cosim.components import pauses


def backpressure(axi, probability, seed):
    """Idle cycles on AW, W and AR and back-pressure on B and R of cocotbext-axi's ``axi`` master, each with
    ``probability`` per cycle from its own seeded stream; ``probability`` 0 removes them. Returns the channels."""
    channels = (axi.write_if.aw_channel, axi.write_if.w_channel, axi.write_if.b_channel, axi.read_if.ar_channel,
                axi.read_if.r_channel)
    for k, channel in enumerate(channels):
        channel.set_pause_generator(pauses(probability, (seed, 300 + k)) if probability else None)
    return channels


async def random_bursts(axi, windows, total, seed, *, word_bytes, addr_bits, max_words=96, write_share=0.55):
    """Issue ``total`` random bursts from ``len(windows)`` concurrent workers and check every read.

    Worker ``w`` owns ``windows[w]``, a dict ``tier -> (base, model)``: the bytes ``[base, base + len(model))``
    of that tier, whose current contents the ``model`` (a uint8 array, updated in place) holds. Its bursts
    ``w, w + workers, ...`` pick a tier at random; a write (share ``write_share``) is 1 to ``max_words``
    whole words at a word offset, a read any byte length up to ``max_words`` words at any byte offset, and
    must return the model's bytes at the time it was issued (no other master writes a worker's window).
    The AXI address of a tier's byte is ``tier << addr_bits | offset``.

    Returns the bytes written per burst, a list. Raises ``AssertionError`` on a response other than OKAY
    or a read that differs from the model.
    """
    written = []

    async def worker(w):
        rng = np.random.default_rng((seed, 7, w))
        for i in range(w, total, len(windows)):
            tier = int(rng.integers(2))
            base, model = windows[w][tier]
            span = len(model)
            if rng.random() < write_share:
                words = int(rng.integers(1, max_words + 1))
                at = word_bytes * int(rng.integers(0, (span - words * word_bytes) // word_bytes + 1))
                payload = rng.integers(0, 256, words * word_bytes, dtype=np.uint8)
                resp = await axi.write((tier << addr_bits) | (base + at), payload.tobytes())
                assert resp.resp == AxiResp.OKAY, f"burst {i}: write of {words} words at {tier}:{base + at:#x}"
                model[at:at + len(payload)] = payload
                written.append(len(payload))
            else:
                size = int(rng.integers(1, max_words * word_bytes))
                at = int(rng.integers(0, span - size + 1))
                want = model[at:at + size].tobytes()
                got = await axi.read((tier << addr_bits) | (base + at), size)
                assert got.resp == AxiResp.OKAY and got.data == want, \
                    f"burst {i}: read of {size} bytes at {tier}:{base + at:#x} differs from the model"

    await gather(*(worker(w) for w in range(len(windows))))
    return written
