"""The configuration bitstream format and the loader's status codes (docs/config.md).

A bitstream is a list of 32-bit words::

    0  MAGIC
    1  version (upper 16 bits zero)
    2  number of unit segments N
    3  total words, this header and the CRC included
       N segments: header (unit id << 16 | payload words), then the payload,
       least significant word first, zero-padded
    last  CRC-32 of all preceding words as little-endian bytes (zlib.crc32)

``hw.tile.config.ConfigLoader`` checks it in hardware and ``sw.bitstream``
packs and checks it in software; both take these numbers from here.
"""

import enum

MAGIC = 0x5244_5530  # "RDU0", most significant byte first
VERSION = 1  # the format version the array's loader accepts
HEADER_WORDS = 4
MAX_VERSION = 0xFFFF
MAX_UNIT_ID = 0xFFFF
MAX_PAYLOAD_WORDS = 0xFFFF
MAX_WIDTH = 32 * MAX_PAYLOAD_WORDS


class Status(enum.IntEnum):
    """Loader status (a 4-bit register); the codes from ``BAD_MAGIC`` on are why a bitstream is refused."""

    IDLE = 0
    LOADING = 1
    OK = 2
    BAD_MAGIC = 3
    BAD_VERSION = 4
    BAD_LENGTH = 5
    BAD_UNIT = 6
    BAD_CHECKSUM = 7
    TRUNCATED = 8

