"""Static-route switch of the vector and scalar networks.

One switch sits beside every unit. Its inputs come from the four neighbours
(``channels`` each) and from the local unit's outputs; its outputs go to the
four neighbours and to the local unit's inputs. Each output's configuration
field names one input, or none. See docs/fabric.md.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.hdl import Shape
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from hw.tile.params import ArrayParams
from hw.tile.streams import ScalarPayload, VectorPayload, scalar_stream, vector_stream

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


def switch_record_layout(params):
    """The switch unit's whole record (both networks), as the bitstream carries it."""
    return data.StructLayout({net: switch_config_layout(params, net) for net in NETWORKS})


def payload_layout(params, network):
    _check_network(network)
    return VectorPayload(params.lanes) if network == "vector" else ScalarPayload


def _stream(params, network):
    return vector_stream(params.lanes) if network == "vector" else scalar_stream()


class _FifoControl:
    """Pointers and count of one input FIFO whose words live in the switch's shared memory.

    ``w_rdy`` and ``r_valid`` depend only on the count register, so no
    combinational path runs through the FIFO: a full FIFO refuses a word even
    in a cycle in which it is read. With depth 2 a stream still moves one
    word per cycle, because the FIFO holds one word in steady state.
    """

    def __init__(self, m, depth, name):
        self.w_en = Signal(name=f"{name}_w_en")
        self.r_en = Signal(name=f"{name}_r_en")
        self.w_rdy = Signal(name=f"{name}_w_rdy")
        self.r_valid = Signal(name=f"{name}_r_valid")
        self.head = Signal(range(depth), name=f"{name}_head")
        self.tail = Signal(range(depth), name=f"{name}_tail")
        count = Signal(range(depth + 1), name=f"{name}_count")
        self.push = self.w_en & self.w_rdy
        pop = self.r_en & self.r_valid
        m.d.comb += [
            self.w_rdy.eq(count != depth),
            self.r_valid.eq(count != 0),
        ]
        with m.If(self.push):
            m.d.sync += self.tail.eq(_next(self.tail, depth))
        with m.If(pop):
            m.d.sync += self.head.eq(_next(self.head, depth))
        with m.If(self.push & ~pop):
            m.d.sync += count.eq(count + 1)
        with m.Elif(pop & ~self.push):
            m.d.sync += count.eq(count - 1)


def _next(pointer, depth):
    """``pointer + 1`` modulo ``depth``."""
    return Mux(pointer == depth - 1, 0, pointer + 1)


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
        From the neighbours, one per direction and channel.
    i_vo0 (vector) / i_so0 (scalar) : In(stream)
        From the local unit's output port of that name.
    o_n0 ... o_w<k> : Out(stream)
        To the neighbours.
    o_vi0..o_vi2 (vector) / o_si0, o_si1 (scalar) : Out(stream)
        To the local unit's input ports of those names.
    cfg : In(switch_config_layout(params, network))
        Selected input of each output.
    stall_cycles : Out(32)
        Cycles in which some input FIFO held a word that did not leave:
        blocked by an output, or selected by none.

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
        members["cfg"] = In(switch_config_layout(params, network))
        members["stall_cycles"] = Out(32)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        width = Shape.cast(payload_layout(self.params, self.network)).width
        depth = self.params.switch_fifo_depth
        n = len(self.inputs)
        # Input i's FIFO occupies rows i * depth to i * depth + depth - 1.
        m.submodules.slots = slots = memory.Memory(shape=width, depth=n * depth, init=[])
        fifos = []
        for i, name in enumerate(self.inputs):
            port = getattr(self, f"i_{name}")
            fifo = _FifoControl(m, depth, f"fifo_{name}")
            write = slots.write_port()
            m.d.comb += [
                fifo.w_en.eq(port.valid),
                port.ready.eq(fifo.w_rdy),
                write.addr.eq(i * depth + fifo.tail),
                write.data.eq(port.payload.as_value()),
                write.en.eq(fifo.push),
            ]
            fifos.append(fifo)

        outs = [getattr(self, f"o_{name}") for name in self.outputs]
        sel = [self.cfg[name] for name in self.outputs]
        heads = Array([Const(0, range(depth))] + [f.head for f in fifos])
        valids = Array([Const(0, 1)] + [f.r_valid for f in fifos])
        for i, fifo in enumerate(fifos):
            users = Cat(s == i + 1 for s in sel)
            takes = Cat((s != i + 1) | out.ready for s, out in zip(sel, outs))
            m.d.comb += fifo.r_en.eq(users.any() & takes.all())
        for k, out in enumerate(outs):
            read = slots.read_port(domain="comb")
            # A multicast output offers the word only while every sibling output of its input is ready.
            siblings = Cat((sel[j] != sel[k]) | outs[j].ready for j in range(len(outs)) if j != k).all()
            m.d.comb += [
                read.addr.eq((sel[k] - 1) * depth + heads[sel[k]]),
                out.payload.eq(read.data),
                out.valid.eq(valids[sel[k]] & siblings),
            ]

        blocked = Cat(f.r_valid & ~f.r_en for f in fifos).any()
        with m.If(blocked):
            m.d.sync += self.stall_cycles.eq(self.stall_cycles + 1)
        return m
