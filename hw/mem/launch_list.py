"""The launch list: the record format the on-chip sequencer reads from memory (docs/chip.md, "Launch lists").

A launch list is a sequence of 32-bit little-endian words in a tier, padded
with zero words to whole TLN words. It holds entries, each the three SN40L
launch commands of one kernel:

- a **header** (:func:`header_layout`, 2 words): ``enable`` (bit 2k: AGCU k
  reads, bit 2k + 1: AGCU k writes, as the ``kernel_enable`` register),
  ``program`` (a program record follows) and ``final`` (the list's last entry);
- if ``program``: a **program record** (:func:`program_record_layout`), the
  Program Load pattern of the kernel's bitstream, as the ``program`` register.
  The sequencer skips the load when the record equals that of the chip's last
  accepted Program Load (the program is resident);
- for every enabled direction, AGCUs in ascending order and each AGCU's read
  before its write, a **direction record** (:func:`direction_record_layout`):
  the AGCU pattern as the ``agcuK_read`` / ``agcuK_write`` registers hold it
  (a read's gate, ``after`` and ``lag``, included) plus byte strides by which
  its ``base`` steps with the token id and the position of the step:
  ``base + token * token_stride + pos * pos_stride``
  (Argument Load with the bases of this step, computed on chip).

Each record fills a whole number of words (:func:`record_words`), its fields
packed from bit 0 of its first word as ``sw.layout.pack`` packs them.
"""

from amaranth import signed
from amaranth.lib import data

from hw.mem.agcu import transfer_layout

WORD_BITS = 32
MAX_AGCUS = WORD_BITS // 2          # the header's enable word holds two bits per AGCU


def header_layout():
    return data.StructLayout({"enable": WORD_BITS, "program": 1, "final": 1})


def program_record_layout(params):
    return transfer_layout(params)


def direction_record_layout(params):
    return data.StructLayout({"transfer": transfer_layout(params), "token_stride": signed(WORD_BITS),
                              "pos_stride": signed(WORD_BITS)})


def record_words(layout):
    """32-bit words a record of ``layout`` occupies in a list."""
    return -(-layout.size // WORD_BITS)
