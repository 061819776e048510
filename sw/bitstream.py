"""Configuration bitstreams: packing, checking and load timing.

A bitstream is a list of 32-bit words in the format of ``facts.bitstream``
(docs/config.md), which also holds the constants and the status codes.

:func:`unpack` applies the checks of ``hw.tile.config.ConfigLoader`` in the
same order, word by word, so a bitstream it refuses with reason R at word i
is refused by the hardware with status R after ``i + 1`` cycles (without
idle cycles). ``TRUNCATED`` is the exception: the hardware cannot see the
end of a list, and refuses after ``len(words) + timeout`` cycles instead.
"""

import numbers
import zlib

from facts.bitstream import HEADER_WORDS, MAGIC, MAX_UNIT_ID, MAX_VERSION, MAX_WIDTH, VERSION, Status
from sw.errors import OpenRDUError

Reason = Status  # a refusal's reason is the loader's status, BAD_MAGIC to TRUNCATED


class BitstreamError(OpenRDUError, ValueError):
    """A refused bitstream.

    Attributes
    ----------
    reason : Reason
    index : int
        Word at which the problem was found; for ``TRUNCATED``, the first
        missing word.
    """

    def __init__(self, reason, index, message):
        super().__init__(f"{reason.name} at word {index}: {message}")
        self.reason = reason
        self.index = index


def payload_words(width):
    """32-bit words that carry a configuration of ``width`` bits."""
    return (width + 31) // 32


def crc32(words):
    """zlib's CRC-32 of ``words`` as little-endian bytes."""
    return zlib.crc32(to_bytes(words))


def to_bytes(words):
    """The words as little-endian bytes, for a bitstream file; TypeError/ValueError as :func:`check_words`."""
    return b"".join(w.to_bytes(4, "little") for w in check_words(words))


