"""A static model of a compiled decode step: what the compiler reports before anything runs.

Every term comes from the target's parameters, the compiled program and the
latencies the RTL is built with (:mod:`facts.latency`, the AGCU and sequencer
path constants of :mod:`sw.model.chip` and :mod:`sw.model.sequencer`, which
the co-simulation checks against the RTL); none is fitted to a measurement.
:func:`estimate_kernel` says how a kernel is timed; :func:`estimate_step`
adds Program Load, launches and the read-back. The runtime measures the real
figures on either backend (``bench compile`` sets the two side by side).
:func:`padding_cost` prices the zero padding of sizes the array cannot take
as they are.
"""

from facts.latency import QUEUE_CYCLES, pipeline_latency
from hw.mem.launch_list import direction_record_layout, header_layout, program_record_layout, record_words
from hw.mem.params import HBM
from sw.compiler.decode import Padding
from sw.model.chip import AGCU_READ_CYCLES, AGCU_START_CYCLES, AGCU_WRITE_CYCLES
from sw.model.fabric import latency as fabric_latency
from sw.model.pmu import READ_LATENCY
from sw.model.sequencer import list_cycles


def _agcu_nodes(program, agcus):
    """AGCU index -> (host input name, host output name) of ``program`` (None where unused)."""
    out = {}
    for name, port in program.host_inputs.items():
        out.setdefault(agcus.index((port.side, port.col)), [None, None])[0] = name
    for name, port in program.host_outputs.items():
        out.setdefault(agcus.index((port.side, port.col)), [None, None])[1] = name
    return out


def _op_of(unit, ops):
    """The op whose units ``unit`` is one of (units are named ``<op>.<part>``); the longest matching name."""
    found = [o for o in ops if unit.startswith(o + ".")]
    return max(found, key=len) if found else None


def _unit_latency(t, unit):
    """Cycles a unit adds from its first input to its first output: a PCU's pipeline (stages, the tail
    built with the target's functions, the lane reduction; :func:`facts.latency.pipeline_latency`), a PMU's
    read latency."""
    if unit.kind == "pcu":
        return pipeline_latency(t.array.stages, t.array.lanes, tuple(o.name.lower() for o in t.tail_ops))
    return READ_LATENCY


