import pytest

from sw.runtime.alloc import AllocationError, TierAllocator


def test_first_fit_alignment_and_merge():
    a = TierAllocator("hbm", 1024, alignment=16)
    x = a.allocate(100, "x")
    y = a.allocate(16, "y")
    z = a.allocate(200, "z")
    assert (x.offset, x.size, y.offset, z.offset) == (0, 112, 112, 128)
    a.free("y")
    a.free("x")
    assert a.allocate(128, "w").offset == 0, "freed neighbours merge into one block"
    assert a.used_bytes == 128 + 208


def test_refusal_names_tier_sizes_and_block():
    a = TierAllocator("ddr", 4096)
    a.allocate(1024, "a")
    a.allocate(1024, "b")
    a.allocate(1024, "c")
    a.free("b")
    with pytest.raises(AllocationError) as error:
        a.allocate(1500, "expert3")
    message = str(error.value)
    for part in ("ddr", "expert3", "1500 bytes", "2.00 KiB free of 4.00 KiB", "largest free block 1.00 KiB"):
        assert part in message


def test_bad_arguments():
    a = TierAllocator("hbm", 4096)
    a.allocate(16, "x")
    with pytest.raises(ValueError, match="already allocated"):
        a.allocate(16, "x")
    with pytest.raises(ValueError, match="positive size"):
        a.allocate(0, "y")
    with pytest.raises(KeyError, match="nothing allocated"):
        a.free("nope")
    with pytest.raises(ValueError, match="power of two"):
        TierAllocator("hbm", 4096, alignment=12)
