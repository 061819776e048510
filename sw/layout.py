"""Integer payloads of ``amaranth.lib.data`` layouts, for drivers and testbenches."""

from amaranth import Shape
from amaranth.lib import data


def pack(layout, value):
    """An integer payload of any ``amaranth.lib.data`` layout from nested dicts and lists
    (missing struct fields are 0; negative integers are two's complement)."""
    if isinstance(layout, data.StructLayout):
        fields = dict(layout)
        unknown = set(value) - set(fields)
        if unknown:
            raise KeyError(f"layout has no fields {sorted(unknown)}; it has {sorted(fields)}")
        return sum(pack(fields[k].shape, v) << fields[k].offset for k, v in value.items())
    if isinstance(layout, data.ArrayLayout):
        width = Shape.cast(layout.elem_shape).width
        return sum(pack(layout.elem_shape, v) << (i * width) for i, v in enumerate(value))
    shape = Shape.cast(layout)
    v = int(value)
    lo, hi = (-(1 << (shape.width - 1)), 1 << (shape.width - 1)) if shape.signed else (0, 1 << shape.width)
    if not lo <= v < hi:
        raise ValueError(f"{v} does not fit {shape}")
    return v & ((1 << shape.width) - 1)


def unpack(layout, word):
    """Nested dicts of unsigned field values from an integer payload of a StructLayout."""
    out = {}
    for name, f in layout:
        if isinstance(f.shape, data.StructLayout):
            out[name] = unpack(f.shape, int(word) >> f.offset)
        else:
            out[name] = (int(word) >> f.offset) & ((1 << f.width) - 1)
    return out