def _ops_graph(compiled, launch):
    """The launch's ops as nodes of a dataflow graph, from its program's units and connections.

    Returns ``(ops, edges, streams_of, latency, busy)``: op names in program order; ``edges`` (producer,
    consumer) -> ``barrier`` (the consumer waits for all of the producer's output: a connection into a PMU,
    which reads a buffer only once a write pass has filled it, or a read gated on the producer's write
    through memory); ``streams_of`` op -> the launch's streams it reads or writes; ``latency`` op -> the
    longest path of unit latencies and fabric hops inside the op (its fill and drain); ``busy`` op -> its
    longest path in vectors, one a cycle: a stream from memory takes its vectors (a bf16 word unpacks into
    twice the fp32 words), or its words at its tier's peak rate where that is slower, a PCU passes its inputs on as they come, a PMU reads its addresses (per pass
    ``read.count``, ``read_passes`` of them per iteration) after each write pass (its input's vectors over
    its write passes), in series with the writes when it has one buffer, overlapping the next pass's with
    more.
    """
    t, prog = compiled.target, launch.program
    names = [o.name for o in launch.ops]
    owner = {u: _op_of(u, names) or names[0] for u in prog.units}
    nodes = _agcu_nodes(prog, t.agcus)
    driver = {}
    edges = {}
    inner = {u: [] for u in prog.units}
    for c in prog.connections:
        for sink in c.sinks:
            driver[sink.node] = c.source.node
            if c.source.node in prog.units and sink.node in prog.units:
                hops = fabric_latency(prog.routing.routes[c.name].hops(prog.mesh_position(sink)))
                a, b = owner[c.source.node], owner[sink.node]
                if a != b:
                    edges[(a, b)] = edges.get((a, b), False) or prog.units[sink.node].kind == "pmu"
                else:
                    inner[sink.node].append((c.source.node, hops))
    sinks = {}
    for c in prog.connections:
        sinks.setdefault(c.source.node, []).extend(s.node for s in c.sinks)
    streams_of, users, writer = {n: [] for n in names}, {}, {}
    for s in launch.streams:
        read_node, write_node = nodes.get(s.agcu, (None, None))
        if s.direction == "read":
            users[id(s)] = {owner[u] for u in sinks.get(read_node, ()) if u in owner} or {names[0]}
        else:
            users[id(s)] = {owner.get(driver.get(write_node), names[-1])}
            writer[s.agcu] = next(iter(users[id(s)]))
        for op in users[id(s)]:
            streams_of[op].append(s)
    for s in launch.streams:
        if s.direction == "read" and s.after is not None and not s.lag and s.after in writer:
            for op in users[id(s)] - {writer[s.after]}:
                edges[(writer[s.after], op)] = "memory"
    # Longest unit path inside each op (the program's connections are acyclic: the array model refuses a loop).
    depth = {}

    def path(u):
        if u not in depth:
            depth[u] = _unit_latency(t, prog.units[u]) + max([path(v) + h for v, h in inner[u]] + [0])
        return depth[u]

    latency = {n: 0 for n in names}
    for u in prog.units:
        latency[owner[u]] = max(latency[owner[u]], path(u))
    n, wb = prog.iterations, t.memory.word_bytes
    host = {}
    for s in launch.streams:
        node = nodes.get(s.agcu, (None, None))[0]
        if s.direction == "read" and node is not None:
            host[node] = max(s.words / n * wb * (2 if s.bf16 else 1) / (4 * t.array.lanes),
                             s.words / n * wb / float(t.memory.tiers[s.tier].bytes_per_cycle))
    feeds = {u: [] for u in prog.units}
    for c in prog.connections:
        for sink in c.sinks:
            if sink.node in prog.units and (c.source.node in host or owner.get(c.source.node) == owner[sink.node]):
                feeds[sink.node].append(c.source.node)
    ends = {}

    def end(u):
        if u in host:
            return host[u]
        if u not in ends:
            came = max([end(v) for v in feeds[u]] + [0.0])
            unit = prog.units[u]
            if unit.kind == "pmu" and unit.config.read_passes:
                # Pass p's reads follow its write pass; with one buffer the next write pass waits for them too
                # (passes in series), with more the reads of pass p overlap the writes of pass p + 1.
                c = unit.config
                writes, reads = max(c.write_passes // n, 1), c.read.count * c.read_passes / n
                came = came + reads if c.buffers == 1 else max(came / writes + reads, came + reads / writes)
            ends[u] = came
        return ends[u]

    busy = {x: 0.0 for x in names}
    for u in prog.units:
        busy[owner[u]] = max(busy[owner[u]], end(u))
    return names, edges, streams_of, latency, busy


def _waves(names, edges):
    """Op -> wave: 0 for ops nothing in the kernel feeds, one more than a producer it waits for entirely
    (a barrier edge), the same as one whose output it takes as it streams."""
    wave = {n: 0 for n in names}
    for _ in names:
        for (a, b), barrier in edges.items():
            wave[b] = max(wave[b], wave[a] + (1 if barrier else 0))
    return wave


def estimate_kernel(compiled, launch, *, detail=False):
    """Estimated cycles of one launch of ``launch``, from its start pulse to its last AGCU's done.

    The kernel's ops run in waves (:func:`_waves`): an op waits for a producer in the kernel whose whole
    output it needs (a PMU buffers it, or a read gated on its write reads it back from memory); ops that
    take a producer's output as it streams run beside it. A wave lasts the longer of

    - its busiest op: its longest path in vectors through its units (:func:`_ops_graph`'s ``busy``): a PCU
      takes one vector (``lanes`` fp32 words) a cycle, a stream from memory brings its vectors (a bf16 word
      unpacks into twice the fp32 words), a PMU reads its addresses after each write pass;
    - its streams' words on each tier at the tier's peak rate (``channels x channel_bytes_per_cycle``), less
      what the tier fetched for them during earlier waves while idle: each read holds at most
      ``agcu_outstanding`` words ahead of its consumer (the AGCU's read credits);

    plus its fill and drain: the longest path of unit latencies (a PCU's pipeline, :func:`facts.latency.
    pipeline_latency`; a PMU's read latency) and fabric hops (:func:`sw.model.fabric.latency`) through its
    ops, and for a read gated on a write a memory round trip (write path, queue and the tier's latency, then
    the read's). The kernel adds the first read's path (AGCU start, controller queue, tier latency, AGCU
    response buffer) and the last write's (AGCU write, queue, tier latency).

    A looped program (``Program.iterations`` = n) runs its body n times, each iteration a kernel of the
    body's words (each stream's words / n); a later iteration starts warm, with each read no write gates
    holding up to ``agcu_outstanding`` of its words (fetched in the previous iteration's idle tier cycles),
    as :mod:`sw.model.loop` describes. Returns cycles, or with ``detail`` a dict of cycles, ``waves`` and
    ``iterations``.
    """
    t = compiled.target
    m = t.memory
    wb, n = m.word_bytes, launch.program.iterations
    vector_bytes = 4 * t.array.lanes
    names, edges, streams_of, latency, busy = _ops_graph(compiled, launch)
    wave = _waves(names, edges)
    per_word = {k: wb / float(m.tiers[k].bytes_per_cycle) for k in range(len(m.tiers))}
    first_wave = {}
    for op in names:
        for s in streams_of[op]:
            first_wave[id(s)] = min(first_wave.get(id(s), wave[op]), wave[op])
    tiers = {s.tier for s in launch.streams} or {HBM}
    edge = max(AGCU_START_CYCLES + QUEUE_CYCLES + m.tiers[k].latency + AGCU_READ_CYCLES for k in tiers) + \
        max(AGCU_WRITE_CYCLES + QUEUE_CYCLES + m.tiers[k].latency for k in tiers) + 1

    def run(idle):
        """(cycles, per wave (busiest op, tier cycles, fill), idle tier cycles left) of one iteration; ``idle``:
        tier cycles the previous iteration left idle (None: the first), in which its reads fetched ahead."""
        total, out = 0.0, []
        warm, idle = idle is not None, dict(idle or {k: 0.0 for k in per_word})
        for w in range(max(wave.values()) + 1):
            ops = [o for o in names if wave[o] == w]
            busiest = max([s.words / n * wb * (2 if s.bf16 else 1) / vector_bytes
                           for o in ops for s in streams_of[o]] + [busy[o] for o in ops])
            tier_words = {k: 0.0 for k in per_word}
            for s in {id(s): s for o in ops for s in streams_of[o] if first_wave[id(s)] == w}.values():
                words = s.words / n
                # Reads run ahead of their consumer by their credits: into an earlier wave's idle tier cycles,
                # or (no write gating them) into the previous iteration's.
                if s.direction == "read" and (s.after is None or (w and s.lag)) and (w or warm):
                    got = min(m.agcu_outstanding, words, idle[s.tier] / per_word[s.tier])
                    idle[s.tier] -= got * per_word[s.tier]
                    words -= got
                tier_words[s.tier] += words
            tier = max(tier_words[k] * per_word[k] for k in per_word)
            fill = max(latency[o] for o in ops)
            gated = [s.tier for o in ops if any(edges.get((a, o)) == "memory" for a in names)
                     for s in streams_of[o] if s.direction == "read" and s.after is not None and not s.lag]
            if gated:
                fill += AGCU_WRITE_CYCLES + AGCU_START_CYCLES + AGCU_READ_CYCLES + \
                    2 * (QUEUE_CYCLES + max(m.tiers[k].latency for k in gated))
            span = max(busiest, tier)
            for k in per_word:
                idle[k] += span - tier_words[k] * per_word[k]
            total += span + fill
            out.append((busiest, tier, fill))
        return total + edge, out, idle

    cycles, waves, idle = run(None)
    for _ in range(n - 1):
        more, _, idle = run(idle)
        cycles += more
    return {"cycles": cycles, "waves": waves, "iterations": n} if detail else cycles


def _entry_words(launch, m):
    """32-bit words of ``launch``'s launch-list entry: header, program record, a record per AGCU direction."""
    directions = {(s.agcu, s.direction) for s in launch.streams}
    return (record_words(header_layout()) + record_words(program_record_layout(m))
            + len(directions) * record_words(direction_record_layout(m)))


def estimate_step(compiled, tp, orchestration="host"):
    """Estimated cycles and bytes of one decode step attending over ``tp`` positions.

    ``kernel_cycles``: :func:`estimate_kernel` of each launch. ``program_load_cycles``: one cycle per bitstream
    word (the array loader's rate) for each launch whose program is not already resident: the previous launch
    of the step, or for the first the step's last (the steady state of a decode), loaded it. ``launch_cycles``:
    with ``orchestration="host"`` the target's assumed host round trip per launch
    (``Target.host_launch_cycles``); with ``"chip"`` one round trip per step plus the sequencer's own cycles
    (``sequencer_cycles``), by the sequencer's timing (:func:`sw.model.sequencer.list_cycles`) of the
    bucket's list: each entry's words (header, program record, a direction record per AGCU read or write),
    its Program Load when not resident, its estimated kernel. ``host_io_cycles``: the host link reading the
    token the on-chip argmax leaves (one memory word) for a greedy step, else every fp32 logit.
    """
    t = compiled.target
    m = t.memory
    launches = compiled.buckets[tp]
    wb = m.word_bytes
    kernels = [estimate_kernel(compiled, launch) for launch in launches]
    loads = [None if launch.program_region == launches[i - 1].program_region else len(launch.program.words)
             for i, launch in enumerate(launches)]
    load = sum(x or 0 for x in loads)
    sequencer = 0
    if orchestration == "chip":
        tier = compiled.memory_map[compiled.launch_lists[tp]].tier
        entries = [(_entry_words(launch, m), x, k) for launch, x, k in zip(launches, loads, kernels)]
        sequencer = list_cycles(entries, memory=m, tier=tier)[1]
        launch_cycles = t.host_launch_cycles + sequencer
    else:
        launch_cycles = len(launches) * t.host_launch_cycles
    read = sum(s.words * wb for launch in launches for s in launch.streams if s.direction == "read")
    written = sum(s.words * wb for launch in launches for s in launch.streams if s.direction == "write")
    # Greedy decoding reads the token the argmax op leaves (one memory word), else every logit.
    host_io = (wb if compiled.token else 4 * compiled.shape.vocab_size) / float(m.host_bytes_per_cycle)
    return {"cycles": sum(kernels) + load + launch_cycles + host_io, "kernel_cycles": sum(kernels),
            "program_load_cycles": load, "launch_cycles": launch_cycles, "sequencer_cycles": sequencer,
            "host_io_cycles": host_io, "orchestration": orchestration,
            "bytes_read": read, "bytes_written": written, "kernels": len(launches)}


def _footprint(shape, sizes, weight_bytes, embed_bytes, context, tp):
    """(memory bytes, bytes streamed per token attending over ``tp``) of ``shape`` computed at ``sizes``
    (hidden, intermediate, head_dim, vocab): weights, norm gains and biases, KV caches and tables."""
    d, f, hd, v = sizes
    nh, nkv, layers = shape.num_heads, shape.num_kv_heads, shape.num_layers
    outputs = {"self_attn.q_proj": nh * hd, "self_attn.k_proj": nkv * hd, "self_attn.v_proj": nkv * hd,
               "self_attn.o_proj": d, "mlp.gate_proj": f, "mlp.up_proj": f, "mlp.down_proj": d}
    vectors = 2 * d + sum(outputs[p] for p in shape.biases)         # norm gains and biases, fp32
    layer = (d * hd * (2 * nh + 2 * nkv) + 3 * d * f) * weight_bytes + 4 * vectors
    head = v * d * weight_bytes + 4 * d                              # lm_head and the final norm
    kv = 4 * context * hd * (nh + 2 * nkv)                           # q and K rows, V blocks: per layer
    memory = layers * (layer + kv) + head + shape.vocab_size * d * embed_bytes + 2 * 4 * context * hd
    attention = 4 * hd * (nh + 2 * nh * tp)                          # q, then K and V once per query head
    return memory, layers * (layer + attention) + head + d * embed_bytes


def padding_cost(compiled):
    """What zero padding to the array's sizes costs ``compiled``: a dict with ``sizes`` ((name, true,
    padded) for each size that grew), ``memory_bytes``, ``bytes_per_token`` (streamed, at the full
    context) and ``cycles_per_token`` (those bytes at peak HBM bandwidth); None when nothing is padded."""
    shape, t = compiled.shape, compiled.target
    padding = Padding.of(shape, t.array.lanes)
    sizes = padding.padded(shape)
    if not sizes:
        return None
    streams = [s for launch in compiled.buckets[compiled.context] for s in launch.streams]
    bf16 = any(s.bf16 and not s.token_stride for s in streams)
    embed = any(s.bf16 and s.token_stride for s in streams)
    args = (2 if bf16 else 4, 2 if embed else 4, compiled.context, compiled.context)
    true = _footprint(shape, (shape.hidden_size, shape.intermediate_size, shape.head_dim, shape.vocab_size), *args)
    pad = _footprint(shape, (padding.hidden, padding.intermediate, padding.head_dim, padding.vocab), *args)
    streamed = pad[1] - true[1]
    return {"sizes": sizes, "memory_bytes": pad[0] - true[0], "bytes_per_token": streamed,
            "cycles_per_token": streamed / float(t.memory.hbm.bytes_per_cycle)}


def padding_text(compiled):
    """The summary's line on padding ('' when nothing is padded)."""
    cost = padding_cost(compiled)
    if cost is None:
        return ""
    sizes = ", ".join(f"{name} {true} -> {padded}" for name, true, padded in cost["sizes"])
    return (f"padding (zeros, invisible in results): {sizes}; costs {cost['memory_bytes']:,} bytes of memory and "
            f"{cost['bytes_per_token']:,} bytes streamed per token at {compiled.context} positions "
            f"(about {cost['cycles_per_token']:.0f} cycles at peak HBM bandwidth)")
