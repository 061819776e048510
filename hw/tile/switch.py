"""Static-route switch of the vector and scalar networks.

One switch sits beside every unit. Its inputs come from the four neighbours
(``channels`` each) and from the local unit's outputs; its outputs go to the
four neighbours and to the local unit's inputs. Each output's configuration
field names one input, or none. See docs/fabric.md.
"""

import functools
from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.hdl import Shape
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.tile.params import ArrayParams
from hw.tile.streams import ScalarPayload, VectorPayload

NETWORKS = ("vector", "scalar")
DIRECTIONS = ("n", "e", "s", "w")
OPPOSITE = {"n": "s", "e": "w", "s": "n", "w": "e"}
STEP = {"n": (-1, 0), "e": (0, 1), "s": (1, 0), "w": (0, -1)}
UNIT_OUTPUTS = {"vector": ("vo0",), "scalar": ("so0",)}
UNIT_INPUTS = {"vector": ("vi0", "vi1", "vi2"), "scalar": ("si0", "si1")}


def _check_network(network):
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, not {network!r}")


def channels(params, network):
    """Channels per direction per switch-to-switch link of ``network``."""
    _check_network(network)
    return params.vector_channels if network == "vector" else params.scalar_channels


def switch_inputs(params, network):
    """Input names of a switch, in selector order.

    ``n0`` is the stream arriving from the north neighbour on channel 0;
    ``vo0`` / ``so0`` is the local unit's output.
    """
    k = channels(params, network)
    return [f"{d}{c}" for d in DIRECTIONS for c in range(k)] + list(UNIT_OUTPUTS[network])


def switch_outputs(params, network):
    """Output names of a switch: ``e1`` goes to the east neighbour on channel 1,
    ``vi0`` / ``si0`` to the local unit's input of that name."""
    k = channels(params, network)
    return [f"{d}{c}" for d in DIRECTIONS for c in range(k)] + list(UNIT_INPUTS[network])


def switch_config_layout(params, network):
    """Configuration record of one switch on one network.

    One unsigned field per output, named as in :func:`switch_outputs`:
    0 selects nothing, ``1 + i`` selects input ``switch_inputs(...)[i]``.
    """
    n_inputs = len(switch_inputs(params, network))
    return data.StructLayout({name: range(n_inputs + 1) for name in switch_outputs(params, network)})


@functools.lru_cache(maxsize=64)
def switch_record_layout(params):
    """The switch unit's whole record (both networks), as the bitstream carries it."""
    return data.StructLayout({net: switch_config_layout(params, net) for net in NETWORKS})


def payload_layout(params, network):
    _check_network(network)
    return VectorPayload(params.lanes) if network == "vector" else ScalarPayload


def _stream(params, network):
    """A switch port: the network's payload as a flat bit pattern.

    Unstructured payloads keep the Verilog short: a structured payload gets a
    named wire per field and lane at every port and link of the mesh.
    """
    return stream.Signature(Shape.cast(payload_layout(params, network)).width)


def _wire(m, value, name):
    s = Signal(len(value), name=name)
    m.d.comb += s.eq(value)
    return s


def any_of(values):
    """The OR of ``values`` (Amaranth values), as a chain."""
    result = values[0]
    for v in values[1:]:
        result = result | v
    return result


def _next(pointer, depth):
    """``pointer + 1`` modulo ``depth``."""
    return Mux(pointer == depth - 1, 0, pointer + 1)


