"""Payload layouts of the Top-Level Network (TLN) between the AGCUs, the copy
engine, the host port and the memory controllers.

Every request is one TLN word, read or write, to one tier at a byte address
that must be word-aligned. Every request gets exactly one response, in
request order per controller: read data, or a write acknowledgement. A
response with ``error`` set means the access was not performed (address out
of the tier or misaligned) and its data is zero.

``tag`` is the requester's own; controllers and the crossbar pass it back
unchanged. The crossbar widens it by the requester's index on the way in and
strips that on the way out.
"""

from amaranth.lib import data, stream


def request_layout(*, word_bytes, addr_bits, tag_bits):
    return data.StructLayout({
        "tier": 1, "write": 1, "addr": addr_bits, "data": 8 * word_bytes, "tag": tag_bits,
    })


def response_layout(*, word_bytes, tag_bits):
    return data.StructLayout({"data": 8 * word_bytes, "tag": tag_bits, "write": 1, "error": 1})


def request_stream(*, word_bytes, addr_bits, tag_bits):
    return stream.Signature(request_layout(word_bytes=word_bytes, addr_bits=addr_bits, tag_bits=tag_bits))


def response_stream(*, word_bytes, tag_bits):
    return stream.Signature(response_layout(word_bytes=word_bytes, tag_bits=tag_bits))


def master_signature(params, *, tag_bits):
    """Ports of one TLN requester, seen from the requester: ``req`` out, ``resp`` in."""
    from amaranth.lib.wiring import In, Out, Signature

    return Signature({
        "req": Out(request_stream(word_bytes=params.word_bytes, addr_bits=params.addr_bits, tag_bits=tag_bits)),
        "resp": In(response_stream(word_bytes=params.word_bytes, tag_bits=tag_bits)),
    })
