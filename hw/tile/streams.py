"""Payload layouts of the vector and scalar networks."""

from amaranth.lib import data, stream

ScalarPayload = data.StructLayout({"data": 32, "last": 1})


def VectorPayload(lanes):
    """``lanes`` 32-bit words and a ``last`` flag."""
    return data.StructLayout({"data": data.ArrayLayout(32, lanes), "last": 1})


def vector_stream(lanes):
    return stream.Signature(VectorPayload(lanes))


def scalar_stream():
    return stream.Signature(ScalarPayload)