class _Fifos:
    """Pointers and counts of all input FIFOs, whose words live in the switch's shared memory.

    ``w_rdy`` and ``r_valid`` depend only on the count registers, so no
    combinational path runs through a FIFO: a full FIFO refuses a word even
    in a cycle in which it is read. With depth 2 a stream still moves one
    word per cycle, because the FIFO holds one word in steady state.

    ``w_en`` and ``r_en`` are vectors, bit ``i`` for FIFO ``i``; the heads,
    tails and counts of all FIFOs are one register each, updated without
    conditions (a register per field and FIFO would cost a process each).
    """

    def __init__(self, m, n, depth):
        pbits = max(1, Shape.cast(range(depth)).width)
        cbits = Shape.cast(range(depth + 1)).width
        self.w_en = Signal(n, name="fifo_w_en")
        self.r_en = Signal(n, name="fifo_r_en")
        heads = Signal(n * pbits, name="fifo_heads")
        tails = Signal(n * pbits, name="fifo_tails")
        counts = Signal(n * cbits, name="fifo_counts")
        self.head = [heads.word_select(i, pbits) for i in range(n)]
        self.tail = [tails.word_select(i, pbits) for i in range(n)]
        count = [counts.word_select(i, cbits) for i in range(n)]
        self.w_rdy = Signal(n, name="fifo_w_rdy")
        self.r_valid = Signal(n, name="fifo_r_valid")
        m.d.comb += [
            self.w_rdy.eq(Cat(c != depth for c in count)),
            self.r_valid.eq(Cat(c != 0 for c in count)),
        ]
        self.push = Signal(n, name="fifo_push")
        pop = Signal(n, name="fifo_pop")
        m.d.comb += [self.push.eq(self.w_en & self.w_rdy), pop.eq(self.r_en & self.r_valid)]
        if depth == 2:  # one-bit pointers: a step is an exclusive or
            m.d.sync += [tails.eq(tails ^ self.push), heads.eq(heads ^ pop)]
        else:
            m.d.sync += [
                tails.eq(Cat(Mux(self.push[i], _next(self.tail[i], depth)[:pbits], self.tail[i]) for i in range(n))),
                heads.eq(Cat(Mux(pop[i], _next(self.head[i], depth)[:pbits], self.head[i]) for i in range(n))),
            ]
        m.d.sync += counts.eq(Cat((count[i] + self.push[i] - pop[i])[:cbits] for i in range(n)))


