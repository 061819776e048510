"""A register on the co-simulated chip's reset input: the last stage of a reset synchronizer.

Amaranth writes each resettable register's next state as combinational logic
that reads the domain's reset: ``next = rst ? init : value``. With ``rst`` a
top-level input, Verilator puts that logic (and, with a clock gate's enable,
everything behind it) in its input-combinational region, which runs at every
evaluation: at both clock edges, and again after the registers update. With
the reset registered at the top, nothing but the bus ports depends on an
input and the logic runs once per rising edge (docs/performance.md).

The register's own clock is gated (:mod:`hw.tile.clock_gate`) to the edges
where the port differs from it, the only edges where it changes: a register
that ticked at every edge would make Verilator evaluate the next-state logic of
every gated unit every cycle, since that logic reads the reset.

The chip then enters and leaves reset one cycle after its ``rst`` port does,
as a chip with a reset synchronizer would; :class:`cosim.device.CocotbDevice`
holds reset for several cycles and waits two more after releasing it.
"""

import re

from hw.tile import clock_gate

# The register's name: a Verilog identifier Amaranth does not emit (its own names carry no trailing "__").
REGISTERED = "rst_registered__"
# Its clock and that clock's gate cell.
GATED_CLOCK = "rst_registered_gclk__"
GATE_CELL = "rst_registered_gate__"


def register_reset(text, top, *, clock="clk", reset="rst"):
    """``text`` (Verilog) with module ``top``'s logic reset by a register of its ``reset`` input.

    Every use of ``reset`` inside ``top`` (instance connections, reset conditions) reads the register,
    which loads ``reset`` at each rising edge of ``clock`` and starts high. Raises ``ValueError`` when
    ``top`` is missing or lacks the two inputs.
    """
    header = re.search(rf"^module {re.escape(top)}\((.*?)\);\n", text, re.S | re.M)
    if header is None:
        raise ValueError(f"the Verilog has no module {top!r}")
    end = text.index("\nendmodule", header.end())
    body = text[header.end():end]
    for port in (clock, reset):
        if not re.search(rf"^\s*input {port};$", body, re.M):
            raise ValueError(f"module {top} has no 1-bit input {port!r}")
    for name in (REGISTERED, GATED_CLOCK, GATE_CELL):
        if name in text:
            raise ValueError(f"module {top} already uses the name {name}")
    # A use of the reset: the bare identifier, not a port name (.rst) or a longer one; escaped identifiers
    # (\rst$1, \a[rst]), attributes and strings are matched first and kept as they are.
    use = re.compile(rf'(\\\S+|\(\*.*?\*\)|"(?:[^"\\]|\\.)*")|(?<![\w$.]){reset}(?![\w$])')
    lines = []
    for line in body.split("\n"):
        if re.fullmatch(rf"\s*(input|wire) {reset};", line):
            lines.append(line)
            if line.strip().startswith("input"):
                # The register's clock is gated to the edges where it changes: ticking at every edge would
                # make Verilator evaluate, every cycle, the next-state logic of each gated unit (all of it
                # reads its reset), though the unit's own clock is stopped.
                lines += [f"  reg {REGISTERED} = 1'h1;", f"  wire {GATED_CLOCK};",
                          f"  {clock_gate.MODULE} {GATE_CELL} (.clk({clock}), .en({reset} ^ {REGISTERED}), "
                          f".gclk({GATED_CLOCK}));",
                          f"  always @(posedge {GATED_CLOCK})", f"    {REGISTERED} <= {reset};"]
        else:
            lines.append(use.sub(lambda match: match.group(1) or REGISTERED, line))
    body = "\n".join(lines)
    rest = text[end:]
    if not re.search(rf"^module {clock_gate.MODULE}\(", text, re.M):
        # The design has no gate's module: it follows the top module.
        close = len("\nendmodule\n")
        rest = rest[:close] + clock_gate.VERILOG.lstrip() + rest[close:]
    return text[:header.end()] + body + rest