def _integer(value):
    """Whether ``value`` is an integer (Python's or numpy's), and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_words(words):
    """``words`` as a list of Python ints after checking that each is an integer from 0 to 2**32 - 1.

    Raises
    ------
    TypeError
        A word that is not an integer (a float, even a whole one, a string, a bool), naming it and its index.
    ValueError
        A word outside 0 to 2**32 - 1, naming it and its index.
    """
    out = []
    for k, w in enumerate(words):
        if not _integer(w):
            raise TypeError(f"word {k} is {w!r} ({type(w).__name__}), not an integer")
        w = int(w)
        if not 0 <= w <= 0xFFFF_FFFF:
            raise ValueError(f"word {k} is {w:#x}, not a 32-bit word")
        out.append(w)
    return out


def from_bytes(data):
    """Words from little-endian bytes; ``ValueError`` when the length is not a multiple of 4."""
    if len(data) % 4:
        raise ValueError(f"a bitstream file holds whole 32-bit words, not {len(data)} bytes")
    return [int.from_bytes(data[k:k + 4], "little") for k in range(0, len(data), 4)]


def _check_unit(unit_id, width, what):
    if not isinstance(unit_id, int) or isinstance(unit_id, bool) or not 0 <= unit_id <= MAX_UNIT_ID:
        raise ValueError(f"{what}: unit id must be an integer in [0, {MAX_UNIT_ID}], not {unit_id!r}")
    if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"{what}: width of unit {unit_id} must be an integer in [1, {MAX_WIDTH}], "
                         f"not {width!r}")


def _check_version(version):
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= MAX_VERSION:
        raise ValueError(f"version must be an integer in [0, {MAX_VERSION}], not {version!r}")


def max_total(expected):
    """Longest bitstream that can be valid for these units: every unit once."""
    return HEADER_WORDS + sum(1 + payload_words(w) for w in expected.values()) + 1


def pack(segments, *, version=VERSION):
    """Build a bitstream.

    Parameters
    ----------
    segments : dict
        Unit id -> ``(value, width_bits)``, in the order they are sent.
    version : int
        Format version, 0-65535.

    Returns
    -------
    list of int
        32-bit words, CRC last.

    Raises
    ------
    TypeError
        A value that is not an integer (a float, a string, a bool).
    ValueError
        A unit id, width or version out of range, or a value that does not fit its width.
    """
    _check_version(version)
    if not segments:
        raise ValueError("a bitstream needs at least one segment")
    body = []
    for unit_id, (value, width) in segments.items():
        _check_unit(unit_id, width, "pack")
        if not _integer(value):
            raise TypeError(f"pack: value {value!r} of unit {unit_id} is a {type(value).__name__}, not an integer")
        value = int(value)
        if not 0 <= value < 1 << width:
            raise ValueError(f"pack: value {value!r} of unit {unit_id} does not fit in {width} bits")
        n = payload_words(width)
        body.append(unit_id << 16 | n)
        body.extend((value >> (32 * k)) & 0xFFFF_FFFF for k in range(n))
    words = [MAGIC, version, len(segments), HEADER_WORDS + len(body) + 1] + body
    return words + [crc32(words)]


def unpack(words, *, expected, version=VERSION):
    """Check a bitstream and return its segments.

    Parameters
    ----------
    words : sequence of int
        One bitstream, nothing before or after it.
    expected : dict
        Unit id -> configuration width in bits.
    version : int
        The version the loader accepts.

    Returns
    -------
    dict
        Unit id -> value, in bitstream order.

    Raises
    ------
    BitstreamError
        With the reason and the word index of the first problem.
    TypeError, ValueError
        A word that is not an integer from 0 to 2**32 - 1 (:func:`check_words`), before any check of the format.
    """
    _check_version(version)
    for unit_id, width in expected.items():
        _check_unit(unit_id, width, "expected")
    words = check_words(words)

    def word(k):
        if k >= len(words):
            raise BitstreamError(Reason.TRUNCATED, k, f"the bitstream ends after {len(words)} words")
        return words[k]

    if word(0) != MAGIC:
        raise BitstreamError(Reason.BAD_MAGIC, 0, f"magic {words[0]:#010x}, expected {MAGIC:#010x}")
    if word(1) != version:
        raise BitstreamError(Reason.BAD_VERSION, 1, f"version {words[1]:#x}, the loader takes {version}")
    count = word(2)
    if not 1 <= count <= len(expected):
        raise BitstreamError(Reason.BAD_LENGTH, 2,
                             f"{count} segments, expected 1 to {len(expected)} (one per unit at most)")
    total = word(3)
    low, high = HEADER_WORDS + 2 * count + 1, max_total(expected)
    if not low <= total <= high:
        raise BitstreamError(Reason.BAD_LENGTH, 3,
                             f"total {total} words, possible for {count} segments: {low} to {high}")
    values = {}
    k = HEADER_WORDS
    for seg in range(count):
        header = word(k)
        unit_id, n = header >> 16, header & 0xFFFF
        if unit_id not in expected:
            raise BitstreamError(Reason.BAD_UNIT, k, f"segment {seg} names unit {unit_id}, which the loader "
                                                     f"does not have")
        if unit_id in values:
            raise BitstreamError(Reason.BAD_UNIT, k, f"segment {seg} names unit {unit_id} a second time")
        width = expected[unit_id]
        if n != payload_words(width):
            raise BitstreamError(Reason.BAD_LENGTH, k, f"segment {seg} (unit {unit_id}) has {n} payload words, "
                                                       f"its {width}-bit configuration takes {payload_words(width)}")
        if k + n + 2 > total:
            raise BitstreamError(Reason.BAD_LENGTH, k, f"segment {seg} (unit {unit_id}) runs past the CRC word "
                                                       f"at {total - 1}")
        value = 0
        for j in range(n):
            value |= word(k + 1 + j) << (32 * j)
        if value >> width:
            raise BitstreamError(Reason.BAD_LENGTH, k + n, f"segment {seg} (unit {unit_id}) has bits set above "
                                                           f"its {width}-bit configuration")
        values[unit_id] = value
        k += 1 + n
    crc = word(k)
    if k != total - 1:
        raise BitstreamError(Reason.BAD_LENGTH, k, f"the segments end at word {k}, the total announces the CRC "
                                                   f"at word {total - 1}")
    if crc != crc32(words[:k]):
        raise BitstreamError(Reason.BAD_CHECKSUM, k, f"CRC {crc:#010x}, the words give {crc32(words[:k]):#010x}")
    if len(words) > total:
        raise BitstreamError(Reason.BAD_LENGTH, total, f"{len(words) - total} words after the announced total "
                                                       f"of {total}")
    return values


def load_cycles(words):
    """Cycles the hardware loader takes for this bitstream sent without idle cycles.

    The loader takes one word per cycle and commits at the end of the cycle
    that takes the CRC word, so a good bitstream costs one cycle per word.

    Raises
    ------
    BitstreamError
        When the header is missing or its total differs from ``len(words)``.
    TypeError, ValueError
        A word that is not an integer from 0 to 2**32 - 1 (:func:`check_words`).
    """
    words = check_words(words)
    if len(words) < HEADER_WORDS:
        raise BitstreamError(Reason.TRUNCATED, len(words), "no complete header")
    if words[0] != MAGIC:
        raise BitstreamError(Reason.BAD_MAGIC, 0, f"magic {words[0]:#010x}, expected {MAGIC:#010x}")
    if words[3] != len(words):
        raise BitstreamError(Reason.TRUNCATED if words[3] > len(words) else Reason.BAD_LENGTH, 3,
                             f"total {words[3]} words, the list has {len(words)}")
    return len(words)