class Switch(wiring.Component):
    """One network's switch: a FIFO per input and a selector per output.

    Parameters
    ----------
    params : ArrayParams
    network : str, keyword-only
        ``"vector"`` or ``"scalar"``.

    Attributes
    ----------
    i_n0 ... i_w<k> : In(stream)
        From the neighbours, one per direction and channel. Every port's
        payload is the network's payload layout as a flat bit pattern.
    i_vo0 (vector) / i_so0 (scalar) : In(stream)
        From the local unit's output port of that name.
    o_n0 ... o_w<k> : Out(stream)
        To the neighbours.
    o_vi0..o_vi2 (vector) / o_si0, o_si1 (scalar) : Out(stream)
        To the local unit's input ports of those names.
    cfg : In(Shape.cast(switch_config_layout(params, network)).width)
        Selected input of each output, the record's bit pattern (unstructured,
        like the payloads).
    stall_cycles : Out(32)
        Cycles in which some input FIFO held a word that did not leave:
        blocked by an output, or selected by none.
    holding : Out(1)
        Some input FIFO holds a word. With no word held and no input valid,
        no register of the switch changes at the next edge.

    An input selected by several outputs is a multicast: each of those outputs
    offers the word only while all the others can take it, so they all take
    it in one cycle and it leaves the FIFO once. An input selected by no
    output is never read; words arriving there back up.

    All input FIFOs share one memory with a combinational read port per
    output, so Verilator compiles each output as an array index rather than
    a wide multiplexer.
    """

    def __init__(self, params, *, network):
        if not isinstance(params, ArrayParams):
            raise ValueError(f"params must be an ArrayParams, not {type(params).__name__}")
        _check_network(network)
        self.params = params
        self.network = network
        self.inputs = switch_inputs(params, network)
        self.outputs = switch_outputs(params, network)
        members = {f"i_{name}": In(_stream(params, network)) for name in self.inputs}
        members.update({f"o_{name}": Out(_stream(params, network)) for name in self.outputs})
        members["cfg"] = In(Shape.cast(switch_config_layout(params, network)).width)
        members["stall_cycles"] = Out(32)
        members["holding"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(payload_layout(self.params, self.network)).width
        depth = self.params.switch_fifo_depth
        n = len(self.inputs)
        # Input i's FIFO occupies rows (i + 1) * depth to (i + 1) * depth + depth - 1, so that an output's
        # read address is its selector and the head beside it; rows 0 to depth - 1 (selector 0) stay zero.
        m.submodules.slots = slots = memory.Memory(shape=width, depth=(n + 1) * depth, init=[])
        fifos = _Fifos(m, n, depth)
        for i, name in enumerate(self.inputs):
            port = getattr(self, f"i_{name}")
            write = slots.write_port()
            m.d.comb += [
                fifos.w_en[i].eq(port.valid),
                port.ready.eq(fifos.w_rdy[i]),
                write.addr.eq((i + 1) * depth + fifos.tail[i]),
                write.data.eq(port.payload),
                write.en.eq(fifos.push[i]),
            ]

        # Per output k: ``picked[k]`` has bit 1 + i set where it selects input i
        # (bit 0 for none); ``blocking[k]`` the same where output k is not ready.
        # An input's FIFO is read when some output selects it and none of those
        # is blocked; an output offers its word while no other output of the
        # same input is blocked (ORs over the other outputs as prefix and
        # suffix ORs, so the Verilog grows linearly with the outputs).
        outs = [getattr(self, f"o_{name}") for name in self.outputs]
        cfg = data.View(switch_config_layout(self.params, self.network), self.cfg)
        sel = [Value.cast(cfg[name]) for name in self.outputs]
        width_sel = 1 << max(len(s) for s in sel)
        picked = [_wire(m, (Const(1, n + 1) << s)[:n + 1], f"picked_{name}")
                  for s, name in zip(sel, self.outputs)]
        blocking = [_wire(m, Mux(out.ready, 0, pk), f"blocking_{name}")
                    for out, pk, name in zip(outs, picked, self.outputs)]
        prefix, acc = [], Const(0, n + 1)
        for k, b in enumerate(blocking):
            prefix.append(acc)
            acc = _wire(m, acc | b, f"blocked_upto_{k}")
        blocked_any = acc
        suffix, acc = [None] * len(outs), Const(0, n + 1)
        for k in reversed(range(len(outs))):
            suffix[k] = acc
            acc = _wire(m, acc | blocking[k], f"blocked_from_{k}")
        used = Signal(n + 1, name="used")
        m.d.comb += [
            used.eq(any_of(picked)),
            fifos.r_en.eq((used & ~blocked_any)[1:]),
        ]
        pad = lambda v, w: Cat(v, Const(0, w * (width_sel - n - 1)))
        pbits = len(fifos.head[0])
        heads = pad(Cat(Const(0, pbits), *fifos.head), pbits)
        valids = pad(Cat(Const(0, 1), fifos.r_valid), 1)
        for k, out in enumerate(outs):
            read = slots.read_port(domain="comb")
            head = heads.word_select(sel[k], pbits)
            # With a power-of-two depth the address is a concatenation: no arithmetic on the selector.
            addr = Cat(head, sel[k]) if depth == 1 << pbits else sel[k] * depth + head
            # A multicast output offers the word only while every sibling output of its input is ready.
            others = prefix[k] | suffix[k]
            siblings = ~pad(others, 1).bit_select(sel[k], 1)
            m.d.comb += [
                read.addr.eq(addr),
                out.payload.eq(read.data),
                out.valid.eq(valids.bit_select(sel[k], 1) & siblings),
            ]

        m.d.comb += self.holding.eq(fifos.r_valid.any())
        blocked = (fifos.r_valid & ~fifos.r_en).any()
        with m.If(blocked):
            m.d.sync += self.stall_cycles.eq(self.stall_cycles + 1)
        return m
